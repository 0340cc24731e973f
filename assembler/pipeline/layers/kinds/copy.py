"""``copy:`` layers: host files written as a layer, fitted onto the image below as they
are written (the folders they land in named as that image has them, written through its
symlinks: :func:`assembler.archive.view.fit_members`).

A plan hashes the layer's tar (writing nothing) and finds the layer a build made of the
same content; a build takes the layer its plan found (:class:`Copies`' ``found``), or
writes it and records it under its content and the files' fingerprint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from assembler.archive.layer import HashingSink, Member, order_hardlinks, sorted_members, write_layer
from assembler.archive.tree import Fingerprint, fingerprint, iter_host_members, settled
from assembler.archive.view import TreeView, anchors, fit_members
from assembler.cache import key_of
from assembler.cache.memos import copy_stat_key, write_remembered
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.oci.digest import canonical_json
from assembler.oci.layer import Layer
from assembler.pipeline.layers.kinds.base import Kind, Stacking, Starting
from assembler.pipeline.layers.maker import Maker
from assembler.pipeline.layers.placed import Placed
from assembler.transports import Context


def _owner(owner: str | None) -> tuple[int, int]:
    if not owner:
        return 0, 0
    uid, _, gid = owner.partition(":")
    return int(uid), int(gid or uid)


@dataclass(frozen=True)
class CopyKey:
    """What a copy layer is made of, but for the files' content: where it is in the
    manifest, what it copies where and how, and the build's epoch and compression."""

    path: tuple[str | int, ...]
    from_: str
    to: str
    mode: int | None
    owner: str | None
    epoch: int
    compression: str


@dataclass(frozen=True)
class FoundCopy:
    """A copy layer a plan found, with what it was fitted to: ``fit`` is the part of the
    image below it depends on (canonical JSON; None: written as the files are), taken by a
    build only where the image below it asks for the same."""

    layer: Layer
    anchors: tuple[str, ...]
    fit: str | None
    remember: str | None = None  # the files' fingerprint memo the build records (the plan hashed them)


def fit_of(anchors: Iterable[str], view: TreeView | None) -> str | None:
    """What a layer with these implicit parents is fitted to on the image ``view`` (None:
    nothing, it lands as written; so too where the image below is not known)."""
    if view is None or not view.needs_fitting(anchors):
        return None
    return canonical_json(view.relevant(anchors)).decode("utf-8")


