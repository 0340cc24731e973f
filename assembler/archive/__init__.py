"""Deterministic tar writing and layer compression (the only owner of zstandard)."""

from assembler.archive.compress import COMPRESSIONS, Compression, decompressed
from assembler.archive.layer import Member, write_layer
from assembler.archive.tar import TarEntry, TarWriter, clean_path, normalize, sort_key

__all__ = [
    "COMPRESSIONS",
    "Compression",
    "Member",
    "TarEntry",
    "TarWriter",
    "clean_path",
    "decompressed",
    "normalize",
    "sort_key",
    "write_layer",
]
