"""Reading and writing images in every supported format, by transport reference.

One module per format, each reading and writing where that makes sense: ``layout``
(OCI dir), ``archive`` (oci-archive, docker-archive), ``rootfs`` (tarball),
``bootstrap`` (mmdebstrap), ``remote`` (registry, through :mod:`assembler.registry`),
``sif`` (Apptainer).
This module dispatches reading on the reference (:func:`open_source`); writing is
dispatched once, by :data:`assembler.pipeline.writers.WRITERS`, whose writers call each
format's module themselves.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from assembler.archive.compress import DECOMPRESS_ERRORS, Compression, decompressed
from assembler.archive.headers import ElfReader
from assembler.cache import BlobWriter, Cache, key_of
from assembler.errors import CorruptBlob, DigestMismatch, InputError, InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import digest_hex
from assembler.oci.image import Image
from assembler.oci.reference import Ref
from assembler.proc import Runner
from assembler.transports import archive, layout, rootfs
from assembler.transports.common import RegistryOptions, SourceImage

_CHUNK = 1 << 20


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
    # What a copy: layer never takes from the host: the cache and the outputs (a manifest
    # folder copied whole holds them, and they grow with every build).
    leave_out: tuple[Path, ...] = ()
    # Reads each ELF file's facts as a layer is written (the dependency check's, when it runs).
    elf: ElfReader | None = None


def _path(ctx: Context, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else ctx.base_dir / p


def registry_options(ctx: Context) -> RegistryOptions:
    return ctx.registry if ctx.registry is not None else RegistryOptions()


def _read_scratch(ref: Ref, ctx: Context) -> SourceImage:
    image = mutate.scratch(ctx.platform, epoch=ctx.epoch)
    ctx.cache.put_image(image)
    return SourceImage(image, ctx.cache, "scratch")


def _read_rootfs(ref: Ref, ctx: Context) -> SourceImage:
    path = _path(ctx, ref.path)
    image = rootfs.read(path, cache=ctx.cache, platform=ctx.platform, epoch=ctx.epoch, compression=ctx.compression)
    return SourceImage(image, ctx.cache, f"rootfs:{path}")


def _read_remote(ref: Ref, ctx: Context) -> SourceImage:
    from assembler.transports import remote

    assert ref.name is not None
    return remote.read(ref.name, platform=ctx.platform, options=registry_options(ctx), progress=ctx.progress)


def _not_an_image(how: str) -> Callable[[Ref, Context], SourceImage]:
    def refuse(ref: Ref, ctx: Context) -> SourceImage:
        raise InputError(f"{ref}: not an image; {how}")

    return refuse


# Reading, by transport: the one dispatch on a reference's transport for what is read.
_READERS: dict[str, Callable[[Ref, Context], SourceImage]] = {
    "scratch": _read_scratch,
    "oci": lambda r, c: layout.read(_path(c, r.path), r.tag, platform=c.platform),
    "oci-archive": lambda r, c: archive.read_oci_archive(_path(c, r.path), r.tag, platform=c.platform),
    "docker-archive": lambda r, c: archive.read_docker_archive(_path(c, r.path), r.tag, platform=c.platform),
    "rootfs": _read_rootfs,
    "docker": _read_remote,
    "sif": _not_an_image("a SIF file is read with `siftool info`"),
    "sqsh": _not_an_image("a squashfs file is read with `unsquashfs -l`"),
}


def open_source(ref: Ref, ctx: Context) -> SourceImage:
    """The image a reference names, with a reader for its blobs (nothing copied yet).

    ``rootfs:`` and ``scratch`` are converted into the cache on the way.
    """
    reader = _READERS.get(ref.transport)
    if reader is None:
        raise InputError(f"{ref} cannot be read as an image")
    return reader(ref, ctx)


def resolved_key(ref: Ref, platform: Platform) -> str:
    """The cache key of the image digest a registry reference was last resolved to."""
    return "resolved-" + key_of({"ref": str(ref), "platform": str(platform)})


def _known_rootfs(ref: Ref, ctx: Context) -> Image | None:
    path = _path(ctx, ref.path)
    return rootfs.cached(path, cache=ctx.cache, platform=ctx.platform, epoch=ctx.epoch, compression=ctx.compression)


def _named_key(ref: Ref, platform: Platform) -> str:
    """The memo of the manifest a registry name was last resolved to (its layers perhaps
    never fetched: a build reads them only when it needs them)."""
    return "named-" + resolved_key(ref, platform)


def _known_remote(ref: Ref, ctx: Context) -> Image | None:
    key = resolved_key(ref, ctx.platform)
    found = ctx.cache.base_image(key)
    if found is not None:
        return found
    named = ctx.cache.memo(_named_key(ref, ctx.platform))
    digest = named.get("manifest") if named is not None else None
    return ctx.cache.get_image(digest, layers=False) if isinstance(digest, str) else None


# What a plan knows of a base without reading anything new: a tarball converted before,
# the manifest a registry name was last resolved to. Other transports are read (a layout's
# index and config are small and local).
_KNOWN: dict[str, Callable[[Ref, Context], Image | None]] = {
    "rootfs": _known_rootfs,
    "docker": _known_remote,
    "scratch": lambda ref, ctx: mutate.scratch(ctx.platform, epoch=ctx.epoch),
}


def known_image(ref: Ref, ctx: Context) -> Image | None:
    """The image ``ref`` names as far as it is known without converting or downloading
    anything (a plan's view): None where that would take a read the plan does not make."""
    known = _KNOWN.get(ref.transport)
    return known(ref, ctx) if known is not None else open_source(ref, ctx).image


def open_base(ref: Ref, ctx: Context) -> tuple[Image, Callable[[], None]]:
    """The image ``ref`` names, read as its manifest and config (all a step key needs), and
    what brings its layers into the cache: :func:`import_image` (verified: digests and
    diff_ids), then a registry name's resolution is remembered for plans
    (:func:`known_image`). A build calls it only when something reads those layers."""
    source = open_source(ref, ctx)
    if ref.name is not None:  # a registry name: a plan knows its manifest and config from now on
        ctx.cache.put_image(source.image)
        ctx.cache.put_memo(_named_key(ref, ctx.platform), {"manifest": source.image.digest})

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


_SIF_MAGIC = b"SIF_MAGIC"
_SQUASHFS_MAGIC = b"hsqs"  # a squashfs superblock starts the file (little-endian)
_FILE_KINDS = {"sif": "a SIF file", "sqsh": "a squashfs image"}


def check_replaceable(path: Path, kind: str, *, force: bool) -> None:
    """Refuse (InputError) to write output ``kind`` at ``path`` over something that is not
    ours: a file that is not an image archive, SIF or squashfs, a folder that is not an OCI
    layout, a symlink. ``force`` allows replacing any file (never a folder by a file) and a
    symlink: the link itself, never what it points to (an output is not written through one)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink():
        if force:
            return
        raise InputError(
            f"{kind}:{path}: is a symlink to {os.readlink(path)}; not writing through it",
            hint="--force replaces the link itself (what it points to is left as it is), or choose another path",
        )
    if kind == "oci":
        if path.is_dir() and (not any(path.iterdir()) or (path / "oci-layout").is_file()):
            return
        what = "a folder that is not an OCI layout" if path.is_dir() else "a file, not an OCI layout folder"
        raise InputError(f"oci:{path}: {what}", hint="choose another path (an existing layout is added to)")
    if path.is_dir():
        raise InputError(f"{kind}:{path}: is a folder; the output is a file", hint="choose another path")
    if force or _is_ours(path, kind):
        return
    raise InputError(
        f"{kind}:{path}: exists and is not {_FILE_KINDS.get(kind, 'an image archive')}; not replacing it",
        hint="pass --force to replace it, or choose another path",
    )


def _is_ours(path: Path, kind: str) -> bool:
    """Whether ``path`` is something this output may replace: a SIF for ``sif``, a
    squashfs for ``sqsh``, an oci- or docker-archive for the archives."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    if kind == "sif":
        return _SIF_MAGIC in head
    if kind == "sqsh":
        return head.startswith(_SQUASHFS_MAGIC)
    return archive.is_image_archive(path)


@dataclass(frozen=True)
class Written:
    """What writing one output did."""

    ref: str
    digest: str
    uploaded_bytes: int = 0
    uploaded_blobs: int = 0
    mounted_blobs: int = 0
    skipped_blobs: int = 0
    referrers: tuple[str, ...] = ()  # digests of the referrers written with it (SBOM, provenance)
    signatures: tuple[str, ...] = ()  # --sign: digests of the cosign .sig and .att manifests written


__all__ = ["Context", "SourceImage", "Written", "import_image", "open_source"]
