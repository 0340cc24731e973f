"""Running external programs (buildah, skopeo, mmdebstrap, tar2sqfs...): the only owner of plumbum.

A :class:`Runner` is passed to whoever needs one, so tests and callers decide how
programs run. Failures raise :class:`ToolError` with the argv, the exit code and the
tail of stderr; a missing program raises ToolError with an install hint.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from assembler.errors import InputError, TimedOut, ToolError
from assembler.proclines import output_lines

log = logging.getLogger(__name__)

# Debian packages that provide the programs we call, for the "how to fix" hint.
PACKAGES = {
    "buildah": "buildah",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "mmdebstrap": "mmdebstrap",
    "tar2sqfs": "squashfs-tools-ng",
    "sqfs2tar": "squashfs-tools-ng",
    "unsquashfs": "squashfs-tools",
    "mksquashfs": "squashfs-tools",
    "siftool": "siftool",
    "git": "git",
    "newuidmap": "uidmap",
}


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def _missing(name: str) -> ToolError:
    pkg = PACKAGES.get(name)
    hint = f"install it: apt-get install {pkg}" if pkg else "install it or put it on PATH"
    return ToolError(f"{name} is not installed (not found on PATH)", argv=(name,), hint=hint)


class Runner:
    """Runs programs. ``env`` entries are added to the caller's environment."""

    def __init__(self, *, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})
        # The process groups :meth:`stream` runs (a step's commands), so that one failing
        # step can stop the others that run at the same time (:meth:`cancel`).
        self._live: set[subprocess.Popen[bytes]] = set()
        self._live_lock = threading.Lock()
        self._cancelled = False

    def cancel(self) -> None:
        """Stop every streamed program running now, and any started from now on: the build
        is given up (a step failed, or Ctrl-C). They end with a non-zero exit."""
        with self._live_lock:
            self._cancelled = True
            live = list(self._live)
        for proc in live:
            _kill_group(proc)

    def reset_cancel(self) -> None:
        """After :meth:`cancel`: programs may run again (the next build)."""
        with self._live_lock:
            self._cancelled = False

    def which(self, name: str) -> Path | None:
        """Where ``name`` is found on this runner's PATH (nothing is started)."""
        found = shutil.which(name, path=self._env(None).get("PATH"))
        return Path(found) if found is not None else None

    def _command(self, argv: Sequence[str]) -> Any:
        from plumbum.commands.processes import CommandNotFound

        try:
            cmd = _local()[argv[0]]
        except CommandNotFound as e:
            raise _missing(argv[0]) from e
        return cmd[list(argv[1:])]

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        merged = dict(os.environ)
        merged.update(self.env)
        if env:
            merged.update(env)
        return merged

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> Result:
        """Run to completion, capturing text output. ToolError on a non-zero exit if ``check``.

        If the wait is interrupted (Ctrl-C, timeout), the program is killed: nothing keeps
        running after the caller has given up on it.
        """
        started = time.monotonic()
        try:
            local = _local()
            with local.env(**self._env(env)), local.cwd(str(cwd) if cwd is not None else local.cwd):
                # Looked up here, on the PATH of this call (plumbum's own copy is the one at import).
                cmd = self._command(argv)
                proc = cmd.popen(
                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
        except OSError as e:
            raise ToolError(f"{argv[0]} could not start: {e.strerror}", argv=argv) from e
        try:
            out_b, err_b = proc.communicate(input.encode() if input is not None else None, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            _stop(proc)
            raise ToolError(f"{argv[0]} did not finish within {timeout} s", argv=argv) from e
        except BaseException:
            _stop(proc)
            raise
        code = proc.returncode
        out = out_b.decode("utf-8", "replace")
        err = err_b.decode("utf-8", "replace")
        log.debug("ran in %.2f s: %s", time.monotonic() - started, shlex.join(argv))
        result = Result(tuple(argv), int(code), out, err)
        if check and code != 0:
            raise ToolError(
                f"{argv[0]} failed (exit {code}): {tail(err or out, 10) or 'no output'}",
                argv=argv,
                returncode=int(code),
                stderr_tail=tail(err or out),
            )
        return result

    @contextmanager
    def popen(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | IO[bytes] | None = None,
        stdout: int | IO[bytes] | None = None,
        stderr: int | IO[bytes] | None = subprocess.PIPE,
    ) -> Iterator[subprocess.Popen[bytes]]:
        """A running process for streaming; killed if the block exits with an error.

        The caller reads/writes the pipes and calls :meth:`finish` to check the exit.
        """
        cmd = self._command(argv)
        log.debug("popen: %s", shlex.join(argv))
        with _local().env(**self._env(env)):
            proc: subprocess.Popen[bytes] = cmd.popen(stdin=stdin, stdout=stdout, stderr=stderr)
        try:
            yield proc
        except BaseException:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise
        finally:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None and not pipe.closed:
                    try:
                        pipe.close()
                    except OSError:
                        pass
            if proc.poll() is None:
                proc.wait()

    @staticmethod
    def finish(proc: subprocess.Popen[bytes], argv: Sequence[str], stderr: bytes = b"") -> None:
        """Wait for ``proc``; ToolError with the stderr tail if it failed."""
        code = proc.wait()
        if code != 0:
            text = stderr.decode("utf-8", "replace")
            raise ToolError(
                f"{argv[0]} failed (exit {code}): {tail(text, 10) or 'no output'}",
                argv=argv,
                returncode=code,
                stderr_tail=tail(text),
            )

    def stream(
        self,
        argv: Sequence[str],
        *,
        log_file: IO[str],
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        redact: Sequence[str] = (),
        keep: int = 30,
        rewrite: Callable[[str], str | None] | None = None,
        timeout: float | None = None,
        follow: Path | None = None,
    ) -> tuple[int, str]:
        """Run with stdout+stderr merged into ``log_file`` line by line.

        Every value in ``redact`` is replaced by ``***`` before a line is written or shown
        (secrets); ``rewrite`` may change a line first, or drop it (None). Returns the
        exit code and the last ``keep`` lines. Ctrl-C kills the process group and re-raises;
        so does ``timeout`` seconds passing, which raises TimedOut (with the last lines).
        ``follow``: a file the program writes its output to, read first (:func:`~assembler.proclines.followed`)."""
        cmd = self._command(argv)
        last: deque[str] = deque(maxlen=keep)
        secrets = redaction_pieces(redact)
        started = time.monotonic()
        with _local().env(**self._env(env)):
            proc: subprocess.Popen[bytes] = cmd.popen(
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._watch(proc)
        limit = _TimeLimit(proc, timeout)
        try:
            for raw in output_lines(proc, follow):
                line = _shown_line(raw, rewrite, secrets)
                if line is None:
                    continue
                log_file.write(line + "\n")
                last.append(line)
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            limit.cancel()
            with self._live_lock:
                self._live.discard(proc)
            log_file.flush()
        log.debug("streamed in %.2f s (exit %d): %s", time.monotonic() - started, code, shlex.join(argv)[:300])
        if limit.expired.is_set():
            raise TimedOut(
                f"{argv[0]} did not finish within {timeout:g} s",
                argv=argv,
                seconds=timeout or 0,
                stderr_tail="\n".join(last),
            )
        return code, "\n".join(last)

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """Count ``proc`` among the live programs :meth:`cancel` stops (stopped at once if
        the build is given up already)."""
        with self._live_lock:
            self._live.add(proc)
            cancelled = self._cancelled
        if cancelled:
            _kill_group(proc)

    def interactive(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> int:
        """Run with this process's terminal (stdin, stdout, stderr), as a shell would; its
        exit status. Ctrl-C reaches the program (the same process group) and is waited for."""
        cmd = self._command(argv)
        with _local().env(**self._env(env)):
            proc: subprocess.Popen[bytes] = cmd.popen(stdin=None, stdout=None, stderr=None)
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the program got it too: it decides whether to end
                continue


# A shorter line of a multi-line secret stays: masking every "==" or "-----" garbles the log
# and hides almost nothing of a key.
_MIN_PIECE = 8


def uv_binary() -> str:
    """uv from this Python's environment (the ``uv`` package on PyPI, a dependency of ours),
    else from PATH: what ``assemble lock`` resolves with and a set's ``uv.lock`` is read by."""
    here = Path(sys.executable).parent / "uv"
    if here.is_file():
        return str(here)
    found = shutil.which("uv")
    if found is None:
        raise InputError("uv is not installed: assemble lock resolves with it", hint="pip install uv")
    return found


def redaction_pieces(secrets: Sequence[str]) -> list[str]:
    """What to mask in each output line, longest first: every secret, and every line of a
    multi-line one (a PEM key or a kubeconfig reaches the log a line at a time, where the
    whole value never matches)."""
    pieces: set[str] = set()
    for secret in secrets:
        if secret:
            pieces.add(secret)
            pieces.update(p.strip() for p in secret.splitlines() if len(p.strip()) >= _MIN_PIECE)
    return sorted(pieces, key=lambda p: (-len(p), p))


def _shown_line(raw: bytes, rewrite: Callable[[str], str | None] | None, secrets: Sequence[str]) -> str | None:
    """An output line as logged: decoded, rewritten (None: dropped), its secrets masked."""
    decoded: str | None = raw.decode("utf-8", "replace").rstrip("\n")
    if rewrite is not None and decoded is not None:
        decoded = rewrite(decoded)
    if decoded is None:
        return None
    for secret in secrets:
        decoded = decoded.replace(secret, "***")
    return decoded


class _TimeLimit:
    """Stops ``proc`` (its process group) once ``seconds`` pass (None: never);
    :attr:`expired` says whether it did."""

    def __init__(self, proc: subprocess.Popen[bytes], seconds: float | None) -> None:
        self.expired = threading.Event()
        self._timer = threading.Timer(seconds, self._expire, (proc,)) if seconds is not None else None
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()

    def _expire(self, proc: subprocess.Popen[bytes]) -> None:
        self.expired.set()
        _kill_group(proc)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _local() -> Any:
    """plumbum's machine, imported when a program first runs: plumbum loads urllib, email
    and ssl, a tenth of a second a run that starts nothing (a no-change rebuild) need not pay."""
    from plumbum import local

    return local


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a child we stopped waiting for, and reap it (SIGKILL after 5 s)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    timer = threading.Timer(5.0, lambda: _hard_kill(proc))
    timer.start()
    try:
        proc.wait()
    finally:
        timer.cancel()


def _hard_kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
