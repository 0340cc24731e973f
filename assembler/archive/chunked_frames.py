"""The frames of a zstd:chunked blob (:mod:`assembler.archive.chunked`), written in the
blob's order: entries in batches of about 1 MiB, each read and compressed by the pool
(:mod:`assembler.archive.chunked_batch`), a big file's frame started and ended in turn
(:mod:`assembler.archive.chunked_big`), at most ``_IN_FLIGHT`` bytes waiting; then the TOC,
the tar-split and the footer, and the descriptor's annotations. What cuts the tar stream
into those entries is :class:`assembler.archive.chunked.ChunkedZstd`'s.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from concurrent.futures import Future
from itertools import accumulate
from typing import NamedTuple, cast

import zstandard

from assembler.archive.chunked_batch import Compressed, Done, Entry, compress_batch, lines_of, read_batch, workers
from assembler.archive.chunked_big import BigFile
from assembler.archive.chunked_toc import (
    FOOTER_MAGIC,
    OLD_TOC_CHECKSUM,
    OLD_TOC_POSITION,
    SKIPPABLE_MAGIC,
    TARSPLIT_CHECKSUM,
    TARSPLIT_POSITION,
    TOC_CHECKSUM,
    TOC_POSITION,
    TOC_TYPE_CRFS,
    TocBatch,
    TocWriter,
    toc_json,
)
from assembler.archive.encoders import Writable
from assembler.errors import InvalidArchive

_BATCH = 1 << 20  # entries go to a worker in batches of about this many tar bytes
_IN_FLIGHT = 32 << 20  # at most this many bytes wait in batches (bounded memory)


class _Counted:
    """The blob's sink, and how many bytes it has been given: the next frame's offset."""

    def __init__(self, sink: Writable) -> None:
        self._sink = sink
        self.offset = 0

    def write(self, data: bytes | bytearray, /) -> int:
        self._sink.write(data)
        self.offset += len(data)
        return len(data)


class _Sent(NamedTuple):
    """Work in the blob's order: a batch given to the pool, or a big file's frame, which
    starts (``future`` None) and ends (``finish`` in the pool)."""

    future: Future[Compressed] | Future[bytes] | None
    done: Done | BigFile
    size: int  # tar bytes of a batch, which count against _IN_FLIGHT


class Frames:
    """Writes a zstd:chunked blob into ``sink``, frame by frame, in order (see the module's doc)."""

    def __init__(self, sink: Writable, level: int) -> None:
        self._out = _Counted(sink)
        self._level = level
        self._starts: list[int] = []  # where each frame starts, by number
        self._batch: list[Entry] = []
        self._batch_bytes = 0
        self._waiting: deque[_Sent] = deque()
        self._waiting_bytes = 0
        self._toc: list[TocBatch] = []
        self._names: set[bytes] = set()
        self._split = zstandard.ZstdCompressor(level=level, threads=0, write_checksum=True).compressobj()
        self._split_out: list[bytes] = []
        self._split_lines = bytearray()
        self._split_size = 0
        self._position = 0  # the tar-split's next line number
        self._done: dict[str, str] | None = None

    def queue(self, entry: Entry, size: int, *, cut: bool = False) -> None:
        """Add ``entry`` to the batch; send the batch once it is big enough and ``cut``
        allows (after a content: a batch never ends inside the tar bytes between two)."""
        self._batch.append(entry)
        self._batch_bytes += size
        if cut and self._batch_bytes >= _BATCH:
            self._send()

    def _send(self) -> None:
        if self._batch:
            pieces, done = read_batch(self._batch, self._position)
            self._position += lines_of(self._batch)
            self._waiting.append(_Sent(workers().submit(compress_batch, self._level, pieces), done, self._batch_bytes))
            self._waiting_bytes += self._batch_bytes
            self._batch, self._batch_bytes = [], 0
        while self._waiting_bytes > _IN_FLIGHT:
            self.write_oldest()

    def write_oldest(self) -> None:
        future, done, size = self._waiting.popleft()
        self._waiting_bytes -= size
        if isinstance(done, BigFile):
            if future is None:  # its frame starts here
                done.frame = len(self._starts)
                self._starts.append(self._out.offset)
                done.turn(self._out)
            else:
                self._out.write(cast(bytes, future.result()))
                self._big_ended(done)
            return
        assert future is not None
        frames, sizes, digests = cast(Compressed, future.result())
        self._toc.append((len(self._starts), done.toc, digests))
        if sizes:  # every batch has a frame (an entry's raw bytes are never empty), but be sure
            self._starts.extend(accumulate(sizes[:-1], initial=self._out.offset))
            self._out.write(frames)
        self._split_add(done.lines)
        self._add_names(done.names)

    def write_ready(self) -> None:
        """Write what the pool has done, in order, waiting for nothing."""
        while self._waiting and (self._waiting[0].future is None or self._waiting[0].future.done()):
            self.write_oldest()

    def _drain(self) -> None:
        """Send the batch and write everything sent, in order."""
        self._send()
        while self._waiting:
            self.write_oldest()

    def _add_names(self, names: list[bytes]) -> None:
        """InvalidArchive for a name given twice (among ``names``, or before them)."""
        before = len(self._names)
        self._names.update(names)
        if len(self._names) - before == len(names):
            return
        seen = self._names - set(names)
        for name in names:
            if name in seen:
                raise InvalidArchive(f"the tar has two entries named {name!r}, which zstd:chunked cannot describe")
            seen.add(name)

    def _split_add(self, lines: bytes) -> None:
        self._split_size += len(lines)
        self._split_lines += lines
        if len(self._split_lines) >= _BATCH:  # a call per line costs more than the compression
            self._split_out.append(self._split.compress(self._split_lines))
            self._split_lines.clear()

    # -- files of BIG bytes or more -----------------------------------------------------

    def start_big(self, entry: Entry, size: int) -> BigFile:
        """Everything before the file sent (its header last), then its own frame started.

        The batches before it need not be written first: the frame's first bytes wait for
        them (zstd makes none before a job of several MiB is read), and the pool compresses
        them meanwhile, where waiting for them left a core idle at each big file."""
        self.queue(entry._replace(block=None), len(entry.raw))
        self._send()
        big = BigFile(entry, size, self._level)
        self._waiting.append(_Sent(None, big, 0))
        self._add_names([big.header.name])
        return big

    def end_big(self, big: BigFile) -> None:
        """The file read: its frame ended in the pool, and written in turn (``_big_ended``)."""
        big.position = self._position
        self._position += 1
        big.end()
        self._waiting.append(_Sent(workers().submit(big.finish), big, 0))

    def _big_ended(self, big: BigFile) -> None:
        """A big file's TOC entry and tar-split line, once its frame is written."""
        self._toc.append((big.frame, [(TocWriter().entry(big.header, ""), 0)], [big.sha.hexdigest()]))
        self._split_add(big.split_line())

    # -- the end --------------------------------------------------------------------------

    def keep_up(self, big: BigFile) -> None:
        """Write what the pool has done; while ``big`` holds too much, wait for the frames before it."""
        self.write_ready()
        while big.kept > _IN_FLIGHT:  # the frames before it are slow to come: wait for them
            self.write_oldest()

    def finish(self) -> None:
        """Write the last frame, the TOC, the tar-split and the footer."""
        self._drain()
        split = b"".join([*self._split_out, self._split.compress(self._split_lines), self._split.flush()])
        split_digest = "sha256:" + hashlib.sha256(split).hexdigest()
        toc = toc_json(self._toc, self._starts, self._out.offset, split_digest)
        toc_z = zstandard.ZstdCompressor(level=self._level, threads=0, write_checksum=True).compress(toc)
        toc_at = self._skippable(toc_z)
        split_at = self._skippable(split)
        lengths = (toc_at, len(toc_z), len(toc), TOC_TYPE_CRFS, split_at, len(split), self._split_size)
        self._skippable(struct.pack("<7Q", *lengths) + FOOTER_MAGIC)
        toc_position = f"{toc_at}:{len(toc_z)}:{len(toc)}:{TOC_TYPE_CRFS}"
        toc_digest = "sha256:" + hashlib.sha256(toc_z).hexdigest()
        self._done = {
            TOC_CHECKSUM: toc_digest,
            TOC_POSITION: toc_position,
            TARSPLIT_POSITION: f"{split_at}:{len(split)}:{self._split_size}",
            TARSPLIT_CHECKSUM: split_digest,
            OLD_TOC_CHECKSUM: toc_digest,
            OLD_TOC_POSITION: toc_position,
        }

    def _skippable(self, data: bytes) -> int:
        """Write ``data`` as a skippable frame; where ``data`` starts in the blob."""
        self._out.write(SKIPPABLE_MAGIC + struct.pack("<I", len(data)))
        at = self._out.offset
        self._out.write(data)
        return at

    def annotations(self) -> dict[str, str]:
        """The layer descriptor's annotations (after ``finish``)."""
        if self._done is None:
            raise ValueError("annotations() before finish()")
        return dict(self._done)
