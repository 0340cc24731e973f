"""Flatten an image's layers into one tar stream: the container's root filesystem, streamed.

Layers are read **newest first**, each in one pass over its decompressed stream, and
every entry that survives into the final view is written at once (file data moves
straight from the layer to the output). Memory holds one small record per path, never
file data. What "survives" follows the OCI layer rules as overlay-based runtimes apply
them (buildah, podman, docker):

- the newest entry for a path wins; directories merge (the newest one's attributes);
- ``.wh.NAME`` deletes NAME (and everything under it) from *lower* layers only;
  ``.wh..wh..opq`` hides the lower contents of its directory; neither is ever written,
  nor anything under a ``.wh.*`` directory (AUFS's ``.wh..wh.plnk`` hard-link store);
- whiteouts and opaque markers hide image content only, never the underlay (the mount
  points and links the output format itself needs: an opaque marker at a base layer's
  root must not take ``/proc`` or ``/dev`` away from a SIF);
- a non-directory hides everything below its path in lower layers (a directory turned
  into a file or symlink), and a directory an upper layer needs (its entries live under
  it) wins over a lower non-directory at that path;
- hard links keep their meaning from the layer that made them: ``p -> t`` in layer L
  shares the content ``t`` had at that point (earlier in layer L, else below L). When
  ``t`` is still that content in the final view the output has a hard link ``p -> t``;
  when an upper layer replaced or deleted ``t``, ``p`` becomes the data-carrying entry
  and the other links of the group point at ``p``. Hard-link entries are written at the
  end of the stream (a reader like tar2sqfs resolves them once the tree is complete).

The one case a single pass cannot serve is a hard link whose target, *earlier in the
same layer*, was a regular file hidden by an upper layer: its data went by before the
link was seen. Those targets are fetched by re-reading that layer once at the end
(logged; rare: an upper layer must rewrite one name of a hard-link group only).

Extra members can be laid *over* the image (they win, e.g. Apptainer's ``/.singularity.d``)
or *under* it (the image wins, e.g. mount-point directories). Reading the layers, and
cleaning their paths, is :mod:`assembler.archive.layer_reader`'s part.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from assembler.archive.layer import Member
from assembler.archive.layer_reader import DataOpener, LayerSource, member_list, tar_members
from assembler.archive.overlay import (
    CLOSED,
    DIR,
    IMPLICIT,
    OPAQUE,
    OTHER,
    WHITEOUT,
    View,
    ancestors,
    parent_of,
    under_whiteout_name,
)
from assembler.archive.tar import ALLOWED_XATTRS, OPAQUE_MARKER, WHITEOUT_PREFIX, TarEntry, TarWriter, sort_key
from assembler.errors import InvalidImage

log = logging.getLogger(__name__)


@dataclass
class FlattenStats:
    """What the merged stream holds."""

    entries: int = 0
    files: int = 0
    file_bytes: int = 0
    hardlinks: int = 0
    implicit_dirs: int = 0
    whiteouts: int = 0
    dropped: int = 0  # lower non-directories replaced by a directory an upper layer needs
    rereads: int = 0  # layers read a second time for hidden hard-link targets


class _Flattener:
    def __init__(self, writer: TarWriter, *, epoch: int) -> None:
        self.writer = writer
        self.epoch = epoch
        self.stats = FlattenStats()
        self.view = View()  # what is decided of each path
        self.root: TarEntry | None = None
        self.links: list[tuple[str, str]] = []  # (path, target): hard links written at the end
        self.requests: dict[str, list[str]] = {}  # hidden target -> link paths wanting its content
        self.rereads: dict[int, dict[int, list[str]]] = {}  # layer -> member ordinal -> link paths
        self.served: dict[tuple[int, int], str] = {}  # (layer, ordinal) -> path now carrying it
        self.sources: dict[int, Callable[[], Iterator[tuple[TarEntry, DataOpener | None]]]] = {}
        self.names: dict[int, str] = {}
        # Per layer being read (its id: self.view.layer):
        self.hidden_here: dict[str, tuple[int, TarEntry]] = {}
        self.pending_below: dict[str, list[str]] = {}
        self.blocked: set[str] = set()
        self.served_here: set[str] = set()
        self.request_parents: set[str] = set()

    @property
    def layer(self) -> int:
        """The id of the layer being read."""
        return self.view.layer

    # -- writing -----------------------------------------------------------------------

    def _clean(self, entry: TarEntry) -> TarEntry:
        xattrs = {k: v for k, v in entry.xattrs.items() if k in ALLOWED_XATTRS}
        return replace(entry, mode=entry.mode & 0o7777, mtime=max(0, int(entry.mtime)), xattrs=xattrs)

    def _write(self, entry: TarEntry, opener: DataOpener | None) -> None:
        entry = self._clean(entry)
        if entry.kind == "file" and entry.size:
            if opener is None:
                raise InvalidImage(f"{self.names[self.layer]}: no data for {entry.path!r}")
            with opener() as data:
                self.writer.add(entry, data)
            self.stats.file_bytes += entry.size
        else:
            self.writer.add(entry)
        self.stats.entries += 1
        self.stats.files += entry.kind == "file"

    # -- hard links --------------------------------------------------------------------

    def _resolve(self, target: str, wanting: list[str], depth: int = 0) -> None:
        """Give the paths in ``wanting`` the content ``target`` has at this point of the
        layer being read (earlier in it, else below it)."""
        if depth > 64:
            raise InvalidImage(f"{self.names[self.layer]}: hard link chain through {target!r} is too long")
        st = self.view.flags(target)
        if st & (DIR | OTHER) and st >> 8 == self.layer:
            if st & DIR:
                raise InvalidImage(f"{self.names[self.layer]}: hard link {wanting[0]!r} points at directory {target!r}")
            self.links.extend((p, target) for p in wanting)
            return
        hidden = self.hidden_here.get(target)
        if hidden is not None:
            ordinal, entry = hidden
            self._serve(entry, ordinal, None, wanting, depth)
            return
        self.pending_below.setdefault(target, []).extend(wanting)

    def _serve(
        self, entry: TarEntry, ordinal: int, opener: DataOpener | None, wanting: list[str], depth: int = 0
    ) -> None:
        """Make ``wanting[0]`` carry ``entry``'s content and link the others to it."""
        key = (self.layer, ordinal)
        carrier = self.served.get(key)
        if carrier is not None:
            self.links.extend((p, carrier) for p in wanting)
            return
        if entry.kind == "hardlink":
            self._resolve(entry.linkname, wanting, depth + 1)
            return
        if entry.kind == "dir":
            raise InvalidImage(f"{self.names[self.layer]}: hard link {wanting[0]!r} points at directory {entry.path!r}")
        if entry.kind == "file" and entry.size and opener is None:
            # Its data went by earlier in this layer: fetch it by re-reading the layer.
            self.rereads.setdefault(self.layer, {}).setdefault(ordinal, []).extend(wanting)
            return
        carrier = wanting[0]
        self._write(replace(entry, path=carrier), opener)
        self.served[key] = carrier
        self.links.extend((p, carrier) for p in wanting[1:])

    def _check_blocked(self, path: str, kind: str, *, whiteout: bool = False, opaque: bool = False) -> None:
        """Note requests for hidden targets that this layer's entry makes impossible
        (deleted, or a parent turned into a non-directory, before the link was made)."""
        if not self.requests:
            return
        if whiteout and path in self.requests:
            self.blocked.add(path)
        if opaque and not path:
            self.blocked.update(self.requests)
        elif (whiteout or opaque or kind != "dir") and path in self.request_parents:
            self.blocked.update(t for t in self.requests if t.startswith(path + "/"))

    # -- layers ------------------------------------------------------------------------

    def read_layer(self, layer: int, what: str, members: Iterator[tuple[TarEntry, DataOpener | None]]) -> None:
        self.view.layer = layer
        self.hidden_here = {}
        self.pending_below = {}
        self.blocked = set()
        self.served_here = set()
        self.request_parents = {a for target in self.requests for a in ancestors(target)}
        whiteouts: list[str] = []
        opaques: list[str] = []
        for ordinal, (entry, opener) in enumerate(members):
            path = entry.path
            if not path:
                if entry.kind != "dir":
                    raise InvalidImage(f"{what}: the root entry is a {entry.kind}, not a directory")
                if self.root is None:
                    self.root = entry
                continue
            base = path.rsplit("/", 1)[-1]
            if base.startswith(WHITEOUT_PREFIX):
                self._whiteout(path, base, whiteouts, opaques)
                continue
            if under_whiteout_name(path):
                # Inside a .wh.* directory (AUFS's .wh..wh.plnk): never content, but a
                # hard link of this layer may still take its data from it.
                self.hidden_here[path] = (ordinal, entry)
                continue
            self._check_blocked(path, entry.kind)
            wanting = self.requests.pop(path, None)
            if wanting is not None:
                self.served_here.add(path)
                self._serve(entry, ordinal, opener, wanting)
            self._take(entry, ordinal, opener, what)
        self._end_layer(what, whiteouts, opaques)

    def _whiteout(self, path: str, base: str, whiteouts: list[str], opaques: list[str]) -> None:
        """Note a ``.wh.`` entry; it takes effect for lower layers at the end of this one."""
        parent = parent_of(path)
        if base == OPAQUE_MARKER:
            opaques.append(parent)
            self._check_blocked(parent, "dir", opaque=True)
        elif not base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            gone = f"{parent}/{base[len(WHITEOUT_PREFIX) :]}" if parent else base[len(WHITEOUT_PREFIX) :]
            whiteouts.append(gone)
            self._check_blocked(gone, "dir", whiteout=True)
        # Other .wh..wh.* names are AUFS bookkeeping, never content.

    def _take(self, entry: TarEntry, ordinal: int, opener: DataOpener | None, what: str) -> None:
        """Write ``entry`` if it shows in the final view; else keep it for hard links."""
        path = entry.path
        st = self.view.flags(path)
        visible = self.view.visible(path)
        if visible and st & IMPLICIT and entry.kind != "dir":
            log.warning(
                "%s: %r is a %s, but upper layers need a directory there: the directory wins", what, path, entry.kind
            )
            self.stats.dropped += 1
            visible = False
        if not visible:
            if entry.kind != "dir":
                if st & (DIR | IMPLICIT):
                    # A non-directory in this layer ended the lower directory: nothing
                    # of the lower layers below this path shows (overlay semantics).
                    self.view.mark(path, CLOSED)
                # Kept in case a later hard link of this layer points here.
                self.hidden_here[path] = (ordinal, entry)
            return
        if entry.kind == "dir":
            self.view.decide(path, DIR)
            self._write(entry, None)
        elif entry.kind == "hardlink":
            if entry.linkname == path:
                raise InvalidImage(f"{what}: hard link {path!r} points at itself")
            self.view.decide(path, OTHER)
            self.stats.hardlinks += 1
            self._resolve(entry.linkname, [path])
        else:
            self.view.decide(path, OTHER)
            self._write(entry, opener)

    def _end_layer(self, what: str, whiteouts: list[str], opaques: list[str]) -> None:
        for target in sorted(self.blocked - self.served_here):
            if target in self.requests:
                raise InvalidImage(
                    f"{what} deletes or replaces {target!r} before the hard link "
                    f"{self.requests[target][0]!r} of an upper layer was made to it"
                )
        self.stats.whiteouts += len(whiteouts) + len(opaques)
        for path in whiteouts:
            self.view.mark(path, WHITEOUT)
        for path in opaques:
            self.view.mark(path, OPAQUE)
        for target, wanting in self.pending_below.items():
            if self.view.visible(target) and not self.view.flags(target) & IMPLICIT:
                # Nothing from this layer up touches the target: the final view still has
                # the content the link was made to, so a plain hard link is right.
                self.links.extend((p, target) for p in wanting)
            else:
                self.requests.setdefault(target, []).extend(wanting)

    def reread(self) -> None:
        """Serve hard links whose targets' data went by before the link was seen."""
        for layer in sorted(self.rereads, reverse=True):
            wanted = self.rereads[layer]
            self.view.layer = layer
            self.stats.rereads += 1
            log.info(
                "%s: reading the layer again for %d hard-link target(s) an upper layer replaced",
                self.names[layer],
                len(wanted),
            )
            for ordinal, (entry, opener) in enumerate(self.sources[layer]()):
                wanting = wanted.pop(ordinal, None)
                if wanting is not None:
                    if entry.kind != "file":
                        raise InvalidImage(f"{self.names[layer]}: the layer changed while it was being read")
                    self._serve(entry, ordinal, opener, wanting)
                if not wanted:
                    break
            if wanted:
                raise InvalidImage(f"{self.names[layer]}: the layer changed while it was being read")

    def finish(self) -> None:
        """Write what only the complete view tells: implicit directories, root, hard links."""
        if self.requests:
            target, wanting = next(iter(self.requests.items()))
            raise InvalidImage(f"hard link {wanting[0]!r} points at {target!r}, which no lower layer has")
        implicit = [p for p, st in self.view.state.items() if st & IMPLICIT and not st & DIR]
        for path in sorted(implicit, key=sort_key):
            self._write(TarEntry(path=path, kind="dir", mode=0o755, mtime=self.epoch), None)
        self.stats.implicit_dirs = len(implicit)
        root = self.root or TarEntry(path="", kind="dir", mode=0o755, mtime=self.epoch)
        self._write(replace(root, path="."), None)  # "./": tar2sqfs takes it as the root's attributes
        for path, target in self.links:
            st = self.view.flags(target)
            if not st & OTHER:
                what = "a directory" if st & (DIR | IMPLICIT) else "not in the image"
                raise InvalidImage(f"hard link {path!r} points at {target!r}, which is {what}")
            self._write(TarEntry(path=path, kind="hardlink", linkname=target, mtime=0), None)


