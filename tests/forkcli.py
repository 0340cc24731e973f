"""``python -m assembler ARGS`` without an interpreter's start: forked from a process that has
imported the CLI already.

A CLI process of the suite spent about half a second of CPU starting Python and importing
assemble (pydantic's models, rich, packaging's parsers) before it did anything, and the suite
starts about 400 of them: over three minutes of its two cores. Each worker keeps two such
processes (zygotes, as Android's is): ``python -c`` with the CLI and every command's module
imported, nothing run. A call sends one of them the command line, the working folder and the
environment; it forks, and the child does what ``python -m assembler`` does (the environment,
the folder, ``sys.argv``, stdin from /dev/null, stdout and stderr into files, the consoles
made again for them, :func:`assembler.cli.main`, then the interpreter's exit: non-daemon
threads joined, ``atexit`` run) and leaves with the command's status. The child is its own
process, as the subprocess was: its own signals, pid, exit status (a signal's is negative),
and the caller kills it on a timeout as ``subprocess.run`` does.

What a fork cannot give, a subprocess still does (:func:`usable`): an environment that changes
what the interpreter or rich decide as they start (``PYTHON*``, the terminal's variables), and
a call while both zygotes of the worker are busy (another thread's). The two zygotes start
with different hash seeds and take calls in turn, so two builds of one test are two seeds
apart, as two interpreters are: what iterates a set in hash order still shows as two digests.
"""

from __future__ import annotations

import contextlib
import json
import locale
import os
import secrets
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# Read by the interpreter or by rich's consoles as they start: a call that sets one of these
# otherwise than the zygote's own environment runs in a subprocess.
STARTUP_ENV = ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TERM", "COLORTERM", "TTY_COMPATIBLE", "TTY_INTERACTIVE")

# The zygote: reads one JSON request per line on fd 0, answers the child's pid and then its
# exit status (os.waitstatus_to_exitcode) on fd 1, each a line.
SERVER = r"""
import atexit, importlib, json, os, sys, threading
import assembler.cli as cli
from assembler.cli import run  # before the commands' modules: assembler.cli.run is one of them
from assembler.cli.commands import COMMANDS
import assembler.assemble
for command in COMMANDS.values():
    importlib.import_module("assembler.cli." + command.run.split(":")[0])
requests = os.fdopen(os.dup(0), "r")
answers = os.dup(1)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
main_path = os.path.join(os.path.dirname(cli.__file__), os.pardir, "__main__.py")
for line in requests:
    req = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 70
        try:
            requests.close()
            os.close(answers)
            os.dup2(null, 0)
            for fd, path in ((1, req["out"]), (2, req["err"])):
                opened = os.open(path, os.O_WRONLY | os.O_TRUNC)
                os.dup2(opened, fd)
                os.close(opened)
            os.close(null)
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            sys.argv = [os.path.normpath(main_path), *req["argv"]]
            run()  # SystemExit as `python -m assembler` leaves, or os._exit after a stop
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            threading._shutdown()  # what the interpreter's exit does: non-daemon threads joined
            atexit._run_exitfuncs()
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            os._exit(code)
    os.write(answers, f"{pid}\n".encode())
    _, status = os.waitpid(pid, 0)
    os.write(answers, f"{os.waitstatus_to_exitcode(status)}\n".encode())
"""


class Zygote:
    """One preloaded process, serving one call at a time."""

    def __init__(self, root: Path, python: str) -> None:
        env = dict(os.environ)
        env["PYTHONHASHSEED"] = str(secrets.randbelow(2**32))
        self.env = dict(os.environ)  # what a call's environment is compared with
        self.proc = subprocess.Popen(
            [python, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=root,
        )
        self.lock = threading.Lock()
        self.answers = b""

    def _line(self, deadline: float | None) -> str | None:
        """The zygote's next answer, or None at ``deadline``; EOF is an error."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.answers:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the CLI's zygote (pid {self.proc.pid}) ended: {self.proc.wait()}")
            self.answers += chunk
        line, _, self.answers = self.answers.partition(b"\n")
        return line.decode()

    def call(self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float) -> tuple[int, str, str]:
        """``argv`` run in a child: its exit status, stdout and stderr; TimeoutExpired as
        subprocess.run raises it, the child killed."""
        encoding = locale.getpreferredencoding(False)
        with tempfile.TemporaryDirectory(prefix="forkcli-") as tmp:
            out, err = Path(tmp, "out"), Path(tmp, "err")
            out.touch()
            err.touch()
            request = {
                "argv": list(argv),
                "cwd": str(cwd),
                "env": dict(env),
                "out": str(out),
                "err": str(err),
            }
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            started = self._line(None)
            assert started is not None  # no deadline: a line, or EOF raised
            pid = int(started)
            deadline = time.monotonic() + timeout
            status: str | None = None
            try:
                status = self._line(deadline)
            finally:
                if status is None:  # the timeout, or the test stopped (pytest-timeout, Ctrl-C)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    self._line(None)
            text_out = out.read_text(encoding, errors="replace")
            text_err = err.read_text(encoding, errors="replace")
            if status is None:
                raise subprocess.TimeoutExpired(argv, timeout, text_out, text_err)
            return int(status), text_out, text_err

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class Zygotes:
    """A worker's two zygotes, started at the first call, taking calls in turn."""

    def __init__(self, root: Path, python: str) -> None:
        self.root, self.python = root, python
        self.started: list[Zygote] = []
        self.turn = 0
        self.lock = threading.Lock()

    def _pair(self) -> list[Zygote]:
        with self.lock:
            if not self.started or any(z.proc.poll() is not None for z in self.started):
                for z in self.started:
                    z.close()
                self.started = [Zygote(self.root, self.python) for _ in range(2)]
            self.turn += 1
            return self.started[self.turn % 2 :] + self.started[: self.turn % 2]

    def usable(self, env: Mapping[str, str]) -> bool:
        """Whether ``env`` starts nothing differently from the zygotes' own environment."""
        if os.environ.get("ASSEMBLE_TEST_NO_FORK"):
            return False
        base = self.started[0].env if self.started else os.environ
        changed = {k for k in set(env) | set(base) if env.get(k) != base.get(k)}
        return not any(k.startswith("PYTHON") or k in STARTUP_ENV for k in changed)

    def call(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float
    ) -> tuple[int, str, str] | None:
        """``argv`` run in a forked child, or None when both zygotes are busy."""
        for zygote in self._pair():
            if zygote.lock.acquire(blocking=False):
                try:
                    return zygote.call(argv, cwd, env, timeout)
                finally:
                    zygote.lock.release()
        return None

    def close(self) -> None:
        for z in self.started:
            z.close()
