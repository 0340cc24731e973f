"""One streaming pass over a zstd:chunked blob: what :mod:`assembler.archive.chunked_check`
holds its TOC and tar-split against. It gives where each zstd frame starts and ends in the
blob and in the tar, the sha256 of what each frame holds, each tar entry as Go's reader
reads it (:func:`assembler.archive.chunked_toc.parse_header`) with where its content
starts in the tar and the content's sha256 and CRC-64/ISO, the sha256 of the tar bytes
between contents (what a tar-split's segments must rebuild), and the skippable frames'
payloads (the TOC, the tar-split, the footer), kept up to a bound.

Frames are found by their own headers (RFC 8878: a frame header, then blocks that each say
their size, then maybe a checksum) and each is decompressed alone, as a partial pull
decompresses a file's byte range: bytes that are neither a frame nor a skippable frame are
refused, as every zstd reader refuses them. The decompressor is given a few blocks at a
time, and a block holds at most 128 KiB (a raw or RLE block says how much), so no call
makes more than about a MiB of output however well the blob compresses. Nothing of the
tar is kept but a record per entry and per frame, both bounded by the caller: memory grows
with the number of entries, never with the size of the layer.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

import fastcrc
import zstandard

from assembler.archive.chunked_toc import Header, number, parse_header, pax_records
from assembler.errors import BadToc, InvalidArchive

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE = 0x184D2A50  # to 0x184D2A5F: the low 4 bits are free
_READ = 1 << 20
_FEED = 1 << 20  # decompress once the blocks gathered may make this many bytes
_BLOCK_MAX = 128 << 10  # a compressed block's most output (zstd's Block_Maximum_Size)
_META_MAX = 1 << 20  # Go's reader refuses a PAX header or GNU long name over 1 MiB (maxSpecialFileSize)
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
TAIL = 64  # the blob's last bytes kept: the footer, in any of its sizes


class Limits(NamedTuple):
    """What one pass keeps at most: tar entries, data frames, bytes of skippable frames."""

    members: int
    frames: int
    kept: int


class Member(NamedTuple):
    """A tar entry as Go's reader reads it, and its content (where it has some): where the
    content starts in the tar, its sha256 and its CRC-64/ISO."""

    header: Header
    start: int
    digest: bytes | None
    crc: int

    @property
    def name(self) -> str:
        return self.header.name.decode("utf-8", "replace")


class Frames:
    """The blob's data frames in order: where each starts and ends in the blob and in the
    tar (the tar offsets of one frame's end and the next one's start are the same), and the
    sha256 of what it holds."""

    def __init__(self) -> None:
        self.starts = array("Q")
        self.ends = array("Q")
        self.tar_starts = array("Q")
        self.tar_ends = array("Q")
        self._digests = bytearray()

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: int, end: int, tar_start: int, tar_end: int, digest: bytes) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.tar_starts.append(tar_start)
        self.tar_ends.append(tar_end)
        self._digests += digest

    def starting_at(self, offset: int) -> int | None:
        """The number of the frame that starts at byte ``offset`` of the blob."""
        i = bisect_left(self.starts, offset)
        return i if i < len(self.starts) and self.starts[i] == offset else None

    def ending_at(self, offset: int) -> int | None:
        """The number of the frame that ends at byte ``offset`` of the blob."""
        i = bisect_left(self.ends, offset)
        return i if i < len(self.ends) and self.ends[i] == offset else None

    def digest(self, i: int) -> bytes:
        return bytes(self._digests[32 * i : 32 * i + 32])


@dataclass
class Scan:
    """What one pass over a blob found (see the module's doc)."""

    frames: Frames = field(default_factory=Frames)
    members: list[Member] = field(default_factory=list)
    # The sha256 of the tar bytes before each content (from the end of the one before) and,
    # last, of those after the last content: one more than the contents.
    regions: list[bytes] = field(default_factory=list)
    kept: dict[int, bytes] = field(default_factory=dict)  # skippable frames' payloads, by where they start
    not_kept: dict[int, int] = field(default_factory=dict)  # where the others start: their size
    tail: bytes = b""
    size: int = 0  # of the blob


def bad(what: str, text: str, member: str | None = None) -> BadToc:
    return BadToc(
        f"{what}: {text}",
        member=member,
        hint="podman or CRI-O pulling this layer partially would not get what its tar holds; "
        "a build on this base writes the layer again without its TOC",
    )


class _Pull:
    """The blob read in order: exact reads, where the next byte is, its last ``TAIL`` bytes."""

    def __init__(self, raw: BinaryIO, what: str) -> None:
        self._raw = raw
        self._what = what
        self._buf = b""
        self._at = 0
        self.offset = 0
        self.tail = b""

    def _fill(self) -> bool:
        data = self._raw.read(_READ)
        if not data:
            return False
        self._buf = self._buf[self._at :] + data
        self._at = 0
        self.tail = (self.tail + data)[-TAIL:]
        return True

    def at_end(self) -> bool:
        return self._at >= len(self._buf) and not self._fill()

    def take(self, n: int) -> bytes:
        while len(self._buf) - self._at < n:
            if not self._fill():
                raise bad(
                    self._what, f"the blob ends inside a frame (at byte {self.offset + len(self._buf) - self._at})"
                )
        out = self._buf[self._at : self._at + n]
        self._at += n
        self.offset += n
        return out

    def skip(self, n: int) -> None:
        while n:
            n -= len(self.take(min(n, _READ)))


class _Tar:
    """The tar the frames decompress to, read as Go's reader reads it (push: ``write``)."""

    def __init__(self, scan: Scan, what: str, max_members: int) -> None:
        self._scan = scan
        self._what = what
        self._max = max_members
        self.size = 0
        self._region = hashlib.sha256()
        self._block = bytearray()  # a header block split across writes
        self._meta: tuple[bytes, int, bytearray] | None = None  # an extended header: type, size, records
        self._pax: dict[str, bytes] = {}
        self._long: dict[bytes, bytes] = {}
        self._skip = 0  # padding or extended header bytes still to come
        self._open: tuple[Header, int, int, hashlib._Hash] | None = None  # a content: entry, start, left, sha256
        self._crc: int | None = None
        self._zeros = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._open is not None:
                take = self._content(view[pos:end])
            elif self._skip:
                take = min(self._skip, end - pos)
                self._raw(view[pos : pos + take])
                self._skip -= take
                if not self._skip and self._meta is not None:
                    self._end_meta()
            elif self._zeros >= 2:
                take = end - pos
                self._raw(view[pos:end])  # what follows the end-of-archive blocks
            else:
                take = min(_BLOCK - len(self._block), end - pos)
                self._block += view[pos : pos + take]
                pos, self.size = pos + take, self.size + take
                if len(self._block) == _BLOCK:  # (a content starts at self.size)
                    block = bytes(self._block)
                    self._block.clear()
                    self._raw(block)
                    self._on_block(block)
                continue
            pos, self.size = pos + take, self.size + take

    def _raw(self, data: memoryview | bytes) -> None:
        self._region.update(data)
        if self._meta is not None:
            self._meta[2].extend(data)

    def _on_block(self, block: bytes) -> None:
        if block == _ZERO_BLOCK:
            self._zeros += 1
            return
        if self._zeros:
            raise bad(self._what, "its tar has a header after an end-of-archive block")
        typeflag = block[156:157]
        if typeflag in (b"x", b"L", b"K"):
            try:
                size = number(block[124:136])
            except ValueError:
                raise bad(self._what, f"its tar has a damaged extended header (size {block[124:136]!r})") from None
            if not 0 <= size <= _META_MAX:
                raise bad(self._what, f"its tar has an extended header of {size} bytes, which Go's reader refuses")
            self._meta = (typeflag, size, bytearray())
            self._skip = size + (-size % _BLOCK)
            if not self._skip:
                self._end_meta()
            return
        if typeflag == b"g":
            raise bad(self._what, "its tar has a global PAX header, which no zstd:chunked TOC describes")
        try:
            header = parse_header(block, self._pax, self._long.get(b"L"), self._long.get(b"K"))
        except InvalidArchive as e:
            raise bad(self._what, f"its tar has an entry no zstd:chunked TOC describes: {e}") from None
        self._pax, self._long = {}, {}
        if len(self._scan.members) >= self._max:
            raise bad(self._what, f"its tar has more entries than its TOC can list ({self._max})")
        if header.data_size < 0:
            raise bad(
                self._what, f"its tar gives {header.name!r} a negative size", header.name.decode("utf-8", "replace")
            )
        if not header.data_size:
            self._scan.members.append(Member(header, self.size, None, 0))
            return
        self._scan.regions.append(self._region.digest())
        self._region = hashlib.sha256()
        self._open = (header, self.size, header.data_size, hashlib.sha256())
        self._crc = None

    def _end_meta(self) -> None:
        assert self._meta is not None
        typeflag, size, raw = self._meta
        self._meta = None
        data = bytes(raw[:size])
        try:
            if typeflag == b"x":
                self._pax = pax_records(data, what="PAX header")  # a second one replaces the first, as in Go's reader
            else:
                self._long[typeflag] = data.split(b"\x00", 1)[0]
        except InvalidArchive as e:
            raise bad(self._what, f"its tar has a damaged extended header: {e}") from None

    def _content(self, view: memoryview) -> int:
        assert self._open is not None
        header, start, left, sha = self._open
        take = min(left, len(view))
        piece = view[:take]
        sha.update(piece)
        self._crc = fastcrc.crc64.go_iso(piece, self._crc)  # None: the first piece, from the initial value
        left -= take
        if left:
            self._open = (header, start, left, sha)
        else:
            self._open = None
            self._scan.members.append(Member(header, start, sha.digest(), self._crc or 0))
            self._skip = -header.data_size % _BLOCK
        return take

    def finish(self) -> None:
        if self._open is not None or self._skip or self._block:
            raise bad(self._what, "its tar ends inside an entry")
        self._scan.regions.append(self._region.digest())


def scan(raw: BinaryIO, limits: Limits, *, what: str) -> Scan:
    """One pass over the blob ``raw`` (see the module's doc). Raises BadToc (``what`` naming
    the layer) for bytes that are no zstd stream, a tar Go's reader would not read as it is
    read here, or more than ``limits`` allow."""
    return _Scanner(raw, limits, what).run()


class _Scanner:
    def __init__(self, raw: BinaryIO, limits: Limits, what: str) -> None:
        self._pull = _Pull(raw, what)
        self._limits = limits
        self._what = what
        self._out = Scan()
        self._tar = _Tar(self._out, what, limits.members)
        self._dctx = zstandard.ZstdDecompressor()
        self._kept = 0

    def run(self) -> Scan:
        pull = self._pull
        while not pull.at_end():
            start = pull.offset
            magic = pull.take(4)
            if magic == ZSTD_MAGIC:
                self._frame(start)
            elif int.from_bytes(magic, "little") & 0xFFFFFFF0 == _SKIPPABLE:
                self._skippable()
            else:
                raise bad(self._what, f"byte {start} of the blob starts no zstd frame: the blob is no zstd stream")
        self._tar.finish()
        self._out.tail, self._out.size = pull.tail, pull.offset
        return self._out

    def _skippable(self) -> None:
        (size,) = struct.unpack("<I", self._pull.take(4))
        at = self._pull.offset
        if self._kept + size <= self._limits.kept:
            self._out.kept[at] = self._pull.take(size)
            self._kept += size
        else:
            self._pull.skip(size)
            self._out.not_kept[at] = size

    def _frame(self, start: int) -> None:
        """A data frame (its magic read): its blocks found, fed to a decompressor of its own."""
        if len(self._out.frames) >= self._limits.frames:
            raise bad(self._what, f"the blob has more than {self._limits.frames} zstd frames")
        pull = self._pull
        head = pull.take(1)
        fhd = head[0]
        if fhd & 0x08:
            raise bad(self._what, f"the zstd frame at byte {start} has its reserved bit set")
        single = fhd & 0x20
        size_of_size = ((1 if single else 0), 2, 4, 8)[fhd >> 6]
        gathered = [ZSTD_MAGIC, head, pull.take((0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + size_of_size)]
        made, tar_start, sha = 0, self._tar.size, hashlib.sha256()
        dobj = self._dctx.decompressobj()
        while True:
            block = pull.take(3)
            value = int.from_bytes(block, "little")
            kind, size, last = (value >> 1) & 3, value >> 3, value & 1
            if kind == 3:
                raise bad(self._what, f"the zstd frame at byte {start} has a block of the reserved type")
            gathered += (block, pull.take(1 if kind == 1 else size))
            made += _BLOCK_MAX if kind == 2 else size
            if last and fhd & 0x04:
                gathered.append(pull.take(4))  # the content checksum
            if last or made >= _FEED:
                self._decompress(dobj, b"".join(gathered), sha, start)
                gathered, made = [], 0
            if last:
                break
        if not dobj.eof:
            raise bad(self._what, f"the zstd frame at byte {start} does not end where its last block does")
        self._out.frames.add(start, pull.offset, tar_start, self._tar.size, sha.digest())

    def _decompress(self, dobj: zstandard.ZstdDecompressionObj, data: bytes, sha: hashlib._Hash, start: int) -> None:
        try:
            out = dobj.decompress(data)
        except zstandard.ZstdError as e:
            raise bad(self._what, f"the zstd frame at byte {start} does not decompress: {e}") from None
        sha.update(out)
        self._tar.write(out)
