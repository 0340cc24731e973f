"""Requests to one registry host: credentials, tokens, retries (the registry client's base).

oras-py's ``do_request`` retries only on a dropped connection or HTTP 500 (sleeping
``2 + 3**n`` s), re-sends one bearer token whatever scope a request needs, misreads
``Basic realm=`` and cannot use identity tokens; every request here goes through
:meth:`RegistryClient.request` instead, with the credentials of :class:`login.Login` and
the tokens of :mod:`auth`. The session refuses cookies, as oras-py's does (Harbor takes a
client that keeps them for a browser).

A request is one *attempt* (:meth:`RegistryClient.send`); :meth:`RegistryClient.retrying` repeats
an attempt function on connection errors, timeouts, 429 and 5xx gateway errors, honouring
``Retry-After``, with exponential backoff. An attempt function may span several requests
(a whole blob upload), so a connection dropped in the middle of an upload restarts that
upload from its beginning, on a fresh session.

The retry budget counts failures *without progress*: ``options.retries`` tries in a row
with no request of this client getting through. A registry that is down fails that many
tries in a row and is reported within seconds (about 15 s with the defaults); a flaky one
(a proxy failing 30% of requests) answers between failures, which resets the count and
the backoff, so a push of many requests survives it. A bound on all tries stops an
operation that progresses but never completes (every upload's POST works, its PUT never).
A host that never answered and cannot be reached at all is given up on sooner (:mod:`reach`);
one that registries.conf marks ``insecure`` is spoken to over plain HTTP (a pull source's
own setting, else its host's table: :meth:`conf.RegistriesConf.insecure`).
Waits, counts and the clock are :func:`retry.registry_policy` (:attr:`RegistryClient.retry`).

Time is bounded twice: a try ends when the registry sends no byte for ``options.timeout``
seconds (``--network-timeout``), and a whole operation, its retries included, ends
``options.deadline`` seconds after it started (``--network-deadline``; a blob gets more
per byte): every read of it, headers and body, is held to that (:mod:`deadlines`), so a
registry that trickles or goes silent is reported in that time, naming itself, what was
slow and the flag that raises the limit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any, TypeVar
from urllib.parse import unquote_plus, urlencode, urljoin, urlsplit, urlunsplit

import requests

from assembler.errors import InputError, NotFound, RegistryError
from assembler.proc import Runner
from assembler.registry import deadlines, reach
from assembler.registry.auth import scopes_for
from assembler.registry.failures import (
    RETRY_STATUSES,
    Transient,
    describe,
    read_failed,
    retry_after,
    short,
    too_slow,
    tried,
)
from assembler.registry.hostauth import HostAuth, login_hint
from assembler.registry.login import Credentials, Login
from assembler.registry.retry import (
    IDLE_HINT,
    SYSTEM_CLOCK,
    Attempts,
    Clock,
    Deadline,
    registry_policy,
    seconds,
)
from assembler.registry.types import RegistryOptions

log = logging.getLogger(__name__)
T = TypeVar("T")

# Re-authentication (a fresh token, basic credentials) is free, but only this often per operation.
_MAX_REAUTH = 2


@dataclass
class TransferStats:
    """What a client did, counted as it went (for reports and tests)."""

    requests: int = 0
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    mounted_blobs: int = 0
    skipped_blobs: int = 0
    downloaded_bytes: int = 0


def api_host(host: str) -> str:
    """The host that serves a registry's API (Docker Hub's name is not its API host)."""
    return "registry-1.docker.io" if host in ("docker.io", "index.docker.io") else host


def new_session() -> requests.Session:
    """A session that keeps no cookies (some registries, Harbor, take one that does for a
    browser and start asking for CSRF tokens), whose reads keep their operation's deadline."""
    session = deadlines.session()
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


