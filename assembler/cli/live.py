"""The live view of a build on a terminal, drawn with rich.

What has finished is printed once, above the view, and stays in the scrollback: a line
per base, step (state and time), layer and output. The view below it holds only what runs
now: a spinner and the time so far for each base being resolved, step running and output
being written, the last lines of a running step's log, and byte bars (layers compressed
or read, bytes pushed, the SIF written) with their speed. It is redrawn 8 times a second
and cleared at the end, so a long build never outgrows the screen.
"""

from __future__ import annotations

import threading
from collections import deque

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from assembler.assemble import Event
from assembler.cli.console import size
from assembler.cli.display import Display, clean, test_state, track

TAIL = 6  # log lines of a running step shown under it
_BAR_NAMES = {"compressed": "layers", "pushed": "push", "sif": "SIF", "converted": "SIF"}


def _row(icon: str, style: str, kind: str, name: str, state: str, extra: str = "") -> Text:
    text = Text(no_wrap=True, overflow="ellipsis")
    if icon:
        text.append(f"{icon} ", style=style)
    text.append(f"{kind:<6} ", style="dim")
    text.append(f"{name:<24} ", style="bold")
    text.append(f"{state:<8}", style=style)
    if extra:
        text.append(f" {extra}", style="dim")
    return text


class _Bytes(ProgressColumn):
    """Bytes so far (of the total, when it is known) and their speed, in the CLI's units."""

    def render(self, task: Task) -> Text:
        text = size(int(task.completed)) + ("" if task.total is None else f" of {size(int(task.total))}")
        speed = task.speed  # over the last 30 s of updates: None until there are two
        return Text(text + (f"  {size(int(speed))}/s" if speed else ""), style="green")


