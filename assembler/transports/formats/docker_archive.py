"""``docker-archive:FILE[:REF]``: what ``docker save`` writes and ``docker load`` reads
(:mod:`assembler.transports.archive`: uncompressed layers, whose sizes the cache
remembers). The format knows no referrers: they are files next to it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cache import Cache
from assembler.oci.reference import Ref
from assembler.transports import archive
from assembler.transports.common import RegistryOptions, SourceImage
from assembler.transports.context import Context, Written, check_replaceable, local_path
from assembler.transports.formats.base import Format
from assembler.transports.formats.writer import Writer
from assembler.transports.sidecar import Recognizer
from assembler.transports.target import Target

if TYPE_CHECKING:
    from assembler.transports.referrers import Listing


def _size_key(diff_id: str) -> str:
    return "usize-" + diff_id.split(":", 1)[1]


def _known_size(cache: Cache, diff_id: str) -> int | None:
    hit = cache.memo(_size_key(diff_id))
    size = hit.get("size") if hit else None
    return size if isinstance(size, int) else None


class DockerArchiveWriter(Writer):
    """``docker-archive:FILE[:REF]``, for ``docker load``; the image's referrers go next to
    it (``FILE.spdx.json``, ``FILE.provenance.intoto.json``)."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "docker-archive", force=force)
        self.check_sidecars(sbom)

    def write_image(self, target: Target) -> list[Written]:
        image, path, cache = target.source.image, self.file_of(target), target.ctx.cache
        sizes = archive.uncompressed_sizes(image, target.blobs, known=lambda diff_id: _known_size(cache, diff_id))
        for layer in sizes:
            cache.put_memo(_size_key(layer.diff_id), {"size": layer.size})
        archive.write_docker_archive(
            path, image, ref=self.ref.tag, blobs=target.blobs, epoch=target.ctx.epoch, sizes=sizes
        )
        return self.with_sidecars(Written(str(self.ref), image.digest), target, target.referrers)


class DockerArchiveFormat(Format):
    """A docker-archive file."""

    transport = "docker-archive"
    referrers = "files"

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        return archive.read_docker_archive(local_path(ctx, ref.path), ref.tag, platform=ctx.platform)

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        return DockerArchiveWriter(ref, ours)

    def read_referrers(
        self, ref: Ref, source: Callable[[], SourceImage], *, options: RegistryOptions
    ) -> tuple[str, Listing]:
        from assembler.transports.referrers import list_sidecars

        return str(ref), list_sidecars(Path(ref.path), ref.transport, recognise=archive.is_image_archive)


FORMAT = DockerArchiveFormat()
