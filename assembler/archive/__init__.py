"""Deterministic tar writing and layer compression (the only owner of zstandard).

zstd:chunked is written by ``chunked*.py``; a layer's TOC and tar-split are held against
its tar in one pass (``chunked_check.py``, ``chunked_entries.py``, ``chunked_scan.py``), which
``assemble validate`` uses, and a build shipping a base's chunked layer.
"""

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
