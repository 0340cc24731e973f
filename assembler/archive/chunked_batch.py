"""zstd:chunked's work on a batch of tar entries: each header read as Go reads it, its TOC
entry and tar-split lines written (:mod:`assembler.archive.chunked_toc`), each file's
CRC-64/ISO computed, by the writing thread (:class:`assembler.archive.chunked.ChunkedZstd`);
then each file hashed (sha256) and the batch's frames compressed by a pool of threads (one
per core), while the writing thread reads on.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, cast

import fastcrc
import zstandard

from assembler.archive.chunked_toc import POSITION, TocWriter, file_line, parse_header, segment_line
from assembler.archive.encoders import usable_cores

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_local = threading.local()


class Entry(NamedTuple):
    """One tar entry as the writing thread cut it out of the stream."""

    raw: bytes  # the tar bytes since the last entry: padding, extended headers, this header
    block: bytes | None  # the header (None: only ``raw``, the bytes after the last entry)
    pax: dict[str, bytes]
    longname: bytes | None
    longlink: bytes | None
    content: bytes | bytearray | None  # a file's, when it has any and is under BIG


class Done(NamedTuple):
    """A batch of entries, read: what the writing thread puts into the blob besides the frames."""

    # Each entry's TOC JSON up to its digest, and its content's frame number in the batch (-1:
    # none); the content's digest comes with the frames (Compressed.digests).
    toc: list[tuple[str, int]]
    lines: bytes  # the tar-split lines
    names: list[bytes]


class Compressed(NamedTuple):
    """A batch's frames, one after the other, their sizes, and each content's sha256 (hex),
    in order: the frame numbered ``n`` (odd) is that of content ``n // 2``."""

    frames: bytes
    sizes: list[int]
    digests: list[str]


Piece = bytes | bytearray | memoryview


def lines_of(entries: list[Entry]) -> int:
    """How many tar-split lines ``entries`` make: one for an entry's raw bytes, one for its header."""
    return len(entries) + sum(1 for entry in entries if entry.block is not None)


def workers() -> ThreadPoolExecutor:
    """The pool, started on first use: a thread per usable core."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="zstd-chunked")
        return _pool


def _context(level: int) -> zstandard.ZstdCompressor:
    """This thread's compressor at ``level``. threads=0, always: see the module docstring."""
    contexts: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("contexts", {})
    if level not in contexts:
        contexts[level] = zstandard.ZstdCompressor(level=level, threads=0, write_checksum=True)
    return contexts[level]


def read_batch(entries: list[Entry], position: int) -> tuple[list[Piece], Done]:
    """The frames' contents, TOC entries and tar-split lines (the first one numbered
    ``position``) of ``entries``: each header read as Go reads it, each file's CRC. The
    pieces alternate: the tar bytes before a content, the content (then maybe the tar bytes
    after the last one). Raises InvalidArchive for a header zstd:chunked cannot describe."""
    toc = TocWriter()
    pieces: list[Piece] = []
    lines: list[bytes] = []
    done = Done([], b"", [])
    head = bytearray()  # tar bytes since the last content: the next frame
    for entry in entries:
        lines.append(segment_line(entry.raw) + POSITION % (position + len(lines)))
        head += entry.raw
        if entry.block is None:
            continue
        header = parse_header(entry.block, entry.pax, entry.longname, entry.longlink)
        done.names.append(header.name)
        text = toc.entry(header, "")
        if entry.content is None:
            crc = bytes(8) if header.size else None  # Go reads no data for it: the CRC of nothing
            lines.append(file_line(header, crc) + POSITION % (position + len(lines)))
            done.toc.append((text, -1))
            continue
        pieces += (bytes(head), entry.content)
        head.clear()
        crc = struct.pack(">Q", fastcrc.crc64.go_iso(entry.content))
        lines.append(file_line(header, crc) + POSITION % (position + len(lines)))
        done.toc.append((text, len(pieces) - 1))
    if head:  # a batch ends after a content but before a big file or at the end of the tar
        pieces.append(bytes(head))
    return pieces, done._replace(lines=b"".join(lines))


def compress_batch(level: int, pieces: list[Piece]) -> Compressed:
    """Each piece as a zstd frame, and each content (``pieces[1::2]``, see :func:`read_batch`)
    hashed, in a worker thread. One call compresses the frames and holds no GIL throughout
    (``multi_compress_to_buffer``, whose frames are those ``compress`` makes one by one);
    hashlib holds none while it hashes a content of 2 KiB or more.

    The hashes are here, not in the writing thread, which has the Python work and the diff_id
    to do and was the one the others waited for: on two cores that took the writing thread
    from 1.78 to 1.49 s of CPU (``bench-layers``' tree). A worker takes the GIL back after each
    content it hashes, but the writing thread gives it up at every file it opens and reads,
    so the wait is short."""
    if not pieces:
        return Compressed(b"", [], [])
    digests = [hashlib.sha256(content).hexdigest() for content in pieces[1::2]]
    frames = _context(level).multi_compress_to_buffer(pieces, threads=1)
    segments = [cast(bytes, frames[i]) for i in range(len(frames))]  # each a buffer
    return Compressed(b"".join(segments), [len(segment) for segment in segments], digests)
