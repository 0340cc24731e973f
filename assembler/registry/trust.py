"""What every HTTPS connection assemble makes trusts: the system's trust store, as pip does
(``truststore``: on Linux, OpenSSL's default locations, which ``SSL_CERT_FILE`` and
``SSL_CERT_DIR`` move), plus one more bundle where one is given: ``--cert FILE``
(:func:`use_bundle`), else ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE``.

requests alone trusts certifi's bundle only: on a network with its own CA (TLS inspection
at a company or an HPC centre) every download failed with ``CERTIFICATE_VERIFY_FAILED``
while curl worked. The sessions of :mod:`assembler.registry.deadlines` take :func:`context`
for every verified request (registries, pinned downloads, index pages, a build's
preflight); :func:`bundle_pem` is the same trust as one PEM file, which build containers
get (``compile.container.host_ca``) and the programs assemble runs on the host
(:func:`tool_env`: uv, git).
"""

from __future__ import annotations

import os
import re
import ssl
import threading
from pathlib import Path

from assembler.errors import InputError

BUNDLE_ENVS = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # requests' own variables, honoured as it honours them
# Where distributions keep the system bundle, when OpenSSL names none (truststore's list).
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
)
# A folder's certificates: OpenSSL's hashed names (c_rehash, update-ca-certificates) or PEM files.
_CERT_NAME = re.compile(r"^(?:[0-9a-fA-F]{8}\.[0-9]+|.+\.(?:pem|crt))$")
_explicit: Path | None = None
_contexts: dict[Path | None, ssl.SSLContext] = {}
_lock = threading.Lock()


def use_bundle(path: Path | None) -> None:
    """``--cert FILE``: every HTTPS connection of this process trusts the certificates in
    ``path`` too (None: only the system's and the variables'). InputError when it is not a
    readable PEM file."""
    global _explicit
    if path is not None:
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as e:
            raise InputError(f"--cert {path}: {e.strerror or e}") from None
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise InputError(f"--cert {path}: no PEM certificate in it", hint="--cert takes a PEM file of CAs")
    _explicit = path


def extra_bundle() -> Path | None:
    """The bundle trusted besides the system's: ``--cert``'s, else ``REQUESTS_CA_BUNDLE``'s
    or ``CURL_CA_BUNDLE``'s (a file that is not there is left out, as a variable set for
    another machine)."""
    if _explicit is not None:
        return _explicit
    for name in BUNDLE_ENVS:
        value = os.environ.get(name, "")
        if value and Path(value).is_file():
            return Path(value)
    return None


def context() -> ssl.SSLContext:
    """The client context of verified connections: the system's trust store (read again
    for each connection, as OpenSSL's variables say then) and :func:`extra_bundle`."""
    import truststore  # only when a connection is made: a no-change build makes none

    extra = extra_bundle()
    with _lock:
        ctx = _contexts.get(extra)
        if ctx is None:
            ctx = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if extra is not None:
                ctx.load_verify_locations(cafile=str(extra))
            _contexts[extra] = ctx
        return ctx


def system_bundle() -> Path | None:
    """The system's bundle file: OpenSSL's default (``SSL_CERT_FILE`` moves it), else the
    first of the distributions' usual places."""
    default = ssl.get_default_verify_paths().cafile
    if default and Path(default).is_file():
        return Path(default)
    return next((Path(p) for p in _SYSTEM_BUNDLES if Path(p).is_file()), None)


def bundle_pem() -> bytes:
    """Everything :func:`context` trusts as one PEM bundle (None of it: empty): the system
    bundle, the certificates of ``SSL_CERT_DIR`` where that variable names a folder, and
    :func:`extra_bundle`; each certificate once, in that order."""
    files = [p for p in (system_bundle(),) if p is not None]
    cert_dir = os.environ.get("SSL_CERT_DIR", "")
    if cert_dir and Path(cert_dir).is_dir() and Path(cert_dir).resolve() != Path("/etc/ssl/certs").resolve():
        files += sorted(p for p in Path(cert_dir).iterdir() if p.is_file() and _CERT_NAME.match(p.name))
    if (extra := extra_bundle()) is not None:
        files.append(extra)
    seen: dict[str, None] = {}
    for path in files:
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        for block in text.split("-----BEGIN CERTIFICATE-----")[1:]:
            body = block.split("-----END CERTIFICATE-----")[0].strip()
            seen.setdefault(f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n", None)
    return "".join(seen).encode()


def tool_env(folder: Path) -> dict[str, str]:
    """The environment that gives a program run on the host (uv, git) the same trust:
    uv its system store (``UV_NATIVE_TLS``); where a bundle is trusted besides the
    system's, :func:`bundle_pem` written into ``folder`` as their CA file."""
    env = {"UV_NATIVE_TLS": "1"}
    if extra_bundle() is None and not os.environ.get("SSL_CERT_DIR"):
        return env
    path = folder / "ca-bundle.pem"
    path.write_bytes(bundle_pem())
    return {**env, "SSL_CERT_FILE": str(path), "GIT_SSL_CAINFO": str(path)}
