"""The streaming encoders under every compression: the ``Compressor`` protocol, zstd (in a
pool of contexts, one frame or a stream), gzip and none, and the cores they may use.
:mod:`.compress` picks one by name; :mod:`.chunked` (zstd:chunked) builds on the zstd frame.

Determinism: zstd at a pinned level with ``threads >= 1`` (zstd frames differ between
threads=0 and threads>=1, and are identical for any count >= 1), gzip with mtime 0 and
no file name.
"""

from __future__ import annotations

import gzip
import os
import threading
from typing import BinaryIO, Protocol, cast

import zstandard

ZSTD_LEVEL = 3
GZIP_LEVEL = 6


class Writable(Protocol):
    def write(self, data: bytes | bytearray, /) -> int | None: ...


class Compressor(Protocol):
    """A writable that compresses into its sink; ``finish()`` ends the stream."""

    def write(self, data: bytes | bytearray, /) -> int | None: ...

    def finish(self) -> None: ...

    def annotations(self) -> dict[str, str]:
        """What the layer's descriptor must say of the stream, once finished (zstd:chunked's TOC)."""
        ...


class Plain:
    def __init__(self, sink: Writable) -> None:
        self._sink = sink

    def write(self, data: bytes | bytearray, /) -> int | None:
        self._sink.write(data)
        return len(data)

    def finish(self) -> None:
        pass

    def annotations(self) -> dict[str, str]:
        return {}


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which a container or a batch job
    narrows), not the machine's; the machine's where the system keeps no affinity."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


class _ContextPool:
    """zstd compression contexts kept between streams, a few per level.

    A multi-threaded context owns its worker threads and about 50 MiB of job buffers at
    level 3; a fresh one starts the threads and maps that memory page by page again,
    about 0.1 s of a core per layer (and per compile-cache chunk). A context compresses
    one stream at a time, so each stream takes one and gives it back when it ends
    cleanly; a stream that fails drops its context. Frames do not depend on whether the
    context is new (tests/test_archive.py holds this).
    """

    KEEP = 2  # idle contexts per level: two layers written at once each find one

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[int, list[zstandard.ZstdCompressor]] = {}

    def take(self, level: int) -> zstandard.ZstdCompressor:
        with self._lock:
            idle = self._idle.get(level)
            if idle:
                return idle.pop()
        # threads >= 1 always: see the module docstring. One worker more than cores: the
        # thread that writes the stream (reading files, hashing) shares the cores with
        # them, and while it holds one a worker waits for its next job; a spare worker
        # keeps both cores of a two-core runner busy (1.84 -> 1.93 of 2, bench-layers).
        return zstandard.ZstdCompressor(level=level, threads=usable_cores() + 1, write_checksum=True)

    def give(self, level: int, cctx: zstandard.ZstdCompressor) -> None:
        with self._lock:
            idle = self._idle.setdefault(level, [])
            if len(idle) < self.KEEP:
                idle.append(cctx)


_CONTEXTS = _ContextPool()


class Zstd:
    def __init__(self, sink: Writable, level: int, size: int = -1) -> None:
        self._level = level
        self._cctx = _CONTEXTS.take(level)
        self._writer = self._cctx.stream_writer(cast(BinaryIO, sink), size=size, closefd=False, write_return_read=True)

    def write(self, data: bytes | bytearray, /) -> int | None:
        return self._writer.write(data)

    def finish(self) -> None:
        # Ends the frame, and close() then writes an empty one (13 bytes): kept, since
        # it is in every zstd layer written so far and in their digests.
        self._writer.flush(zstandard.FLUSH_FRAME)
        self._writer.close()  # type: ignore[no-untyped-call]
        _CONTEXTS.give(self._level, self._cctx)

    def annotations(self) -> dict[str, str]:
        return {}


class ZstdFrame(Zstd):
    """One zstd frame and nothing after it (zstd:chunked's frame of a big file)."""

    def finish(self) -> None:
        self._writer.close()  # type: ignore[no-untyped-call]
        _CONTEXTS.give(self._level, self._cctx)


def zstd_frame(sink: Writable, *, level: int, size: int) -> Compressor:
    """A compressor of exactly one zstd frame of ``size`` bytes (written in its header),
    by zstd's worker threads as a zstd layer is (threads >= 1: see the module docstring)."""
    return ZstdFrame(sink, level, size)


class Gzip:
    def __init__(self, sink: Writable, level: int) -> None:
        self._gz = gzip.GzipFile(filename="", mode="wb", compresslevel=level, fileobj=cast(BinaryIO, sink), mtime=0)

    def write(self, data: bytes | bytearray, /) -> int | None:
        return self._gz.write(data)

    def finish(self) -> None:
        self._gz.close()  # writes the trailer; does not close the sink (fileobj given)

    def annotations(self) -> dict[str, str]:
        return {}
