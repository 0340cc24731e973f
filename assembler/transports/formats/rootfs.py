"""``rootfs:FILE.tar[.gz|.zst]``: a root filesystem tarball (:mod:`assembler.transports.rootfs`),
a base only: converted into the cache as a one-layer image when read, and known to a plan
once converted."""

from __future__ import annotations

from assembler.oci.image import Image
from assembler.oci.reference import Ref
from assembler.transports import rootfs
from assembler.transports.common import SourceImage
from assembler.transports.context import Context, local_path
from assembler.transports.formats.base import Format


class RootfsFormat(Format):
    """A tarball read as a base."""

    transport = "rootfs"

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        path = local_path(ctx, ref.path)
        image = rootfs.read(path, cache=ctx.cache, platform=ctx.platform, epoch=ctx.epoch, compression=ctx.compression)
        return SourceImage(image, ctx.cache, f"rootfs:{path}")

    def known(self, ref: Ref, ctx: Context) -> Image | None:
        """The image the tarball was converted to before (by its file's identity), else None."""
        path = local_path(ctx, ref.path)
        return rootfs.cached(path, cache=ctx.cache, platform=ctx.platform, epoch=ctx.epoch, compression=ctx.compression)


FORMAT = RootfsFormat()
