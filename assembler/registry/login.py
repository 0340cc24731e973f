"""Registry logins: where credentials come from (part of the registry client).

For one auth file and one name of the host the lookup is Docker's (and oras-py's
``TokenAuth``): the ``auths`` entry's inline ``auth``, else the host's credential helper
(``credHelpers``), else the file's ``credsStore``, with these differences from oras-py:

- oras-py reads ``~/.docker/config.json`` only, merging files in no set order. We look in
  each file in the order containers tools and Docker use, and the first file that knows
  the host wins:

  1. the explicit file (``--authfile``),
  2. ``$REGISTRY_AUTH_FILE``,
  3. ``$XDG_RUNTIME_DIR/containers/auth.json``,
  4. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config/containers/auth.json``),
  5. ``$DOCKER_CONFIG/config.json``,
  6. ``~/.docker/config.json``.

- Entry keys may carry a scheme or a path (``https://host/v1/``); ``username`` and
  ``password`` entries and ``identitytoken`` entries count as well as ``auth``.
- A credential helper (``docker-credential-NAME get``, the host on stdin, JSON
  ``{"Username", "Secret"}`` out) runs through the project's one program runner
  (:mod:`assembler.proc`), not a bare subprocess. A ``Username`` of ``<token>`` (as Docker
  Desktop, ACR and GCR helpers answer) makes the secret an *identity token*: a refresh
  token for the OAuth2 token exchange, never a password.
- A loopback host is also known by its other name (``localhost:5000`` and
  ``127.0.0.1:5000``) as in oras-py, but only when that is the whole host name (oras-py
  swaps the substring, so ``mylocalhost.example`` became ``my127.0.0.1.example``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler.errors import InputError, ToolError
from assembler.proc import Runner

log = logging.getLogger(__name__)

# Docker Hub is known under several names; credentials for any of them serve it.
_DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
# The two names of the loopback host, each standing for the other.
_LOOPBACK = {"localhost": "127.0.0.1", "127.0.0.1": "localhost"}
# What a credential helper answers as user name when its secret is an identity token.
IDENTITY_TOKEN_USER = "<token>"
_HELPER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or an identity token) for one registry, and where they came from."""

    username: str
    password: str = field(repr=False)
    source: Path
    helper: str = ""  # the credential helper that gave them, if one did

    @property
    def identity_token(self) -> str:
        """The refresh token for the OAuth2 exchange, or "" for a user name and password."""
        return self.password if self.username == IDENTITY_TOKEN_USER else ""

    def basic(self) -> str:
        """The ``Authorization`` header value for HTTP basic auth."""
        return "Basic " + basic_auth(self.username, self.password)

    def where(self) -> str:
        return f"{self.source} (credential helper docker-credential-{self.helper})" if self.helper else str(self.source)


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


def basic_auth(username: str, secret: str) -> str:
    """HTTP basic auth's credentials, as an auth file's ``auth`` holds them: base64 of
    ``username:secret`` (UTF-8)."""
    return base64.b64encode(f"{username}:{secret}".encode()).decode("ascii")


def _normalise_key(key: str) -> str:
    """``https://host/v1/`` -> ``host``: auth file keys name a host, maybe with scheme/path."""
    key = re.sub(r"^[a-z][a-z0-9+.-]*://", "", key.strip().lower())
    return key.split("/", 1)[0]


def host_names(host: str) -> tuple[str, ...]:
    """The names an auth file may know ``host`` by: itself, and Docker Hub's aliases or the
    loopback host's other name (``localhost[:PORT]`` and ``127.0.0.1[:PORT]``)."""
    host = host.lower()
    if host in _DOCKER_HUB:
        return _DOCKER_HUB
    name, colon, port = host.partition(":")
    other = _LOOPBACK.get(name)
    return (host, other + colon + port) if other else (host,)


