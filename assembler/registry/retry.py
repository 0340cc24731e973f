"""The retry policy of every network client here: the registry client (``registry.http``,
``registry.blobs``) and plain downloads (``fetch.pinned``).

A :class:`RetryPolicy` is a value: the waits between tries (``backoff``, doubled with each
failed try in a row, capped at ``max_backoff``; a server's ``Retry-After`` instead when it
sent one), how many failed tries in a row *without progress* end an operation (``tries``),
how many in all, progress or not (``max_tries``), and the :class:`Clock` it waits on and
measures deadlines with. The clock is the policy's one effect: :data:`SYSTEM_CLOCK` in
the product; tests pass one that records the waits asked for instead of sleeping.

A :class:`Deadline` is when one operation (a registry request with its retries, a whole
blob, a download) must be over, on the same clock; :mod:`assembler.registry.deadlines`
holds every socket read of the operation to it. :data:`DEADLINE_HINT` and
:data:`IDLE_HINT` tell the user how to raise the two limits.

:func:`registry_policy` is the registry client's, from its :class:`RegistryOptions`;
:data:`fetch.pinned.DOWNLOAD_RETRY` is the downloads'. :class:`Attempts` counts the failed
tries of one operation under a policy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from assembler.registry.types import RegistryOptions

# A registry operation gives up after this many times options.retries failed tries, progress or not.
_MAX_TRIES_FACTOR = 3

# How to raise the limits (the CLI's flags, cli/arguments.py; the variables are their defaults).
DEADLINE_HINT = "raise the limit with --network-deadline SECONDS (or ASSEMBLE_NETWORK_DEADLINE=SECONDS)"
IDLE_HINT = "raise the limit with --network-timeout SECONDS (or ASSEMBLE_NETWORK_TIMEOUT=SECONDS)"


def seconds(value: float) -> str:
    """``300``, ``2.5``, ``300.1``: a number of seconds as messages show it."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


class Clock(Protocol):
    """Where waits happen and deadlines are measured."""

    def sleep(self, seconds: float) -> None: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The process's clock: ``time.sleep`` and ``time.monotonic``."""

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()


@dataclass(frozen=True)
class RetryPolicy:
    """How an operation retries. Raises ValueError on construction for a bound below one try."""

    tries: int  # failed tries in a row without progress before giving up
    max_tries: int  # failed tries in all, progress or not, before giving up
    backoff: float  # the first wait (s)
    max_backoff: float
    clock: Clock = SYSTEM_CLOCK

    def __post_init__(self) -> None:
        if self.tries < 1 or self.max_tries < 1:
            raise ValueError(f"a retry policy allows at least one try, not {self.tries} ({self.max_tries} in all)")

    def wait(self, streak: int, retry_after: float | None = None) -> float:
        """How long to wait after the ``streak``-th failed try in a row (``retry_after``: the
        server's own answer, already capped, which wins)."""
        if retry_after is not None:
            return retry_after
        return float(min(self.backoff * 2 ** (streak - 1), self.max_backoff))

    def schedule(self) -> list[float]:
        """The waits of an operation that fails every try without progress (for docs and tests)."""
        return [self.wait(n) for n in range(1, min(self.tries, self.max_tries))]


def registry_policy(options: RegistryOptions, *, clock: Clock = SYSTEM_CLOCK) -> RetryPolicy:
    """The registry client's policy: what ``options`` ask for (``retries``, ``backoff``,
    ``max_backoff``), on ``clock``."""
    tries = max(1, options.retries)
    return RetryPolicy(
        tries=tries,
        max_tries=tries * _MAX_TRIES_FACTOR,
        backoff=options.backoff,
        max_backoff=options.max_backoff,
        clock=clock,
    )


class Attempts:
    """The failed tries of one operation under ``policy`` (one counter per operation)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.tries = 0  # failed tries in all
        self.streak = 0  # failed tries since the last progress

    def failed(self, *, progress: bool = False) -> bool:
        """Count one failed try (``progress``: something got through since the previous
        failure, which starts the streak again). True when the operation must give up."""
        self.tries += 1
        if progress:
            self.streak = 0
        self.streak += 1
        return self.streak >= self.policy.tries or self.tries >= self.policy.max_tries

    def wait(self, retry_after: float | None = None) -> float:
        """The wait before the next try."""
        return self.policy.wait(self.streak, retry_after)


class Deadline:
    """When one operation must be over: ``seconds`` after it started, on ``clock``.

    Not a value: :meth:`allow` moves it (a download of unknown size earns time as its
    bytes arrive), and every read of the operation asks :meth:`remaining` again.
    """

    def __init__(self, seconds: float, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.start = clock.monotonic()
        self.seconds = seconds

    def allow(self, seconds: float) -> None:
        """From now on the operation may take ``seconds`` from its start."""
        self.seconds = seconds

    def remaining(self) -> float:
        """Seconds left (zero or less: it has passed)."""
        return self.start + self.seconds - self.clock.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0
