"""``scratch``: the empty image of the context's platform and epoch, a base only."""

from __future__ import annotations

from assembler.oci import mutate
from assembler.oci.image import Image
from assembler.oci.reference import Ref
from assembler.transports.common import SourceImage
from assembler.transports.context import Context
from assembler.transports.formats.base import Format


class ScratchFormat(Format):
    """The empty image."""

    transport = "scratch"

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        image = mutate.scratch(ctx.platform, epoch=ctx.epoch)
        ctx.cache.put_image(image)
        return SourceImage(image, ctx.cache, "scratch")

    def known(self, ref: Ref, ctx: Context) -> Image | None:
        return mutate.scratch(ctx.platform, epoch=ctx.epoch)


FORMAT = ScratchFormat()
