"""Tar members from a host file or directory (the ``copy`` layer and artifact exports).

What a user expects from ``COPY``: a directory's *contents* land under the destination,
a file lands at the destination (or inside it when it ends with ``/``), the top-level
source is followed if it is a symlink, symlinks inside are kept as links, hard links
inside stay hard links. Host files get uid/gid 0 unless an owner is given;
setuid/setgid/sticky bits and ``security.capability`` are kept.

The destination's parent folders are not written: the image below has them (their
owner and mode must not be reset) or the extractor creates them; and a parent that is
a symlink there (merged-/usr ``/lib``) is followed, as ``COPY`` does, not replaced.

Permission bits of host files are taken the way git keeps them (``git_modes``): 0755
when the owner may execute, else 0644, folders 0755; and their times are set to the
epoch: the user's umask, checkout time or file creation order never changes a digest.
Trees read from a build container keep their exact modes and clamped times.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from assembler.archive.headers import RACY_NS, file_state
from assembler.archive.layer import Member
from assembler.archive.tar import ALLOWED_XATTRS, TarEntry, clean_path
from assembler.archive.ustar import Kind


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        # One call that lists none for most files, rather than one that fails per name.
        names = ALLOWED_XATTRS.intersection(os.listxattr(path, follow_symlinks=False))
    except OSError:
        return {}  # ENOTSUP: nothing to keep
    out: dict[str, bytes] = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue  # removed since it was listed
    return out


class HostFile:
    """Opens a host file for a layer's writer (an :data:`Opener`); ``state`` is what
    ``stat`` said of it when its tree was walked."""

    __slots__ = ("path", "state")

    def __init__(self, path: str, state: os.stat_result) -> None:
        self.path = path
        self.state = state

    def __call__(self) -> AbstractContextManager[BinaryIO]:
        # Unbuffered: the tar writer reads each file straight into its own buffer
        # (readinto), and a BufferedReader per file would cost its creation and a copy.
        return cast(AbstractContextManager[BinaryIO], io.FileIO(self.path, "r"))  # the writer closes it


@dataclass(frozen=True)
class Fingerprint:
    """What ``stat`` says of the members of a layer of host files: when it is unchanged,
    so is the layer (as git's index assumes). ``newest``: the latest change time of a file
    (ns); a file changed within the clock's granularity of its read may yet change again
    unseen, so a fingerprint is remembered only when that is long past."""

    digest: str
    newest: int


def fingerprint(members: Iterable[Member]) -> Fingerprint | None:
    """The :class:`Fingerprint` of ``members``: every entry as it is written, and each
    file's identity, size and times (ctime is in it: no tool sets it back); None when a
    file's data is not a host file :func:`iter_host_members` found."""
    h = hashlib.sha256()
    newest = 0
    for entry, opener in members:
        ident = ""
        if opener is not None:
            if not isinstance(opener, HostFile):
                return None
            st = opener.state
            ident = ":".join(map(str, file_state(st)))
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        h.update(f"{entry!r}\0{ident}\n".encode("utf-8", "surrogateescape"))
    return Fingerprint(h.hexdigest(), newest)


def _kind(mode: int) -> Kind | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "char"
    if stat.S_ISBLK(mode):
        return "block"
    return None  # sockets: dropped


def git_mode(kind: str, mode: int) -> int:
    """Permission bits as a git checkout reproduces them (special bits kept)."""
    special = mode & 0o7000
    if kind == "dir" or (kind == "file" and mode & 0o100):
        return special | 0o755
    return special | 0o644


def parents(path: str) -> Iterator[str]:
    """``a``, ``a/b`` for ``a/b/c``: the directories a path needs."""
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


@dataclass(frozen=True)
class _Attrs:
    """How host files' attributes become entries' (see :func:`iter_host_members`)."""

    mode: int | None
    uid: int
    gid: int
    keep_owner: bool
    git_modes: bool
    mtime: int | None
    leave_out: frozenset[tuple[int, int]] = frozenset()  # (st_dev, st_ino) of what is never taken

    def entry(self, host: str, st: os.stat_result, path: str) -> TarEntry | None:
        kind = _kind(st.st_mode)
        if kind is None:
            return None
        perm = stat.S_IMODE(st.st_mode)
        if self.mode is not None and kind in ("file", "dir"):
            # Keep setuid/setgid/sticky only if the override asks for them.
            perm = self.mode
        elif self.git_modes and kind in ("file", "dir"):
            perm = git_mode(kind, perm)
        return TarEntry(
            path=path,
            kind=kind,
            mode=perm,
            uid=st.st_uid if self.keep_owner else self.uid,
            gid=st.st_gid if self.keep_owner else self.gid,
            size=st.st_size if kind == "file" else 0,
            mtime=int(st.st_mtime) if self.mtime is None else self.mtime,
            linkname=os.readlink(host) if kind == "symlink" else "",
            devmajor=os.major(st.st_rdev) if kind in ("char", "block") else 0,
            devminor=os.minor(st.st_rdev) if kind in ("char", "block") else 0,
            xattrs=_xattrs(host) if kind in ("file", "dir") else {},
        )


def settled(members: Iterable[Member], before: Fingerprint, started: int) -> bool:
    """Whether ``before`` (taken when ``members`` were walked) may be remembered for the
    layer read from them since ``started`` (ns): no file changed in the last moments before
    the read (:data:`RACY_NS`), nor while it was read (each is stat'ed again)."""
    if before.newest >= started - RACY_NS:
        return False
    try:
        now = [(e, HostFile(o.path, os.stat(o.path)) if isinstance(o, HostFile) else o) for e, o in members]
    except OSError:
        return False
    return fingerprint(now) == before


def iter_host_members(
    src: Path,
    dest: str,
    *,
    mode: int | None = None,
    uid: int = 0,
    gid: int = 0,
    keep_owner: bool = False,
    git_modes: bool = False,
    mtime: int | None = None,
    leave_out: Iterable[Path] = (),
) -> Iterator[Member]:
    """Members for copying host ``src`` to image path ``dest`` (absolute or relative),
    yielded while walking, already in layer order (so writing starts at once).

    Layer order (path components, bytewise) is a depth-first walk with each folder's
    names sorted, so no list of the whole tree is needed; a hard link's first path in
    that order carries the data. ``mode`` overrides permission bits of files and
    directories (not links); ``keep_owner`` keeps the host uid/gid (trees read from a
    container root); ``git_modes`` normalises permission bits as git would (host
    sources); ``mtime`` replaces every file's time (a checkout's times are noise).
    ``leave_out``: files and folders below ``src`` that are never taken, by identity (the
    cache and the outputs, when ``src`` holds them). Raises FileNotFoundError if ``src``
    does not exist.
    """
    attrs = _Attrs(mode, uid, gid, keep_owner, git_modes, mtime, _identities(leave_out))
    src_str = os.fspath(src)
    top = os.stat(src_str)  # follows a top-level symlink, as COPY does
    dest_clean = clean_path(dest, what="copy destination")
    if not stat.S_ISDIR(top.st_mode) and (dest.endswith("/") or not dest_clean):
        dest_clean = posixpath.join(dest_clean, os.path.basename(src_str.rstrip("/")))
    # No entries for the destination's parents: a layer that carried "/opt" or "/lib" would
    # reset an existing folder's owner and mode, or replace a symlink (merged-/usr "/lib")
    # with a folder. Every extractor creates missing parents and follows existing links.
    if not stat.S_ISDIR(top.st_mode):
        entry = attrs.entry(src_str, top, dest_clean)
        if entry is not None:
            yield entry, HostFile(src_str, top) if entry.kind == "file" else None
        return
    if dest_clean:
        root_entry = attrs.entry(src_str, top, dest_clean)
        if root_entry is not None:
            yield root_entry, None
    yield from _walk(src_str, dest_clean, attrs, {})


def _identities(paths: Iterable[Path]) -> frozenset[tuple[int, int]]:
    found = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue  # not there (yet): nothing to leave out
        found.add((st.st_dev, st.st_ino))
    return frozenset(found)


def _walk(host_dir: str, image_dir: str, attrs: _Attrs, first_of_inode: dict[tuple[int, int], str]) -> Iterator[Member]:
    """Members below ``host_dir`` in layer order; a hard-linked file's later paths link to its first.

    Depth first with a stack of folder listings (not a generator per folder: each member
    would pass up through one generator per level)."""
    stack = [_listing(host_dir, image_dir)]
    while stack:
        for item, path in stack[-1]:
            st = item.stat(follow_symlinks=False)
            if (st.st_dev, st.st_ino) in attrs.leave_out:
                continue
            entry = attrs.entry(item.path, st, path)
            if entry is None:
                continue
            if entry.kind == "file" and st.st_nlink > 1:
                ident = (st.st_dev, st.st_ino)
                if ident in first_of_inode:
                    yield as_hardlink(entry, first_of_inode[ident]), None
                    continue
                first_of_inode[ident] = path
            yield entry, HostFile(item.path, st) if entry.kind == "file" else None
            if entry.kind == "dir":
                stack.append(_listing(item.path, path))
                break  # its contents come next; this folder's listing goes on after them
        else:
            stack.pop()


def _listing(host_dir: str, image_dir: str) -> Iterator[tuple[os.DirEntry[str], str]]:
    """A folder's entries in layer order (names bytewise), each with its image path."""
    with os.scandir(host_dir) as it:
        found = sorted(it, key=lambda e: os.fsencode(e.name))
    prefix = image_dir + "/" if image_dir else ""
    return iter([(item, prefix + item.name) for item in found])


def as_hardlink(entry: TarEntry, target: str) -> TarEntry:
    """``entry`` (a regular file) as a hard link to ``target``, the path that carries its data."""
    return TarEntry(
        path=entry.path,
        kind="hardlink",
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        mtime=entry.mtime,
        linkname=target,
    )


def host_members_at(
    host: str, dest: str, *, mode: int | None, uid: int, gid: int, keep_owner: bool, follow: bool
) -> list[Member]:
    """iter_host_members, but a symlink found by a glob stays a symlink (``follow=False``)."""
    st = os.lstat(host)
    if stat.S_ISLNK(st.st_mode) and not follow:
        entry = TarEntry(
            path=dest.strip("/").rstrip("/"),
            kind="symlink",
            mode=0o777,
            uid=st.st_uid if keep_owner else uid,
            gid=st.st_gid if keep_owner else gid,
            mtime=int(st.st_mtime),
            linkname=os.readlink(host),
        )
        return [(entry, None)]  # no parent folders: see archive.tree

    return list(iter_host_members(Path(host), dest, mode=mode, uid=uid, gid=gid, keep_owner=keep_owner))