class LiveView(Display):
    """A rich ``Live`` on ``console`` (stderr), fed by pipeline events."""

    def __init__(self, console: Console, *, verbose: int = 0) -> None:
        super().__init__()
        self.console = console
        self.verbose = verbose  # -v: every log line stays above the view, not only the tail
        self.lock = threading.Lock()  # events arrive on the build's thread, redraws on rich's
        self.spinners: dict[str, Spinner] = {}
        self.tails: dict[str, deque[str]] = {}
        self.bars = Progress(
            TextColumn("  {task.description:<7}"),
            BarColumn(bar_width=30),
            _Bytes(),
            console=console,
        )
        self.tasks: dict[str, TaskID] = {}
        self.idle = Spinner("dots", style="cyan")  # nothing tracked runs: the build still works
        self.news = ""  # the last info event: what the build did last, when -v does not print it
        self.live = Live(
            console=console,
            get_renderable=self._render,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def start(self) -> None:
        self.live.start()

    def stop(self, *, failed: bool) -> None:
        lines = []
        if failed:
            for key, seconds in self.failed():
                kind, _, name = key.partition(" ")
                lines.append(_row("✗", "red", kind, name, "failed", f"{seconds:.1f}s"))
        with self.lock:
            self.started.clear()  # the view's last redraw (before it is cleared) shows nothing running
            self.tails.clear()
        self._print(lines)
        self._clear_bars()
        self.live.stop()

    def _print(self, lines: list[Text]) -> None:
        # Never under self.lock: printing above the view takes the Live's lock, which a
        # redraw holds while it asks for our renderable (and so for self.lock).
        for line in lines:
            self.live.console.print(line)

    def __call__(self, event: Event) -> None:
        f, kind = event.fields, event.kind
        if kind == "bytes":
            self._advance(str(f.get("what", "processed")), int(f.get("n", 0)))
            return
        if kind == "log":
            logged = clean(str(f.get("line", "")))
            with self.lock:
                self.tails.setdefault(f"step {f.get('step', '')}", deque(maxlen=TAIL)).append(logged)
            if self.verbose:
                self._print([Text(f"  [{f.get('step', '')}] {logged}", style="dim")])
            return
        with self.lock:
            ended = track(self, event)
            seconds = self.end(ended, f) if ended is not None else 0.0
            for key in self.started:
                self.spinners.setdefault(key, Spinner("dots", style="cyan"))
            if ended is not None:
                self.spinners.pop(ended, None)
                self.tails.pop(ended, None)
            self.said()
            if kind == "info":
                self.news = clean(str(f.get("text", "")))
        if kind in ("image", "base") or (kind, f.get("state")) == ("output", "done"):
            self._clear_bars()  # a phase that moved bytes is over
        line = self._line(event, seconds)
        self._print([line] if line is not None else [])
        self.live.refresh()

    def _line(self, event: Event, seconds: float) -> Text | None:
        """The line that stays above the view for ``event`` (None: nothing stays)."""
        f, kind, state = event.fields, event.kind, event.fields.get("state")
        if kind == "base" and state == "ready":
            return _row(
                "✓", "green", "base", str(f["name"]), "ready", f"{seconds:.1f}s  {f['digest'][:19]}  {f['what']}"
            )
        if kind == "step" and state == "built":
            return _row("✓", "green", "step", str(f["name"]), "built", f"{seconds:.1f}s")
        if kind == "step" and state == "cached":
            return _row("·", "blue", "step", str(f["name"]), "cached")
        if kind == "layer":
            what = f"{size(int(f['size']))}  {f['digest'][:19]}"
            return _row(" ", "dim", "layer", f"{f['index']} {f['what']}", str(f["origin"]), what)
        if kind == "image":
            return Text.assemble(("✓ ", "green"), ("image  ", "dim"), (str(f["digest"]), "bold"))
        if kind == "output" and state == "done":
            extra = f", {size(int(f['uploaded']))} uploaded" if f.get("uploaded") else ""
            return _row("✓", "green", "output", str(f["ref"]), "written", f"{seconds:.1f}s{extra}")
        if kind == "warning":
            return Text(f"! warning: {f.get('text', '')}", style="yellow")
        if kind == "test" and state != "running":
            icon, style = {"passed": ("✓", "green"), "failed": ("✗", "red")}.get(str(state), ("·", "yellow"))
            return _row(icon, style, "test", str(f["name"]), test_state(f, seconds))
        if kind == "variant" and state != "failed":
            return Text(
                f"▸ variant {f['name']}: {state}" + (f"  {f['digest']}" if f.get("digest") else ""), style="bold"
            )
        if kind == "info" and self.verbose:
            return Text(str(f.get("text", "")), style="dim")
        return None

    def _advance(self, what: str, n: int) -> None:
        task = self.tasks.get(what)
        if task is None:
            task = self.tasks[what] = self.bars.add_task(_BAR_NAMES.get(what, what), total=None)
        self.bars.advance(task, n)

    def _clear_bars(self) -> None:
        for task in self.tasks.values():
            self.bars.remove_task(task)
        self.tasks.clear()

    def _render(self) -> RenderableType:
        table = Table.grid(padding=(0, 1))
        table.add_column(width=1)
        table.add_column(overflow="ellipsis", no_wrap=True)
        with self.lock:
            for key, seconds in self.running():
                kind, _, name = key.partition(" ")
                verb = {"base": "resolving", "step": "running", "output": "writing"}.get(kind, "")
                spinner = self.spinners.get(key) or Spinner("dots")
                table.add_row(spinner, _row("", "cyan", kind, name, verb, f"{seconds:.1f}s"))
                for line in self.tails.get(key, ()):
                    table.add_row("", Text(f"  │ {line}", style="dim", no_wrap=True, overflow="ellipsis"))
            if not self.started and not self.tasks:
                # Between steps (the dependency check, the SBOM, a layer read): never a blank view.
                since = f"{self.clock() - self.spoke:.1f}s"
                parts = (("working ", "cyan"), (since, "dim"), (f"  {self.news}", "dim"))
                table.add_row(self.idle, Text.assemble(*parts, no_wrap=True, overflow="ellipsis"))
        return Group(table, self.bars) if self.tasks else table