def _entry_auth(entry: Mapping[str, Any], source: Path) -> str | None:
    """An ``auths`` entry as an inline ``auth`` (base64 ``user:secret``), or None."""
    if entry.get("identitytoken"):
        return basic_auth(IDENTITY_TOKEN_USER, str(entry["identitytoken"]))
    if entry.get("username") and entry.get("password"):
        return basic_auth(str(entry["username"]), str(entry["password"]))
    encoded = entry.get("auth")
    if not encoded:
        return None
    try:
        _, sep, _ = base64.b64decode(str(encoded), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise InputError(f"auth file {source}: an 'auth' entry is not base64 of user:password ({e})") from e
    if not sep:
        raise InputError(f"auth file {source}: an 'auth' entry decodes to no 'user:password' pair")
    return str(encoded)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def read_auth_file(path: Path) -> dict[str, Any] | None:
    """An auth file in the shape Docker's lookup reads (keys normalised, every entry's
    secret as an inline ``auth``); None when absent.

    Raises InputError for a file that exists but is malformed.
    """
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"auth file {path} cannot be read: {e}", hint="fix or remove the file") from e
    if not isinstance(data, dict):
        raise InputError(f"auth file {path} is not a JSON object", hint="fix or remove the file")
    auths: dict[str, Any] = {}
    for key, entry in _mapping(data.get("auths")).items():
        if isinstance(entry, Mapping):
            auth = _entry_auth(entry, path)
            auths.setdefault(_normalise_key(str(key)), {"auth": auth} if auth else {})
    helpers = {_normalise_key(str(k)): str(v) for k, v in _mapping(data.get("credHelpers")).items() if v}
    store = data.get("credsStore")
    return {"auths": auths, "credHelpers": helpers, "credsStore": str(store) if store else None}


class Login:
    """The credentials for one registry host, looked up once (see the module docstring)."""

    def __init__(self, host: str, *, auth_file: Path | None, runner: Runner) -> None:
        self.host = host
        self._explicit = auth_file
        self._runner = runner
        self._loaded = False
        self._credentials: Credentials | None = None

    @property
    def credentials(self) -> Credentials | None:
        """The first auth file's, in our order, that knows the host; None when none does.

        Raises InputError for a malformed auth file or helper answer.
        """
        if not self._loaded:
            self._loaded = True
            self._credentials = self._find()
        return self._credentials

    def _find(self) -> Credentials | None:
        for path in auth_file_candidates(self._explicit):
            config = read_auth_file(path)
            if not config:
                continue
            for name in host_names(self.host):
                found = self._lookup(config, name, path)
                if found is not None:
                    log.debug("credentials for %s from %s", self.host, found.where())
                    return found
        return None

    def _lookup(self, config: Mapping[str, Any], name: str, source: Path) -> Credentials | None:
        """One file, one name: the inline ``auth``, else ``credHelpers``, else ``credsStore``."""
        encoded = config["auths"].get(name, {}).get("auth")
        if encoded:
            return _decode(encoded, source, "")
        for helper in (config["credHelpers"].get(name), config["credsStore"]):
            if helper and (found := self._ask_helper(helper, name, source)) is not None:
                return found
        return None

    def _ask_helper(self, suffix: str, hostname: str, source: Path) -> Credentials | None:
        """``docker-credential-SUFFIX get`` through our runner; None when it has nothing."""
        program = f"docker-credential-{suffix}"
        try:
            done = self._runner.run([program, "get"], input=hostname, timeout=_HELPER_TIMEOUT)
        except ToolError as e:
            # "credentials not found" is an answer (Docker asks a credsStore about every host):
            # the next source may know the host. A helper that is not there is worth a warning.
            level = logging.DEBUG if e.returncode is not None else logging.WARNING
            log.log(level, "credential helper %s has nothing for %s: %s", program, hostname, e.message)
            return None
        try:
            answer = json.loads(done.stdout)
            user, secret = str(answer["Username"]), str(answer["Secret"])
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(
                f"credential helper {program} answered no {{Username, Secret}} JSON for {hostname}",
                hint=f"check `echo {hostname} | {program} get`",
            ) from e
        return Credentials(user, secret, source, suffix)


def _decode(encoded: str, source: Path, helper: str) -> Credentials:
    user, _, secret = base64.b64decode(encoded).decode("utf-8").partition(":")
    return Credentials(user, secret, source, helper)


def find_credentials(host: str, *, auth_file: Path | None, runner: Runner | None = None) -> Credentials | None:
    """Credentials for ``host`` from the first auth file that has an entry for it.

    Raises InputError for an auth file that exists but is malformed, or a credential
    helper whose answer is not JSON.
    """
    return Login(host, auth_file=auth_file, runner=runner or Runner()).credentials
