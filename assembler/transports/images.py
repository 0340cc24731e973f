"""An image by its reference: read (:func:`open_source`), known without reading
(:func:`known_image`), taken as a base (:func:`open_base`) and copied into the cache,
verified (:func:`import_image`). Each asks the reference's format
(:mod:`assembler.transports.formats`, the one table of them) to read it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import BinaryIO, cast

from assembler.archive.compress import DECOMPRESS_ERRORS, Compression, decompressed
from assembler.cache import BlobWriter, Cache
from assembler.errors import CorruptBlob, DigestMismatch, InputError, InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import digest_hex
from assembler.oci.image import Image
from assembler.oci.reference import Ref
from assembler.transports.common import SourceImage
from assembler.transports.context import Context, named_key, resolved_key

_CHUNK = 1 << 20


def open_source(ref: Ref, ctx: Context) -> SourceImage:
    """The image a reference names, with a reader for its blobs (nothing copied yet).

    ``rootfs:`` and ``scratch`` are converted into the cache on the way. InputError for a
    reference that cannot be read as an image (saying why).
    """
    from assembler.transports.formats import format_of  # the table imports every format: when asked

    return format_of(ref).read(ref, ctx)


def known_image(ref: Ref, ctx: Context) -> Image | None:
    """The image ``ref`` names as far as it is known without converting or downloading
    anything (a plan's view): None where that would take a read the plan does not make."""
    from assembler.transports.formats import format_of  # the table imports every format: when asked

    return format_of(ref).known(ref, ctx)


def open_base(ref: Ref, ctx: Context) -> tuple[Image, Callable[[], None]]:
    """The image ``ref`` names, read as its manifest and config (all a step key needs), and
    what brings its layers into the cache: :func:`import_image` (verified: digests and
    diff_ids), then a registry name's resolution is remembered for plans
    (:func:`known_image`). A build calls it only when something reads those layers."""
    source = open_source(ref, ctx)
    if ref.name is not None:  # a registry name: a plan knows its manifest and config from now on
        ctx.cache.put_image(source.image)
        ctx.cache.put_memo(named_key(ref, ctx.platform), {"manifest": source.image.digest})

    def fetch() -> None:
        import_image(source, ctx.cache, progress=ctx.progress)
        if ref.name is not None:  # a registry name
            ctx.cache.put_base_image(resolved_key(ref, ctx.platform), source.image)

    return source.image, fetch


def import_image(source: SourceImage, cache: Cache, *, progress: Callable[[int], None] | None = None) -> Image:
    """Copy every blob of ``source`` into the cache, verified: digests as they stream, and
    each layer's diff_id (decompressed in the same pass) against the config's.

    Raises InputError naming the layer whose bytes or diff_id are not what the image says.
    """
    image = source.image
    layers = {d.digest: (i, diff_id) for i, (d, diff_id) in enumerate(zip(image.layers, image.diff_ids, strict=False))}
    if len(image.layers) != len(image.diff_ids):
        raise InputError(f"{source.name}: {len(image.layers)} layers but {len(image.diff_ids)} diff_ids in the config")
    for desc in image.blob_descriptors():
        if desc.digest in layers:
            i, diff_id = layers[desc.digest]
            _import_layer(
                source, cache, desc, diff_id, f"{source.name}: layer {i + 1}/{len(image.layers)} {desc.digest}"
            )
        elif not cache.has_blob(desc.digest, desc.size):
            try:
                with source.blobs.open_blob(desc.digest) as f:
                    cache.import_stream(f, digest=desc.digest, size=desc.size)
            except DigestMismatch as e:
                raise InputError(f"{source.name}: {e}") from None
        else:
            continue
        if progress is not None:
            progress(desc.size)
    cache.put_image(image)
    return image


def _import_layer(source: SourceImage, cache: Cache, desc: Descriptor, diff_id: str, what: str) -> None:
    """Bring one layer into the cache (unless there) and check its diff_id, known from an
    earlier check or computed while the bytes are copied."""
    key = "diffid-" + digest_hex(desc.digest)
    known = (cache.memo(key) or {}).get("diff_id")
    present = cache.has_blob(desc.digest, desc.size)
    if present and known is not None:
        actual = str(known)
    else:
        try:
            comp = cast(Compression, mt.compression_of(desc.media_type))
        except InvalidImage as e:  # a base's: the user's input, exit 2
            raise InputError(f"{what}: {e}") from None
        try:
            if present:
                with cache.open_blob(desc.digest) as f:
                    actual = _diff_id(f, None, comp)
            else:
                with source.blobs.open_blob(desc.digest) as f, cache.blob_writer(expected=desc.digest) as w:
                    actual = _diff_id(f, w, comp)
        except DigestMismatch as e:
            if isinstance(e, CorruptBlob):
                raise
            raise InputError(f"{what}: {e}") from None
        except DECOMPRESS_ERRORS as e:
            raise InputError(f"{what}: not readable {comp} data ({e})") from None
        cache.put_memo(key, {"diff_id": actual})
    if actual != diff_id:
        raise InputError(
            f"{what}: uncompressed content is {actual}, but the config's diff_id is {diff_id}",
            hint="the image's config does not describe its layers; rebuild or re-pull it",
        )


class _Tee:
    """Reads ``raw``, copying what is read into ``sink`` (the cache) on the way."""

    def __init__(self, raw: BinaryIO, sink: BlobWriter | None) -> None:
        self.raw = raw
        self.sink = sink

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data and self.sink is not None:
            self.sink.write(data)
        return data

    def readable(self) -> bool:
        return True


def _diff_id(raw: BinaryIO, sink: BlobWriter | None, comp: Compression) -> str:
    tee = _Tee(raw, sink)
    sha = hashlib.sha256()
    with decompressed(cast(BinaryIO, tee), comp) as plain:
        while chunk := plain.read(_CHUNK):
            sha.update(chunk)
    while tee.read(_CHUNK):  # bytes after the compressed stream still belong to the blob
        pass
    return "sha256:" + sha.hexdigest()
