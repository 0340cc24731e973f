"""What every progress display keeps of a build's events: what began and has not ended
(bases, steps, outputs, tests), since when, each running step's last log line, and a
heartbeat thread that speaks when the display has been silent too long
(:mod:`assembler.cli.progress` has the displays of each ``--progress`` mode)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from assembler.assemble import Event

# CSI/OSC sequences and other escapes a build tool colours its output with.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def clean(line: str) -> str:
    """A log line as one printable line: escapes removed and, of a line redrawn with
    carriage returns (a progress bar), only what was drawn last."""
    parts = [p for p in _ESCAPES.sub("", line).split("\r") if p.strip()]
    text = parts[-1] if parts else ""
    return "".join(c if c.isprintable() or c == "\t" else "?" for c in text).rstrip()


class Display:
    """Turns pipeline events into what the user sees; this one shows nothing. Keeps when
    each step, base and output started, from the arrival of its first event, and each
    running step's last log line.

    With ``every`` (seconds), :meth:`start` starts a thread that calls :meth:`beat` when
    nothing was said (:meth:`said`) for that long, and again each ``every`` seconds after."""

    def __init__(self, *, every: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.every = every
        self.started: dict[str, float] = {}
        self.last_line: dict[str, tuple[float, str]] = {}  # a running step's key: (when, its last log line)
        self.origin: dict[str, str] = {}  # a base being resolved: what it is made from (bootstrap: bookworm)
        self.spoke = clock()  # when the last line was written
        self._stopping = threading.Event()
        self._beating: threading.Thread | None = None

    def __call__(self, event: Event) -> None:
        pass

    def start(self) -> None:
        if self.every is not None:
            self._beating = threading.Thread(target=self._heartbeat, name="assemble-heartbeat", daemon=True)
            self._beating.start()

    def stop(self, *, failed: bool) -> None:
        self._stopping.set()
        if self._beating is not None:
            self._beating.join()

    def said(self) -> None:
        """A line was written now: the next heartbeat is ``every`` seconds away."""
        self.spoke = self.clock()

    def beat(self) -> None:
        """Say what still runs (nothing here)."""

    def due(self) -> bool:
        """Whether nothing was said for ``every`` seconds: a heartbeat is due."""
        return self.every is not None and self.clock() - self.spoke >= self.every

    def _heartbeat(self) -> None:
        assert self.every is not None
        while not self._stopping.wait(min(1.0, self.every / 4)):
            if self.due():
                self.said()  # also when writing fails: one try each period
                with contextlib.suppress(OSError, ValueError):  # stderr closed under us: nothing to tell
                    self.beat()

    def begin(self, key: str, origin: str | None = None) -> None:
        self.started.setdefault(key, self.clock())
        if origin:
            self.origin[key] = origin

    def end(self, key: str, fields: Mapping[str, Any] | None = None) -> float:
        """Seconds since ``key`` began (the event's own ``seconds`` if it has them)."""
        began = self.started.pop(key, None)
        self.last_line.pop(key, None)
        self.origin.pop(key, None)
        if fields is not None and "seconds" in fields:
            return float(fields["seconds"])
        return 0.0 if began is None else self.clock() - began

    def logged(self, step: str, line: str) -> None:
        """``line`` is the last that step ``step`` logged."""
        self.last_line[f"step {step}"] = (self.clock(), line)

    def running(self) -> list[tuple[str, float]]:
        """What began and has not ended, with its seconds so far."""
        now = self.clock()
        # A copy: the heartbeat's thread reads what the build's threads change.
        return [(key, now - began) for key, began in dict(self.started).items()]

    def still_running(self) -> list[dict[str, Any]]:
        """What runs now, for a heartbeat: kind, name, seconds, and a step's last log line
        with its age."""
        now, lines = self.clock(), dict(self.last_line)
        shown = []
        for key, seconds in self.running():
            kind, _, name = key.partition(" ")
            item: dict[str, Any] = {"kind": kind, "name": name, "seconds": round(seconds, 1)}
            if key in lines:
                at, line = lines[key]
                item.update(last_line=line, last_line_seconds=round(now - at, 1))
            shown.append(item)
        return shown

    def failed(self) -> list[tuple[str, float]]:
        """What an error interrupted: steps and outputs (a base that fails is bad input, and
        its error says which)."""
        return [(key, seconds) for key, seconds in self.running() if not key.startswith("base ")]


def track(display: Display, event: Event) -> str | None:
    """Records the start of what ``event`` begins; returns the key of what it ends."""
    f, kind = event.fields, event.kind
    key = f"{kind} {f.get('name') or f.get('ref', '')}"
    state = f.get("state")
    if (kind, state) in (("base", "resolving"), ("step", "running"), ("output", "writing"), ("test", "running")):
        display.begin(key, str(f.get("from") or ""))
        return None
    if (kind, state) in (("base", "ready"), ("step", "built"), ("step", "cached")) or (
        kind == "test" and state != "running"
    ):
        return key
    if (kind, state) == ("output", "done"):
        # What was written may be named otherwise than what was asked (an oras:// push, a
        # SIF attached as a referrer): then it ends the output that began first.
        writing = [k for k in display.started if k.startswith("output ")]
        return key if key in display.started or not writing else writing[0]
    return None


def test_state(fields: Mapping[str, Any], seconds: float) -> str:
    """A finished test's state as shown: passed (and in how long, or that an earlier run on the
    image passed), failed and why, not run and why."""
    state = str(fields.get("state"))
    if state == "passed":
        return "passed (earlier, on this image)" if fields.get("cached") else f"passed in {seconds:.1f} s"
    return f"{state}: {fields.get('reason', '')}"


def duration(seconds: float) -> str:
    """``seconds`` for people: 45 s, 3 min 05 s."""
    whole = int(seconds)
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"
