"""``assemble registry start|stop [--port N]``: a registry of one's own for ``watch`` and
pushes, outside the clone (issue 67: only the demo's ``scripts/registry`` did this, inside it).

Debian's ``docker-registry`` (distribution 2.8) serves on 127.0.0.1 only, with no password
(nothing off this machine reaches it); its config, storage, log and pid file live in the
cache folder (``$XDG_CACHE_HOME/assembler/registry-PORT``), so what it holds stays between
starts and ``assemble cache`` budgets never see it. ``start`` returns once it answers
``/v2/`` (a registry already answering on the port is used as it is); ``stop`` ends the one
``start`` left, checked by its command line so a pid reused by another program is never
signalled."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from assembler.cache import default_root
from assembler.cli.console import say
from assembler.errors import InputError, ToolError

PROGRAM = "docker-registry"
_WAIT_S = 10.0


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["start", "stop"], help="start a registry on 127.0.0.1, or stop the one started")
    p.add_argument("--port", type=int, default=5000, help="the port on 127.0.0.1 (default: 5000)")


def folder_of(port: int) -> Path:
    """Where the registry on ``port`` keeps its config, storage, log and pid file."""
    return default_root() / f"registry-{port}"


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port}: not a port (1-65535)")
    return start(args.port) if args.action == "start" else stop(args.port)


def answers(port: int) -> bool:
    """Whether a registry answers ``/v2/`` on 127.0.0.1:``port`` (401 counts: one that asks for a login)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
            return True
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (OSError, ValueError):
        return False


def start(port: int) -> int:
    if answers(port):
        say(f"registry: already answering on 127.0.0.1:{port}: push to docker://127.0.0.1:{port}/NAME:TAG")
        return 0
    program = shutil.which(PROGRAM)
    if program is None:
        raise ToolError(f"{PROGRAM} is not installed", hint="apt-get install docker-registry")
    folder = folder_of(port)
    (folder / "storage").mkdir(parents=True, exist_ok=True)
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error, accesslog: {disabled: true}}\n"
        f"storage: {{filesystem: {{rootdirectory: {folder / 'storage'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    with open(folder / "log", "ab") as log:
        process = subprocess.Popen(
            [program, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives this command and its terminal's Ctrl-C
        )
    (folder / "pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        if answers(port):
            say(f"registry: started on 127.0.0.1:{port} (storage {folder / 'storage'})")
            say(f"push to docker://127.0.0.1:{port}/NAME:TAG; `assemble registry stop --port {port}` ends it")
            return 0
        if process.poll() is not None:
            break
        time.sleep(0.1)
    _end(process.pid)
    (folder / "pid").unlink(missing_ok=True)
    raise ToolError(f"{PROGRAM} did not start on 127.0.0.1:{port}", hint=f"its log: {folder / 'log'}")


def stop(port: int) -> int:
    pidfile = folder_of(port) / "pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        say(f"registry: none started by assemble on port {port}")
        return 0
    if _is_ours(pid, folder_of(port) / "config.yml"):
        _end(pid)
        say(f"registry: stopped on 127.0.0.1:{port} (what it holds stays in {folder_of(port) / 'storage'})")
    else:
        say(f"registry: the one started on port {port} is gone")
    pidfile.unlink(missing_ok=True)
    return 0


def _is_ours(pid: int, config: Path) -> bool:
    """Whether ``pid`` is still the registry serving ``config`` (not a pid reused since)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and Path(os.fsdecode(argv[0])).name == PROGRAM and os.fsencode(config) in argv


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _end(pid: int) -> None:
    """SIGTERM, then SIGKILL if it has not ended within a few seconds; reaped if it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
