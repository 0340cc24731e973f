"""Authentication challenges and token scopes (part of the registry client).

Where credentials come from is :mod:`login` (Docker's lookup, as oras-py does it). oras's
token backend keeps one bearer token per client, re-sends a pull token for a push, and
reads challenges with a regex that misreads ``Basic realm=``; so here:

Challenges are parsed per RFC 7235 (``Basic realm=...``, ``Bearer realm=,service=,scope=``);
bearer tokens are requested and cached per *scope set*, so a token obtained for a pull is
never presented for a push. The scopes a request needs follow from its method and URL
(:func:`scopes_for`). Nothing here does I/O.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

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


_API_PATH_RE = re.compile(r"^/v2/(.+)/(?:blobs|manifests|referrers|tags)/")


def scopes_for(method: str, url: str) -> Scopes:
    """The scopes a registry API request needs: pull to read, pull and push to write, and
    pull on the source of a cross-repository mount (``?mount=&from=``)."""
    parts = urlsplit(url)
    match = _API_PATH_RE.match(parts.path)
    if match is None:
        return ()
    repository = match.group(1)
    if method in ("GET", "HEAD"):
        return scopes_of(pull_scope(repository))
    sources = parse_qs(parts.query).get("from", []) if method == "POST" else []
    return scopes_of(push_scope(repository), *(pull_scope(s) for s in sources))


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
