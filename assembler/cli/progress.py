"""How a build's progress is shown on stderr, chosen by ``--progress`` and ``-q``.

* ``tty``: a live view (``cli/live.py``): a line per step with its state and time, the
  tail of the running step's log, byte bars.
* ``plain``: one timestamped line per event that matters, log lines prefixed with their
  step, never a carriage return: for CI logs and files.
* ``json``: one JSON object per event (bytes coalesced to at most two a second).
* ``quiet`` (``-q``): nothing, not even warnings.
* ``none`` (``--json`` without ``--progress``: the result is the output): no progress;
  warnings are logged to stderr as they always were.

``auto`` is ``tty`` when stderr is a terminal, else ``plain``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from assembler.assemble import Event, Reporter
from assembler.cli.console import err, size

# CSI/OSC sequences and other escapes a build tool colours its output with.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_PLAIN_BYTES_EVERY = 10.0  # seconds between two byte-count lines in plain mode
_JSON_BYTES_EVERY = 0.5


def clean(line: str) -> str:
    """A log line as one printable line: escapes removed and, of a line redrawn with
    carriage returns (a progress bar), only what was drawn last."""
    parts = [p for p in _ESCAPES.sub("", line).split("\r") if p.strip()]
    text = parts[-1] if parts else ""
    return "".join(c if c.isprintable() or c == "\t" else "?" for c in text).rstrip()


def mode_of(args: argparse.Namespace) -> str:
    """``tty``, ``plain``, ``json``, ``quiet`` or ``none``, from the command's flags and stderr."""
    if args.quiet:
        return "quiet"
    mode: str | None = args.progress
    if mode is None:
        mode = "none" if args.json else "auto"
    if mode == "auto":
        return "tty" if err.is_terminal else "plain"
    return mode


