"""assemble's HTTPS connections trust the system's store (assembler/registry/trust.py), as
curl and pip do, not certifi's bundle alone (what requests trusts by itself).

A private CA made here signs the certificate of an HTTPS server on 127.0.0.1 (a package
index and its files); the CA is put where the system store is read from on Debian
(OpenSSL's default locations, which SSL_CERT_FILE and SSL_CERT_DIR move: a bundle of the
system's CAs plus it, or a hashed folder as update-ca-certificates writes /etc/ssl/certs),
never into certifi's bundle or REQUESTS_CA_BUNDLE. ``pip:`` and ``url:`` layers then
download from it; without the CA they fail naming the certificate, before anything is made.
"""

from __future__ import annotations

import datetime
import hashlib
import http.server
import ipaddress
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from assembler.registry import trust
from tests.helpers import SERVER_POLL_S, run_cli
from tests.pyindex import Index, _handler

# Where this machine's own trust comes from, if anywhere: the test decides it alone.
_TRUST_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA (ca.pem) and a certificate for 127.0.0.1 it signed (server.pem, server.key)."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("assemble test CA"))
        .issuer_name(_name("assemble test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(_pem(ca))
    (folder / "server.pem").write_bytes(_pem(server))
    (folder / "server.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    system = trust.system_bundle()
    assert system is not None, "no system CA bundle on this machine"
    # The system's store with the CA in it, as a bundle (SSL_CERT_FILE) ...
    (folder / "system+ca.pem").write_bytes(system.read_bytes() + b"\n" + _pem(ca))
    # ... and as a hashed folder holding only it (SSL_CERT_DIR), named as c_rehash names it.
    hashed = folder / "certs"
    hashed.mkdir()
    shutil.copy(folder / "ca.pem", hashed / "assemble-test-ca.pem")
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(folder / "ca.pem")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (hashed / f"{subject_hash}.0").symlink_to("assemble-test-ca.pem")
    (folder / "system.pem").write_bytes(system.read_bytes())
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "system+ca.pem", "system.pem")} | {
        "certs": hashed
    }


@pytest.fixture()
def index(pki: dict[str, Path], tmp_path: Path) -> Iterator[Index]:
    """A package index on https://127.0.0.1:PORT/simple with one wheel, tlsapp 1.0."""
    index = Index(tmp_path / "www")
    index.add("tlsapp", "1.0")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(index))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server.pem"], pki["server.key"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(SERVER_POLL_S,), daemon=True).start()
    index.url = f"https://127.0.0.1:{server.server_address[1]}/simple"
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()


def _manifest(index: Index) -> str:
    wheel = index.root / "files" / "tlsapp-1.0-py3-none-any.whl"
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    files = index.url.removesuffix("/simple") + "/files/" + wheel.name
    return f"""name: tls
bases: {{b: scratch}}
image:
  base: b
  layers:
    - pip: ["tlsapp==1.0 --hash=sha256:{sha}"]
      index: {index.url}
      prefix: /opt/venv
      python: "3.12"
    - url: {files}
      sha256: {sha}
      to: /opt/wheels/
"""


def _build(tmp_path: Path, name: str, env: dict[str, str], *args: str) -> tuple[int, str]:
    out = ["-o", f"oci:{tmp_path / name}:1", "--cache", str(tmp_path / f"cache-{name}"), "--no-deps-check"]
    # A process each: OpenSSL's context keeps what it once loaded, as one build's does.
    ran = run_cli(["m.yaml", *out, *args], cwd=tmp_path, env=env)
    return ran.code, ran.err


@pytest.mark.integration  # seconds
def test_pip_and_url_downloads_trust_the_system_store(
    index: Index, pki: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _TRUST_ENV:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "m.yaml").write_text(_manifest(index))

    # The CA only in the system store, as a bundle (what update-ca-certificates writes):
    # requests by itself (certifi) refuses the server; assemble downloads both layers.
    code, err = _build(tmp_path, "bundle", {"SSL_CERT_FILE": str(pki["system+ca.pem"])})
    assert code == 0, err
    assert (tmp_path / "bundle" / "index.json").is_file()

    # ... as a hashed folder of the system store (SSL_CERT_DIR), the system bundle unchanged.
    code, err = _build(tmp_path, "dir", {"SSL_CERT_FILE": str(pki["system.pem"]), "SSL_CERT_DIR": str(pki["certs"])})
    assert code == 0, err

    # Without the CA: stopped before anything is made, naming the certificate and --cert.
    code, err = _build(tmp_path, "none", {"SSL_CERT_FILE": str(pki["system.pem"])})
    assert code != 0 and "CERTIFICATE_VERIFY_FAILED" in err and "--cert FILE" in err, err
    assert not (tmp_path / "none").exists()

    # --cert FILE: that CA besides the system's.
    code, err = _build(tmp_path, "cert", {"SSL_CERT_FILE": str(pki["system.pem"])}, "--cert", str(pki["ca.pem"]))
    assert code == 0, err


def test_the_bundle_steps_get_is_what_downloads_trust(pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Build containers get the same trust (compile.container.host_ca mounts bundle_pem)."""
    for name in _TRUST_ENV:
        monkeypatch.delenv(name, raising=False)
    ca = pki["ca.pem"].read_text().strip()
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["system.pem"]))
    assert ca not in trust.bundle_pem().decode()
    monkeypatch.setenv("SSL_CERT_DIR", str(pki["certs"]))
    assert ca in trust.bundle_pem().decode()
    monkeypatch.delenv("SSL_CERT_DIR")
    trust.use_bundle(pki["ca.pem"])
    try:
        bundle = trust.bundle_pem().decode()
        assert ca in bundle and bundle.count(ca) == 1
        assert pki["system.pem"].read_text().split("-----END CERTIFICATE-----")[0].strip() in bundle
    finally:
        trust.use_bundle(None)
