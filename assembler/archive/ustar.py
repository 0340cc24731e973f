"""The bytes of one tar member's header: a ustar header, and the PAX records for what
ustar cannot hold (long or non-ASCII paths, big sizes or ids, xattrs). The writer
(:class:`assembler.archive.tar.TarWriter`) puts them together; most of a tree's entries take
:func:`plain_header`, byte for byte what the general path writes, in a fraction of its time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

from assembler.errors import InvalidArchive

BLOCK = 512

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]

TYPEFLAG: dict[Kind, bytes] = {
    "file": b"0",
    "hardlink": b"1",
    "symlink": b"2",
    "char": b"3",
    "block": b"4",
    "dir": b"5",
    "fifo": b"6",
}


class Fields(Protocol):
    """What a header is made of (a :class:`~assembler.archive.tar.TarEntry` is one)."""

    @property
    def kind(self) -> Kind: ...
    @property
    def mode(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def mtime(self) -> int: ...
    @property
    def devmajor(self) -> int: ...
    @property
    def devminor(self) -> int: ...
    @property
    def xattrs(self) -> Mapping[str, bytes]: ...


def _octal(value: int, width: int) -> bytes:
    if 0 <= value < _OCTAL_LIMIT[width]:
        return b"%0*o\x00" % (width - 1, value)
    digits = width - 1
    text = format(value, "o")
    if len(text) > digits:
        raise InvalidArchive(f"{value} does not fit a {width}-byte octal tar field")
    return text.rjust(digits, "0").encode("ascii") + b"\x00"


_OCTAL_LIMIT = {8: 8**7, 12: 8**11}
# The highest owner a layer gives a file: uid_t is 32 bits and (uid_t)-1 is chown's "unchanged".
# Rootless podman and buildah refuse a layer with more ("container ID ... cannot be mapped to
# a host ID"); as root, chown would cut it to 32 bits.
MAX_OWNER = 2**32 - 2
_ZERO_OCTAL_8 = b"0000000\x00"
_MAGIC_AND_OWNER_NAMES = b"ustar\x0000" + bytes(64)  # magic, version, empty uname and gname
_CHECKSUM_SPACES = 8 * ord(" ")  # the checksum is summed with its own field as spaces


def fits(value: int, width: int) -> bool:
    return bool(0 <= value < 8 ** (width - 1))


def split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    if len(name) <= 100:
        return b"", name
    # Split at a slash so that prefix <= 155 and name <= 100.
    for i in range(len(name) - 1, -1, -1):
        if name[i : i + 1] == b"/" and i <= 155 and len(name) - i - 1 <= 100 and i > 0:
            return name[:i], name[i + 1 :]
    return None


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode("utf-8") + b"=" + value + b"\n"
    n = len(body)
    digits = len(str(n))
    while len(str(n + digits)) != digits:
        digits += 1
    return str(n + digits).encode("ascii") + body


def header(
    name: bytes,
    *,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime: int,
    typeflag: bytes,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    prefix: bytes = b"",
) -> bytes:
    # Built by joining fields (not by filling a bytearray): a tree of small files spends
    # much of its time here.
    head = b"".join(
        (name.ljust(100, b"\x00"), _octal(mode, 8), _octal(uid, 8), _octal(gid, 8), _octal(size, 12), _octal(mtime, 12))
    )
    tail = b"".join(
        (
            typeflag,
            linkname.ljust(100, b"\x00"),
            _MAGIC_AND_OWNER_NAMES,
            _octal(devmajor, 8) if devmajor else _ZERO_OCTAL_8,
            _octal(devminor, 8) if devminor else _ZERO_OCTAL_8,
            prefix.ljust(167, b"\x00"),  # the prefix field (155) and the block's padding (12)
        )
    )
    checksum = sum(head) + _CHECKSUM_SPACES + sum(tail)
    header = b"".join((head, b"%06o\x00 " % checksum, tail))
    if len(header) != BLOCK:
        raise InvalidArchive(f"tar header fields too long for {name!r}")
    return header


_PLAIN_FIELDS = b"%07o\x00%07o\x00%07o\x00%011o\x00%011o\x00"  # mode, uid, gid, size, mtime
_PLAIN_TAIL = _MAGIC_AND_OWNER_NAMES + _ZERO_OCTAL_8 + _ZERO_OCTAL_8 + bytes(167)  # no devices, no prefix
_PLAIN_SUM = _CHECKSUM_SPACES + sum(_PLAIN_TAIL)


def plain_header(entry: Fields, name_b: bytes, link_b: bytes, size: int) -> bytes | None:
    """The one ustar header of an entry that needs nothing more (most of a tree's: short
    ASCII names, small ids, no device numbers, no xattrs), byte for byte as the general
    path writes it and in a fraction of its time; None for the others."""
    uid, gid, mtime = entry.uid, entry.gid, entry.mtime
    if (
        len(name_b) > 100
        or len(link_b) > 100
        or entry.xattrs
        or entry.devmajor
        or entry.devminor
        or not 0 <= uid < 0o10000000
        or not 0 <= gid < 0o10000000
        or size >= 0o100000000000
        or not 0 <= mtime < 0o100000000000
        or type(mtime) is not int
        or not name_b.isascii()
        or not link_b.isascii()
    ):
        return None
    fields = _PLAIN_FIELDS % (entry.mode & 0o7777, uid, gid, size, mtime)
    typeflag = TYPEFLAG[entry.kind]
    checksum = sum(name_b) + sum(fields) + typeflag[0] + sum(link_b) + _PLAIN_SUM
    return b"".join(
        (name_b.ljust(100, b"\x00"), fields, b"%06o\x00 " % checksum, typeflag, link_b.ljust(100, b"\x00"), _PLAIN_TAIL)
    )


def pax_records(entry: Fields, name_b: bytes, link_b: bytes, size: int) -> list[bytes]:
    """The PAX records an entry needs: what a ustar header cannot hold (long or non-ASCII
    names, big ids and sizes) and the xattrs."""
    pax: list[bytes] = []
    if (split_ustar(name_b) if name_b.isascii() else None) is None:
        pax.append(_pax_record("path", name_b))
    if len(link_b) > 100 or not link_b.isascii():
        pax.append(_pax_record("linkpath", link_b))
    for key, value in (("uid", entry.uid), ("gid", entry.gid)):
        if not fits(value, 8):
            pax.append(_pax_record(key, str(value).encode("ascii")))
    if not fits(size, 12):
        pax.append(_pax_record("size", str(size).encode("ascii")))
    for key in sorted(entry.xattrs):
        pax.append(_pax_record("SCHILY.xattr." + key, entry.xattrs[key]))
    return pax
