"""``sqsh:FILE``: an Enroot/Pyxis image (:mod:`assembler.transports.hpc.enroot`), a bare
squashfs: written from an image, never read as one (``unsquashfs -l`` is); the image's
referrers are files next to it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.errors import InputError
from assembler.oci.reference import Ref
from assembler.transports.common import RegistryOptions, SourceImage
from assembler.transports.context import Context, Written, check_replaceable, file_head
from assembler.transports.formats.base import Format
from assembler.transports.formats.writer import Writer
from assembler.transports.sidecar import Recognizer
from assembler.transports.target import Target

if TYPE_CHECKING:
    from assembler.transports.referrers import Listing

_SQUASHFS_MAGIC = b"hsqs"  # a squashfs superblock starts the file (little-endian)


def is_squashfs(path: Path) -> bool:
    """Whether the file at ``path`` starts as a squashfs does."""
    return file_head(path).startswith(_SQUASHFS_MAGIC)


class SqshWriter(Writer):
    """``sqsh:FILE``: an Enroot/Pyxis image.

    Its squashfs is written on its own, not shared with a SIF of the same run: the two
    differ by their files (``/.singularity.d`` against ``/etc/rc``...), so they are
    different squashfs bytes; the layers are only read twice. A squashfs has no place for
    the image's referrers: they go next to it (``FILE.spdx.json``...)."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "sqsh", force=force, ours=is_squashfs, what="a squashfs image")
        self.check_sidecars(sbom)

    def write_image(self, target: Target) -> list[Written]:
        from assembler.transports.hpc.enroot import write_sqsh  # only sqsh outputs need it

        ctx = target.ctx
        info = write_sqsh(
            target.source,
            Path(self.ref.path),
            runner=ctx.runner,
            epoch=ctx.epoch,
            squash=target.squash,
            progress=target.sif_progress or ctx.progress,
        )
        return self.with_sidecars(Written(str(self.ref), info.digest), target, target.referrers)

    def write_weights(self, target: Target) -> list[Written]:
        """Each model as a squashfs beside the image (Enroot mounts folders: squashfuse it)."""
        from assembler.transports import beside

        image, ctx = Path(self.ref.path), target.ctx
        how = beside.ENROOT_MOUNT
        return beside.write_squashfs(image, target.weights, runner=ctx.runner, squash=target.squash, how=how)


class SqshFormat(Format):
    """An Enroot squashfs file."""

    transport = "sqsh"
    referrers = "files"

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        raise InputError(f"{ref}: not an image; a squashfs file is read with `unsquashfs -l`")

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        return SqshWriter(ref, ours)

    def read_referrers(
        self, ref: Ref, source: Callable[[], SourceImage], *, options: RegistryOptions
    ) -> tuple[str, Listing]:
        from assembler.transports.referrers import list_sidecars

        path = Path(ref.path)
        return str(ref), list_sidecars(path, ref.transport, recognise=is_squashfs, what="a squashfs image")


FORMAT = SqshFormat()
