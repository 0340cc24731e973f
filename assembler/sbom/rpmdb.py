"""The packages an rpm database lists: its header blobs, from sqlite or Berkeley DB.

An rpm database keeps one header per installed package, as a "blob" (the header without
its 8-byte magic): a big-endian int32 count of index entries, an int32 length of the data,
then 16-byte entries (tag, type, offset, count) and the data they point into. Two stores
are read:

- ``rpmdb.sqlite`` (rpm >= 4.16: Fedora, RHEL/UBI 9): the table ``Packages(hnum, blob)``;
  a ``-wal`` file beside it is copied with it, so what it still holds is read too;
- ``Packages``, a Berkeley DB hash database (CentOS 7/8, UBI 8): page 0 is the hash
  metadata (magic 0x061561, page size, last page), each hash page (type 13, or 2 before
  BDB 4.6) indexes key/data pairs, and a data item is either on the page (``H_KEYDATA``)
  or, for anything bigger than a quarter page, an ``H_OFFPAGE`` reference to a chain of
  overflow pages (type 7) holding its bytes. The record of key 0 (rpm's counter) is not
  a header and is skipped, like anything else that does not parse as one.

``Packages.db`` (SUSE's ndb) is not read: the caller notes it. :func:`read_from_layer`
spools the database out of its layer into a temporary file (sqlite and the page reader
need to seek), up to DB_LIMIT bytes; then only one page, or one header, is in memory at a
time. A database that cannot be read raises InvalidImage.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from assembler.archive.layer_reader import LayerSource, tar_members
from assembler.errors import InvalidImage

SQLITE, BDB = "sqlite", "bdb"
_TAGS = {
    1000: "name",
    1001: "version",
    1002: "release",
    1003: "epoch",
    1004: "summary",
    1011: "vendor",
    1014: "license",
    1020: "url",
    1022: "arch",
    1044: "sourcerpm",
}
_INT32, _STRING, _STRING_ARRAY, _I18NSTRING = 4, 6, 8, 9
_MAX_ENTRIES = 1 << 20  # rpm's own limit on a header's index (HEADER_TAGS_MAX)
_MAX_HEADER = 256 << 20  # and on its data (HEADER_DATA_MAX)

_HASH_MAGIC = 0x061561
_HASH_META, _HASH_UNSORTED, _HASH, _OVERFLOW = 8, 2, 13, 7
_H_KEYDATA, _H_OFFPAGE = 1, 3
_PAGE_HEADER = 26  # lsn, pgno, prev, next, entries, hf_offset, level, type
_PAGE_SIZES = {512 << i for i in range(8)}  # 512 .. 64 KiB
DB_LIMIT = 1 << 30  # a bigger rpm database is not read (Fedora's full ones are ~100 MiB)
_WAL = "-wal"


@dataclass(frozen=True)
class RpmHeader:
    """The fields of one installed package's header the SBOM uses ("" when absent)."""

    name: str
    version: str
    release: str
    epoch: str = ""  # "" when the header has none (rpm treats it as 0)
    arch: str = ""
    license: str = ""
    vendor: str = ""
    summary: str = ""
    url: str = ""
    sourcerpm: str = ""


def read_database(path: Path, kind: str) -> list[RpmHeader]:
    """The packages of the database file ``path`` (``kind`` SQLITE or BDB), in its order.
    Raises InvalidImage when it cannot be read as one."""
    if kind == SQLITE:
        return [h for blob in _sqlite_blobs(path) if (h := parse_header(blob)) is not None]
    with path.open("rb") as f:
        return [h for blob in _bdb_values(f) if (h := parse_header(blob)) is not None]


def kind_of(path: str) -> str | None:
    """SQLITE or BDB for the database file ``path``; None for one that is not read (ndb)."""
    name = path.rpartition("/")[2]
    return SQLITE if name == "rpmdb.sqlite" else BDB if name == "Packages" else None


def read_from_layer(layer: LayerSource, member: str, *, workdir: Path, limit: int = DB_LIMIT) -> list[RpmHeader]:
    """The packages of the database ``member`` of ``layer`` (with its ``-wal`` file from
    the same layer, for sqlite), spooled to a temporary folder under ``workdir`` one chunk
    at a time. Raises InvalidImage when it is missing, bigger than ``limit`` or unreadable."""
    kind = kind_of(member)
    if kind is None:
        raise InvalidImage(f"{member}: not an rpm database this reads")
    wanted = {member: "db", **({member + _WAL: "db" + _WAL} if kind == SQLITE else {})}
    with tempfile.TemporaryDirectory(prefix="rpmdb-", dir=str(workdir)) as folder:
        for entry, opener in tar_members(layer):
            if entry.path not in wanted or opener is None:
                continue
            if entry.size > limit:
                raise InvalidImage(f"{member}: {entry.size} bytes, more than the {limit} an rpm database is read up to")
            with opener() as data, open(Path(folder) / wanted.pop(entry.path), "wb") as out:
                shutil.copyfileobj(data, out, 1 << 20)
            if not wanted:
                break
        if member in wanted:
            raise InvalidImage(f"{member}: not a file of {layer.what}")
        return read_database(Path(folder) / "db", kind)


