"""Layers that need no container, and layers fitted onto the image below them.

``copy`` layers are written from host files, fitted as they are written; another layer
landing under a symlink or a folder the image below names otherwise is rewritten to fit
(:mod:`assembler.archive.view`); a zstd layer is converted to gzip when the image wants
gzip. Each result is cached by what it is made of, so a plan finds it again without
writing anything.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from assembler.archive.compress import Compression, decompressed
from assembler.archive.headers import LayerHeaders
from assembler.archive.layer import (
    HashingSink,
    Member,
    order_hardlinks,
    recompress,
    sorted_members,
    write_layer,
)
from assembler.archive.layer_reader import LayerSource, tar_members
from assembler.archive.tarread import opener, reading
from assembler.archive.tree import Fingerprint, fingerprint, iter_host_members, settled
from assembler.archive.view import LayerIndex, TreeView, anchors, fit_members
from assembler.cache import key_of
from assembler.cache.memos import SharedFacts, anchors_key, copy_stat_key, remember_headers, remembered, tree_key
from assembler.errors import InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json
from assembler.oci.image import Image
from assembler.oci.layer import Layer, layers_of
from assembler.pipeline.maker import Maker
from assembler.sbom.packages import (
    DATABASE_TEXTS,
    database_text,
    is_database_text,
    remember_kept_texts,
    remember_texts,
)
from assembler.spec import model as m
from assembler.spec.load import Loaded
from assembler.transports import Context
from assembler.transports.common import BlobReader

log = logging.getLogger(__name__)


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


def _anchors_of(memo: Mapping[str, Any]) -> list[str]:
    found = memo["anchors"]
    if not isinstance(found, list):
        raise TypeError(f"anchors is a {type(found).__name__}, not a list")
    return [str(a) for a in found]


class ImageSetup:
    """Builds the layers that need no container (``copy``) and fits layers onto the
    image below (:mod:`assembler.archive.view`)."""

    def __init__(
        self,
        loaded: Loaded,
        ctx: Context,
        *,
        maker: Maker,
        blobs: BlobReader | None = None,
        shared: SharedFacts | None = None,
        copies: Mapping[CopyKey, FoundCopy] | None = None,
    ) -> None:
        self.loaded = loaded
        self.ctx = ctx
        # A plan's maker reads layers (their headers, cached) but writes none: a layer that
        # would have to be written is None, "not known until built". A build never gets None.
        self.maker = maker
        # What reads layers' bytes (a build's: a base's layers fetched when first read), and
        # where the facts read from them are shared beyond the cache (a build's registry step cache).
        self.blobs: BlobReader = blobs if blobs is not None else ctx.cache
        self.shared = shared
        # Copy layers by what they copy, as found (a plan: the files hashed) or written here;
        # a build starts with what its plan found (``copies``): taken, not written again.
        self.copies: dict[CopyKey, FoundCopy] = dict(copies or {})
        self.taken: set[str] = set()  # digests of the copy layers a build took from its plan

    def _cached_blob(self, key: str) -> Layer | None:
        return self.ctx.cache.layer(key)

    # -- compression -------------------------------------------------------------------

    def convert(self, blob: Layer) -> Layer | None:
        """``blob`` converted once (and cached) where the image wants another form of a zstd
        layer: gzip (old clients cannot read zstd), or zstd:chunked (compile steps store
        plain zstd); otherwise ``blob`` itself. Same diff_id."""
        if blob.compression != "zstd" or self.ctx.compression not in ("gzip", "zstd:chunked"):
            return blob
        if self.ctx.compression == "gzip":
            want: Compression = "gzip"
            key = "gzip-of-" + blob.digest.split(":", 1)[1]
        elif blob.chunked:
            return blob
        else:
            want, key = "zstd:chunked", "chunked-of-" + blob.digest.split(":", 1)[1]
        done = self._cached_blob(key)
        return done if done is not None else self.maker.missing(lambda: self._recompress(blob, key, want))

    def _recompress(self, blob: Layer, key: str, compression: Compression) -> Layer:
        with self.blobs.open_blob(blob.digest) as raw, self.ctx.cache.blob_writer() as w:
            done = recompress(raw, "zstd", w, compression=compression)
        if done.diff_id != blob.diff_id:
            raise InvalidImage(f"layer {blob.digest} does not decompress to its diff_id {blob.diff_id}")
        self.ctx.cache.put_layer(key, done)
        return done

    def convert_image(self, image: Image) -> tuple[Image, list[Layer | None]]:
        """``image`` with every zstd layer in gzip or zstd:chunked when the image wants that
        (:meth:`convert`), and its layers (None: a plan does not know the converted layer
        yet; the image keeps the original)."""
        layers = [self.convert(layer) for layer in layers_of(image)]
        known = [b for b in layers if b is not None]
        if len(known) < len(layers) or all(b.digest == d.digest for b, d in zip(known, image.layers, strict=True)):
            return image, layers
        converted = mutate.with_layers(image, [b.descriptor for b in known])
        self.maker.keep(lambda: self.ctx.cache.put_image(converted))
        return converted, layers

    # -- the image below a layer ---------------------------------------------------------

    def _read_headers(self, desc: Descriptor, diff_id: str) -> LayerHeaders:
        """One read of a layer, and all its headers tell remembered at once (its folders and
        symlinks, anchors and the dependency check's entries), with the SBOM's database texts
        (dpkg status, os-release, Python metadata: small files): a base's layer is read once
        on a cold cache, not once for each. Raises InvalidImage for a damaged layer."""
        headers = LayerHeaders(data=False)
        texts: dict[str, str] = {}
        comp = cast(Compression, mt.compression_of(desc.media_type))

        def opener() -> AbstractContextManager[BinaryIO]:
            return self.blobs.open_blob(desc.digest)

        for entry, data in tar_members(LayerSource(f"layer {desc.digest}", opener, comp)):
            headers.add(entry)
            if data is not None and is_database_text(entry.path):
                with data() as member:
                    texts[entry.path] = database_text(entry.path, member)
        remember_headers(self.ctx.cache, headers, digest=desc.digest, diff_id=diff_id)
        remember_texts(self.ctx.cache, diff_id, texts)
        return headers

    def index(self, desc: Descriptor, diff_id: str) -> LayerIndex:
        """A layer's folders and symlinks (read once from its headers, then remembered)."""
        return remembered(
            self.ctx.cache,
            tree_key(diff_id),
            lambda: self._read_headers(desc, diff_id).index(),
            read=LayerIndex.from_json,
            write=LayerIndex.to_json,
            shared=self.shared,
        )

    def view(self, image: Image) -> TreeView:
        return TreeView.of([self.index(d, i) for d, i in zip(image.layers, image.diff_ids, strict=True)])

    def fit(self, blob: Layer, view: TreeView) -> Layer | None:
        """``blob`` as it must be written onto the image ``view`` describes: through its
        symlinks, its parents named as that image has them. Usually the same blob."""
        key = anchors_key(blob.digest)
        found = self.ctx.cache.memo_as(key, _anchors_of)
        if found is None:
            found = self._read_headers(blob.descriptor, blob.diff_id).anchors()
        if not view.needs_fitting(found):
            return blob
        # "format" 2: new parents are named with the epoch's mtime (they had 0 before).
        fit_key = key_of(
            {
                "fit": blob.digest,
                "format": 2,
                "view": view.relevant(found),
                "epoch": self.ctx.epoch,
                "compression": self.ctx.compression,
            }
        )
        fitted = self._cached_blob(fit_key)
        return fitted if fitted is not None else self.maker.missing(lambda: self._rewrite(blob, view, fit_key))

    def _rewrite(self, blob: Layer, view: TreeView, fit_key: str) -> Layer:
        """``blob`` rewritten to fit the image ``view`` describes, recorded under ``fit_key``."""
        log.info("layer %s lands under a symlink, a non-default or a missing folder: rewriting it", blob.digest)
        with self.ctx.cache.workdir("fit-") as work:
            plain = work / "layer.tar"
            with (
                self.blobs.open_blob(blob.digest) as raw,
                decompressed(raw, blob.compression) as data,
                open(plain, "wb") as out,
            ):
                shutil.copyfileobj(data, out, 1 << 20)
            what = f"layer {blob.digest}"
            with open(plain, "rb") as f, reading(f, what=what, stream=False) as (tf, entries):
                members: list[Member] = [
                    (entry, opener(tf, info, what=what) if entry.kind == "file" else None)
                    for entry, info in entries
                    if entry.path
                ]
                fitted_members = fit_members(members, view, epoch=self.ctx.epoch)
                headers = LayerHeaders(texts=DATABASE_TEXTS, elf=self.ctx.elf)
                with self.ctx.cache.blob_writer() as w:
                    fitted = write_layer(
                        fitted_members, w, compression=self.ctx.compression, epoch=self.ctx.epoch, headers=headers
                    )
        remember_headers(self.ctx.cache, headers, digest=fitted.digest, diff_id=fitted.diff_id)
        remember_kept_texts(self.ctx.cache, headers, fitted.diff_id)
        self.ctx.cache.put_layer(fit_key, fitted)
        return fitted

    def copy_leaves_out(self, spec: m.CopySpec) -> str | None:
        """A warning when a copy's folder holds this build's cache or outputs: they are left
        out of the layer (as ``.git`` is), which a reader of the manifest would not guess."""
        src = os.path.realpath(self.loaded.folder / spec.from_)
        inside = sorted(str(p) for p in self.ctx.leave_out if os.path.realpath(p).startswith(src.rstrip("/") + "/"))
        if not inside:
            return None
        return f"copy from {spec.from_}: left out of the layer (this build's cache or outputs): {', '.join(inside)}"

    def copy_layer(self, spec: m.CopySpec, path: tuple[str | int, ...], view: TreeView | None) -> Layer | None:
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
        known = self.copies.get(copy)
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
                lambda: self._find_copy(members, prints), lambda: (self._write_copy(members, prints), None)
            )
        except FileNotFoundError as e:
            raise self.loaded.error((*path, "copy", "from"), f"path does not exist: {e.filename}") from None
        except PermissionError as e:
            raise self.loaded.error((*path, "copy", "from"), f"cannot read {e.filename}: permission denied") from None
        if found is None:
            return None
        self.copies[copy] = FoundCopy(found[0], found_anchors, fit, found[1])
        return found[0]

    def _intact(self, layer: Layer) -> bool:
        """Whether ``layer``'s blob is in the cache with its bytes (read and hashed once, then
        known by its file's state: :meth:`Cache.blob_intact`); a damaged one is dropped,
        and the layer written."""
        return self.ctx.cache.blob_intact(layer.digest, layer.size)

    def _find_copy(self, members: list[Member], prints: Fingerprint | None) -> tuple[Layer, str | None] | None:
        """The copy layer of ``members`` (sorted) a build made: by the files' fingerprint when
        it is remembered, else by hashing them (nothing written); with the fingerprint memo
        the build is to record (when they were hashed, and did not change meanwhile)."""
        memo = copy_stat_key(prints.digest) if prints is not None else None
        if memo is not None:
            diff_id = self.ctx.cache.memo_as(memo, lambda m: str(m["diff_id"]))
            found = self._cached_blob(self._copy_key(diff_id)) if diff_id is not None else None
            if found is not None:
                return found, None
        started = time.time_ns()
        hashed = write_layer(
            members, HashingSink(None, hashing=False), compression="none", epoch=self.ctx.epoch, presorted=True
        )
        found = self._cached_blob(self._copy_key(hashed.diff_id))
        if found is None:
            return None
        return found, memo if prints is not None and settled(members, prints, started) else None

    def _write_copy(self, members: list[Member], prints: Fingerprint | None) -> Layer:
        """The copy layer of ``members`` (sorted), written and recorded under its content, and
        under the files' fingerprint when they did not change while they were read."""
        started = time.time_ns()
        headers = LayerHeaders(texts=DATABASE_TEXTS, elf=self.ctx.elf)
        with self.ctx.cache.blob_writer() as w:
            blob = write_layer(
                members,
                w,
                compression=self.ctx.compression,
                epoch=self.ctx.epoch,
                presorted=True,
                progress=self.ctx.progress,
                headers=headers,
            )
        remember_headers(self.ctx.cache, headers, digest=blob.digest, diff_id=blob.diff_id)
        remember_kept_texts(self.ctx.cache, headers, blob.diff_id)
        self.ctx.cache.put_layer(self._copy_key(blob.diff_id), blob)
        self.ctx.cache.vouch_blob(blob.digest)  # just written: a rebuild need not read it to trust it
        if prints is not None and settled(members, prints, started):
            self.ctx.cache.put_memo(copy_stat_key(prints.digest), {"diff_id": blob.diff_id})
        return blob

    def _copy_key(self, diff_id: str) -> str:
        return "copy-" + key_of({"diff_id": diff_id, "compression": self.ctx.compression})
