"""How a squashfs image is compressed (:class:`Squash`): what SIF, Enroot and the weights
beside them are made with, as one value from the manifest's ``sif:`` or the command line
to tar2sqfs's arguments and the SIF's UUID.

The level is the compressor's (tar2sqfs's ``--comp-extra level=N``; the levels each takes:
manifest.schema.model.SQUASHFS_LEVELS); none is tar2sqfs's own default (gzip 9, as mksquashfs and
Apptainer write it). On
a Debian root of 1.5 GB here, gzip at level 9 took 145 s of CPU and at level 1 19 s, for a
squashfs 9% larger: a level is what a user iterating on a SIF of a GPU image chooses.
"""

from __future__ import annotations

from dataclasses import dataclass

from assembler.errors import InputError
from assembler.manifest.schema.model import SifSpec, squashfs_level_error

COMPRESSORS = ("gzip", "xz", "zstd", "lz4", "lzo")
# The data block size: 128 KiB is mksquashfs's and tar2sqfs's default (what Apptainer's own
# conversion writes); the kernel reads powers of two from 4 KiB to 1 MiB.
BLOCK_SIZE = 128 << 10
BLOCK_SIZES = tuple(1 << n for n in range(12, 21))


@dataclass(frozen=True)
class Squash:
    """A squashfs's compressor, data block size and the compressor's level (None: tar2sqfs's)."""

    compressor: str = "gzip"
    block_size: int = BLOCK_SIZE
    level: int | None = None

    @classmethod
    def of(cls, sif: SifSpec) -> Squash:
        """What the manifest's ``sif:`` says."""
        return cls(sif.compressor, block_size_of(sif.block_size), sif.level)

    def check(self) -> None:
        """InputError for a compressor tar2sqfs lacks, a block size the kernel cannot read or a
        level the compressor has not."""
        if self.compressor not in COMPRESSORS:
            raise InputError(f"squashfs compressor {self.compressor!r} is not one of {', '.join(COMPRESSORS)}")
        if self.block_size not in BLOCK_SIZES:
            raise InputError(f"squashfs block size {self.block_size} is not a power of two from 4K to 1M")
        if self.level is not None and (why := squashfs_level_error(self.compressor, self.level)):
            raise InputError(f"squashfs compression level: {why}")

    def argv(self) -> list[str]:
        """tar2sqfs's arguments for it."""
        level = ["--comp-extra", f"level={self.level}"] if self.level is not None else []
        return ["--compressor", self.compressor, *level, "--block-size", str(self.block_size)]

    def uuid_part(self) -> str:
        """What a SIF's UUID adds for it beyond the compressor: nothing for the defaults, so
        that the SIFs of before keep their UUIDs."""
        block = f"/b{self.block_size}" if self.block_size != BLOCK_SIZE else ""
        return block + (f"/l{self.level}" if self.level is not None else "")

    def describe(self) -> str:
        level = f" level {self.level}" if self.level is not None else ""
        return f"squashfs {self.compressor}{level}, {self.block_size >> 10}K blocks"


DEFAULT = Squash()  # gzip at tar2sqfs's level, 128 KiB blocks: what mksquashfs and Apptainer write


def block_size_of(text: str | int) -> int:
    """A squashfs block size from ``131072``, ``128K`` or ``1M``; ValueError unless it is a
    power of two from 4K to 1M (what the kernel, squashfuse and unsquashfs read)."""
    raw = str(text).strip()
    scale = {"K": 1 << 10, "M": 1 << 20}.get(raw[-1:].upper(), 1)
    digits = raw[:-1] if scale > 1 else raw
    if not digits.isdigit() or int(digits) * scale not in BLOCK_SIZES:
        raise ValueError(f"squashfs block size {text!r} is not a power of two from 4K to 1M")
    return int(digits) * scale
