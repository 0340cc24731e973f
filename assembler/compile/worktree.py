"""Writable working copies of sources, kept between builds for incremental compiles.

A compile step sees each of its sources at ``/src/NAME`` as a writable copy that lives in
the cache (next to the step's kept ``cache:`` folders), like a developer's checkout:
upstream builds that write into their tree (generated headers, ``build-info.cpp``,
setuptools' ``build/``) work, and what they wrote stays for the next build, so a kept
build tree recompiles only what changed. The step's key still comes from the source
itself, never from the copy.

Syncing the copy with the source (a folder, a git checkout or an unpacked download):

- a file whose content changed, or that the last build modified in the copy, is replaced
  and gets the current time as mtime, so make/ninja always see it as newer than any
  output, even when the new source carries older times (another checkout, an archive);
- a file with the same content keeps the copy's mtime (a new commit that leaves a file
  alone, or a fresh checkout of the same content, rebuilds nothing for it);
- files and folders that left the source leave the copy; files only the build wrote stay.

A sync that was interrupted leaves a mark: the next one starts from an empty copy, since
what the copy then holds is not known.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import stat
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assembler.cache import Cache, Origin
from assembler.errors import CacheError

log = logging.getLogger(__name__)
# How many kept folders (build trees and working copies of one step definition) a step keeps.
KEEP_DEFINITIONS = 3

STATE = ".assemble-worktree.json"
_FORMAT = 2
_CHUNK = 1 << 20

# (kind, size, mtime_ns, mode, link target, ctime_ns, inode) of one path. ctime and inode
# are in it because no tool sets them back: a file rewritten with its old size and mtime
# (cp -p, rsync -a, tar) still differs.
Stamp = tuple[str, int, int, int, str, int, int]


@dataclass(frozen=True)
class SyncStats:
    """What a sync did: files copied, files kept, paths removed."""

    copied: int
    kept: int
    removed: int


def _stamp(st: os.stat_result, link: str = "") -> Stamp:
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "link" if stat.S_ISLNK(st.st_mode) else "file"
    if kind != "file":
        return (kind, 0, 0, stat.S_IMODE(st.st_mode), link, 0, 0)
    return (kind, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), link, st.st_ctime_ns, st.st_ino)


def walk(root: Path, keep: Callable[[str], bool]) -> Iterator[tuple[str, os.stat_result, str]]:
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


def _writable_then_retry(func: Callable[..., Any], path: str, _exc: object) -> None:
    """rmtree's error handler: a build may leave read-only folders (Go's module cache)."""
    parent = os.path.dirname(path)
    os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, os.stat(path).st_mode | stat.S_IRWXU)
    func(path)


def remove_tree(path: Path) -> None:
    """Remove ``path`` (a folder with all it holds, read-only folders too; or a file, a
    link). Raises OSError."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=_writable_then_retry)
    else:
        path.unlink(missing_ok=True)


def _inside_real_folders(copy: Path, rel: str) -> bool:
    """True when every parent of ``rel`` in the copy is a real folder, not a link: removing
    an old path must never reach through a link the sync just made (``a`` -> ``/usr``)."""
    parts = rel.split("/")[:-1]
    path = copy
    for part in parts:
        path = path / part
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return False
        except FileNotFoundError:
            return False
    return True


def _state_path(copy: Path) -> Path:
    return copy.parent / f"{copy.name}{STATE}"


def _load_state(copy: Path) -> dict[str, tuple[Stamp, Stamp]] | None:
    """The last complete sync's stamps (source's, copy's) by path; None when there is no
    usable record (first sync, another format, an interrupted sync)."""
    try:
        data = json.loads(_state_path(copy).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("complete") is not True:
        return None
    files = data.get("files")
    if not isinstance(files, dict):
        return None
    out: dict[str, tuple[Stamp, Stamp]] = {}
    for rel, pair in files.items():
        try:
            src, dst = pair
            out[rel] = (tuple(src), tuple(dst))
        except (TypeError, ValueError):
            return None
    return out


def _save_state(copy: Path, files: dict[str, tuple[Stamp, Stamp]], *, complete: bool) -> None:
    path = _state_path(copy)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"format": _FORMAT, "complete": complete, "files": files}, sort_keys=True))
    os.replace(tmp, path)


def sync(source: Path, copy: Path, *, keep: Callable[[str], bool]) -> SyncStats:
    """Bring the working copy ``copy`` in line with ``source`` (entries ``keep`` accepts).

    Raises CacheError when the source cannot be read or the copy cannot be written.
    """
    try:
        return _sync(source, copy, keep)
    except OSError as e:
        raise CacheError(f"syncing the working copy {copy} with the source {source}: {e}") from e


