"""What a runtime step changed, as a layer says it: a snapshot of the container's files
(each path's metadata) taken before its commands run, and after them the changeset the OCI
image spec describes and containers/storage's differ writes (:func:`diff_members`): new and
changed entries, whiteouts for what was deleted, opaque folders, hard links kept. Paths are
read inside the container's root without following its links; what a step's layer leaves
out (caches, logs, apt lists, the runtime's mount points) is :data:`DEFAULT_EXCLUDES`.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
from collections.abc import Iterator, Mapping, Sequence

from assembler.archive.layer import Member
from assembler.archive.tar import OPAQUE_MARKER, WHITEOUT_PREFIX, TarEntry, sort_key
from assembler.archive.tree import as_hardlink, host_members_at
from assembler.compile.rootpaths import GLOB_CHARS

# Left out of runtime-step layers unless a step keeps them: caches, logs, apt lists,
# temp files, and files that only record when something ran.
DEFAULT_EXCLUDES = (
    "/tmp/*",
    "/var/tmp/*",
    "/run/*",
    "/var/lib/apt/lists/*",
    "/var/cache/apt/*",
    "/var/cache/debconf/*-old",
    "/var/lib/dpkg/*-old",
    "/var/cache/ldconfig/aux-cache",
    "/var/log/*",
    "/root/.cache",
    "/root/.cache/*",
    "/etc/ld.so.cache~",
    # The machine's identity, which systemd's and dbus's install scripts write at random
    # (a package step installing either gave another layer each build). An image shares
    # no identity among the machines that run it (image builders clear it for that): a
    # container or boot that needs one makes its own (dbus-uuidgen --ensure).
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    # What the container's runtime mounts over (buildah, as Docker and podman do): a step's
    # writes there never reach the image, and where the base has none of these files,
    # buildah leaves an empty one (mode 0755) behind as the mount point.
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
)
_NEVER = ("/proc", "/sys", "/dev")


def excluded(rel: str, patterns: Sequence[str]) -> bool:
    """True when ``rel`` matches a pattern; a literal pattern also covers what is below it."""
    for raw in patterns:
        pat = raw.strip("/")
        if not pat:
            continue
        if fnmatch.fnmatchcase(rel, pat) or (not GLOB_CHARS & set(pat) and rel.startswith(pat + "/")):
            return True
    return False


Signature = tuple[int, int, int, int, int, int, int, str]


def _walk(root: str, excludes: Sequence[str]) -> Iterator[tuple[str, os.stat_result]]:
    never = tuple(p.strip("/") for p in _NEVER)
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        host_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            entries = list(os.scandir(host_dir))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if rel in never or excluded(rel, excludes):
                continue
            st = entry.stat(follow_symlinks=False)
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)


def _signature(host: str, st: os.stat_result) -> Signature:
    link = os.readlink(host) if stat.S_ISLNK(st.st_mode) else ""
    return (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, link)


def snapshot(root: str, excludes: Sequence[str]) -> dict[str, Signature]:
    return {rel: _signature(os.path.join(root, rel), st) for rel, st in _walk(root, excludes)}


def diff_members(
    root: str, before: dict[str, Signature], excludes: Sequence[str], mountpoints: Sequence[str]
) -> list[Member]:
    """Members for what changed since ``before``, as the OCI image spec's changesets say it
    and containers/storage's differ writes it:

    - changed or new entries, with their parent folders; a regular file with other names
      among them is written once, its other names hard links to it (in layer order);
    - a ``.wh.`` whiteout for each deleted path, one per deleted tree, but none below a
      path that is now a file or a symlink: that entry replaces the folder and everything
      in it, and a whiteout below it would be read through it (the new symlink) by some
      readers and refused by others;
    - a folder emptied and refilled (every entry it held deleted, something new in it)
      marked opaque (``.wh..wh..opq``) instead, unless a path left out of the layer could
      lie in it (its lower entries are not known, and an opaque folder would hide them).
    """
    mounts = {m.strip("/") for m in mountpoints}
    now: dict[str, os.stat_result] = {}
    for rel, st in _walk(root, excludes):
        if rel in mounts:
            continue
        now[rel] = st
    changed = [rel for rel, st in now.items() if before.get(rel) != _signature(os.path.join(root, rel), st)]
    # New folders that only hold mount points were made by buildah for the mount.
    changed = [rel for rel in changed if not _only_mount_parent(rel, now, before, mounts)]
    members: dict[str, Member] = {}
    first_of_inode: dict[tuple[int, int], str] = {}
    for rel in sorted(changed, key=sort_key):
        host = os.path.join(root, rel)
        st = now[rel]
        kind = "dir" if stat.S_ISDIR(st.st_mode) else None
        if kind == "dir":
            members[rel] = (_dir_entry(rel, st), None)
        else:
            for entry, opener in host_members_at(
                host, "/" + rel, mode=None, uid=0, gid=0, keep_owner=True, follow=False
            ):
                if entry.path != rel:
                    continue
                if entry.kind == "file" and st.st_nlink > 1:
                    ident = (st.st_dev, st.st_ino)
                    if ident in first_of_inode:
                        entry, opener = as_hardlink(entry, first_of_inode[ident]), None
                    else:
                        first_of_inode[ident] = rel
                members[rel] = (entry, opener)
        _add_parents(members, rel, now)
    deleted = sorted(rel for rel in before if rel not in now and not excluded(rel, excludes) and rel not in mounts)
    opaque = _refilled_folders(before, now, deleted, excludes)
    for folder in sorted(opaque):
        marker = posixpath.join(folder, OPAQUE_MARKER)
        members[marker] = (TarEntry(path=marker, kind="file", mode=0o644), None)
        _add_parents(members, marker, now)
    _add_whiteouts(members, deleted, now, opaque)
    return list(members.values())


def _refilled_folders(
    before: Mapping[str, Signature], now: Mapping[str, os.stat_result], deleted: Sequence[str], excludes: Sequence[str]
) -> set[str]:
    """The folders (not the root) that were folders before and are now, whose every entry
    before was deleted, that hold something now, and in which no excluded path can lie."""
    held_before: dict[str, list[str]] = {}
    for rel in before:
        held_before.setdefault(posixpath.dirname(rel), []).append(rel)
    held_now = {posixpath.dirname(rel) for rel in now}
    gone = set(deleted)
    return {
        folder
        for folder, entries in held_before.items()
        if folder
        and folder in now
        and folder in held_now
        and stat.S_ISDIR(now[folder].st_mode)
        and stat.S_ISDIR(before[folder][0])
        and all(rel in gone for rel in entries)
        and not _reaches_into(folder, excludes)
    }


def _reaches_into(folder: str, patterns: Sequence[str]) -> bool:
    """Whether a path below ``folder`` could match one of ``patterns`` (fnmatch's ``*``
    crosses ``/``: a glob could reach below any folder its literal start leads to)."""
    below = folder + "/"
    for raw in patterns:
        pat = raw.strip("/")
        if not pat:
            continue
        cut = min((pat.index(c) for c in GLOB_CHARS if c in pat), default=None)
        if cut is None:
            if pat.startswith(below):
                return True
        elif pat[:cut].startswith(below) or below.startswith(pat[:cut]):
            return True
    return False


def _add_whiteouts(
    members: dict[str, Member], deleted: Sequence[str], now: Mapping[str, os.stat_result], opaque: set[str]
) -> None:
    """A ``.wh.`` whiteout for each deleted path (``deleted``: sorted), with its parent
    folders: none where a deleted folder above, an opaque folder, or the non-folder now
    at the parent's path covers it."""
    deleted_set = set(deleted)
    for rel in deleted:
        parent = posixpath.dirname(rel)
        if parent and (parent in deleted_set or parent in opaque):
            continue  # the whiteout of the deleted parent, or its opaque marker, covers it
        if parent in now and not stat.S_ISDIR(now[parent].st_mode):
            continue  # the file or symlink now at the parent's path hides what was below it
        name = posixpath.join(parent, WHITEOUT_PREFIX + posixpath.basename(rel))
        members[name] = (TarEntry(path=name, kind="file", mode=0o644), None)
        _add_parents(members, rel, now)


def _add_parents(members: dict[str, Member], rel: str, now: Mapping[str, os.stat_result]) -> None:
    """The folders above ``rel`` that exist now, as members. The climb stops at a member:
    its own parents were added with it, so a tree 2,000 folders deep costs its paths'
    length once, not once per ancestor of each path."""
    parent = posixpath.dirname(rel)
    while parent and parent not in members:
        if parent in now:
            members[parent] = (_dir_entry(parent, now[parent]), None)
        parent = posixpath.dirname(parent)


def _only_mount_parent(
    rel: str, now: dict[str, os.stat_result], before: dict[str, Signature], mounts: set[str]
) -> bool:
    if rel in before or not stat.S_ISDIR(now[rel].st_mode) or not any(m.startswith(rel + "/") for m in mounts):
        return False  # no mount below it: checked first, as listing what each new folder holds is quadratic
    inside = [p for p in now if p.startswith(rel + "/")]
    return all(any(m == p or m.startswith(p + "/") for m in mounts) for p in inside)


def _dir_entry(rel: str, st: os.stat_result) -> TarEntry:
    return TarEntry(
        path=rel, kind="dir", mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid, mtime=int(st.st_mtime)
    )
