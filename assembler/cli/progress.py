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

In ``plain`` and ``json``, after :data:`HEARTBEAT_EVERY` seconds without a line (a base
bootstrapping, a step downloading quietly) a line says what still runs, for how long, its
last log line and the bytes so far, so a silent build is never mistaken for a hung one.
What every display keeps (what runs, since when, its last log line) is
:class:`~assembler.cli.display.Display`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from assembler.cli.console import err, size
from assembler.cli.display import Display, clean, duration, test_state, track
from assembler.pipeline.options import Event, Reporter

_PLAIN_BYTES_EVERY = 10.0  # seconds between two byte-count lines in plain mode
_JSON_BYTES_EVERY = 0.5
HEARTBEAT_EVERY = 30.0  # seconds without a line after which plain and json say what still runs


class WarningsOnly(Display):
    """``none`` (``--json``: stdout is the result): no progress, but a warning still reaches
    stderr, as the package's logged warnings do."""

    def __call__(self, event: Event) -> None:
        if event.kind == "warning":
            err.out(f"warning: {event.fields.get('text', '')}", highlight=False)


def heartbeat(running: list[dict[str, Any]], totals: Mapping[str, int], *, quiet: float, news: str | None) -> str:
    """The line that says what still runs (``Display.still_running``), the bytes so far,
    and (``news``) what was last done that no line showed."""
    parts = []
    for item in running:
        part = f"{item['kind']} {item['name']} for {duration(item['seconds'])}"
        if "last_line" in item:
            part += f", its last line {duration(item['last_line_seconds'])} ago: {item['last_line']}"
        parts.append(part)
    text = "still running: " + "; ".join(parts) if parts else f"still working ({duration(quiet)} since the last line)"
    if totals:
        text += "; so far " + ", ".join(f"{size(v)} {k}" for k, v in sorted(totals.items()))
    return text + (f"; last: {news}" if news else "")


class Plain(Display):
    """Timestamped lines, one per event that matters, and a heartbeat in the silences."""

    def __init__(
        self, *, verbose: int, every: float | None = HEARTBEAT_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(every=every, clock=clock)
        self.verbose = verbose
        self.bytes: dict[str, int] = {}
        self._bytes_shown: dict[str, int] = {}  # what the last byte-count line said
        self._bytes_line = clock()
        self._told = clock()  # when the last line that was not a heartbeat was written
        self._news: tuple[float, str] | None = None  # the last info event (shown only with -v)

    def line(self, text: str, *, beat: bool = False) -> None:
        err.out(f"{time.strftime('%H:%M:%S')} {text}", highlight=False)
        self.said()
        if not beat:
            self._told = self.spoke

    def beat(self) -> None:
        news = self._news[1] if self._news is not None and self._news[0] >= self._told else None
        quiet = self.clock() - self._told
        self.line(heartbeat(self.still_running(), dict(self.bytes), quiet=quiet, news=news), beat=True)

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
            logged = clean(str(f.get("line", "")))
            self.logged(str(f.get("step", "")), logged)
            self.line(f"[{f.get('step', '')}] {logged}")
        elif kind == "layer":
            self.line(f"layer {f['index']}: {f['what']} -> {f['digest']} {size(int(f['size']))} ({f['origin']})")
        elif kind == "output" and f.get("state") == "writing":
            self.line(f"writing {f['ref']}")
        elif kind == "output" and f.get("state") == "done":
            if self.bytes != self._bytes_shown:  # the count so far, not one 10 s old beside the total
                self._bytes()
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
        if kind == "info":
            self._news = (self.clock(), str(f.get("text", "")))
            return str(f.get("text", "")) if self.verbose else None
        return None

    def _count(self, what: str, n: int) -> None:
        self.bytes[what] = self.bytes.get(what, 0) + n
        now = self.clock()
        if now - self._bytes_line >= _PLAIN_BYTES_EVERY:
            self._bytes()

    def _bytes(self) -> None:
        self._bytes_line, self._bytes_shown = self.clock(), dict(self.bytes)
        self.line("bytes: " + ", ".join(f"{size(v)} {k}" for k, v in sorted(self.bytes.items())))

    def stop(self, *, failed: bool) -> None:
        super().stop(failed=failed)
        if failed:
            for key, seconds in self.failed():
                self.line(f"{key}: failed after {seconds:.1f} s")


class JsonLines(Display):
    """One JSON object per event: ``{"time": UNIX, "kind": ..., fields...}``. Byte events
    are coalesced: ``n`` is the bytes since the last such line, ``total`` all so far."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        every: float | None = HEARTBEAT_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(every=every, clock=clock)
        self.stream = stream
        self.pending: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self._flushed = clock()
        self._writing = threading.Lock()  # the heartbeat's thread writes too: whole lines only

    def emit(self, kind: str, fields: Mapping[str, Any]) -> None:
        stream = self.stream or err.file
        line = json.dumps({"time": round(time.time(), 3), "kind": kind, **fields}, default=str) + "\n"
        with self._writing:
            stream.write(line)
            stream.flush()
        self.said()

    def beat(self) -> None:
        """``{"kind": "running", "running": [{kind, name, seconds, last_line, last_line_seconds}...],
        "bytes": {what: total}}``: what runs now."""
        self._flush()
        self.emit("running", {"running": self.still_running(), "bytes": dict(sorted(self.total.items()))})

    def __call__(self, event: Event) -> None:
        ended = track(self, event)
        if ended is not None:
            self.end(ended)
        if event.kind != "bytes":
            self._flush()
            fields = dict(event.fields)
            if event.kind == "log":
                fields["line"] = clean(str(fields.get("line", "")))
                self.logged(str(fields.get("step", "")), fields["line"])
            self.emit(event.kind, fields)
            return
        what = str(event.fields.get("what", "processed"))
        self.pending[what] = self.pending.get(what, 0) + int(event.fields.get("n", 0))
        if self.clock() - self._flushed >= _JSON_BYTES_EVERY:
            self._flush()

    def _flush(self) -> None:
        self._flushed = self.clock()
        for what, n in sorted(self.pending.items()):
            self.total[what] = self.total.get(what, 0) + n
            self.emit("bytes", {"what": what, "n": n, "total": self.total[what]})
        self.pending.clear()

    def stop(self, *, failed: bool) -> None:
        super().stop(failed=failed)
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
