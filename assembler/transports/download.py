"""Downloads pinned by sha256 into the cache, and the pages of a Python package index.

A download streams into the cache's blob store, is refused beyond a size (the
``Content-Length`` a server announces, and the bytes that actually come), and is stored
only if its sha256 is the one pinned: a wrong or damaged file leaves nothing behind.
Connection errors and 5xx answers are retried under :data:`DOWNLOAD_RETRY` (the policy
of :mod:`retry`, on the ``clock`` a caller passes), which also measures the deadline.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from assembler.cache import Cache
from assembler.errors import DigestMismatch, InputError, NotFound
from assembler.registry.retry import SYSTEM_CLOCK, Attempts, Clock, RetryPolicy

if TYPE_CHECKING:
    import requests  # imported where a request is made: a build that downloads nothing never loads it

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
# Three tries, waiting 0.5 s then 1 s: an index or a mirror answers at once or not today.
DOWNLOAD_RETRY = RetryPolicy(tries=3, max_tries=3, backoff=0.5, max_backoff=2.0)
_TIMEOUT = (30, 300)  # connect, read (per chunk): a stalled server is given up, a slow one is not
# A whole-download deadline besides: per-read timeouts alone let a trickle go on forever.
_DEADLINE_BASE = 300.0  # seconds
_MIN_RATE = 256 << 10  # bytes per second, below which a download of known size is given up


def _get(url: str, *, what: str, retry: RetryPolicy, headers: dict[str, str] | None = None) -> requests.Response:
    """GET with a few tries on connection errors and 5xx (a stream: the caller closes it)."""
    import requests

    attempts = Attempts(retry)
    while True:
        try:
            response = requests.get(url, stream=True, timeout=_TIMEOUT, headers=headers or {})
        except requests.RequestException as e:
            if attempts.failed():
                raise NotFound(f"{what}: cannot download {url}: {e}") from e
        else:
            if response.status_code < 500 or attempts.failed():
                if response.status_code == 404:
                    response.close()
                    raise NotFound(f"{what}: {url}: 404 not found")
                if response.status_code >= 400:
                    response.close()
                    raise NotFound(f"{what}: {url}: HTTP {response.status_code}")
                return response
            response.close()
        retry.clock.sleep(attempts.wait())


def download(
    url: str,
    *,
    sha256: str,
    cache: Cache,
    max_bytes: int,
    what: str,
    cap_hint: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    """The blob ``sha256:HEX`` of ``url``: from the cache, else downloaded (at most
    ``max_bytes``) and stored only when its sha256 matches; retries wait on ``clock``.
    Returns its digest.

    Raises InputError when the file is not the one pinned or is too big, NotFound when it
    cannot be downloaded."""
    import requests

    digest = "sha256:" + sha256
    if cache.has_blob(digest):
        cache.mark_used(cache.blob_path(digest))
        return digest
    log.info("%s: downloading %s", what, url)
    retry = replace(DOWNLOAD_RETRY, clock=clock)
    with _get(url, what=what, retry=retry) as response:
        announced = int(response.headers.get("Content-Length") or 0)
        if announced > max_bytes:
            raise InputError(f"{what}: {url} is {announced} bytes, more than the {max_bytes} allowed", hint=cap_hint)
        budget = _DEADLINE_BASE + (announced or max_bytes) / _MIN_RATE
        deadline = clock.monotonic() + budget
        try:
            with cache.blob_writer(expected=digest) as w:
                got = 0
                for chunk in response.iter_content(_CHUNK):
                    got += len(chunk)
                    if got > max_bytes:
                        raise InputError(f"{what}: {url} sends more than the {max_bytes} bytes allowed")
                    if clock.monotonic() > deadline:
                        raise NotFound(f"{what}: {url}: only {got} bytes in {budget:.0f} s, too slow: given up")
                    w.write(chunk)
        except DigestMismatch as e:
            raise InputError(
                f"{what}: {url} has sha256 {e.actual.removeprefix('sha256:')}, the manifest pins {sha256}",
                hint="nothing was stored; check the pinned sha256 (or the file changed upstream)",
            ) from None
        except requests.RequestException as e:
            raise NotFound(f"{what}: downloading {url}: {e}") from e
    return digest


def fetch_page(
    url: str, *, accept: str, what: str, max_bytes: int = 64 << 20, clock: Clock = SYSTEM_CLOCK
) -> tuple[str, bytes]:
    """The content type and body of an index page (bounded); retries wait on ``clock``."""
    import requests

    retry = replace(DOWNLOAD_RETRY, clock=clock)
    with _get(url, what=what, retry=retry, headers={"Accept": accept}) as response:
        body = bytearray()
        try:
            for chunk in response.iter_content(_CHUNK):
                body += chunk
                if len(body) > max_bytes:
                    raise InputError(f"{what}: {url} is bigger than {max_bytes} bytes")
        except requests.RequestException as e:
            raise NotFound(f"{what}: reading {url}: {e}") from e
        return response.headers.get("Content-Type", ""), bytes(body)


_PROBE_TIMEOUT = (5, 15)
_reachable: dict[str, str | None] = {}
_reachable_lock = threading.Lock()


def unreachable(index: str) -> str | None:
    """Why ``index`` (a package index, a registry's or a git host's URL) cannot be reached from
    here (None: it answers): asked once a process, in seconds, before a client that retries
    for minutes (uv, git, the registry client) is started."""
    import requests

    with _reachable_lock:
        if index in _reachable:
            return _reachable[index]
    why: str | None = None
    if not index.startswith("file://"):
        try:
            with requests.head(index.rstrip("/") + "/", timeout=_PROBE_TIMEOUT, allow_redirects=True) as r:
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
        "Temporary failure in name resolution",
        "Connection refused",
        "timed out",
        "Network is unreachable",
    ):
        if marker in text:
            return marker.lower()
    return text[:200]
