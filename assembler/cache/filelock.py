"""The cache lock as a process holds it, and what the process used of the cache.

Every build holds ``CACHE/lock`` shared, ``cache prune`` (and a build keeping the cache
within its budget, when it is alone) exclusive. A process holds it once per cache root,
however many stores it opens there (a build opens several): ``flock`` ties a lock to an
open file, so two of one process's files would count as two users, and a build could
never take the cache alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from assembler.errors import CacheError

log = logging.getLogger(__name__)


def _shared_lock(path: Path) -> BinaryIO:
    """The cache's lock file, held shared (waiting while a prune holds it): ``cache prune``
    takes it exclusive, so it never removes what a running build is about to use.
    CacheError when it cannot be opened."""
    try:
        lock = open(path, "ab")  # noqa: SIM115 - held for the cache's life
    except OSError as e:
        raise CacheError(f"cannot open the cache lock {path}: {e.strerror}") from e
    try:
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        log.warning("the cache at %s is being pruned; waiting", path.parent)
        fcntl.flock(lock, fcntl.LOCK_SH)
    return lock


@dataclass
class Uses:
    """What this process used of one cache, which keeping the cache within its budget
    never removes: everything last used (a record's hit, a folder's stamp) or written
    since ``since``, whoever wrote it (the export agent and Slurm jobs are processes of
    their own), and the blobs in ``blobs`` (digests this process read, wrote or found:
    a base read from a layout is blobs no entry names, and reading a blob does not stamp
    it, which would move the times its ``Cache.blob_intact`` vouching rests on)."""

    since: float
    blobs: set[str] = field(default_factory=set)


class Held:
    """One cache root's lock as this process holds it (shared while any of its stores is
    open), and what the process used of that cache."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        self.count = 0
        # A second early: file times are coarse on some filesystems, and what this run
        # wrote in its first second must count as its own.
        self.uses = Uses(since=time.time() - 1)

    def hold(self) -> BinaryIO:
        """The lock file, held shared (opened by the first store on this cache). CacheError
        when it cannot be opened."""
        with _HELD_LOCK:
            if self.file is None:
                self.file = _shared_lock(self.path)
            self.count += 1
            return self.file

    def release(self) -> None:
        """A store on this cache is gone; the last one closes the file (and so drops the lock)."""
        with _HELD_LOCK:
            self.count -= 1
            if self.count == 0 and self.file is not None:
                self.file.close()
                self.file = None


_HELD: dict[str, Held] = {}
# Reentrant: a store's finalizer (release) may run in this thread while it holds the lock.
_HELD_LOCK = threading.RLock()


def held(lock: Path) -> Held:
    """This process's hold on the cache lock file ``lock`` (one per file, however named)."""
    key = os.path.realpath(lock)
    with _HELD_LOCK:
        found = _HELD.get(key)
        if found is None:
            found = _HELD[key] = Held(lock)
        return found
