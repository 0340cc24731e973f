"""What is known of a host file without reading it again: a program's version (part of step
and base keys) and a file's digest, remembered in the cache by the file's identity (real
path, device, inode, size, modification and change times: a package upgrade or an edit
replaces one of them). A no-change rebuild thus starts no program whose answer it already
knows (``mmdebstrap --version`` is a Perl start-up, 0.3 s) and reads no unchanged tarball.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from assembler.cache.entries import Cache
from assembler.cache.store import key_of
from assembler.oci.digest import file_digest


def file_identity(path: Path) -> list[object]:
    """What tells one file from another without reading it: the real path (a symlink
    followed), device, inode, size, modification and change times (ctime: no tool sets it
    back). Raises OSError when the file cannot be stat'ed."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return [real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def program_version(
    cache: Cache, name: str, found: Path | None, ask: Callable[[], str], *, record: bool, missing: str
) -> str:
    """The version of the program ``name`` found at ``found``: the one remembered for this
    very binary, else ``ask()``'s (which starts it), remembered when ``record`` (a plan
    writes nothing). Without the program (``found`` None), the version last recorded, else
    ``missing``. Raises what ``ask`` raises."""
    memo = f"tool-{name}"
    recorded = cache.memo(memo) or {}
    version = recorded.get("version")
    if found is None:
        return version if isinstance(version, str) else missing
    stamp = file_identity(found)
    if recorded.get("binary") == stamp and isinstance(version, str):
        return version  # the same binary: not started again
    version = ask()
    if record:
        cache.put_memo(memo, {"version": version, "binary": stamp})
    return version


def remembered_file_digest(cache: Cache, path: Path, *, record: bool) -> str:
    """The ``sha256:`` digest of the file at ``path``, remembered by the file's identity:
    an unchanged file is not read again. Remembered (when ``record``: a plan writes
    nothing) only if the file did not change while it was read. Raises OSError when the
    file cannot be read."""
    before = file_identity(path)
    memo = "file-digest-" + key_of({"identity": before})
    hit = cache.memo(memo)
    if hit is not None and isinstance(hit.get("digest"), str):
        return str(hit["digest"])
    digest = file_digest(path)
    if record and file_identity(path) == before:
        cache.put_memo(memo, {"digest": digest})
    return digest
