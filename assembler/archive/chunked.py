"""zstd:chunked layers, containers/storage's format, written in the layer's one pass.

A zstd:chunked blob is a zstd stream of the layer's tar cut into frames, so that a file's
content can be fetched by its byte range and decompressed alone: podman and CRI-O (with
``enable_partial_images``) pull only the files a node does not have. Any zstd reader sees
the same tar (skippable frames are skipped), so the diff_id is the plain layer's, and the
media type stays ``application/vnd.oci.image.layer.v1.tar+zstd``. The layout is what
c/storage's compressor writes (pkg/chunked/compressor/compressor.go,
pkg/chunked/internal/minimal/compression.go):

    frame: the tar bytes up to a file's content (the last content's padding, headers)
    frame: that file's content                      ... and so on, file by file
    frame: the rest (the last padding, the end-of-archive blocks)
    skippable frame: the TOC, zstd-compressed JSON (:mod:`assembler.archive.chunked_toc`)
    skippable frame: the tar-split, zstd-compressed JSON lines
    skippable frame: the footer (64 bytes: where the TOC and tar-split are, ``GNUlInUx``)

and the layer descriptor's annotations say where the TOC and tar-split are and give the
TOC's digest (:meth:`ChunkedZstd.annotations`), under the names c/storage 1.43 (podman 4.3)
to today read.

What differs from c/storage's writer, none of it in the format: a file's content is one
frame, where c/storage cuts files into chunks at a rolling checksum's boundaries (about
64 KiB) and lists each chunk in the TOC. Reuse of whole files by their digest, what an
image update mostly gains, is the same; reuse of parts of a changed file is lost. Cutting
chunks would cost a rolling checksum of every byte (not within reach of a Python pass at
zstd's speed) and a sha256 of each chunk on top of the file's.

Speed: the writing thread cuts the tar stream into entries (a header's type and size tell
where the next one starts) and reads them in batches of about 1 MiB: each header as Go
does, its TOC entry and tar-split lines, each file's CRC-64
(:mod:`assembler.archive.chunked_batch`); a pool of threads, one per core, hashes each
batch's files (sha256) and compresses their frames, and the writing thread writes them in
order. A file of ``BIG`` bytes or more is one frame that zstd's own worker threads compress,
as the plain writer does, while the pool finishes the batches before it and, once the
file is read, ends it (:mod:`assembler.archive.chunked_big`): the writing thread waits for
neither.

On ``scripts/bench-layers``' tree (two cores, 14,000 files of numpy, scipy and pandas) that
takes 1.19 to 1.34 times the plain zstd writer's time over the runs so far (1.32 to 1.40
before the hashes moved to the pool and big files stopped waiting). Most of the difference
is CPU time, both cores being busy in either writer: the sha256 of every file alone costs
15% of the plain writer's time (bench-layers' side without them), the Python work of each
entry (its header read into the TOC and the tar-split, its part in a batch) about 17 us,
the threads' hand-offs the rest; zstd's own work is no more than the plain writer's (small
frames compress faster). Reading the batches in the pool instead of the writing thread
(their Python then overlaps its reads and hashing) measured no faster. Level 2 would take
the ratio to about 1.12 and level 1 to 1.05, for blobs 6% and 12% bigger, but each changes
every frame's bytes.

Determinism: a frame under ``BIG`` is compressed in one call by a single-threaded context,
one of ``BIG`` or more by a multi-threaded one (threads >= 1, whose frames do not depend on
the count; see :mod:`assembler.archive.compress`), at one pinned level. Which one a frame
gets depends on its size only, never on the machine: the same tar gives the same blob.
"""

from __future__ import annotations

from assembler.archive.chunked_batch import Entry
from assembler.archive.chunked_big import BigFile
from assembler.archive.chunked_frames import Frames
from assembler.archive.chunked_toc import content_size, number, pax_records
from assembler.archive.encoders import Writable
from assembler.errors import InvalidArchive

BLOCK = 512
BIG = 8 << 20  # a file this large is compressed by zstd's worker threads, not in a batch
_ZERO_BLOCK = bytes(BLOCK)


