"""``sif:FILE``: an Apptainer SIF (:mod:`assembler.transports.hpc.sif`), written from an image,
with the image's referrers as data objects; never read as an image (``siftool info`` is)."""

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
    from assembler.sign import Verifier
    from assembler.transports.hpc.sif_sign import SifVerdict
    from assembler.transports.referrers import Listing


def is_sif(path: Path) -> bool:
    """Whether the file at ``path`` is a SIF (its magic within the first 64 bytes)."""
    return b"SIF_MAGIC" in file_head(path)


class SifWriter(Writer):
    """``sif:FILE``: an Apptainer SIF, with the image's referrers as data objects."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "sif", force=force, ours=is_sif, what="a SIF file")

    signed_inside = True

    def write_image(self, target: Target) -> list[Written]:
        return [Written(str(self.ref), target.make_sif(Path(self.ref.path)).digest)]

    def write_weights(self, target: Target) -> list[Written]:
        """Each model as a squashfs beside the SIF (``apptainer --bind FILE:AT:image-src=/``)."""
        from assembler.transports import beside

        sif = Path(self.ref.path)  # where make_sif wrote it
        return beside.write_squashfs(sif, target.weights, runner=target.ctx.runner, squash=target.squash)


class SifFormat(Format):
    """A SIF file: an output, and where the image's referrers are objects."""

    transport = "sif"
    referrers = "files"

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        raise InputError(f"{ref}: not an image; a SIF file is read with `siftool info`")

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        return SifWriter(ref, ours)

    def read_referrers(
        self, ref: Ref, source: Callable[[], SourceImage], *, options: RegistryOptions
    ) -> tuple[str, Listing]:
        from assembler.transports.referrers import list_sif

        return str(ref), list_sif(Path(ref.path))

    signed_within = True

    def verify_within(self, ref: Ref, verifier: Verifier) -> SifVerdict:
        """Each object group's signature, as ``apptainer verify --key`` checks them."""
        from assembler.transports.hpc.sif_sign import verify_sif  # cryptography: only here

        return verify_sif(Path(ref.path), verifier)


FORMAT = SifFormat()
