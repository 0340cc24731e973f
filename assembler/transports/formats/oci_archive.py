"""``oci-archive:FILE[:TAG]``: an OCI layout as one tar (:mod:`assembler.transports.archive`).
Tagged, it holds the image's referrers inside, as a layout does; untagged, they are files
next to it (skopeo reads an untagged archive only when its index lists one manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from assembler.errors import NotFound
from assembler.oci.reference import Ref
from assembler.transports import archive
from assembler.transports.common import BlobReader, RegistryOptions, SourceImage
from assembler.transports.context import Context, Written, check_replaceable, local_path
from assembler.transports.formats.base import Format
from assembler.transports.formats.writer import Writer, digests
from assembler.transports.sidecar import Recognizer
from assembler.transports.target import Target

if TYPE_CHECKING:
    from assembler.transports.referrers import Listing


class OciArchiveWriter(Writer):
    """``oci-archive:FILE[:TAG]``: tagged, with the image's referrers inside, as a layout;
    untagged, with them next to it (``FILE.spdx.json``...)."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "oci-archive", force=force)
        self.check_sidecars(sbom and not self.ref.tag)

    def write_image(self, target: Target) -> list[Written]:
        image, path = target.source.image, self.file_of(target)
        inside = target.referrers if self.ref.tag else ()
        archive.write_oci_archive(
            path, image, tag=self.ref.tag, blobs=target.blobs, epoch=target.ctx.epoch, referrers=inside
        )
        written = Written(str(self.ref), image.digest, referrers=digests(inside))
        return self.with_sidecars(written, target, () if self.ref.tag else target.referrers)


class OciArchiveFormat(Format):
    """An oci-archive file."""

    transport = "oci-archive"
    referrers = "manifests"

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        return archive.read_oci_archive(local_path(ctx, ref.path), ref.tag, platform=ctx.platform)

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        return OciArchiveWriter(ref, ours)

    def list_referrers(self, ref: Ref, image: str, blobs: BlobReader, *, options: RegistryOptions) -> Listing:
        from assembler.transports.referrers import list_archive, list_sidecars

        if not isinstance(blobs, archive.TarBlobs):
            raise NotFound(f"{ref}: referrers live in OCI layouts and archives (oci:, oci-archive:) and registries")
        if not ref.tag:  # an untagged archive has them next to it (see OciArchiveWriter)
            return list_sidecars(Path(ref.path), ref.transport, recognise=archive.is_image_archive)
        return list_archive(Path(ref.path), image, blobs)


FORMAT = OciArchiveFormat()
