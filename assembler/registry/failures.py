"""How one attempt of the registry client fails (part of the registry client, used by
:mod:`assembler.registry.http` and the parts that read and write through it).

A :class:`Transient` failure may not happen again: a dropped connection, a read that
timed out, an answer in :data:`RETRY_STATUSES` (with the server's ``Retry-After``); the
client tries again, within its budget and its deadline. :func:`read_failed` is the
Transient of a body read that failed, saying when the peer sent nothing for the idle
timeout; :func:`describe` the text of an error answer, from its status and a bounded
part of its body; :func:`too_slow` the error of an operation its deadline ended.
"""

from __future__ import annotations

import email.utils
import json
import time
from http import HTTPStatus

import requests

from assembler.errors import RegistryError
from assembler.registry import deadlines
from assembler.registry.retry import DEADLINE_HINT, Deadline, seconds

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
ERROR_BODY_LIMIT = 64 << 10  # what is read of an error answer's body


class Transient(Exception):
    """One attempt failed in a way that a later attempt may not (internal to the client)."""

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        reauth: bool = False,
        unreachable: str | None = None,
        host: str = "",
        silent: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        self.reauth = reauth
        self.unreachable = unreachable  # how ``host`` cannot be reached at all (reach.why_unreachable)
        self.host = host
        self.silent = silent  # the idle timeout, when the try ended because nothing came for that long


def read_failed(error: Exception, *, host: str, idle: float) -> Transient:
    """The Transient of a read from ``host`` that failed (``idle``: the read timeout it was under)."""
    if deadlines.timed_out(error):
        return Transient(f"no byte from {host} for {seconds(idle)} s", host=host, silent=idle)
    return Transient(f"{type(error).__name__}: {short(error)}", host=host)


def describe(response: requests.Response) -> str:
    """``503 Service Unavailable (CODE: message)`` for an error answer."""
    try:
        reason = response.reason or HTTPStatus(response.status_code).phrase
    except ValueError:
        reason = ""
    text = f"{response.status_code} {reason}".strip()
    try:
        # Responses are streamed (see RegistryClient._raw): read a bounded part of the body.
        body = response.raw.read(ERROR_BODY_LIMIT, decode_content=True)
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        text += f" ({first.get('code', '')}: {first.get('message', '')})"
    except Exception:  # an error body is a courtesy: any shape (or none) is fine
        pass
    return text


def retry_after(response: requests.Response, cap: float) -> float | None:
    """The server's ``Retry-After`` in seconds (delta or HTTP date), capped; None if absent."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        delay = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        delay = when.timestamp() - time.time()
    return min(max(delay, 0.0), cap)


def too_slow(what: str, host: str, deadline: Deadline, detail: str) -> RegistryError:
    """The error of an operation at ``host`` that ``deadline`` ends (``detail``: how far it got)."""
    return RegistryError(
        f"{what}: {host} too slow: not finished in {seconds(deadline.seconds)} s ({detail})",
        registry=host,
        hint=DEADLINE_HINT,
    )


def tried(count: int, last: str | None) -> str:
    """``3 tries, the last: REASON`` (the reason left out when None)."""
    return f"{count} {'try' if count == 1 else 'tries'}" + (f", the last: {last}" if last else "")


def short(error: Exception) -> str:
    """``error``'s text, at most 200 characters of it."""
    text = str(error)
    return text if len(text) <= 200 else text[:200] + "..."