class Copies:
    """Writes (a build's ``maker``) or finds by content (a plan's) the layers of ``copy:``."""

    def __init__(
        self,
        loaded: Loaded,
        ctx: Context,
        *,
        maker: Maker,
        found: Mapping[CopyKey, FoundCopy] | None = None,
        origin: str = "built",
    ) -> None:
        self.loaded = loaded
        self.ctx = ctx
        self.maker = maker
        self.origin = origin  # of a layer found by its content: "cached" (a plan) or "built"
        # Copy layers by what they copy, as found (a plan: the files hashed) or written here;
        # a build starts with what its plan found (``found``): taken, not written again.
        self.found: dict[CopyKey, FoundCopy] = dict(found or {})
        self.taken: set[str] = set()  # digests of the copy layers a build took from its plan

    def leaves_out(self, spec: m.CopySpec) -> str | None:
        """A warning when a copy's folder holds this build's cache or outputs: they are left
        out of the layer (as ``.git`` is), which a reader of the manifest would not guess."""
        src = os.path.realpath(self.loaded.folder / spec.from_)
        inside = sorted(str(p) for p in self.ctx.leave_out if os.path.realpath(p).startswith(src.rstrip("/") + "/"))
        if not inside:
            return None
        return f"copy from {spec.from_}: left out of the layer (this build's cache or outputs): {', '.join(inside)}"

    def layer(self, spec: m.CopySpec, path: tuple[str | int, ...], view: TreeView | None) -> Layer | None:
        """A layer of host files, fitted onto the image ``view`` describes (the folders it
        lands in named as that image has them, written through its symlinks: see
        :func:`assembler.archive.view.fit_members`); a ManifestError (file:line) when the
        files cannot be read.

        A plan hashes the layer's tar (writing nothing) and finds the layer a build made of
        the same content; a build takes the layer its plan found (its blob checked), or
        writes it and records it under its content. Fitted as it is written, a copy into a
        folder the image does not have (``/models``) is written once, not written and then
        rewritten."""
        src = self.loaded.folder / spec.from_
        uid, gid = _owner(spec.owner)
        copy = CopyKey(path, spec.from_, spec.to, spec.mode, spec.owner, self.ctx.epoch, self.ctx.compression)
        known = self.found.get(copy)
        if known is not None and known.fit == fit_of(known.anchors, view) and self._intact(known.layer):
            self.taken.add(known.layer.digest)
            if known.remember is not None:
                remember = known.remember
                self.maker.keep(lambda: self.ctx.cache.put_memo(remember, {"diff_id": known.layer.diff_id}))
            return known.layer  # the plan found this layer of these files a moment ago

        try:
            members = list(
                iter_host_members(
                    src,
                    spec.to,
                    mode=spec.mode,
                    uid=uid,
                    gid=gid,
                    git_modes=True,
                    mtime=self.ctx.epoch,
                    leave_out=self.ctx.leave_out,
                )
            )
            found_anchors = tuple(sorted(anchors(entry.path for entry, _ in members)))
            fit = fit_of(found_anchors, view)
            if fit is not None and view is not None:  # (fit_of gives None where view is None)
                members = order_hardlinks(sorted_members(fit_members(members, view, epoch=self.ctx.epoch)))
            prints = fingerprint(members)
            found = self.maker.by_content(
                lambda: self._find(members, prints), lambda: (self._write(members, prints), None)
            )
        except FileNotFoundError as e:
            raise self.loaded.error((*path, "copy", "from"), f"path does not exist: {e.filename}") from None
        except PermissionError as e:
            raise self.loaded.error((*path, "copy", "from"), f"cannot read {e.filename}: permission denied") from None
        if found is None:
            return None
        self.found[copy] = FoundCopy(found[0], found_anchors, fit, found[1])
        return found[0]

    def _intact(self, layer: Layer) -> bool:
        """Whether ``layer``'s blob is in the cache with its bytes (read and hashed once, then
        known by its file's state: :meth:`Cache.blob_intact`); a damaged one is dropped,
        and the layer written."""
        return self.ctx.cache.blob_intact(layer.digest, layer.size)

    def _find(self, members: list[Member], prints: Fingerprint | None) -> tuple[Layer, str | None] | None:
        """The copy layer of ``members`` (sorted) a build made: by the files' fingerprint when
        it is remembered, else by hashing them (nothing written); with the fingerprint memo
        the build is to record (when they were hashed, and did not change meanwhile)."""
        memo = copy_stat_key(prints.digest) if prints is not None else None
        if memo is not None:
            diff_id = self.ctx.cache.memo_as(memo, lambda m: str(m["diff_id"]))
            found = self.ctx.cache.layer(self._key(diff_id)) if diff_id is not None else None
            if found is not None:
                return found, None
        started = time.time_ns()
        hashed = write_layer(
            members, HashingSink(None, hashing=False), compression="none", epoch=self.ctx.epoch, presorted=True
        )
        found = self.ctx.cache.layer(self._key(hashed.diff_id))
        if found is None:
            return None
        return found, memo if prints is not None and settled(members, prints, started) else None

    def _write(self, members: list[Member], prints: Fingerprint | None) -> Layer:
        """The copy layer of ``members`` (sorted), written and recorded under its content, and
        under the files' fingerprint when they did not change while they were read."""
        started = time.time_ns()
        blob = write_remembered(
            self.ctx.cache,
            members,
            compression=self.ctx.compression,
            epoch=self.ctx.epoch,
            observers=self.ctx.observers,
            presorted=True,
            progress=self.ctx.progress,
        )
        self.ctx.cache.put_layer(self._key(blob.diff_id), blob)
        self.ctx.cache.vouch_blob(blob.digest)  # just written: a rebuild need not read it to trust it
        if prints is not None and settled(members, prints, started):
            self.ctx.cache.put_memo(copy_stat_key(prints.digest), {"diff_id": blob.diff_id})
        return blob

    def _key(self, diff_id: str) -> str:
        return "copy-" + key_of({"diff_id": diff_id, "compression": self.ctx.compression})


class CopyKind(Kind[m.CopyLayer]):
    model = m.CopyLayer

    def start(self, starting: Starting) -> Copies:
        found = starting.carried  # the copy layers the plan's walk found
        return Copies(starting.loaded, starting.ctx, maker=starting.maker, found=found, origin=starting.copy_origin)

    def carry(self, state: Copies) -> dict[CopyKey, FoundCopy]:
        return dict(state.found)

    def place(self, spec: m.CopyLayer, at: Stacking) -> Placed:
        c, copies = spec.copy_, cast(Copies, at.state)
        what = f"copy {c.from_} {c.to}"
        blob = copies.layer(c, at.path, at.view)
        if blob is None:
            return Placed([], what, "will-build")
        return Placed([(blob, what)], what, "cached" if blob.digest in copies.taken else copies.origin)

    def warning(self, spec: m.CopyLayer, at: Stacking) -> str | None:
        copies: Copies = at.state
        return copies.leaves_out(spec.copy_)
