"""A fake :class:`assembler.registry.retry.Clock` for retry and deadline tests.

``sleep`` returns at once: it records the wait asked for and moves the clock on by it.
``monotonic`` is the real clock plus every wait so far, so a deadline still counts the
time a test really takes, and the waits besides. Tests assert the recorded schedule
(:func:`streaks`) instead of sleeping through it.
"""

from __future__ import annotations

import time

from assembler.registry.retry import RetryPolicy


class FakeClock:
    """Records waits instead of sleeping (one per test; not thread-safe)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, seconds
        self.waits.append(seconds)

    def monotonic(self) -> float:
        return time.monotonic() + sum(self.waits)


def streaks(waits: list[float], policy: RetryPolicy) -> list[int]:
    """The lengths of the runs of failed tries that ``waits`` are, read against ``policy``'s
    schedule; AssertionError when a wait is not the one the policy asks for at that point
    (a run starts at the first wait and goes up the schedule: progress starts a new run)."""
    runs: list[int] = []
    for wait in waits:
        if runs and wait == policy.wait(runs[-1] + 1):
            runs[-1] += 1
        elif wait == policy.wait(1):
            runs.append(1)
        else:
            raise AssertionError(f"wait {wait} s is off the schedule {policy.schedule()} after {waits}")
    return runs
