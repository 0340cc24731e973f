"""Registry credentials, authentication challenges and token scopes (part of the registry client).

Credentials come from the first auth file, in the order containers tools and Docker use,
that has an entry for the registry host:

1. the explicit file (``--authfile``),
2. ``$REGISTRY_AUTH_FILE``,
3. ``$XDG_RUNTIME_DIR/containers/auth.json``,
4. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config/containers/auth.json``),
5. ``$DOCKER_CONFIG/config.json``,
6. ``~/.docker/config.json``.

An entry is ``auths.<host>`` with ``auth`` (base64 ``user:pass``) or ``username`` and
``password``; the key may carry a scheme or a path (``https://host/v1/``). Credential
helpers (``credHelpers``, ``credsStore``) are not run.

Challenges are parsed per RFC 7235 (``Basic realm=...``, ``Bearer realm=,service=,scope=``);
bearer tokens are requested and cached per *scope set*, so a token obtained for a pull is
never presented for a push. Nothing here does I/O except reading the auth files.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler.errors import InputError

log = logging.getLogger(__name__)

# Docker Hub is known under several names; credentials for any of them serve it.
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
# A token with no stated lifetime is good for 60 s (distribution's token spec).
_DEFAULT_TOKEN_LIFETIME = 60.0
# Refresh a little before expiry so a request does not race the deadline.
_TOKEN_MARGIN = 10.0


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


Scopes = tuple[str, ...]


def scopes_of(*scopes: str) -> Scopes:
    """A canonical scope set (sorted, no duplicates): the key tokens are cached under."""
    return tuple(sorted(set(scopes)))


@dataclass(frozen=True)
class Credentials:
    """A user name and password for one registry, and the file they came from."""

    username: str
    password: str = field(repr=False)
    source: Path

    def basic(self) -> str:
        """The ``Authorization`` header value for HTTP basic auth."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


def auth_file_candidates(explicit: Path | None) -> list[Path]:
    """The auth files to look in, in order (existing or not)."""
    env = os.environ
    home = Path(os.path.expanduser("~"))
    out: list[Path] = []
    if explicit is not None:
        out.append(explicit)
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    out.append(config_home / "containers" / "auth.json")
    if env.get("DOCKER_CONFIG"):
        out.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    out.append(home / ".docker" / "config.json")
    return out


def _normalise_key(key: str) -> str:
    """``https://host/v1/`` -> ``host``: auth file keys name a host, maybe with scheme/path."""
    key = re.sub(r"^[a-z][a-z0-9+.-]*://", "", key.strip().lower())
    return key.split("/", 1)[0]


def _host_names(host: str) -> tuple[str, ...]:
    host = host.lower()
    if host in _DOCKER_HUB:
        return _DOCKER_HUB
    if host.startswith("localhost"):
        return (host, "127.0.0.1" + host[len("localhost") :])
    if host.startswith("127.0.0.1"):
        return (host, "localhost" + host[len("127.0.0.1") :])
    return (host,)


def _credentials_from_entry(entry: Mapping[str, Any], source: Path) -> Credentials | None:
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]), source)
    encoded = entry.get("auth")
    if not encoded:
        if entry.get("identitytoken"):
            log.debug("%s: identity tokens are not supported; entry ignored", source)
        return None
    try:
        user, sep, password = base64.b64decode(str(encoded), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise InputError(f"auth file {source}: an 'auth' entry is not base64 of user:password ({e})") from e
    if not sep:
        raise InputError(f"auth file {source}: an 'auth' entry decodes to no 'user:password' pair")
    return Credentials(user, password, source)


def _read_auth_file(path: Path) -> Mapping[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"auth file {path} cannot be read: {e}", hint="fix or remove the file") from e
    auths = data.get("auths") if isinstance(data, dict) else None
    return auths if isinstance(auths, dict) else {}


def find_credentials(host: str, *, auth_file: Path | None) -> Credentials | None:
    """Credentials for ``host`` from the first auth file that has an entry for it.

    Raises InputError for an auth file that exists but is malformed.
    """
    names = _host_names(host)
    for path in auth_file_candidates(auth_file):
        auths = _read_auth_file(path)
        if not auths:
            continue
        for key, entry in auths.items():
            if _normalise_key(str(key)) in names and isinstance(entry, Mapping):
                creds = _credentials_from_entry(entry, path)
                if creds is not None:
                    log.debug("credentials for %s from %s", host, path)
                    return creds
    return None


# -- challenges ------------------------------------------------------------------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?:\s+|$)(?!=)")
_PARAM_RE = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN})\s*(?:,|$)')


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a lower-cased scheme and its parameters."""

    scheme: str
    params: Mapping[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")


def parse_challenges(header: str) -> list[Challenge]:
    """Every challenge in a ``WWW-Authenticate`` value (several may share one header)."""
    out: list[Challenge] = []
    pos = 0
    header = header.strip()
    while pos < len(header):
        scheme = _SCHEME_RE.match(header, pos)
        if scheme is None:
            break
        pos = scheme.end()
        params: dict[str, str] = {}
        while (param := _PARAM_RE.match(header, pos)) is not None:
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            pos = param.end()
        out.append(Challenge(scheme.group(1).lower(), params))
        pos = header.find(",", pos) + 1 if header.startswith(",", pos) else pos
    return out


def pick_challenge(header: str) -> Challenge | None:
    """The challenge to answer: bearer when offered (scoped, safer), else basic."""
    challenges = [c for c in parse_challenges(header) if c.scheme in ("bearer", "basic")]
    challenges.sort(key=lambda c: c.scheme != "bearer")
    return challenges[0] if challenges else None


# -- tokens ----------------------------------------------------------------------------


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens keyed by their exact scope set; expired ones are forgotten."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens: dict[Scopes, _Token] = {}
        self._clock = clock

    def get(self, scopes: Scopes) -> str | None:
        token = self._tokens.get(scopes)
        if token is None or token.expires <= self._clock():
            self._tokens.pop(scopes, None)
            return None
        return token.value

    def put(self, scopes: Scopes, answer: Any) -> str | None:
        """Store the token of a token server's JSON answer; None when it holds none."""
        if not isinstance(answer, Mapping):
            return None
        value = answer.get("token") or answer.get("access_token")
        if not isinstance(value, str) or not value:
            return None
        try:
            lifetime = float(answer.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = _DEFAULT_TOKEN_LIFETIME
        lifetime = max(lifetime - _TOKEN_MARGIN, lifetime / 2)
        self._tokens[scopes] = _Token(value, self._clock() + lifetime)
        return value

    def drop(self, scopes: Scopes) -> None:
        self._tokens.pop(scopes, None)
