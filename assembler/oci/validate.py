"""Check an image the hard way: every size, digest and diff_id recomputed from the bytes,
and whatever else the caller checks of a layer (:data:`CheckLayer`: a zstd:chunked layer's
TOC against its tar, :func:`assembler.archive.chunked_check.check_toc`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from assembler.errors import InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.image import Image

_CHUNK = 1 << 20


class BlobReader(Protocol):
    """Anything that can open a blob by digest for reading (cache, layout, registry)."""

    def open_blob(self, digest: str) -> BinaryIO: ...


Decompressor = Callable[[BinaryIO, str], AbstractContextManager[BinaryIO]]
"""``(compressed stream, media type) -> uncompressed stream``, supplied by the caller."""

CheckLayer = Callable[[Descriptor, BlobReader, str], None]
"""``(layer, blobs, what) -> None``: another check of a layer whose digest and diff_id are
right, supplied by the caller; it raises InvalidImage naming ``what``."""


@dataclass(frozen=True)
class LayerCheck:
    digest: str
    size: int
    diff_id: str
    uncompressed_size: int


@dataclass(frozen=True)
class Report:
    image_digest: str
    layers: tuple[LayerCheck, ...]


def _hash_stream(stream: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
        n += len(chunk)
    return "sha256:" + h.hexdigest(), n


class _HashingReader:
    """Reads through to ``raw`` while hashing: one pass gives digest and diff_id."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.sha.update(data)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True


def validate(image: Image, blobs: BlobReader, *, decompress: Decompressor, check: CheckLayer | None = None) -> Report:
    """Recompute every blob's size and digest and every layer's diff_id, then ``check``
    each layer.

    Raises InvalidImage naming the first problem found.
    """
    where = f"image {image.digest}"
    _check_config(image, where)
    _check_blob(blobs, image.config_descriptor, f"{where}: config")
    checks = []
    for i, (layer, diff_id) in enumerate(zip(image.layers, image.diff_ids, strict=True)):
        what = f"{where}: layer {i + 1}/{len(image.layers)} {layer.digest}"
        usize = _check_layer(blobs, layer, diff_id, what, decompress=decompress)
        if check is not None:
            check(layer, blobs, what)
        checks.append(LayerCheck(layer.digest, layer.size, diff_id, usize))
    return Report(image.digest, tuple(checks))


def _check_config(image: Image, where: str) -> None:
    """The config's platform, rootfs and history agree with the manifest's layers."""
    config = image.config
    for key in ("architecture", "os"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise InvalidImage(f"{where}: config has no {key}")
    rootfs = config.get("rootfs") or {}
    if rootfs.get("type") != "layers":
        raise InvalidImage(f"{where}: config rootfs.type must be 'layers'")
    if len(image.diff_ids) != len(image.layers):
        raise InvalidImage(
            f"{where}: {len(image.layers)} layers in the manifest but {len(image.diff_ids)} diff_ids in the config"
        )
    history = config.get("history")
    if isinstance(history, list) and history:
        non_empty = sum(1 for h in history if not (isinstance(h, dict) and h.get("empty_layer")))
        if non_empty != len(image.layers):
            raise InvalidImage(f"{where}: {non_empty} non-empty history entries for {len(image.layers)} layers")


def _check_layer(blobs: BlobReader, layer: Descriptor, diff_id: str, what: str, *, decompress: Decompressor) -> int:
    """Size, digest and diff_id of one layer recomputed; its uncompressed size."""
    if layer.media_type not in mt.LAYER_TYPES:
        raise InvalidImage(f"{what}: unknown layer media type {layer.media_type!r}")
    with blobs.open_blob(layer.digest) as raw:
        reader = _HashingReader(raw)
        with decompress(reader, layer.media_type) as plain:  # type: ignore[arg-type]  # duck-typed reader
            actual_diff_id, usize = _hash_stream(plain)
        # Drain anything the decompressor did not need (trailing bytes still count).
        while reader.read(_CHUNK):
            pass
    digest = "sha256:" + reader.sha.hexdigest()
    if reader.count != layer.size:
        raise InvalidImage(f"{what}: blob is {reader.count} bytes, manifest says {layer.size}")
    if digest != layer.digest:
        raise InvalidImage(f"{what}: blob hashes to {digest}")
    if actual_diff_id != diff_id:
        raise InvalidImage(f"{what}: uncompressed content is {actual_diff_id}, config says diff_id {diff_id}")
    return usize


def _check_blob(blobs: BlobReader, desc: Descriptor, what: str) -> None:
    with blobs.open_blob(desc.digest) as f:
        digest, size = _hash_stream(f)
    if size != desc.size or digest != desc.digest:
        raise InvalidImage(
            f"{what}: blob is {digest} ({size} bytes), descriptor says {desc.digest} ({desc.size} bytes)"
        )
