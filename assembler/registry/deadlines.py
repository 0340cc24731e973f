"""Every socket read of an operation held to its deadline (the registry client's and pinned
downloads' sessions).

requests' read timeout bounds one ``recv``: a peer that sends a byte every few seconds never
trips it, and a body read in one call (``response.content``, a manifest) or a header
section read line by line goes on for as long as the peer likes. Here the sessions of
:func:`session` read every response (status line, headers, body) through
:class:`_BoundedReads`, which before each ``recv`` sets the socket's timeout to the idle
timeout requests was given or to what is left of the operation's :class:`Deadline`,
whichever is shorter, and refuses to read once it has passed. The operation's deadline is
the one :func:`within` set in the thread when the response arrived (none: requests' own
timeouts only), so a blob that streams long after its request keeps the deadline it was
asked under. A read past the deadline fails as a socket timeout does (requests'
``ReadTimeout`` or ``ConnectionError``); the owner of the deadline tells the two apart
with :meth:`Deadline.expired` and says which limit was hit (:func:`timed_out`).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool

from assembler.registry import trust
from assembler.registry.retry import Deadline

_CURRENT: ContextVar[Deadline | None] = ContextVar("assembler_network_deadline", default=None)


@contextlib.contextmanager
def within(deadline: Deadline) -> Iterator[Deadline]:
    """Responses that arrive in this thread during the block are read under ``deadline``."""
    token = _CURRENT.set(deadline)
    try:
        yield deadline
    finally:
        _CURRENT.reset(token)


def connect_timeout(seconds: float) -> float:
    """``seconds``, or less when the current operation's deadline is nearer; raises
    TimeoutError when it has passed (before a request is sent at all)."""
    deadline = _CURRENT.get()
    if deadline is None:
        return seconds
    left = deadline.remaining()
    if left <= 0:
        raise TimeoutError("the operation's deadline has passed")
    return min(seconds, left)


def arriving(response: requests.Response, size: int, *, decode: bool) -> Iterator[bytes]:
    """The body as it arrives, at most ``size`` bytes at a time (one receive each, so what
    came before a read fails is counted, and a caller checks between receives), read
    errors as requests' own (``ConnectionError``); ``decode``: undo a Content-Encoding."""
    raw = response.raw
    while True:
        try:
            chunk = raw.read1(size, decode_content=decode)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise requests.ConnectionError(str(e)) from e
        if not chunk:
            return
        yield chunk


def timed_out(error: BaseException) -> bool:
    """Whether ``error`` (from requests or urllib3) is a socket read or connect that timed out."""
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
            return True
        linked = (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
        stack += [x for x in linked if isinstance(x, BaseException)]
    return False


class _BoundedReads(io.RawIOBase):
    """A socket's reads, each under ``idle`` seconds and what is left of ``deadline``."""

    def __init__(self, sock: socket.socket, *, idle: float | None, deadline: Deadline) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # counted by the socket, as http.client's own file
        self._idle = idle
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline.remaining()
        if left <= 0:
            raise TimeoutError("the operation's deadline has passed")
        self._sock.settimeout(left if self._idle is None else min(self._idle, left))
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """http.client's response, read through :class:`_BoundedReads` when an operation's
    deadline is set (urllib3 set the socket's timeout to requests' read timeout just before)."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None):
        super().__init__(sock, debuglevel, method, url)
        deadline = _CURRENT.get()
        if deadline is not None:
            self.fp.close()
            self.fp = io.BufferedReader(_BoundedReads(sock, idle=sock.gettimeout(), deadline=deadline))


class _Connection(urllib3.connection.HTTPConnection):
    response_class = _Response


class _TLSConnection(urllib3.connection.HTTPSConnection):
    response_class = _Response


# urllib3's names, which its messages show ("HTTPConnectionPool(host=...): Read timed out.").
class HTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _Connection


class HTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": HTTPConnectionPool, "https": HTTPSConnectionPool}


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, its connections' responses read through :class:`_BoundedReads`,
    a verified one trusting what :func:`assembler.registry.trust.context` trusts (the
    system's store, not certifi's bundle)."""

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[Any, Any]:  # requests' stubs name private TypedDicts
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        if verify is not False and host.get("scheme") == "https":
            # verify names REQUESTS_CA_BUNDLE's file where it is set: the context holds it.
            pool.pop("ca_certs", None)
            pool.pop("ca_cert_dir", None)
            pool["ssl_context"] = trust.context()
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        if verify is not False and url.lower().startswith("https"):
            conn.ca_certs = conn.ca_cert_dir = None  # not certifi's: the context's trust alone

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS has pools of its own
            manager.pool_classes_by_scheme = _POOLS
        return manager


def session() -> requests.Session:
    """A requests session whose reads keep the deadline of the operation they belong to."""
    s = requests.Session()
    s.mount("http://", _Adapter())
    s.mount("https://", _Adapter())
    return s