class ChunkedZstd:
    """A :class:`~assembler.archive.compress.Compressor` that writes the tar stream given to
    ``write`` as a zstd:chunked blob into ``sink``; ``annotations()`` once finished.

    Raises InvalidArchive when the stream is no tar zstd:chunked can describe (a sparse
    file, a global PAX header, two entries of one name, a stream ending inside an entry).
    """

    def __init__(self, sink: Writable, level: int) -> None:
        self._frames = Frames(sink, level)
        self._raw = bytearray()  # tar bytes outside contents since the last entry
        self._block = bytearray()  # a header block split across writes
        self._skip = 0  # bytes of padding or of an extended header still to come
        self._meta: tuple[bytes, int, bytearray] | None = None  # an extended header: type, size, records
        self._pax: dict[str, bytes] = {}
        self._long: dict[bytes, bytes] = {}  # GNU long names: b"L" (name), b"K" (link)
        self._file: tuple[Entry, int, bytearray] | None = None  # a file under BIG being read: entry, size, data
        self._big: BigFile | None = None
        self._zeros = 0  # zero blocks seen: two end the archive

    # -- the tar stream ---------------------------------------------------------------

    def write(self, data: bytes | bytearray, /) -> int:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._file is not None or self._big is not None:
                pos = self._content(view, pos, end)
            elif self._skip:
                take = min(self._skip, end - pos)
                self._add_raw(view[pos : pos + take])
                pos += take
                self._skip -= take
                if not self._skip and self._meta is not None:
                    self._end_meta()
            elif self._zeros >= 2:
                self._add_raw(view[pos:end])  # what follows the end-of-archive blocks
                pos = end
            else:
                pos = self._header(view, pos, end)
        return end

    def _add_raw(self, raw: memoryview | bytes) -> None:
        self._raw += raw
        if self._meta is not None:
            self._meta[2].extend(raw)

    def _header(self, view: memoryview, pos: int, end: int) -> int:
        if not self._block and end - pos >= BLOCK:  # the whole block here (nearly always)
            block = bytes(view[pos : pos + BLOCK])
            take = BLOCK
        else:
            take = min(BLOCK - len(self._block), end - pos)
            self._block += view[pos : pos + take]
            if len(self._block) < BLOCK:
                return pos + take
            block = bytes(self._block)
            self._block.clear()
        self._add_raw(block)
        self._on_block(block)
        return pos + take

    def _on_block(self, block: bytes) -> None:
        if block == _ZERO_BLOCK:
            self._zeros += 1
            return
        if self._zeros:
            raise InvalidArchive("damaged tar stream: a header after an end-of-archive block")
        typeflag = block[156:157]
        if typeflag in (b"x", b"L", b"K"):
            try:
                size = number(block[124:136])
            except ValueError:
                raise InvalidArchive(f"damaged tar extended header: size {block[124:136]!r}") from None
            self._meta = (typeflag, size, bytearray())
            self._skip = size + (-size % BLOCK)
            if not self._skip:
                self._end_meta()
            return
        if typeflag == b"g":
            raise InvalidArchive("the tar has a global PAX header, which zstd:chunked cannot describe (use zstd)")
        size = content_size(block, self._pax, self._long.get(b"L"))
        entry = Entry(bytes(self._raw), block, self._pax, self._long.get(b"L"), self._long.get(b"K"), None)
        self._raw.clear()
        self._pax, self._long = {}, {}
        if size >= BIG:
            self._big = self._frames.start_big(entry, size)
        elif size:
            self._file = (entry, size, bytearray())
        else:
            self._frames.queue(entry, len(entry.raw))

    def _end_meta(self) -> None:
        assert self._meta is not None
        typeflag, size, raw = self._meta
        self._meta = None
        data = bytes(raw[:size])  # the records, without their padding
        if typeflag == b"x":
            self._pax = pax_records(data, what="tar PAX header")  # a second one replaces the first, as in Go's reader
        else:
            self._long[typeflag] = data.split(b"\x00", 1)[0]

    def _content(self, view: memoryview, pos: int, end: int) -> int:
        if self._big is not None:
            big = self._big
            take = min(big.left, end - pos)
            big.add(view[pos : pos + take])
            self._frames.keep_up(big)
            if not big.left:
                self._big = None
                self._frames.end_big(big)
                self._skip = -big.size % BLOCK
            return pos + take
        assert self._file is not None
        entry, size, data = self._file
        take = min(size - len(data), end - pos)
        if take == size:  # all of it here: one copy, not two
            content: bytes | bytearray = bytes(view[pos : pos + take])
        else:
            data += view[pos : pos + take]
            content = data
        if len(content) == size:
            self._file = None
            self._skip = -size % BLOCK
            entry = Entry(entry.raw, entry.block, entry.pax, entry.longname, entry.longlink, content)
            self._frames.queue(entry, len(entry.raw) + size, cut=True)
        return pos + take

    # -- the end --------------------------------------------------------------------------

    def finish(self) -> None:
        """Write the last frame, the TOC, the tar-split and the footer."""
        if self._file is not None or self._big is not None or self._skip or self._block:
            raise InvalidArchive("the tar stream ended inside an entry")
        if self._raw:
            self._frames.queue(Entry(bytes(self._raw), None, {}, None, None, None), len(self._raw))
        self._frames.finish()

    def annotations(self) -> dict[str, str]:
        """The layer descriptor's annotations (after ``finish``)."""
        return self._frames.annotations()
