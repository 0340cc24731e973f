"""Downloads pinned by sha256 into the cache, and the pages of a Python package index.

A download streams into the cache's blob store, is refused beyond a size (the
``Content-Length`` a server announces, and the bytes that actually come), and is stored
only if its sha256 is the one pinned: a wrong or damaged file leaves nothing behind.
Connection errors and 5xx answers are retried under :data:`DOWNLOAD_RETRY` (the policy
of :mod:`retry`, on the ``clock`` a caller passes), which also measures the deadline.

Time is bounded as the registry client's is (:class:`NetworkLimits`, the CLI's
``--network-timeout`` and ``--network-deadline``): a try ends when the server sends no
byte for ``idle`` seconds, and a download, its retries included, ends ``deadline``
seconds after it started, plus a second per ``min_rate`` bytes it announces (or has
sent, when it announces no size), a day at most (``longest``: a Hub that announces a huge
size and trickles would otherwise hold a build for weeks); every read is held to that
(:mod:`assembler.registry.deadlines`), so a server that trickles is given up in time.

A URL may carry its credentials (an index's ``https://USER:TOKEN@host``, a presigned
query string): they are sent, and never said: every message and log line names the URL
:func:`~assembler.manifest.text.urls.redacted`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from assembler.cache import Cache
from assembler.errors import DigestMismatch, InputError, NotFound
from assembler.manifest.text.urls import redacted, scrubbed
from assembler.registry.retry import (
    DEADLINE_HINT,
    IDLE_HINT,
    SYSTEM_CLOCK,
    Attempts,
    Clock,
    Deadline,
    RetryPolicy,
    seconds,
)
from assembler.registry.types import NetworkLimits

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Mapping

    import requests  # imported where a request is made: a build that downloads nothing never loads it

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
# Three tries, waiting 0.5 s then 1 s: an index or a mirror answers at once or not today.
DOWNLOAD_RETRY = RetryPolicy(tries=3, max_tries=3, backoff=0.5, max_backoff=2.0)
DEFAULT_LIMITS = NetworkLimits()  # what a caller that passes none gets (the CLI's defaults)
TLS_HINT = (
    "the server's certificate is signed by a CA this machine does not trust: add it to the system's trust "
    "store (update-ca-certificates), or name it with --cert FILE"
)


def _get(
    url: str, *, what: str, retry: RetryPolicy, limits: NetworkLimits, deadline: Deadline, headers: dict[str, str]
) -> requests.Response:
    """GET with a few tries on connection errors and 5xx, under ``deadline`` (a stream,
    whose reads keep it: the caller closes it)."""
    import requests

    from assembler.registry import deadlines

    attempts = Attempts(retry)
    while True:
        try:
            with deadlines.session() as session, deadlines.within(deadline):
                timeout = (deadlines.connect_timeout(limits.idle), limits.idle)
                response = session.get(url, stream=True, timeout=timeout, headers=headers)
        except (requests.RequestException, TimeoutError) as e:
            if deadline.expired():
                raise _too_slow(url, what, deadline, "no complete answer") from e
            if attempts.failed():
                failure = _failure(url, e, limits)
                raise NotFound(f"{what}: cannot download {redacted(url)}: {failure}", hint=_hint(e)) from e
        else:
            if response.status_code < 500 or attempts.failed():
                if response.status_code == 404:
                    response.close()
                    raise NotFound(f"{what}: {redacted(url)}: 404 not found")
                if response.status_code >= 400:
                    response.close()
                    raise NotFound(f"{what}: {redacted(url)}: HTTP {response.status_code}")
                return response
            response.close()
        wait = attempts.wait()
        if wait >= deadline.remaining():
            raise _too_slow(url, what, deadline, "no complete answer")
        retry.clock.sleep(wait)


def _chunks(
    response: requests.Response, url: str, *, what: str, limits: NetworkLimits, deadline: Deadline, max_bytes: int
) -> Iterator[bytes]:
    """The body of ``response`` (at most ``max_bytes``, else InputError), its deadline
    moved to ``limits.deadline`` plus a second per ``limits.min_rate`` bytes of its announced size (or
    of what it has sent, when it announces none), never past ``limits.longest``. Raises NotFound when the server stops
    sending or is too slow."""
    import requests

    from assembler.registry import deadlines

    announced = int(response.headers.get("Content-Length") or 0)
    deadline.allow(limits.allowed(announced))
    got = 0
    try:
        # As it arrives (not in whole chunks of _CHUNK): what a trickle did send is counted.
        for chunk in deadlines.arriving(response, _CHUNK, decode=True):
            got += len(chunk)
            if got > max_bytes:
                raise InputError(f"{what}: {redacted(url)} sends more than the {max_bytes} bytes allowed")
            deadline.allow(limits.allowed(max(announced, got)))
            if deadline.expired():
                raise _too_slow(url, what, deadline, f"{got} bytes arrived")
            yield chunk
    except requests.RequestException as e:
        if deadline.expired():
            raise _too_slow(url, what, deadline, f"{got} bytes arrived") from e
        raise NotFound(f"{what}: downloading {redacted(url)}: {_failure(url, e, limits)}", hint=_hint(e)) from e


def _too_slow(url: str, what: str, deadline: Deadline, detail: str) -> NotFound:
    return NotFound(
        f"{what}: {_host(url)} too slow: {redacted(url)} not finished in {seconds(deadline.seconds)} s ({detail})",
        hint=DEADLINE_HINT,
    )


def _failure(url: str, error: Exception, limits: NetworkLimits) -> str:
    from assembler.registry import deadlines

    if deadlines.timed_out(error):
        return f"no byte from {_host(url)} for {seconds(limits.idle)} s"
    return scrubbed(str(error))  # requests names the URL it asked, credentials and all


def _hint(error: Exception) -> str | None:
    from assembler.registry import deadlines

    if "CERTIFICATE_VERIFY_FAILED" in str(error):
        return TLS_HINT
    return IDLE_HINT if deadlines.timed_out(error) else None


def _host(url: str) -> str:
    """``host[:port]`` of ``url``, as a message names it (no credentials)."""
    return urlsplit(redacted(url)).netloc


def download(
    url: str,
    *,
    sha256: str | None,
    cache: Cache,
    max_bytes: int,
    what: str,
    cap_hint: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
    limits: NetworkLimits = DEFAULT_LIMITS,
    headers: Mapping[str, str] | None = None,
) -> str:
    """The blob ``sha256:HEX`` of ``url``: from the cache, else downloaded (at most
    ``max_bytes``, under ``limits``, sending ``headers``) and stored only when its sha256
    matches (None: a file no one pinned, stored under the sha256 it has); retries wait on
    ``clock``. Returns its digest.

    Raises InputError when the file is not the one pinned or is too big, NotFound when it
    cannot be downloaded (nothing sent for ``limits.idle`` s, or not all of it in time)."""
    digest = "sha256:" + sha256 if sha256 is not None else None
    if digest is not None and cache.has_blob(digest):
        cache.mark_used(cache.blob_path(digest))
        return digest
    log.info("%s: downloading %s", what, redacted(url))
    retry = replace(DOWNLOAD_RETRY, clock=clock)
    deadline = Deadline(limits.deadline, clock=clock)
    sent = dict(headers or {})
    with _get(url, what=what, retry=retry, limits=limits, deadline=deadline, headers=sent) as response:
        announced = int(response.headers.get("Content-Length") or 0)
        if announced > max_bytes:
            raise InputError(
                f"{what}: {redacted(url)} is {announced} bytes, more than the {max_bytes} allowed", hint=cap_hint
            )
        try:
            with cache.blob_writer(expected=digest) as w:
                for chunk in _chunks(response, url, what=what, limits=limits, deadline=deadline, max_bytes=max_bytes):
                    w.write(chunk)
        except DigestMismatch as e:
            raise InputError(
                f"{what}: {redacted(url)} has sha256 {e.actual.removeprefix('sha256:')}, the manifest pins {sha256}",
                hint="nothing was stored; check the pinned sha256 (or the file changed upstream)",
            ) from None
    return w.digest


def fetch_answer(
    url: str,
    *,
    headers: Mapping[str, str],
    what: str,
    max_bytes: int = 64 << 20,
    clock: Clock = SYSTEM_CLOCK,
    limits: NetworkLimits = DEFAULT_LIMITS,
) -> tuple[Mapping[str, str], bytes]:
    """The headers and body of a GET of ``url`` (an API's answer: bounded in size, and in
    time by ``limits``); retries wait on ``clock``. Raises InputError when it is too big,
    NotFound when it cannot be read."""
    retry = replace(DOWNLOAD_RETRY, clock=clock)
    deadline = Deadline(limits.deadline, clock=clock)
    with _get(url, what=what, retry=retry, limits=limits, deadline=deadline, headers=dict(headers)) as response:
        body = bytearray()
        for chunk in _chunks(response, url, what=what, limits=limits, deadline=deadline, max_bytes=max_bytes):
            body += chunk
        return dict(response.headers), bytes(body)


def fetch_page(
    url: str,
    *,
    accept: str,
    what: str,
    max_bytes: int = 64 << 20,
    clock: Clock = SYSTEM_CLOCK,
    limits: NetworkLimits = DEFAULT_LIMITS,
) -> tuple[str, bytes]:
    """The content type and body of an index page (bounded in size, and in time by
    ``limits``); retries wait on ``clock``. Raises InputError when it is too big, NotFound
    when it cannot be read."""
    retry = replace(DOWNLOAD_RETRY, clock=clock)
    deadline = Deadline(limits.deadline, clock=clock)
    with _get(url, what=what, retry=retry, limits=limits, deadline=deadline, headers={"Accept": accept}) as response:
        body = bytearray()
        for chunk in _chunks(response, url, what=what, limits=limits, deadline=deadline, max_bytes=max_bytes):
            body += chunk
        return response.headers.get("Content-Type", ""), bytes(body)


_PROBE_TIMEOUT = (5, 15)
_PROBE_DEADLINE = 20.0  # headers trickled or not: an index answers in this, else it is taken as down
_reachable: dict[str, str | None] = {}
_reachable_lock = threading.Lock()


def unreachable(index: str) -> str | None:
    """Why ``index`` (a package index, a registry's or a git host's URL) cannot be reached from
    here (None: it answers): asked once a process, in seconds, before a client that retries
    for minutes (uv, git, the registry client) is started."""
    import requests

    from assembler.registry import deadlines

    with _reachable_lock:
        if index in _reachable:
            return _reachable[index]
    why: str | None = None
    if not index.startswith("file://"):
        try:
            with (
                deadlines.session() as session,
                deadlines.within(Deadline(_PROBE_DEADLINE)),
                session.head(index.rstrip("/") + "/", timeout=_PROBE_TIMEOUT, allow_redirects=True) as r,
            ):
                if r.status_code >= 500:
                    why = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            why = _short(e)
    with _reachable_lock:
        _reachable[index] = why
    return why


def _short(error: Exception) -> str:
    text = str(error)
    for marker in (
        "Name or service not known",
        "No address associated with hostname",
        "Temporary failure in name resolution",
        "Connection refused",
        "timed out",
        "Network is unreachable",
    ):
        if marker in text:
            return marker.lower()
    return scrubbed(text)[:200]


def probe(urls: Collection[str], *, seconds: float, untraced: Collection[str] = ()) -> dict[str, str | None]:
    """Why each of ``urls`` (``scheme://host[:port]/``) does not answer (None: it does), all
    asked at once, one request each: HTTP(S) a HEAD through the sessions every download
    uses (their proxies and trust store; any answer counts, an error status too), another
    scheme (ssh, git) a TCP connection. All within ``seconds``: a host silent until then
    did not answer (its thread is left behind, a daemon). Those of ``untraced`` are asked
    as housekeeping (:mod:`assembler.trace`): an output's registry, which is no input of the
    build and which an up-to-date replay asks again itself."""
    from assembler.trace import housekeeping

    found: dict[str, str | None] = {}
    lock = threading.Lock()

    def one(url: str) -> None:
        with housekeeping() if url in untraced else contextlib.nullcontext():
            why = _probe_one(url, seconds)
        with lock:
            found[url] = why

    threads = [threading.Thread(target=one, args=(url,), daemon=True, name=f"probe {url}") for url in set(urls)]
    for thread in threads:
        thread.start()
    end = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    with lock:
        return {url: found.get(url, f"no answer in {seconds:g} s") for url in urls}


_DEFAULT_PORTS = {"ssh": 22, "git": 9418, "http": 80, "https": 443}


def _probe_one(url: str, seconds: float) -> str | None:
    import requests

    from assembler.registry import deadlines

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        try:
            socket.create_connection(
                (parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme]), seconds
            ).close()
        except OSError as e:
            return _short(e)
        return None
    try:
        with deadlines.session() as session:
            session.head(url, timeout=(seconds, seconds), allow_redirects=False).close()
    except requests.exceptions.SSLError as e:
        detail = re.search(r"certificate verify failed: ([^(]*)", str(e))
        return f"its TLS certificate is not trusted here ({detail.group(1).strip() if detail else _short(e)})"
    except requests.exceptions.ReadTimeout:
        return None  # connected: it is there, only slow to answer a HEAD
    except requests.RequestException as e:
        return _short(e)
    return None