def flatten(
    layers: Sequence[LayerSource],
    writer: TarWriter,
    *,
    epoch: int,
    overlay: Sequence[Member] = (),
    underlay: Sequence[Member] = (),
) -> FlattenStats:
    """Write the merged root filesystem of ``layers`` (bottom first, as in a manifest) into
    ``writer`` as one tar stream, and close it.

    ``overlay`` members win over every layer, ``underlay`` members lose to all of them.
    ``epoch`` dates directories that no layer describes. Entries are written in a
    deterministic order (layers newest first, archive order inside a layer; then
    implicit directories, the root and hard links), each path once.

    Raises UnsafePath for a member or hard link that climbs out of the root, InvalidImage
    for an unreadable layer or a hard link to something that does not exist (or is a
    directory), and whatever ``writer``'s sink raises.
    """
    flat = _Flattener(writer, epoch=epoch)
    top = len(layers) + 1
    flat.sources[top] = lambda: member_list(overlay, "overlay")
    flat.names[top] = "overlay"
    for i, src in enumerate(layers, start=1):
        flat.sources[i] = functools.partial(tar_members, src)
        flat.names[i] = src.what
    flat.sources[0] = lambda: member_list(underlay, "underlay")
    flat.names[0] = "underlay"
    for layer in range(top, -1, -1):
        flat.read_layer(layer, flat.names[layer], flat.sources[layer]())
    flat.reread()
    flat.finish()
    writer.close()
    return flat.stats