def parse_header(blob: bytes) -> RpmHeader | None:
    """The package a header blob describes; None when it is not a package's header."""
    if len(blob) < 8:
        return None
    count, size = struct.unpack_from(">ii", blob)
    start = 8 + 16 * count
    if not 0 < count <= _MAX_ENTRIES or not 0 <= size <= _MAX_HEADER or start + size > len(blob):
        return None
    data = blob[start : start + size]
    fields: dict[str, str] = {}
    for i in range(count):
        tag, kind, offset, _ = struct.unpack_from(">iiii", blob, 8 + 16 * i)
        name = _TAGS.get(tag)
        if name is None or not 0 <= offset < size:
            continue
        if kind == _INT32 and offset + 4 <= size:
            fields[name] = str(struct.unpack_from(">i", data, offset)[0])
        elif kind in (_STRING, _STRING_ARRAY, _I18NSTRING):  # an array's first string
            end = data.find(b"\0", offset)
            fields[name] = data[offset : end if end >= 0 else size].decode("utf-8", "replace")
    if not fields.get("name") or "version" not in fields:
        return None
    return RpmHeader(
        name=fields.pop("name"), version=fields.pop("version"), release=fields.pop("release", ""), **fields
    )


def _sqlite_blobs(path: Path) -> Iterator[bytes]:
    # Opened read-write: it is our own copy, and sqlite needs to write a -shm file to
    # replay a -wal one. query_only keeps the connection from changing anything else.
    try:
        with contextlib.closing(sqlite3.connect(str(path))) as db:
            db.execute("PRAGMA query_only = 1")
            for (blob,) in db.execute("SELECT blob FROM Packages ORDER BY hnum"):
                if isinstance(blob, bytes):
                    yield blob
    except sqlite3.Error as e:
        raise InvalidImage(f"not an rpm sqlite database ({e})") from e


def _bdb_values(f: BinaryIO) -> Iterator[bytes]:
    """The data items of a Berkeley DB hash database, page by page."""
    meta = f.read(512)
    if len(meta) < 512:
        raise InvalidImage("not a Berkeley DB hash database (shorter than its metadata page)")
    for order in ("<", ">"):
        if struct.unpack_from(f"{order}I", meta, 12)[0] == _HASH_MAGIC:
            break
    else:
        raise InvalidImage("not a Berkeley DB hash database (no hash magic)")
    page_size, last = struct.unpack_from(f"{order}I", meta, 20)[0], struct.unpack_from(f"{order}I", meta, 32)[0]
    if meta[25] != _HASH_META or page_size not in _PAGE_SIZES or meta[24] != 0:
        raise InvalidImage(f"not a readable Berkeley DB hash database (page size {page_size}, type {meta[25]})")
    for number in range(1, last + 1):
        f.seek(number * page_size)
        page = f.read(page_size)
        if len(page) < page_size:
            raise InvalidImage(f"Berkeley DB: page {number} of {last} is cut short")
        if page[25] not in (_HASH, _HASH_UNSORTED):
            continue
        entries = struct.unpack_from(f"{order}H", page, 20)[0]
        offsets = struct.unpack_from(f"{order}{entries}H", page, _PAGE_HEADER)
        for i in range(1, entries, 2):  # (key, data) pairs: the data items
            at = offsets[i]
            if at >= page_size or offsets[i - 1] > page_size:
                raise InvalidImage(f"Berkeley DB: page {number} has an item outside it")
            if page[at] == _H_KEYDATA:
                yield page[at + 1 : offsets[i - 1]]  # an item ends where the one before it starts
            elif page[at] == _H_OFFPAGE:
                first, length = struct.unpack_from(f"{order}II", page, at + 4)
                yield _overflow(f, first, length, page_size, order)


def _overflow(f: BinaryIO, first: int, length: int, page_size: int, order: str) -> bytes:
    """The ``length`` bytes of an item kept in the chain of overflow pages from ``first``."""
    if length > _MAX_HEADER:
        raise InvalidImage(f"Berkeley DB: an item of {length} bytes")
    out = bytearray()
    number, hops = first, 0
    while number and len(out) < length:
        hops += 1
        if hops > length // (page_size - _PAGE_HEADER) + 1:
            raise InvalidImage("Berkeley DB: an overflow chain longer than its item (a loop)")
        f.seek(number * page_size)
        page = f.read(page_size)
        if len(page) < page_size or page[25] != _OVERFLOW:
            raise InvalidImage(f"Berkeley DB: page {number} is not the overflow page an item points to")
        used = struct.unpack_from(f"{order}H", page, 22)[0]  # an overflow page's hf_offset: its bytes
        out += page[_PAGE_HEADER : _PAGE_HEADER + used]
        number = struct.unpack_from(f"{order}I", page, 16)[0]
    if len(out) != length:
        raise InvalidImage(f"Berkeley DB: an item of {length} bytes has {len(out)}")
    return bytes(out)
