"""Reading and writing images in every supported format, by transport reference.

One module per format, each reading and writing where that makes sense: ``layout``
(OCI dir), ``archive`` (oci-archive, docker-archive), ``rootfs`` (tarball),
``bootstrap`` (mmdebstrap), ``remote`` (registry, oras-py), ``sif`` (Apptainer).
This module only dispatches on the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assembler.archive.compress import Compression
from assembler.cache import Cache
from assembler.errors import InputError
from assembler.oci import mutate
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.reference import ImageName, Ref
from assembler.proc import Runner
from assembler.transports import archive, layout, rootfs
from assembler.transports.common import BlobReader, RegistryOptions, SourceImage


@dataclass(frozen=True)
class Context:
    """What readers and writers need besides the reference."""

    cache: Cache
    runner: Runner
    platform: Platform
    epoch: int
    compression: Compression = "zstd"
    base_dir: Path = field(default_factory=Path.cwd)
    registry: RegistryOptions | None = None
    progress: Callable[[int], None] | None = None  # bytes compressed (layers written) or read
    upload_progress: Callable[[int], None] | None = None  # bytes sent to a registry


def _path(ctx: Context, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else ctx.base_dir / p


def registry_options(ctx: Context) -> RegistryOptions:
    return ctx.registry if ctx.registry is not None else RegistryOptions()


def open_source(ref: Ref, ctx: Context) -> SourceImage:
    """The image a reference names, with a reader for its blobs (nothing copied yet).

    ``rootfs:`` and ``scratch`` are converted into the cache on the way.
    """
    if ref.transport == "scratch":
        image = mutate.scratch(ctx.platform, epoch=ctx.epoch)
        ctx.cache.put_image(image)
        return SourceImage(image, ctx.cache, "scratch")
    if ref.transport == "oci":
        return layout.read(_path(ctx, ref.path), ref.tag, platform=ctx.platform)
    if ref.transport == "oci-archive":
        return archive.read_oci_archive(_path(ctx, ref.path), ref.tag, platform=ctx.platform)
    if ref.transport == "docker-archive":
        return archive.read_docker_archive(_path(ctx, ref.path), ref.tag, platform=ctx.platform)
    if ref.transport == "rootfs":
        path = _path(ctx, ref.path)
        image = rootfs.read(path, cache=ctx.cache, platform=ctx.platform, epoch=ctx.epoch, compression=ctx.compression)
        return SourceImage(image, ctx.cache, f"rootfs:{path}")
    if ref.transport == "docker":
        from assembler.transports import remote

        assert ref.name is not None
        return remote.read(ref.name, platform=ctx.platform, options=registry_options(ctx), progress=ctx.progress)
    raise InputError(f"{ref} cannot be read as an image")


def import_image(source: SourceImage, cache: Cache, *, progress: Callable[[int], None] | None = None) -> Image:
    """Copy every blob of ``source`` into the cache (hard links where possible), verified."""
    for desc in source.image.blob_descriptors():
        if cache.has_blob(desc.digest, desc.size):
            continue
        path = source.blobs.blob_file(desc.digest)
        if path is not None:
            cache.import_file(path, digest=desc.digest, size=desc.size)
        else:
            with source.blobs.open_blob(desc.digest) as f:
                cache.import_stream(f, digest=desc.digest, size=desc.size)
        if progress is not None:
            progress(desc.size)
    cache.put_image(source.image)
    return source.image


@dataclass(frozen=True)
class Written:
    """What writing one output did."""

    ref: str
    digest: str
    uploaded_bytes: int = 0
    uploaded_blobs: int = 0
    mounted_blobs: int = 0
    skipped_blobs: int = 0


def write_output(
    ref: Ref,
    image: Image,
    ctx: Context,
    *,
    blobs: BlobReader,
    mount_from: Sequence[ImageName] = (),
) -> Written:
    """Write ``image`` to the output ``ref``. SIF outputs are handled by :func:`write_sif`."""
    if ref.transport == "oci":
        layout.write(_path(ctx, ref.path), image, tag=ref.tag, blobs=blobs)
        return Written(str(ref), image.digest)
    if ref.transport == "oci-archive":
        archive.write_oci_archive(_path(ctx, ref.path), image, tag=ref.tag, blobs=blobs, epoch=ctx.epoch)
        return Written(str(ref), image.digest)
    if ref.transport == "docker-archive":
        sizes = archive.uncompressed_sizes(image, blobs, known=lambda diff_id: _known_size(ctx.cache, diff_id))
        for layer in sizes:
            ctx.cache.put_key(_size_key(layer.diff_id), {"size": layer.size})
        archive.write_docker_archive(
            _path(ctx, ref.path), image, ref=ref.tag, blobs=blobs, epoch=ctx.epoch, sizes=sizes
        )
        return Written(str(ref), image.digest)
    if ref.transport == "docker":
        from assembler.transports import remote

        assert ref.name is not None
        result = remote.push(
            image,
            ref.name,
            blobs=blobs,
            options=registry_options(ctx),
            mount_from=mount_from,
            progress=ctx.upload_progress or ctx.progress,
        )
        s = result.stats
        return Written(str(ref), result.digest, s.uploaded_bytes, s.uploaded_blobs, s.mounted_blobs, s.skipped_blobs)
    raise InputError(f"{ref} is not an image output (use oci:, oci-archive:, docker-archive:, docker:// or sif:)")


def _size_key(diff_id: str) -> str:
    return "usize-" + diff_id.split(":", 1)[1]


def _known_size(cache: Cache, diff_id: str) -> int | None:
    hit = cache.get_key(_size_key(diff_id))
    size = hit.get("size") if hit else None
    return size if isinstance(size, int) else None


__all__ = ["Context", "SourceImage", "Written", "import_image", "open_source", "write_output"]
