"""Writable working copies of sources, kept between builds for incremental compiles.

A compile step sees each of its sources at ``/src/NAME`` as a writable copy that lives in
the cache (``step-caches/STEP/src-NAME``), like a developer's checkout: upstream builds
that write into their tree (generated headers, ``build-info.cpp``, setuptools' ``build/``)
work, and what they wrote stays for the next build, so a kept build tree recompiles only
what changed. The step's key still comes from the source itself, never from the copy.

Syncing the copy with the source:

- a file whose content changed (or that the last build modified in the copy) is replaced
  and gets the current time as mtime, so make/ninja always see it as newer than any
  output, even when the new source carries older times (another checkout, an archive);
- an unchanged file keeps the copy's mtime (a fresh checkout of the same content
  rebuilds nothing);
- files and folders that left the source leave the copy; files only the build wrote stay.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from assembler.errors import InputError

STATE = ".assemble-worktree.json"
_FORMAT = 1
_CHUNK = 1 << 20

# (kind, size, mtime_ns, mode, link target) of one path, in the source or in the copy.
Stamp = tuple[str, int, int, int, str]


@dataclass(frozen=True)
class SyncStats:
    """What a sync did: files copied, files kept, paths removed."""

    copied: int
    kept: int
    removed: int


def _stamp(st: os.stat_result, link: str = "") -> Stamp:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
    size = st.st_size if kind == "file" else 0
    return (kind, size, st.st_mtime_ns if kind == "file" else 0, stat.S_IMODE(st.st_mode), link)


def _walk(root: Path, keep: Callable[[str], bool]) -> Iterator[tuple[str, os.stat_result, str]]:
    """(relative path, lstat, link target) of every kept entry below ``root``, parents first."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(root / rel_dir if rel_dir else root) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if not keep(rel):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                yield rel, st, os.readlink(entry.path)
            elif stat.S_ISDIR(st.st_mode):
                yield rel, st, ""
                stack.append(rel)
            elif stat.S_ISREG(st.st_mode):
                yield rel, st, ""
            # Sockets, fifos and devices are not sources.


def _same_content(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _load_state(copy: Path, source: Path) -> dict[str, tuple[Stamp, Stamp]]:
    """The last sync's stamps (source's, copy's) by path; empty for another source or format."""
    try:
        data = json.loads((copy.parent / f"{copy.name}{STATE}").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("source") != str(source):
        return {}
    files = data.get("files")
    if not isinstance(files, dict):
        return {}
    out: dict[str, tuple[Stamp, Stamp]] = {}
    for rel, pair in files.items():
        try:
            src, dst = pair
            out[rel] = (tuple(src), tuple(dst))
        except (TypeError, ValueError):
            return {}
    return out


def _save_state(copy: Path, source: Path, files: dict[str, tuple[Stamp, Stamp]]) -> None:
    path = copy.parent / f"{copy.name}{STATE}"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": _FORMAT, "source": str(source), "files": files}, sort_keys=True))
    os.replace(tmp, path)


def sync(source: Path, copy: Path, *, keep: Callable[[str], bool]) -> SyncStats:
    """Bring the working copy ``copy`` in line with ``source`` (entries ``keep`` accepts).

    Raises InputError when the source cannot be read.
    """
    previous = _load_state(copy, source)
    if not previous and copy.exists():
        # No usable record (first sync, another source, an interrupted first sync): what
        # the copy holds is unknown, so start from an empty folder.
        _remove(copy)
    copy.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Stamp, Stamp]] = {}
    copied = kept = 0
    try:
        for rel, st, link in _walk(source, keep):
            src_stamp = _stamp(st, link)
            dst = copy / rel
            copied_now = _sync_entry(source / rel, dst, src_stamp, previous.get(rel))
            copied += copied_now
            kept += (not copied_now) and src_stamp[0] == "file"
            files[rel] = (src_stamp, _stamp(os.lstat(dst), link))
    except OSError as e:
        raise InputError(f"copying source {source} to its working copy {copy}: {e}") from e
    removed = 0
    for rel in sorted(set(previous) - set(files), key=len, reverse=True):
        path = copy / rel
        if os.path.lexists(path):
            _remove(path)
            removed += 1
    # Folders get their modes last: a read-only source folder must not stop the copy.
    for rel, (src_stamp, _) in files.items():
        if src_stamp[0] == "dir":
            os.chmod(copy / rel, src_stamp[3] | stat.S_IWUSR | stat.S_IXUSR)
            files[rel] = (src_stamp, _stamp(os.lstat(copy / rel)))
    _save_state(copy, source, files)
    return SyncStats(copied, kept, removed)


def _sync_entry(src: Path, dst: Path, want: Stamp, last: tuple[Stamp, Stamp] | None) -> bool:
    """Make ``dst`` match the source entry ``src``; True when file data was copied."""
    kind, _, _, mode, link = want
    have = _stamp(os.lstat(dst), os.readlink(dst) if dst.is_symlink() else "") if os.path.lexists(dst) else None
    if kind == "dir":
        if have is None or have[0] != "dir":
            if have is not None:
                _remove(dst)
            dst.mkdir(mode=0o755)
        return False
    if kind == "link":
        if have is None or have[0] != "link" or have[4] != link:
            if have is not None:
                _remove(dst)
            os.symlink(link, dst)
        return False
    # A regular file: unchanged in the source and untouched in the copy since the last sync?
    if have is not None and have[0] == "file" and last is not None and last == (want, have):
        return False
    if have is not None and have[0] == "file" and have[1] == want[1] and _same_content(src, dst):
        if have[3] != (mode | stat.S_IWUSR):
            os.chmod(dst, mode | stat.S_IWUSR)
        return False
    if have is not None:
        _remove(dst)
    tmp = dst.with_name(f".{dst.name}.assemble-tmp")
    shutil.copyfile(src, tmp)  # a new file: its mtime is now, newer than any build output
    os.chmod(tmp, mode | stat.S_IWUSR)
    os.replace(tmp, dst)
    return True
