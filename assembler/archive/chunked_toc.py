"""What a zstd:chunked layer says about its tar: the TOC's entries and the tar-split's lines,
from the tar's own header bytes, as containers/storage's compressor writes them.

c/storage reads each header with Go's ``archive/tar`` (vbatts/tar-split's copy of it) and
writes what that reader makes of it: the TOC entry is ``minimal.NewFileMetadata(hdr)``
marshalled by Go's JSON encoder (struct field order, ``omitempty``, times as RFC 3339 with
nanoseconds, xattrs base64), the tar-split line is ``storage.Entry`` (``{"type":1,"name":..,
"size":..,"payload":<CRC-64/ISO, base64>,"position":N}`` for an entry, ``{"type":2,
"payload":<raw bytes, base64>,"position":N}`` for the bytes between contents). A newer
c/storage checks the two against each other on a partial pull, field by field, so both
come from one :class:`Header` read here the way Go's reader reads it: numbers octal or
base-256, the ustar prefix joined to the name, PAX records and GNU long names applied.
"""

from __future__ import annotations

import base64
import json
import re
from binascii import b2a_base64
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from assembler.errors import InvalidArchive

# The layer annotations c/storage >= 1.54 (podman >= 5.1) reads...
TOC_CHECKSUM = "io.github.containers.zstd-chunked.manifest-checksum"
TOC_POSITION = "io.github.containers.zstd-chunked.manifest-position"
TARSPLIT_POSITION = "io.github.containers.zstd-chunked.tarsplit-position"
# ... and those older ones wrote, which their readers look for: c/storage 1.47-1.53 takes the
# tar-split's digest from an annotation (since 1.54 it is in the TOC), and 1.43 (podman 4.3,
# Debian 12's) knew the TOC's two under other names.
TARSPLIT_CHECKSUM = "io.github.containers.zstd-chunked.tarsplit-checksum"
OLD_TOC_CHECKSUM = "io.containers.zstd-chunked.manifest-checksum"
OLD_TOC_POSITION = "io.containers.zstd-chunked.manifest-position"

SKIPPABLE_MAGIC = b"\x50\x2a\x4d\x18"  # a zstd skippable frame: every zstd reader passes over it
FOOTER_MAGIC = b"GNUlInUx"  # the 64-byte footer's last 8 bytes (c/storage >= 1.50)
TOC_TYPE_CRFS = 1