class RegistryClient:
    """Requests to one registry host with its credentials, tokens and retry policy."""

    def __init__(
        self,
        host: str,
        *,
        options: RegistryOptions,
        stats: TransferStats | None = None,
        runner: Runner | None = None,
        clock: Clock = SYSTEM_CLOCK,
        insecure: bool | None = None,
    ) -> None:
        """``insecure``: whether registries.conf marks this endpoint insecure, where the
        caller knows it (a pull source: its mirror's or location's own setting); None
        asks registries.conf about ``host`` (the setting of the host's own table)."""
        self.host = host
        self.session = new_session()
        self.options = options
        self.stats = stats if stats is not None else TransferStats()
        self.retry = registry_policy(options, clock=clock)
        self.answers = 0  # requests that got the answer they wanted: progress, for the retry budget
        self.login = Login(host, auth_file=options.auth_file, runner=runner or Runner())
        # TLS verification is passed per request; tls_verify=False means plain HTTP.
        if insecure is None:
            insecure = options.conf.insecure(host)
        self.tls = options.tls_verify and not insecure
        self.base = f"{'https' if self.tls else 'http'}://{api_host(host)}"
        # How the host wants to be authenticated, and the tokens it gave (its own requests: ours).
        self.auth = HostAuth(host, self.base, self.login, self._raw, options)

    def renew_session(self) -> None:
        """Drop every pooled connection (after one broke) and start a fresh session."""
        old = self.session
        self.session = new_session()
        old.close()

    def close(self) -> None:
        self.session.close()

    def url(self, path_or_url: str, **params: str) -> str:
        """An absolute URL for an API path or a (possibly relative) ``Location``, with
        ``params`` added to its query in place of any of the same name."""
        url = urljoin(self.base + "/", path_or_url)
        if not params:
            return url
        # The registry's own parameters (an upload's ``_state``) go back byte for byte.
        parts = urlsplit(url)
        kept = [p for p in parts.query.split("&") if p and unquote_plus(p.partition("=")[0]) not in params]
        return urlunsplit(parts._replace(query="&".join([*kept, urlencode(params)])))

    @property
    def credentials(self) -> Credentials | None:
        return self.login.credentials

    def _raw(self, method: str, url: str, *, first: bool = False, **kwargs: Any) -> requests.Response:
        """One request (``first``: the host's first, under ``ping_timeout``)."""
        self.stats.requests += 1
        idle = self.options.ping_timeout if first else self.options.timeout
        try:
            connect = deadlines.connect_timeout(idle)
        except TimeoutError as e:
            raise Transient("no time left for another request", host=urlsplit(url).netloc) from e
        try:
            # Always streamed: a body is read only when wanted, and error bodies only in part.
            # Each read waits at most ``idle`` s, and never past the operation's deadline.
            response: requests.Response = self.session.request(
                method, url, timeout=(connect, idle), verify=self.tls, stream=True, **kwargs
            )
            return response
        except requests.TooManyRedirects as e:
            raise InputError(
                f"{self.host}: {method} {url} redirects in a loop ({short(e)})",
                hint="check the registry's address; it does not serve the registry API there",
            ) from e
        except requests.exceptions.SSLError as e:
            raise RegistryError(
                f"{self.host}: TLS failed ({e})",
                registry=self.host,
                hint="for a plain-HTTP registry (e.g. on loopback) use --tls-verify=false",
            ) from e
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            why = reach.why_unreachable(e, timeout=idle if first else None)
            host = urlsplit(url).netloc
            if deadlines.timed_out(e):  # no connection, or no answer, in time
                raise Transient(
                    f"no byte from {host} for {seconds(idle)} s", unreachable=why, host=host, silent=idle
                ) from e
            raise Transient(f"{type(e).__name__}: {short(e)}", unreachable=why, host=host) from e

    # -- requests ----------------------------------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        ok: Collection[int] | None = (200,),
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
        allow_redirects: bool = True,
    ) -> requests.Response:
        """One attempt. Returns a response whose status is in ``ok`` (``None``: any answer
        but 401 and the ones worth retrying). The scopes it needs follow from ``url``.

        Raises Transient (worth another attempt), NotFound (404 not in ``ok``) or
        RegistryError (any other answer).
        """
        scopes = scopes_for(method, url)
        sent_headers = dict(headers or {})
        auth = self.auth.authorization(scopes)
        if auth is not None:
            sent_headers["Authorization"] = auth
        response = self._raw(method, url, headers=sent_headers, data=data, allow_redirects=allow_redirects)
        status = response.status_code
        if status in ok if ok is not None else status != 401 and status not in RETRY_STATUSES:
            if not stream:
                try:
                    _ = response.content  # read now, so the connection goes back to the pool
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                    raise read_failed(e, host=self.host, idle=self.options.timeout) from e
            self.answers += 1
            return response
        with response:
            if status == 401:
                raise self.auth.unauthorized(response, scopes, auth, what)
            if status in RETRY_STATUSES:
                delay = retry_after(response, self.options.max_retry_after)
                raise Transient(describe(response), status=status, retry_after=delay)
            if status == 404:
                raise NotFound(f"{what}: {describe(response)}")
            raise RegistryError(f"{what}: {describe(response)}", registry=self.host, status=status)

    def deadline(self, size: int = 0) -> Deadline:
        """The deadline of an operation starting now that moves ``size`` bytes of a blob:
        ``options.deadline`` seconds, plus one per ``options.min_rate`` bytes, at most
        ``options.longest`` (:meth:`RegistryOptions.allowed`)."""
        return Deadline(self.options.allowed(size), clock=self.retry.clock)

    def retrying(self, what: str, attempt: Callable[[], T], *, deadline: Deadline | None = None, size: int = 0) -> T:
        """Run ``attempt`` until it returns; give up after ``options.retries`` failed tries
        in a row without progress (see the module docstring), or when ``deadline`` (else
        :meth:`deadline` for ``size`` bytes, from now) passes: every read of every try is
        held to it, and no wait goes past it.

        Raises RegistryError naming ``what``, the last status or error and the number of tries.
        """
        deadline = deadline if deadline is not None else self.deadline(size)
        attempts = Attempts(self.retry)
        reauths = 0
        silence = reach.Silence(self.host, api=api_host(self.host), budget=self.retry.tries)
        answers = self.answers
        while True:
            try:
                with deadlines.within(deadline):
                    return attempt()
            except Transient as e:
                if e.reauth and reauths < _MAX_REAUTH:
                    reauths += 1
                    continue
                if deadline.expired():  # it cut this try short: the try's own reason would mislead
                    last = None if e.silent else e.reason
                    raise too_slow(what, self.host, deadline, tried(attempts.tries + 1, last)) from e
                if e.unreachable is not None and not self.auth.answered:  # a host that never answered
                    silence.failed(what, e.unreachable, host=e.host, cause=e)
                # A request of this attempt got through: the registry works, start over.
                progress, answers = self.answers != answers, self.answers
                if attempts.failed(progress=progress) or e.reauth:
                    tries = attempts.tries
                    hint = IDLE_HINT if e.silent is not None else None
                    raise RegistryError(
                        f"{what}: {e.reason} after {tries} {'try' if tries == 1 else 'tries'}",
                        registry=self.host,
                        status=e.status,
                        hint=hint if e.status != 401 else login_hint(self.host, self.credentials),
                    ) from e
                wait = attempts.wait(e.retry_after)
                if wait >= deadline.remaining():  # the next try could not finish in time
                    raise too_slow(what, self.host, deadline, tried(attempts.tries, e.reason)) from e
                shown = (silence.tries, silence.limit) if silence.tries else (attempts.streak, self.retry.tries)
                log.warning("%s: %s; trying again in %.1f s (%d of %d)", what, e.reason, wait, *shown)
                if e.status is None:
                    self.renew_session()
                self.retry.clock.sleep(wait)

    def request(self, method: str, url: str, *, what: str, **kwargs: Any) -> requests.Response:
        """:meth:`send` with retries (for requests whose body, if any, is bytes)."""
        return self.retrying(what, lambda: self.send(method, url, what=what, **kwargs))
