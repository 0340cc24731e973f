"""Where a new layer lands: the folders and symlinks of the image below it.

Runtimes on overlay storage (buildah, podman, docker) extract each layer into a folder
of its own. A parent folder a layer does not name is created there as root 0755, and
in the merged view that folder *replaces* a symlink of the image below (merged-/usr
``/lib -> usr/lib``: the image no longer starts) and *masks* the owner and mode of a
folder below (``/tmp`` loses its sticky bit, ``/home/app`` its owner). So a layer must
write through the symlinks of the image below and name its parents as that image has
them, as BuildKit's COPY does. :func:`fit_members` does that to a layer's entries.

Only folders and symlinks are recorded (from layer headers), never file data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from assembler.archive.links import walk_links
from assembler.archive.tar import OPAQUE_MARKER, WHITEOUT_PREFIX, Member, TarEntry
from assembler.errors import InvalidRecord

PLAIN_DIR = (0o755, 0, 0)  # what an extractor makes of a parent a layer does not name

DirMeta = tuple[int, int, int, int]  # mode, uid, gid, mtime
_UNCLEAN = re.compile(r"(?:^|/)\.{0,2}(?:/|$)")  # an empty, "." or ".." component


def _parent(path: str) -> str:
    return path[: path.rfind("/")] if "/" in path else ""


def with_ancestors(paths: Iterable[str]) -> set[str]:
    """``paths`` and all their ancestors. Each path climbs only until a folder met before:
    a tree 2,000 folders deep costs its paths' length once (listing each path's ancestors
    anew is cubic in the depth: minutes at 2,000)."""
    out: set[str] = set()
    for path in paths:
        while path and path not in out:
            out.add(path)
            path = _parent(path)
    return out


@dataclass
class LayerIndex:
    """One layer's folders, symlinks, whiteouts and opaque markers (paths, no data)."""

    dirs: dict[str, DirMeta] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    others: set[str] = field(default_factory=set)  # non-folders that replace a lower folder or link
    whiteouts: list[str] = field(default_factory=list)
    opaques: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, entries: Iterable[TarEntry]) -> LayerIndex:
        index = cls()
        files: set[str] = set()
        for entry in entries:
            path = entry.path
            if not path:
                continue
            parent, _, base = path.rpartition("/")
            if base.startswith(WHITEOUT_PREFIX):
                if base == OPAQUE_MARKER:
                    index.opaques.append(parent)
                elif not base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
                    index.whiteouts.append(f"{parent}/{base[len(WHITEOUT_PREFIX) :]}" if parent else base[4:])
            elif entry.kind == "dir":
                index.dirs[path] = (entry.mode & 0o7777, entry.uid, entry.gid, entry.mtime)
            elif entry.kind == "symlink":
                index.links[path] = entry.linkname
            else:
                files.add(path)
        # Only files at a path that could have been a folder or link matter to the view:
        # those with nothing below them in this layer (a file's name is rarely a parent).
        index.others = {p for p in files if "/" not in p or p.rsplit("/", 1)[0] in index.dirs}
        return index

    def to_json(self) -> dict[str, Any]:
        return {
            "dirs": {p: list(m) for p, m in self.dirs.items()},
            "links": self.links,
            "others": sorted(self.others),
            "whiteouts": self.whiteouts,
            "opaques": self.opaques,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LayerIndex:
        """From :meth:`to_json`; InvalidRecord when ``data`` is not such a record."""
        try:
            return cls(
                dirs={str(p): (int(m[0]), int(m[1]), int(m[2]), int(m[3])) for p, m in data["dirs"].items()},
                links={str(p): str(t) for p, t in data["links"].items()},
                others={str(p) for p in data.get("others", [])},
                whiteouts=[str(p) for p in data["whiteouts"]],
                opaques=[str(p) for p in data["opaques"]],
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:  # any shape but ours
            raise InvalidRecord(f"malformed layer index record: {e!r}") from e


class TreeView:
    """The folders and symlinks of an image (its layers' indexes applied in order)."""

    def __init__(self) -> None:
        self.dirs: dict[str, DirMeta] = {}
        self.links: dict[str, str] = {}
        # For each path, how many of its children are dirs or links, plus how many have
        # such paths below them (a count changes its parent's only when it leaves or
        # reaches 0): what is below a path is looked for only where something is (a base's
        # thousand links replace no folder), and a deep tree is counted in linear time.
        self._below: dict[str, int] = {}
        self._resolved: dict[str, str | None] = {}  # folders through the links: resolve()'s memo

    @classmethod
    def of(cls, layers: Sequence[LayerIndex]) -> TreeView:
        view = cls()
        for layer in layers:
            view.apply(layer)
        return view

    def _count(self, path: str, step: int) -> None:
        while "/" in path:
            path = _parent(path)
            before = self._below.get(path, 0)
            if before + step:
                self._below[path] = before + step
            else:
                del self._below[path]
            if before and before + step:
                return  # whether something is below it did not change: nor for its parents

    def _forget(self, key: str) -> None:
        found = self.dirs.pop(key, None) is not None
        found = self.links.pop(key, None) is not None or found
        if found:
            self._count(key, -1)

    def _put(self, table: dict[str, Any], key: str, value: Any) -> None:
        if key not in self.dirs and key not in self.links:
            self._count(key, 1)
        table[key] = value

    def _drop(self, path: str, *, itself: bool, below: bool) -> None:
        if itself:
            self._forget(path)
        if below and (not path or self._below.get(path)):
            prefix = path + "/" if path else ""
            for key in [k for table in (self.dirs, self.links) for k in table if k.startswith(prefix)]:
                self._forget(key)

    def apply(self, layer: LayerIndex) -> None:
        self._resolved.clear()
        for path in layer.whiteouts:
            self._drop(path, itself=True, below=True)
        for path in layer.opaques:
            self._drop(path, itself=False, below=True)
        for path in layer.others:
            if path in self.dirs or path in self.links:
                self._drop(path, itself=True, below=True)
        for path, target in layer.links.items():
            self._drop(path, itself=True, below=True)  # a link hides what was below the path
            self._put(self.links, path, target)
        for path, meta in layer.dirs.items():
            if path in self.links:
                self._forget(path)
            self._put(self.dirs, path, meta)

    def resolve(self, path: str) -> str:
        """``path`` with its parents resolved through this image's symlinks (the last
        component is not followed: an entry *at* a link replaces it)."""
        if not self.links or "/" not in path:
            return path
        if _UNCLEAN.search(path):  # not an entry's clean path (a manifest's): walked as it is
            walked = walk_links(path, self.links.get, follow_last=False)
            return path if walked is None else walked  # a link loop: leave the path as written
        parent, _, base = path.rpartition("/")
        folder = self._folder(parent)
        return path if folder is None else f"{folder}/{base}" if folder else base  # None: a link loop

    def _folder(self, path: str) -> str | None:
        """Folder ``path`` with every symlink on it followed (None: a link loop), from the
        nearest parent resolved before: each folder of a deep tree is walked once."""
        todo: list[str] = []
        while path and path not in self._resolved:
            todo.append(path)
            path = _parent(path)
        real = self._resolved.get(path, "") if path else ""
        for folder in reversed(todo):
            if real is not None:
                joined = f"{real}/{folder.rpartition('/')[2]}" if real else folder.rpartition("/")[2]
                real = walk_links(joined, self.links.get) if joined in self.links else joined
            self._resolved[folder] = real
        return real

    def needs_fitting(self, anchors: Iterable[str]) -> bool:
        """Whether a layer whose implicit parents are ``anchors`` lands wrongly as written:
        a symlink on the way, a folder that is not root-owned 0755, or a folder the image
        does not have (plain tar extraction would not make it, and each runtime invents
        its own mode: the layer must name it)."""
        for path in with_ancestors(anchors):
            if path in self.links:
                return True
            meta = self.dirs.get(path)
            if meta is None or meta[:3] != PLAIN_DIR:
                return True
        return False

    def relevant(self, anchors: Iterable[str]) -> dict[str, Any]:
        """The part of the view a layer with these anchors depends on (for a cache key)."""
        out: dict[str, Any] = {}
        for path in sorted(with_ancestors(anchors)):
            if path in self.links:
                out[path] = self.links[path]
            elif path in self.dirs:
                out[path] = list(self.dirs[path][:3])
        return out


def anchors(paths: Iterable[str]) -> set[str]:
    """The parent folders a layer's entries need but the layer does not name."""
    named = set(paths)
    out: set[str] = set()
    for path in named:
        parent = _parent(path)
        while parent and parent not in named and parent not in out:  # climbed once (see with_ancestors)
            out.add(parent)
            parent = _parent(parent)
    return out


def fit_members(members: Sequence[Member], view: TreeView, *, epoch: int) -> list[Member]:
    """The members written through ``view``'s symlinks, with every implicit parent named
    as ``view`` has it (an existing folder keeps its owner and mode; a new one is root's,
    0755, from ``epoch``)."""
    out: dict[str, Member] = {}
    for entry, opener in members:
        path = view.resolve(entry.path)
        linkname = view.resolve(entry.linkname) if entry.kind == "hardlink" else entry.linkname
        out[path] = (replace(entry, path=path, linkname=linkname), opener)
    for anchor in anchors(out):
        if anchor in out:
            continue
        meta = view.dirs.get(anchor)
        mode, uid, gid, mtime = meta if meta is not None else (*PLAIN_DIR, epoch)
        out[anchor] = (TarEntry(path=anchor, kind="dir", mode=mode, uid=uid, gid=gid, mtime=mtime), None)
    return list(out.values())