_TYPES = {b"0": "reg", b"\x00": "reg", b"1": "hardlink", b"2": "symlink", b"3": "char", b"4": "block"}
_TYPES.update({b"5": "dir", b"6": "fifo"})
# Go's reader gives these no data, whatever their size field says (isHeaderOnlyType).
HEADER_ONLY = frozenset({"hardlink", "symlink", "char", "block", "dir", "fifo"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PLAIN = re.compile(rb"[ !#-%'-;=?-\[\]-~]*")  # printable ASCII but for " & < > \\


class Header(NamedTuple):
    """One tar entry as Go's reader makes it (``tar.Header``): what the TOC and tar-split say."""

    kind: str  # the TOC's type: reg, hardlink, symlink, char, block, dir, fifo
    name: bytes
    linkname: bytes
    mode: int
    size: int
    uid: int
    gid: int
    mtime: tuple[int, int]  # seconds, nanoseconds
    atime: tuple[int, int] | None
    ctime: tuple[int, int] | None
    devmajor: int
    devminor: int
    xattrs: tuple[tuple[str, bytes], ...]

    @property
    def data_size(self) -> int:
        """How many bytes of content follow the header in the tar."""
        return 0 if self.kind in HEADER_ONLY else self.size


def number(field: bytes) -> int:
    """A numeric header field as Go reads it: base-256 when the top bit is set, else octal
    padded with spaces or NULs. ValueError for anything else."""
    if field[0] & 0x80:
        value = int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
        return value - (1 << (8 * len(field) - 1)) if field[0] & 0x40 else value
    return int(field.strip(b" \x00") or b"0", 8)


def _cstring(field: bytes) -> bytes:
    end = field.find(b"\x00")
    return field if end < 0 else field[:end]


def pax_records(data: bytes, *, what: str) -> dict[str, bytes]:
    """The ``key=value`` records of a PAX extended header; InvalidArchive when damaged."""
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise InvalidArchive(f"{what}: damaged PAX header (record at byte {pos})") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise InvalidArchive(f"{what}: damaged PAX header (record at byte {pos})")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value
        pos += length
    return records


def _pax_time(value: bytes) -> tuple[int, int]:
    whole, _, fraction = value.decode("ascii", "replace").partition(".")
    seconds = int(whole)
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    if whole.startswith("-") and nanos:
        return seconds - 1, 1_000_000_000 - nanos
    return seconds, nanos


def _pax_fields(pax: dict[str, bytes]) -> dict[str, object]:
    """Go's mergePAX: the header fields the records override (ValueError when damaged)."""
    fields: dict[str, object] = {}
    for key, value in pax.items():
        if key == "path":
            fields["name"] = value
        elif key == "linkpath":
            fields["linkname"] = value
        elif key in ("uid", "gid", "size"):
            fields[key] = int(value)
        elif key in ("mtime", "atime", "ctime"):
            fields[key] = _pax_time(value)
        elif key.startswith("GNU.sparse."):
            raise InvalidArchive(
                f"tar entry {pax.get('path', b'')!r} is a sparse file: zstd:chunked cannot describe it"
            )
    return fields


def parse_header(block: bytes, pax: dict[str, bytes], longname: bytes | None, longlink: bytes | None) -> Header:
    """The entry a ustar/PAX/GNU header ``block`` describes, with the PAX records and GNU
    long names read before it. InvalidArchive for a damaged header, or a type zstd:chunked
    cannot describe (sparse files, sockets), as c/storage's compressor refuses them."""
    name = _cstring(block[0:100])
    try:
        return _header(block, name, pax, longname, longlink)
    except ValueError as e:
        raise InvalidArchive(f"damaged tar header of {name!r}: {e}") from None


def _header(block: bytes, name: bytes, pax: dict[str, bytes], longname: bytes | None, longlink: bytes | None) -> Header:
    typeflag = block[156:157]
    kind = _TYPES.get(typeflag)
    if kind is None:
        raise InvalidArchive(f"tar entry {name!r} has type {typeflag!r}, which zstd:chunked cannot describe")
    magic = block[257:265]
    if magic[:6] == b"ustar\x00" and block[345]:
        name = _cstring(block[345:500]) + b"/" + name
    atime = ctime = None
    if magic == b"ustar  \x00":  # GNU: access and change times where ustar has the prefix
        atime = (number(block[345:357]), 0) if block[345] else None
        ctime = (number(block[357:369]), 0) if block[357] else None
    # Go reads the device numbers of every entry of a ustar or GNU header, not only devices'.
    devices = magic[:6] == b"ustar\x00" or magic == b"ustar  \x00"
    header = Header(
        kind,
        name,
        _cstring(block[157:257]),
        number(block[100:108]),
        number(block[124:136]),
        number(block[108:116]),
        number(block[116:124]),
        (number(block[136:148]), 0),
        atime,
        ctime,
        number(block[329:337]) if devices else 0,
        number(block[337:345]) if devices else 0,
        (),
    )
    if pax:
        xattrs = tuple(sorted((k[13:], v) for k, v in pax.items() if k.startswith("SCHILY.xattr.")))
        header = header._replace(xattrs=xattrs, **_pax_fields(pax))  # type: ignore[arg-type]
    # Go's order: the PAX records, then a GNU long name or link that is not empty, then an
    # old-style regular file named like a folder is a folder.
    if longname:
        header = header._replace(name=longname)
    if longlink:
        header = header._replace(linkname=longlink)
    if typeflag == b"\x00" and header.name.endswith(b"/"):
        header = header._replace(kind="dir")
    return header


def content_size(block: bytes, pax: dict[str, bytes], longname: bytes | None) -> int:
    """How many bytes of content follow the header ``block``, as Go's reader counts them:
    none for the types that have none, whatever their size field says. InvalidArchive for
    a type zstd:chunked cannot describe, or a damaged size."""
    typeflag = block[156:157]
    kind = _TYPES.get(typeflag)
    if kind is None:
        name = _cstring(block[0:100])
        raise InvalidArchive(f"tar entry {name!r} has type {typeflag!r}, which zstd:chunked cannot describe")
    name = longname or pax.get("path", _cstring(block[0:100]))  # the end of the name is all that counts here
    if kind != "reg" or (typeflag == b"\x00" and name.endswith(b"/")):
        return 0
    try:
        return int(pax["size"]) if "size" in pax else number(block[124:136])
    except ValueError:
        raise InvalidArchive(f"damaged tar header of {name!r}: size {block[124:136]!r}") from None


def go_string(text: bytes) -> str:
    """A JSON string as Go's encoder writes it: invalid UTF-8 as U+FFFD, HTML-escaped."""
    if _PLAIN.fullmatch(text):
        return '"' + text.decode("ascii") + '"'  # most paths: nothing to escape
    out = json.dumps(text.decode("utf-8", "replace"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028")):
        out = out.replace(char, escaped)
    return out.replace("\u2029", "\\u2029")


def go_time(when: tuple[int, int]) -> str:
    """A time as Go's ``time.Time`` marshals it in UTC (RFC 3339, nanoseconds without trailing zeros)."""
    seconds, nanos = when
    text = (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{nanos:09d}".rstrip("0") if nanos else "") + "Z"


class TocWriter:
    """Entries of the TOC as JSON text, in Go's field order (``minimal.FileMetadata``)."""

    def __init__(self) -> None:
        self._time: tuple[tuple[int, int], str] = ((-1, 0), "")  # a layer's entries share one mtime

    def _time_of(self, when: tuple[int, int]) -> str:
        if self._time[0] != when:
            self._time = (when, go_time(when))
        return self._time[1]

    def entry(self, h: Header, digest: str) -> str:
        """The entry's JSON up to its digest; the caller adds the offsets and the closing brace."""
        parts = [f'{{"type":"{h.kind}","name":{go_string(h.name)}']
        if h.linkname:
            parts.append(f',"linkName":{go_string(h.linkname)}')
        for key, value in (("mode", h.mode), ("size", h.size), ("uid", h.uid), ("gid", h.gid)):
            if value:
                parts.append(f',"{key}":{value}')
        # Go writes a time that is not its zero time (year 1); the Unix epoch is not that.
        parts.append(f',"modtime":"{self._time_of(h.mtime)}"')
        if h.atime is not None:
            parts.append(f',"accesstime":"{self._time_of(h.atime)}"')
        if h.ctime is not None:
            parts.append(f',"changetime":"{self._time_of(h.ctime)}"')
        if h.devmajor:
            parts.append(f',"devMajor":{h.devmajor}')
        if h.devminor:
            parts.append(f',"devMinor":{h.devminor}')
        if h.xattrs:
            values = ",".join(f'{go_string(k.encode())}:"{base64.b64encode(v).decode()}"' for k, v in h.xattrs)
            parts.append(f',"xattrs":{{{values}}}')
        if digest:
            parts.append(f',"digest":"{digest}"')
        return "".join(parts)


TocBatch = tuple[int, list[tuple[str, int]], list[str]]
"""The TOC's entries as the writer gathers them, a batch of frames at a time: the batch's
first frame's number, each entry's JSON up to its digest (:meth:`TocWriter.entry`) with its
content's frame number in the batch (-1: none), and the contents' digests (frame ``n``'s is
``n // 2``: the frames before each content hold the tar bytes before it)."""


def toc_json(batches: list[TocBatch], starts: list[int], end: int, split_digest: str) -> bytes:
    """The TOC: each entry with its content's digest and frame, from where the frame starts
    (``starts``, by number) to where the next one does (``end`` for the last)."""
    parts = []
    for first, entries, digests in batches:
        for text, frame in entries:
            if frame < 0:
                parts.append(text + "}")
                continue
            at = first + frame
            frame_end = starts[at + 1] if at + 1 < len(starts) else end
            digest = digests[frame // 2]
            parts.append(f'{text},"digest":"sha256:{digest}","offset":{starts[at]},"endOffset":{frame_end}}}')
    body = ",".join(parts)
    return f'{{"version":1,"entries":[{body}],"tarSplitDigest":"{split_digest}"}}'.encode()


# A tar-split line ends with its position (its line number), which only the writer of the
# whole stream knows: the lines below stop before it, and ``POSITION`` ends them.
POSITION = b"%d}\n"


def segment_line(raw: bytes | bytearray) -> bytes:
    """A tar-split line for raw tar bytes (headers, padding, the end-of-archive blocks)."""
    return b'{"type":2,"payload":"%s","position":' % b2a_base64(raw, newline=False)


def file_line(h: Header, crc: bytes | None) -> bytes:
    """A tar-split line for an entry: its name (``name_raw``, base64, when not UTF-8), size
    and the CRC-64/ISO of its content (8 bytes, big-endian; ``null`` when size is 0)."""
    if crc is None:
        return file_line_head(h)[:-1] + b'null,"position":'
    return file_line_head(h) + b2a_base64(crc, newline=False) + b'","position":'


def file_line_head(h: Header) -> bytes:
    """An entry's tar-split line up to its CRC's base64, which goes next (then ``","position":``)."""
    try:
        h.name.decode("utf-8")
        name = b'"name":' + go_string(h.name).encode("utf-8") + b"," if h.name else b""
    except UnicodeDecodeError:
        name = b'"name_raw":"' + b2a_base64(h.name, newline=False) + b'",'
    size = b'"size":%d,' % h.size if h.size else b""
    return b'{"type":1,%s%s"payload":"' % (name, size)
