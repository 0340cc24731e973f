"""How one registry host wants to be authenticated, learnt once (``GET /v2/``), and the
credentials and tokens it takes: basic credentials, a bearer token per scope from its
token server (an identity token exchanged as an OAuth2 refresh token, else a GET with
basic credentials or none), a 401 turned into one more try with a fresh token or into an
error that says how to log in. Its requests go through the client's one raw request
(:meth:`assembler.registry.http.RegistryClient._raw`), under the client's deadlines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urljoin

import requests
import urllib3

from assembler.errors import RegistryError
from assembler.registry.auth import Challenge, Scopes, TokenCache, pick_challenge
from assembler.registry.failures import ERROR_BODY_LIMIT, RETRY_STATUSES, Transient, describe, read_failed
from assembler.registry.login import Credentials, Login
from assembler.registry.types import RegistryOptions

log = logging.getLogger(__name__)

Raw = Callable[..., requests.Response]
"""One request: ``raw(method, url, *, first=False, **kwargs)``."""


class HostAuth:
    """The authentication of requests to ``host`` (API at ``base``), its requests made by ``raw``."""

    def __init__(self, host: str, base: str, login: Login, raw: Raw, options: RegistryOptions) -> None:
        self.host = host
        self.base = base
        self.login = login
        self.raw = raw
        self.options = options
        self._challenge: Challenge | None = None
        self._pinged = False
        self._tokens = TokenCache()

    @property
    def credentials(self) -> Credentials | None:
        return self.login.credentials

    @property
    def answered(self) -> bool:
        """Whether the host answered its first request (``GET /v2/``)."""
        return self._pinged

    def _ping(self) -> None:
        """Learn how the registry wants to be authenticated (``GET /v2/``), once."""
        if self._pinged:
            return
        response = self.raw("GET", urljoin(self.base + "/", "/v2/"), first=True)
        with response:
            if response.status_code in (200, 401):
                try:
                    response.raw.read(ERROR_BODY_LIMIT)  # a read-out connection goes back to the pool
                except (urllib3.exceptions.HTTPError, OSError) as e:
                    raise read_failed(e, host=self.host, idle=self.options.ping_timeout) from e
            if response.status_code == 401:
                self._challenge = pick_challenge(response.headers.get("WWW-Authenticate", ""))
            elif response.status_code in RETRY_STATUSES:
                raise Transient(describe(response), status=response.status_code, retry_after=None)
        self._pinged = True

    def _token_request(self, realm: str, challenge: Challenge, scopes: Scopes) -> requests.Response:
        """Ask the token server: an OAuth2 refresh-token exchange with an identity token,
        else a GET with basic credentials (or none, for an anonymous token)."""
        headers = {"Accept": "application/json"}
        credentials = self.credentials
        if credentials is not None and credentials.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "client_id": "assemble",
                "scope": " ".join(scopes),
            }
            if challenge.service:
                form["service"] = challenge.service
            return self.raw("POST", realm, data=form, headers=headers)
        params: list[tuple[str, str]] = [("service", challenge.service)] if challenge.service else []
        params += [("scope", s) for s in scopes]
        if credentials is not None:
            headers["Authorization"] = credentials.basic()
        return self.raw("GET", realm, params=params, headers=headers)

    def _fetch_token(self, challenge: Challenge, scopes: Scopes) -> str:
        realm = urljoin(self.base + "/", challenge.realm)
        response = self._token_request(realm, challenge, scopes)
        with response:
            if response.status_code in RETRY_STATUSES:
                raise Transient(f"token server {realm}: {describe(response)}", status=response.status_code)
            if response.status_code != 200:
                raise RegistryError(
                    f"{self.host}: token server {realm} refused {' '.join(scopes) or 'a token'}: {describe(response)}",
                    registry=self.host,
                    status=response.status_code,
                    hint=login_hint(self.host, self.credentials),
                )
            try:
                token = self._tokens.put(scopes, response.json())
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                raise read_failed(e, host=self.host, idle=self.options.timeout) from e
            except ValueError:
                token = None
        if token is None:
            raise RegistryError(f"{self.host}: token server {realm} answered no token", registry=self.host)
        log.debug("%s: bearer token for %s", self.host, scopes)
        return token

    def authorization(self, scopes: Scopes) -> str | None:
        """The ``Authorization`` value for a request needing ``scopes`` (fetching a token)."""
        self._ping()
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self.credentials.basic() if self.credentials is not None else None
        token = self._tokens.get(scopes) or self._fetch_token(challenge, scopes)
        return f"Bearer {token}"

    def unauthorized(self, response: requests.Response, scopes: Scopes, sent: str | None, what: str) -> Transient:
        """Handle a 401: a Transient (re-authenticate, try again) or a RegistryError."""
        challenge = pick_challenge(response.headers.get("WWW-Authenticate", ""))
        self._tokens.drop(scopes)
        retry = challenge is not None and (
            challenge.scheme == "bearer" or (self.credentials is not None and sent is None)
        )
        if challenge is not None:
            self._challenge = challenge
        if retry:
            return Transient(describe(response), status=401, reauth=True)
        raise RegistryError(
            f"{what}: {describe(response)}",
            registry=self.host,
            status=401,
            hint=login_hint(self.host, self.credentials),
        )


def login_hint(host: str, credentials: Credentials | None) -> str:
    if credentials is None:
        return f"log in first (skopeo login {host}), or pass --authfile"
    return f"check the credentials for {host} in {credentials.where()}"
