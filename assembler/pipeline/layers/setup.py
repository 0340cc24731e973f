"""Layers fitted onto the image below them, and converted as the image wants.

A layer landing under a symlink or a folder the image below names otherwise is rewritten
to fit (:mod:`assembler.archive.view`; ``copy:`` layers are fitted as they are written:
:mod:`assembler.pipeline.layers.kinds.copy`); a zstd layer is converted to gzip when the image
wants gzip. A base's layer that would ship as it is with a zstd:chunked TOC ships so only
once its TOC and tar-split are found to say what its tar holds
(:mod:`assembler.archive.chunked_check`); one that lies is written again as the image
wants, without that TOC. Each result is cached by what it is made of, so a plan finds it
again without writing anything.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, cast

from assembler.archive.chunked_check import carries_toc, check_toc
from assembler.archive.compress import Compression, decompressed
from assembler.archive.headers import LayerHeaders
from assembler.archive.layer import (
    Member,
    recompress,
)
from assembler.archive.layer_reader import LayerSource, tar_members
from assembler.archive.tarread import opener, reading
from assembler.archive.view import LayerIndex, TreeView, fit_members
from assembler.cache import key_of
from assembler.cache.memos import SharedFacts, anchors_key, remember_headers, remembered, tree_key, write_remembered
from assembler.errors import BadToc, InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.descriptor import Descriptor
from assembler.oci.image import Image
from assembler.oci.layer import Layer, layers_of
from assembler.pipeline.layers.maker import Maker
from assembler.sbom.packages import database_text, is_database_text, remember_texts
from assembler.transports import Context
from assembler.transports.common import BlobReader

log = logging.getLogger(__name__)


def _anchors_of(memo: Mapping[str, Any]) -> list[str]:
    found = memo["anchors"]
    if not isinstance(found, list):
        raise TypeError(f"anchors is a {type(found).__name__}, not a list")
    return [str(a) for a in found]


class ImageSetup:
    """Fits layers onto the image below (:mod:`assembler.archive.view`) and converts them
    as the image wants."""

    def __init__(
        self,
        ctx: Context,
        *,
        maker: Maker,
        blobs: BlobReader | None = None,
        shared: SharedFacts | None = None,
    ) -> None:
        self.ctx = ctx
        # A plan's maker reads layers (their headers, cached) but writes none: a layer that
        # would have to be written is None, "not known until built". A build never gets None.
        self.maker = maker
        # What reads layers' bytes (a build's: a base's layers fetched when first read), and
        # where the facts read from them are shared beyond the cache (a build's registry step cache).
        self.blobs: BlobReader = blobs if blobs is not None else ctx.cache
        self.shared = shared

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
            done = recompress(raw, blob.compression, w, compression=compression)
        if done.diff_id != blob.diff_id:
            raise InvalidImage(f"layer {blob.digest} does not decompress to its diff_id {blob.diff_id}")
        self.ctx.cache.put_layer(key, done)
        return done

    # -- a base's zstd:chunked TOC -----------------------------------------------------

    def _shipped_base(self, blob: Layer) -> Layer | None:
        """A base's layer as the image ships it: converted (:meth:`convert`), or, when it
        would ship as it is with a TOC a partial pull reads, checked first
        (:meth:`_toc_checked`)."""
        shipped = self.convert(blob)
        if shipped is None or shipped.digest != blob.digest or not carries_toc(blob.descriptor.annotations):
            return shipped
        return self._toc_checked(blob)

    def _toc_checked(self, blob: Layer) -> Layer | None:
        """``blob`` when its TOC and tar-split say what its tar holds, else the same tar
        written again as the image wants (no foreign TOC in it). The verdict is remembered
        by the blob and its annotations (which say where the TOC is and give its digest);
        a plan with no verdict yet does not know the layer (None)."""
        # "check" 1: the checks of chunked_check as they are; a stricter one gets a new number.
        key = key_of({"toc-check": blob.digest, "annotations": dict(blob.descriptor.annotations), "check": 1})
        why = self.ctx.cache.memo_as(key, lambda memo: str(memo["bad_toc"]))
        if why is None:
            why = self.maker.missing(lambda: self._check_toc(blob, key))
        if not why:
            return blob if why is not None else None
        want = self.ctx.compression
        rewrite_key = (
            {"zstd": "zstd", "gzip": "gzip", "zstd:chunked": "chunked"}[want] + "-of-" + blob.digest.split(":", 1)[1]
        )
        done = self._cached_blob(rewrite_key)
        if done is None:
            log.warning("%s; writing it again as %s without that TOC", why, want)
        return done if done is not None else self.maker.missing(lambda: self._recompress(blob, rewrite_key, want))

    def _check_toc(self, blob: Layer, key: str) -> str:
        """Why ``blob``'s TOC cannot ship ("": it can), read once and remembered under ``key``."""
        with self.blobs.open_blob(blob.digest) as raw:
            try:
                check_toc(raw, blob.descriptor.annotations, what=f"the base's layer {blob.digest}")
                why = ""
            except BadToc as e:
                why = e.message
                while raw.read(1 << 20):  # to its end: its digest checked before the verdict is kept
                    pass
        self.ctx.cache.put_memo(key, {"bad_toc": why})
        return why

    def convert_image(self, image: Image) -> tuple[Image, list[Layer | None]]:
        """``image`` (a base) with every zstd layer in gzip or zstd:chunked when the image
        wants that (:meth:`convert`) and every layer whose zstd:chunked TOC lies written
        again without it (:meth:`_shipped_base`), and its layers (None: a plan does not
        know the converted layer yet; the image keeps the original)."""
        layers = [self._shipped_base(layer) for layer in layers_of(image)]
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
                fitted = write_remembered(
                    self.ctx.cache,
                    fitted_members,
                    compression=self.ctx.compression,
                    epoch=self.ctx.epoch,
                    observers=self.ctx.observers,
                )
        self.ctx.cache.put_layer(fit_key, fitted)
        return fitted
