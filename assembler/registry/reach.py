"""Hosts that cannot be reached at all, told apart from registries that fail (part of the
registry client, used by :mod:`assembler.registry.http`).

A 5xx, a dropped connection or a slow answer comes from a registry that is there: the
client retries it for ``--retries`` tries in a row. A host that has not answered yet in
this client (its first request, ``GET /v2/``, got nothing back) is another case:

- its name does not resolve (offline, a typo): given up at once;
- it refuses connections, there is no route to it, or it accepts connections and does
  not answer in ``ping_timeout`` seconds: given up after :data:`TRIES` tries in a row (a
  registry starting up gets them).

Either way the error is :class:`~assembler.errors.Unreachable`, naming the host and how,
so that a pull can go on to the next mirror and say what was tried.
"""

from __future__ import annotations

import errno
import socket

import requests
import urllib3

from assembler.errors import Unreachable

NO_NAME = "name does not resolve"
REFUSED = "connection refused"
TRIES = 3  # tries in a row at a host that refuses or never answers
_NO_ROUTE = {errno.ENETUNREACH: "network is unreachable", errno.EHOSTUNREACH: "no route to host"}


def why_unreachable(error: BaseException, *, timeout: float | None = None) -> str | None:
    """How ``error`` (raised by requests) says its host cannot be reached at all: its name
    does not resolve, it refuses, there is no route; with ``timeout`` (a first request's),
    it did not answer. None for any other failure."""
    chain = _chain(error)
    if any(isinstance(e, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for e in chain):
        return NO_NAME
    for e in chain:
        if isinstance(e, ConnectionRefusedError):
            return REFUSED
        if isinstance(e, OSError) and e.errno in _NO_ROUTE:
            return _NO_ROUTE[e.errno]
    # urllib3's NewConnectionError is a ConnectTimeoutError by descent, whatever the cause:
    # only requests' timeouts and the socket's are the host's silence.
    if timeout is not None and any(isinstance(e, (requests.Timeout, TimeoutError)) for e in chain):
        return f"no answer in {timeout:g} s"
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and every exception it wraps (causes, contexts, urllib3's reasons, args)."""
    seen: dict[int, BaseException] = {}
    stack = [error]
    while stack:
        e = stack.pop()
        if id(e) not in seen:
            seen[id(e)] = e
            linked = (e.__cause__, e.__context__, getattr(e, "reason", None), *e.args)
            stack += [x for x in linked if isinstance(x, BaseException)]
    return list(seen.values())


class Silence:
    """The failed tries in a row of one operation at a host that has not answered yet
    (``registry``: the client's registry, ``api``: the host serving its API)."""

    def __init__(self, registry: str, *, api: str, budget: int) -> None:
        self.registry = registry
        self.api = api
        self.limit = min(TRIES, budget)  # the client's own tries in a row may be fewer
        self.tries = 0

    def failed(self, what: str, why: str, *, host: str, cause: BaseException) -> None:
        """Count a try that could not reach ``host`` (``why``); raise Unreachable for
        ``what`` when the operation must give up: at once for a name that does not resolve."""
        self.tries += 1
        if why != NO_NAME and self.tries < self.limit:
            return
        shown = self.registry if host in ("", self.api) else host  # docker.io, not its API host
        counted = f", {self.tries} tries" if self.tries > 1 else ""
        raise Unreachable(
            f"{what}: cannot reach {shown} ({why}{counted})", registry=self.registry, host=shown, why=why
        ) from cause
