"""A program's output lines, read where it writes them: its stdout, or a file it writes
to (a container's command writing to a mounted file, where the runtime's relay of stdout
can lose the last lines of a process that exits at once), then its stdout
(:meth:`assembler.proc.Runner.stream`)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def output_lines(proc: subprocess.Popen[bytes], follow: Path | None) -> Iterator[bytes]:
    """``proc``'s output lines: its stdout, or (``follow``) the file's, then its stdout's."""
    assert proc.stdout is not None
    if follow is None:
        yield from proc.stdout
        return
    own = Drained(proc.stdout)
    yield from followed(follow, proc)
    own.join()
    yield from own.lines


class Drained(threading.Thread):
    """Reads a pipe to its end in the background (a program's stdout while its real
    output is followed in a file), keeping the lines."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines: list[bytes] = []
        self.start()

    def run(self) -> None:
        self.lines.extend(self.pipe)


def followed(path: Path, proc: subprocess.Popen[bytes], poll: float = 0.05) -> Iterator[bytes]:
    """The lines written to ``path`` while ``proc`` runs, as they come, and the rest once it
    has exited (a last line without its newline too): a container's command writing to a
    mounted file, where the runtime's relay of stdout can lose the last lines of a process
    that exits at once."""
    pending = b""
    with open(path, "rb") as f:
        while True:
            done = proc.poll() is not None  # before reading: what it wrote before exiting is read
            pending += f.read()
            *complete, pending = pending.split(b"\n")
            yield from (line + b"\n" for line in complete)
            if done:
                break
            time.sleep(poll)
    if pending:
        yield pending