def _sync(source: Path, copy: Path, keep: Callable[[str], bool]) -> SyncStats:
    previous = _load_state(copy)
    if previous is None:
        # What the copy holds is unknown (first sync, interrupted sync): start empty.
        if os.path.lexists(copy):
            remove_tree(copy)
        previous = {}
    copy.mkdir(parents=True, exist_ok=True)
    _save_state(copy, previous, complete=False)  # an interruption from here on is seen
    files: dict[str, tuple[Stamp, Stamp]] = {}
    copied = kept = 0
    for rel, st, link in walk(source, keep):
        src_stamp = _stamp(st, link)
        dst = copy / rel
        copied_now = _sync_entry(source / rel, dst, src_stamp, previous.get(rel))
        copied += copied_now
        kept += (not copied_now) and src_stamp[0] == "file"
        files[rel] = (src_stamp, _stamp(os.lstat(dst), link))
    removed = 0
    for rel in sorted(set(previous) - set(files), key=lambda r: r.count("/"), reverse=True):
        path = copy / rel
        if _inside_real_folders(copy, rel) and os.path.lexists(path):
            remove_tree(path)
            removed += 1
    # Folders get their modes last: a read-only source folder must not stop the copy.
    for rel, (src_stamp, _) in files.items():
        if src_stamp[0] == "dir":
            os.chmod(copy / rel, src_stamp[3] | stat.S_IWUSR | stat.S_IXUSR)
            files[rel] = (src_stamp, _stamp(os.lstat(copy / rel)))
    _save_state(copy, files, complete=True)
    return SyncStats(copied, kept, removed)


def _sync_entry(src: Path, dst: Path, want: Stamp, last: tuple[Stamp, Stamp] | None) -> bool:
    """Make ``dst`` match the source entry ``src``; True when file data was copied."""
    kind, _, _, mode, link, _, _ = want
    have = _stamp(os.lstat(dst), os.readlink(dst) if dst.is_symlink() else "") if os.path.lexists(dst) else None
    if kind == "dir":
        if have is None or have[0] != "dir":
            if have is not None:
                remove_tree(dst)
            dst.mkdir(mode=0o755)
        return False
    if kind == "link":
        if have is None or have[0] != "link" or have[4] != link:
            if have is not None:
                remove_tree(dst)
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
        remove_tree(dst)
    tmp = dst.with_name(f".{dst.name}.assemble-tmp")
    shutil.copyfile(src, tmp)  # a new file: its mtime is now, newer than any build output
    os.chmod(tmp, mode | stat.S_IWUSR)
    os.replace(tmp, dst)
    return True


# -- kept folders ----------------------------------------------------------------------


def kept_path(cache: Cache, step: str, tree_key: str) -> Path:
    """Where step ``step`` keeps what it keeps between builds of the definition ``tree_key``."""
    return cache.path("step-caches", step) / tree_key.split(":")[-1][:16]


@contextmanager
def kept_folder(
    cache: Cache, step: str, tree_key: str, *, fresh: bool = False, trusted: Collection[str] = ()
) -> Iterator[Path]:
    """The folder of what a step keeps between builds of one definition (its ``cache:``
    folders and source working copies), held under a lock while the step runs: another
    build of the same definition waits, and pruning never takes a folder in use.
    ``fresh`` empties it first; so does ``trusted`` (``--cache-trust``'s key ids) when the
    folder was restored from a registry entry none of those keys signed (a warning):
    nothing is built on it. Folders of older definitions beyond the newest
    ``KEEP_DEFINITIONS`` are removed when nobody holds them. Raises CacheError."""
    folder = kept_path(cache, step, tree_key)
    root = folder.parent
    try:
        with open(root / f"{folder.name}.lock", "a") as lock:
            if not try_lock(lock):
                log.warning("step %s: another build is using its kept folder %s; waiting", step, folder)
                fcntl.flock(lock, fcntl.LOCK_EX)
            origin = cache.folder_origin(folder) if trusted and not fresh else None
            if origin is not None and origin.signer not in trusted:
                # As a local step record taken unchecked is a miss under --cache-trust: the
                # step starts from an empty folder (restored from a signed entry if there is one).
                log.warning(
                    "step %s: its kept folder %s was restored from %s, which no --cache-trust key signed: "
                    "emptied, nothing is built on it",
                    step,
                    folder,
                    restored_from(origin),
                )
                fresh = True
            if fresh and os.path.lexists(folder):
                remove_tree(folder)
                cache.put_folder_origin(folder, None)  # made here from now on
            folder.mkdir(exist_ok=True)
            os.utime(folder)
            _prune(cache, root, folder, step)
            yield folder
    except OSError as e:
        raise CacheError(f"step {step}: preparing its kept folder {folder}: {e}") from e


def restored_from(origin: Origin) -> str:
    """The entry a kept folder was restored from, as a warning names it."""
    if not origin.tag:  # its record is unreadable (Cache.folder_origin): taken as unchecked
        return f"an entry its unreadable record {origin.repository} named"
    return f"docker://{origin.repository}:{origin.tag}"


def try_lock(lock: Any) -> bool:
    """Whether ``flock`` gave the open file ``lock`` to this process alone without waiting
    (False: another holds it; a lock this file held before is dropped then)."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _prune(cache: Cache, root: Path, current: Path, step: str) -> None:
    others = []
    for p in root.iterdir():
        try:
            if p != current and len(p.name) == 16 and p.is_dir():
                others.append((p.stat().st_mtime, p))
        except FileNotFoundError:  # pruned by another build meanwhile
            continue
    for _, old in sorted(others, reverse=True)[KEEP_DEFINITIONS - 1 :]:
        with open(root / f"{old.name}.lock", "a") as lock:
            if not try_lock(lock):
                continue  # in use by another build
            log.info("step %s: removing the kept folder of an older definition (%s)", step, old.name)
            shutil.rmtree(old, onerror=_writable_then_retry)
            cache.put_folder_origin(old, None)
