"""A SIF file a build wrote before, kept when nothing that decides its bytes changed.

A SIF's UUID is made of what decides its bytes (the image digest, compressor, epoch,
attached objects, block size and the writer's ``FORMAT``:
:func:`assembler.transports.hpc.sif.image_uuid`) but the name of the image it was written
from, which its definition file says. Once one is written at a path, the cache records
that UUID and name there with the file's state (device, inode, size, mtime and ctime:
whatever writes the file moves its ctime, which no tool sets back). A build that would
write the same UUID at that path and finds the file in that state keeps it: a no-change
rebuild with a ``sif:`` output ran tar2sqfs again (20 s of CPU for a Debian minbase) to
write the very bytes it found there. A signed SIF is written each time (its signature is
made anew). A file whose ctime is within ``RACY_NS`` of when it was recorded may have been
written again in the same tick of the clock: its bytes are hashed instead (0.2 s for
100 MB, against the 20 s of writing it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from assembler.archive.headers import file_state
from assembler.cache import Cache
from assembler.oci.digest import file_digest
from assembler.transports.hpc.sif import SifInfo

RACY_NS = 1_000_000_000  # as a no-change build's record (assembler.cli.uptodate)


def _memo_key(path: Path) -> str:
    return "sif-at-" + hashlib.sha256(os.path.abspath(path).encode()).hexdigest()


def kept(cache: Cache, path: Path, sif_uuid: str, source: str) -> SifInfo | None:
    """What was written at ``path`` as the SIF ``sif_uuid`` of the image named ``source``,
    if the file is still that one."""
    try:
        st = path.lstat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):  # a symlink there is replaced, never written through
        return None
    state = list(file_state(st))

    def read(memo: Any) -> tuple[SifInfo, int] | None:
        if (memo["uuid"], memo["source"], memo["state"]) != (sif_uuid, source, state):
            return None
        return SifInfo(**{**memo["info"], "path": path}), int(memo["recorded_ns"])

    found = cache.memo_as(_memo_key(path), read)
    if found is None:
        return None
    info, recorded_ns = found
    if state[4] >= recorded_ns - RACY_NS and file_digest(path) != info.digest:
        return None
    return info


def remember(cache: Cache, info: SifInfo, source: str) -> None:
    """The SIF ``info`` says was written (of the image named ``source``), recorded with its
    file's state now."""
    fields = {k: v for k, v in dataclasses.asdict(info).items() if k != "path"}
    state = list(file_state(info.path.lstat()))
    memo = {"uuid": info.uuid, "source": source, "state": state, "info": fields, "recorded_ns": time.time_ns()}
    cache.put_memo(_memo_key(info.path), memo)
