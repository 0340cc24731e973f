"""Temp files, named so that those of killed runs can be told apart and reclaimed.

A temp name carries its writer's pid and a tag of its machine (``.tmp-p<pid>-h<host>-...``,
:func:`temp_prefix`): :func:`reclaim` removes the files of a pid that is not running on
this machine once untouched for a while (a pid seen from another pid namespace may lie),
and another machine's (a Slurm node sharing the cache) after a day. An output's temp file
(SIF, sqsh, the archives, a layout's) is also held with ``flock`` while it is written
(:func:`locked_temp`): a free lock and a dead pid mark a leftover at once, so the next write
of that output reclaims a killed one's even seconds after it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)
# A temp file untouched this long whose writer is gone is a leftover (without a pid: a day).
STALE_SECONDS = 60.0
ABANDONED_SECONDS = 24 * 3600.0
_PID_RE = re.compile(r"(?:^|[.-])p(\d+)-(?:h([0-9a-f]{8})-)?")


def _host_tag() -> str:
    """This machine, in temp names: a pid means nothing on another node sharing the cache."""
    return hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:8]


def temp_prefix(prefix: str) -> str:
    """A temp name prefix naming this process and machine, so :func:`reclaim` can tell
    leftovers apart (also where several nodes share the cache over NFS or Lustre)."""
    return f"{prefix}p{os.getpid()}-h{_host_tag()}-"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def locked_temp(folder: Path, prefix: str, suffix: str = "", *, mode: int = 0o600) -> tuple[int, Path]:
    """A new temp file in ``folder`` named by :func:`temp_prefix` (``mode`` less the umask:
    0600 as ``mkstemp``'s by default), and an open descriptor (for writing) holding ``flock``
    on it: the writer keeps it open until the file is renamed or removed, so :func:`reclaim`
    with ``locked`` tells a killed writer's file (lock free) from a live one's at once,
    whatever its age. A program given the name (tar2sqfs) writes the same inode: the lock
    stays. Raises OSError."""
    while True:
        path = folder / f"{temp_prefix(prefix)}{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        except FileExistsError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else holds it
        return fd, path


_HELD = -1


def _lock_of(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its ``flock`` (nobody held it); _HELD when
    someone holds it; None when that cannot be told (a symlink, no permission)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return _HELD
    except OSError:
        os.close(fd)
        return None
    return fd


def _stale(path: Path, age: float, *, locked: bool) -> bool:
    pids = _PID_RE.findall(path.name)
    pid, host = (int(pids[-1][0]), pids[-1][1]) if pids else (None, "")  # the last: an output's name may look alike
    if pid is None or (host and host != _host_tag()):
        # Another machine's (a node on a shared cache): whether it is alive is not known here.
        return age > ABANDONED_SECONDS
    if pid == os.getpid() or pid_alive(pid):
        return False
    # Its writer is gone. Without its lock to say so, only a file untouched for a while is
    # taken for a leftover (a pid seen from another pid namespace on this host may lie).
    return locked or age > STALE_SECONDS


def reclaim(folder: Path, pattern: str, *, locked: bool = False) -> int:
    """Remove ``pattern`` temp files (or folders) in ``folder`` left by killed runs; how many.

    A leftover is untouched for STALE_SECONDS and names a pid that is not running (or,
    from before pids were in names, untouched for ABANDONED_SECONDS). Files of concurrent
    runs are kept: they are younger, or their writer is alive. With ``locked`` (files made
    by :func:`locked_temp`), a file whose ``flock`` is held is a live writer's, and one
    whose lock is free and whose pid is not running is a leftover however young.
    """
    removed = 0
    now = time.time()
    try:
        candidates = list(folder.glob(pattern))
    except OSError:
        return 0
    for path in candidates:
        try:
            age = now - path.lstat().st_mtime
        except OSError:
            continue
        lock = _lock_of(path) if locked else None
        if lock == _HELD:
            continue  # its writer is alive
        try:
            if not _stale(path, age, locked=lock is not None):
                continue
            log.info("removing %s, left by an interrupted run", path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        finally:
            if lock is not None:
                os.close(lock)
        removed += 1
    return removed
