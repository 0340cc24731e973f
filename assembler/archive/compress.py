"""Layer compression by name: zstd (default), zstd:chunked, gzip, or none (the encoders are
:mod:`.encoders`; zstd:chunked's writer is :mod:`.chunked`, loaded only for that), what a
stream's first bytes say it is, and streams decompressed. With those two, the owner of
zstandard.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, Literal, cast

import zstandard

from assembler.archive.encoders import GZIP_LEVEL, ZSTD_LEVEL, Gzip, Plain, Zstd
from assembler.archive.encoders import Compressor as Compressor
from assembler.archive.encoders import Writable as Writable
from assembler.archive.encoders import usable_cores as usable_cores

# zstd:chunked is zstd to every reader (the same media type): only its writer differs.
Compression = Literal["zstd", "zstd:chunked", "gzip", "none"]
# What reading damaged compressed data can raise (gzip: OSError/EOFError/zlib.error).
DECOMPRESS_ERRORS: tuple[type[Exception], ...] = (OSError, EOFError, zlib.error, zstandard.ZstdError)
COMPRESSIONS: tuple[Compression, ...] = ("zstd", "zstd:chunked", "gzip", "none")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


def compressor(kind: Compression, sink: Writable, *, level: int | None = None) -> Compressor:
    """A streaming compressor writing ``kind`` into ``sink``."""
    if kind == "zstd":
        return Zstd(sink, ZSTD_LEVEL if level is None else level)
    if kind == "zstd:chunked":
        from assembler.archive.chunked import ChunkedZstd  # only where asked for: it loads fastcrc

        return ChunkedZstd(sink, ZSTD_LEVEL if level is None else level)
    if kind == "gzip":
        return Gzip(sink, GZIP_LEVEL if level is None else level)
    if kind == "none":
        return Plain(sink)
    raise ValueError(f"unknown compression {kind!r}")


def sniff(head: bytes) -> Compression:
    """The compression of a stream from its first bytes (magic numbers)."""
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    return "none"


class _Prefixed(io.RawIOBase):
    """A stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)


@contextmanager
def decompressed(stream: BinaryIO, kind: Compression | None = None) -> Iterator[BinaryIO]:
    """The uncompressed bytes of ``stream``; ``kind=None`` sniffs the magic number."""
    if kind is None:
        head = stream.read(4)
        kind = sniff(head)
        stream = cast(BinaryIO, io.BufferedReader(_Prefixed(head, stream), buffer_size=1 << 20))
    if kind in ("zstd", "zstd:chunked"):
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True, closefd=False)
        try:
            yield cast(BinaryIO, reader)
        finally:
            reader.close()  # type: ignore[no-untyped-call]
    elif kind == "gzip":
        with gzip.GzipFile(fileobj=stream, mode="rb") as gz:
            yield cast(BinaryIO, gz)
    else:
        yield stream