class Display:
    """Turns pipeline events into what the user sees; this one shows nothing. Keeps when
    each step, base and output started, from the arrival of its first event."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def __call__(self, event: Event) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self, *, failed: bool) -> None:
        pass

    def begin(self, key: str) -> None:
        self.started.setdefault(key, time.monotonic())

    def end(self, key: str, fields: Mapping[str, Any] | None = None) -> float:
        """Seconds since ``key`` began (the event's own ``seconds`` if it has them)."""
        began = self.started.pop(key, None)
        if fields is not None and "seconds" in fields:
            return float(fields["seconds"])
        return 0.0 if began is None else time.monotonic() - began

    def running(self) -> list[tuple[str, float]]:
        """What began and has not ended, with its seconds so far."""
        now = time.monotonic()
        return [(key, now - began) for key, began in self.started.items()]

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
        display.begin(key)
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


class WarningsOnly(Display):
    """``none`` (``--json``: stdout is the result): no progress, but a warning still reaches
    stderr, as the package's logged warnings do."""

    def __call__(self, event: Event) -> None:
        if event.kind == "warning":
            err.out(f"warning: {event.fields.get('text', '')}", highlight=False)


class Plain(Display):
    """Timestamped lines, one per event that matters."""

    def __init__(self, *, verbose: int) -> None:
        super().__init__()
        self.verbose = verbose
        self.bytes: dict[str, int] = {}
        self._bytes_line = time.monotonic()

    def line(self, text: str) -> None:
        err.out(f"{time.strftime('%H:%M:%S')} {text}", highlight=False)

    def __call__(self, event: Event) -> None:
        f, kind = event.fields, event.kind
        ended = track(self, event)
        seconds = self.end(ended, f) if ended is not None else 0.0
        if kind == "bytes":
            self._count(str(f.get("what", "processed")), int(f.get("n", 0)))
        elif kind == "base" and f.get("state") == "ready":
            self.line(f"base {f['name']}: {f['what']} {f['digest']} ({seconds:.1f} s)")
        elif kind == "step":
            self.line(f"step {f['name']}: {f['state']}" + (f" in {seconds:.1f} s" if f["state"] == "built" else ""))
        elif kind == "log":
            self.line(f"[{f.get('step', '')}] {clean(str(f.get('line', '')))}")
        elif kind == "layer":
            self.line(f"layer {f['index']}: {f['what']} -> {f['digest']} {size(int(f['size']))} ({f['origin']})")
        elif kind == "output" and f.get("state") == "writing":
            self.line(f"writing {f['ref']}")
        elif kind == "output" and f.get("state") == "done":
            extra = f", {size(int(f['uploaded']))} uploaded" if f.get("uploaded") else ""
            self.line(f"wrote {f['ref']} ({f.get('digest', '')}{extra}) in {seconds:.1f} s")
        elif (text := self._other(kind, f, seconds)) is not None:
            self.line(text)

    def _other(self, kind: str, f: Mapping[str, Any], seconds: float) -> str | None:
        """The line of an image, warning, test, variant or (verbose) info event."""
        if kind == "image":
            return f"image {f['digest']}"
        if kind == "warning":
            return f"warning: {f.get('text', '')}"
        if kind == "test" and f.get("state") != "running":
            return f"test {f['name']}: {test_state(f, seconds)}"
        if kind == "variant":
            return f"variant {f['name']}: {f['state']}" + (f" {f['digest']}" if f.get("digest") else "")
        if kind == "info" and self.verbose:
            return str(f.get("text", ""))
        return None

    def _count(self, what: str, n: int) -> None:
        self.bytes[what] = self.bytes.get(what, 0) + n
        now = time.monotonic()
        if now - self._bytes_line >= _PLAIN_BYTES_EVERY:
            self._bytes_line = now
            self.line("bytes: " + ", ".join(f"{size(v)} {k}" for k, v in sorted(self.bytes.items())))

    def stop(self, *, failed: bool) -> None:
        if failed:
            for key, seconds in self.failed():
                self.line(f"{key}: failed after {seconds:.1f} s")


class JsonLines(Display):
    """One JSON object per event: ``{"time": UNIX, "kind": ..., fields...}``. Byte events
    are coalesced: ``n`` is the bytes since the last such line, ``total`` all so far."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.pending: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self._flushed = time.monotonic()

    def emit(self, kind: str, fields: Mapping[str, Any]) -> None:
        stream = self.stream or err.file
        stream.write(json.dumps({"time": round(time.time(), 3), "kind": kind, **fields}, default=str) + "\n")
        stream.flush()

    def __call__(self, event: Event) -> None:
        ended = track(self, event)
        if ended is not None:
            self.end(ended)
        if event.kind != "bytes":
            self._flush()
            fields = dict(event.fields)
            if event.kind == "log":
                fields["line"] = clean(str(fields.get("line", "")))
            self.emit(event.kind, fields)
            return
        what = str(event.fields.get("what", "processed"))
        self.pending[what] = self.pending.get(what, 0) + int(event.fields.get("n", 0))
        if time.monotonic() - self._flushed >= _JSON_BYTES_EVERY:
            self._flush()

    def _flush(self) -> None:
        self._flushed = time.monotonic()
        for what, n in sorted(self.pending.items()):
            self.total[what] = self.total.get(what, 0) + n
            self.emit("bytes", {"what": what, "n": n, "total": self.total[what]})
        self.pending.clear()

    def stop(self, *, failed: bool) -> None:
        self._flush()
        if failed:
            for key, seconds in self.failed():
                kind, _, name = key.partition(" ")
                self.emit(kind, {"name": name, "state": "failed", "seconds": round(seconds, 3)})


def json_error(text: str, hint: str | None, exit_code: int) -> None:
    """The error that ends a ``--progress json`` run, as its last JSON line."""
    JsonLines().emit("error", {"text": text, "hint": hint, "exit": exit_code})


def display_for(mode: str, *, verbose: int) -> Display:
    if mode == "tty":
        from assembler.cli.live import LiveView  # rich's live machinery only on a terminal

        return LiveView(err, verbose=verbose)
    if mode == "plain":
        return Plain(verbose=verbose)
    if mode == "json":
        return JsonLines()
    if mode == "none":
        return WarningsOnly()
    return Display()


class _ToDisplay(logging.Handler):
    """The package's log records as events: a warning written straight to stderr would
    tear the live view and break a JSON stream."""

    def __init__(self, display: Display) -> None:
        super().__init__()
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        kind = "warning" if record.levelno >= logging.WARNING else "info"
        self.display(Event(kind, {"text": record.getMessage()}))


@contextlib.contextmanager
def showing(mode: str, *, verbose: int = 0) -> Iterator[Reporter]:
    """A reporter for ``mode``, its display stopped (and what was running marked failed)
    before an error leaves, so the error is printed below it. The package's log records
    go to the display meanwhile."""
    display = display_for(mode, verbose=verbose)
    logger = logging.getLogger("assembler")
    handler, propagate = _ToDisplay(display), logger.propagate
    if mode != "none":
        logger.addHandler(handler)
        logger.propagate = False
    display.start()
    try:
        yield display
    except BaseException:
        display.stop(failed=True)
        raise
    else:
        display.stop(failed=False)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
