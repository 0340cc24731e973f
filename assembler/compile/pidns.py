"""Ending what a ``buildah run`` started: an image run (``assemble run``, ``shell``, a test)
runs in a PID namespace of its own (:meth:`assembler.compile.buildah.Buildah.owned`), so that
when the first process of that namespace ends, the kernel kills every process left in it:
a server's background child, a two-process entrypoint's second process. ``buildah run
--isolation chroot`` makes none, and nothing else ends what the entrypoint forked.

``unshare --fork`` blocks SIGINT and SIGTERM and passes neither on, so a run stopped on this
side (Ctrl-C, SIGTERM, SIGHUP) is ended here: the stopping signal is sent to the namespace's
first process (buildah, which passes it to the command), and after a grace period, as
``docker stop`` gives, that process is killed, and with it the namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

GRACE_S = 10.0  # as docker stop's default


def _children(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a Go program forks from any thread)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def _namespace(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def namespace_init(pid: int) -> int | None:
    """The first process below ``pid`` in another PID namespace than this process's (the
    namespace's init), None when there is none (yet, or any more)."""
    ours = _namespace("self")
    queue = [pid]
    while queue:
        current = queue.pop(0)
        found = _namespace(current)
        if current != pid and found is not None and found != ours:
            return current
        queue += _children(current)
    return None


def stop(proc: subprocess.Popen[bytes], signum: int, *, grace: float = GRACE_S) -> None:
    """End ``proc`` (an :meth:`~assembler.compile.buildah.Buildah.owned` run) and all it
    started: ``signum`` to the namespace's first process, then, if the run has not ended
    after ``grace`` seconds, SIGKILL to it (the kernel then kills the rest of the
    namespace) and to ``proc``."""
    init = namespace_init(proc.pid)
    if init is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signum)
    try:
        proc.wait(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    init = namespace_init(proc.pid) or init
    for pid in (init, proc.pid):
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    proc.wait()


def waited(proc: subprocess.Popen[bytes]) -> int:
    """``proc``'s exit status (an :meth:`~assembler.compile.buildah.Buildah.owned` run on
    this terminal). A stop of this process (KeyboardInterrupt: Ctrl-C, or the CLI's
    SIGTERM and SIGHUP, which carry their ``signum``) ends the run with that signal
    (:func:`stop`) and is raised on."""
    try:
        return proc.wait()
    except KeyboardInterrupt as e:
        stop(proc, int(getattr(e, "signum", signal.SIGINT)))
        raise
