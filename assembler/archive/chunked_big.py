"""zstd:chunked's frame of a file of ``BIG`` bytes or more (:mod:`assembler.archive.chunked`):
one frame that zstd's own worker threads compress, as the plain zstd writer does, its
sha256 and CRC-64 taken as the writing thread reads the file.

Speed: the frame's bytes go into the blob once the frames before it are in (``turn``), and
the pool may still be compressing those when the file starts: until then, and from the
moment ``finish`` begins to end the frame, its bytes are kept here, for the writing thread
to write in turn. ``finish`` runs in the pool, zstd's workers compressing the last of the
file while the writing thread reads on. Waiting for zstd to end the frame, and before the
file for the batches before it (zstd compresses none of it before a job of several MiB is
read), each left a core idle at every big file: on ``scripts/bench-layers``' tree, ending
the frame in the pool took the ratio to the zstd writer's time from 1.32 to 1.27, and not
waiting for the batches to about 1.26.
"""

from __future__ import annotations

import hashlib
import struct
from typing import cast

import fastcrc

from assembler.archive.chunked_batch import Entry
from assembler.archive.chunked_toc import POSITION, file_line, parse_header
from assembler.archive.encoders import Writable, zstd_frame


class BigFile:
    """A file of BIG bytes or more being read: its digest, CRC and frame as they are made."""

    def __init__(self, entry: Entry, size: int, level: int) -> None:
        self.header = parse_header(cast(bytes, entry.block), entry.pax, entry.longname, entry.longlink)
        self.size = self.left = size
        self.sha = hashlib.sha256()
        self.crc: int | None = None
        self.frame = -1  # its number, once its turn has come
        self.position = -1  # its tar-split line's, once read
        self._sink: Writable | None = None
        self._kept: list[bytes] = []
        self.kept = 0  # bytes
        self._ending = False
        self._out = zstd_frame(self, level=level, size=size)

    def write(self, data: bytes | bytearray, /) -> int:
        """The frame's bytes, from zstd: into the blob, or kept."""
        if self._sink is None:
            self._kept.append(bytes(data))
            self.kept += len(data)
        else:
            self._sink.write(data)
        return len(data)

    def add(self, chunk: memoryview) -> None:
        self.sha.update(chunk)
        self.crc = fastcrc.crc64.go_iso(chunk, self.crc)  # None: the first piece, from the initial value
        self._out.write(cast(bytes, chunk))  # zstd takes any buffer, and copies it: the caller may reuse its own
        self.left -= len(chunk)

    def turn(self, sink: Writable) -> None:
        """The frames before this one are in ``sink``: what was kept goes in, and the rest as it comes."""
        if self._ending:
            return  # finish() keeps the rest, and the writing thread writes it all then
        for data in self._kept:
            sink.write(data)
        self._kept.clear()
        self.kept = 0
        self._sink = sink

    def end(self) -> None:
        """The file is read: from here the frame's bytes are kept (``finish`` makes them in a worker thread)."""
        self._ending = True
        self._sink = None

    def finish(self) -> bytes:
        """End the frame, in a worker thread: what was kept."""
        self._out.finish()
        return b"".join(self._kept)

    def split_line(self) -> bytes:
        """Its tar-split line (once read)."""
        return file_line(self.header, struct.pack(">Q", self.crc or 0)) + POSITION % self.position
