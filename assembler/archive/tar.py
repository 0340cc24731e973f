"""The deterministic tar writer, and tar entries read back from other tars.

The contract (ARCHITECTURE.md), applied by :func:`normalize` and nowhere else:
entries sorted by path (:func:`sort_key`); ``mtime = min(int(mtime), epoch)``; empty
uname/gname; only allow-listed xattrs (``security.capability``); sockets dropped. The
writer emits POSIX.1-2001 (PAX) archives: a ustar header per entry and a PAX extended
header only when a value does not fit ustar (long or non-ASCII paths, big sizes or ids,
xattrs). PAX header names are fixed (``PaxHeaders.0/<base>``), never a pid.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Literal, Protocol

from assembler.errors import InvalidArchive, UnsafePath

BLOCK = 512
CHUNK = 1 << 20
ALLOWED_XATTRS = frozenset({"security.capability"})

Kind = Literal["file", "dir", "symlink", "hardlink", "char", "block", "fifo"]

_TYPEFLAG: dict[str, bytes] = {
    "file": b"0",
    "hardlink": b"1",
    "symlink": b"2",
    "char": b"3",
    "block": b"4",
    "dir": b"5",
    "fifo": b"6",
}
_FROM_TARFILE: dict[bytes, Kind] = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.LNKTYPE: "hardlink",
    tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.DIRTYPE: "dir",
    tarfile.FIFOTYPE: "fifo",
}


class Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


@dataclass(frozen=True)
class TarEntry:
    """One archive member. ``path`` is relative, clean, without a trailing slash."""

    path: str
    kind: Kind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The member name as written: directories end with a slash."""
        return self.path + "/" if self.kind == "dir" and self.path else self.path


def clean_path(path: str, *, what: str = "path") -> str:
    """A member path made relative and clean (``""`` is the root); UnsafePath for ``..``.

    Absolute paths are taken relative to the root, as every tar reader does; ``..`` is
    refused rather than clamped, since a layer that climbs is broken or hostile.
    """
    if "\x00" in path:
        raise UnsafePath(f"{what} {path!r} contains a NUL byte")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath(f"{what} {path!r} climbs out of the root with '..'")
    return "/".join(parts)


def sort_key(path: str) -> tuple[bytes, ...]:
    """Order of entries in every layer we write: path components, bytewise."""
    return tuple(p.encode("utf-8", "surrogateescape") for p in path.split("/"))


def normalize(entry: TarEntry, *, epoch: int) -> TarEntry:
    """The entry as the determinism contract wants it (mtime clamp, xattr allow-list)."""
    xattrs = {k: v for k, v in entry.xattrs.items() if k in ALLOWED_XATTRS}
    return replace(
        entry,
        mode=entry.mode & 0o7777,
        mtime=min(int(entry.mtime), int(epoch)) if entry.mtime >= 0 else 0,
        size=entry.size if entry.kind == "file" else 0,
        xattrs=xattrs,
    )


def _octal(value: int, width: int) -> bytes:
    digits = width - 1
    text = format(value, "o")
    if len(text) > digits:
        raise InvalidArchive(f"{value} does not fit a {width}-byte octal tar field")
    return text.rjust(digits, "0").encode("ascii") + b"\x00"


def _fits(value: int, width: int) -> bool:
    return bool(0 <= value < 8 ** (width - 1))


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
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


def _header(
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
    buf = bytearray(BLOCK)
    buf[0 : len(name)] = name
    buf[100:108] = _octal(mode, 8)
    buf[108:116] = _octal(uid, 8)
    buf[116:124] = _octal(gid, 8)
    buf[124:136] = _octal(size, 12)
    buf[136:148] = _octal(mtime, 12)
    buf[148:156] = b"        "
    buf[156:157] = typeflag
    buf[157 : 157 + len(linkname)] = linkname
    buf[257:263] = b"ustar\x00"
    buf[263:265] = b"00"
    buf[329:337] = _octal(devmajor, 8)
    buf[337:345] = _octal(devminor, 8)
    buf[345 : 345 + len(prefix)] = prefix
    checksum = sum(buf)
    buf[148:156] = format(checksum, "06o").encode("ascii") + b"\x00 "
    return bytes(buf)


def _pax_records(entry: TarEntry, name_b: bytes, link_b: bytes, size: int) -> list[bytes]:
    """The PAX records an entry needs: what a ustar header cannot hold (long or non-ASCII
    names, big ids and sizes) and the xattrs."""
    pax: list[bytes] = []
    if (_split_ustar(name_b) if name_b.isascii() else None) is None:
        pax.append(_pax_record("path", name_b))
    if len(link_b) > 100 or not link_b.isascii():
        pax.append(_pax_record("linkpath", link_b))
    for key, value in (("uid", entry.uid), ("gid", entry.gid)):
        if not _fits(value, 8):
            pax.append(_pax_record(key, str(value).encode("ascii")))
    if not _fits(size, 12):
        pax.append(_pax_record("size", str(size).encode("ascii")))
    for key in sorted(entry.xattrs):
        pax.append(_pax_record("SCHILY.xattr." + key, entry.xattrs[key]))
    return pax


class TarWriter:
    """Streams PAX tar members to ``out``; the caller gives entries in the order wanted.

    Headers and small files are gathered into writes of about 1 MiB, so a tree of many
    small files does not cost a trip down the hashing/compressing chain per piece.
    """

    def __init__(self, out: Writable) -> None:
        self._out = out
        self._buf = bytearray()

    def _write(self, data: bytes) -> None:
        if len(data) >= CHUNK:
            self.flush()
            self._out.write(data)
            return
        self._buf += data
        if len(self._buf) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Pass on what is gathered (``close`` does it too)."""
        if self._buf:
            buf, self._buf = self._buf, bytearray()
            self._out.write(bytes(buf))

    def add(self, entry: TarEntry, data: BinaryIO | None = None) -> None:
        """Write one member; for a file, exactly ``entry.size`` bytes are read from ``data``.

        Raises InvalidArchive if ``data`` ends early (a file that shrank while we read it);
        ValueError (a caller's bug) if a file with content comes without ``data``.
        """
        name_b = entry.name.encode("utf-8", "surrogateescape")
        link_b = entry.linkname.encode("utf-8", "surrogateescape")
        size = entry.size if entry.kind == "file" else 0
        pax = _pax_records(entry, name_b, link_b, size)
        split = _split_ustar(name_b) if name_b.isascii() else None
        if split is None:
            prefix, short = b"", name_b[-100:] if name_b.isascii() else b"pax-named-entry"
        else:
            prefix, short = split
        if len(link_b) > 100 or not link_b.isascii():
            link_b = link_b[:100] if link_b.isascii() else b""
        mtime = max(0, int(entry.mtime))
        if pax:
            records = b"".join(sorted(pax, key=lambda r: bytes(r).split(b" ", 1)[1]))
            base = posixpath.basename(entry.path.rstrip("/")) or "root"
            pax_name = ("PaxHeaders.0/" + base).encode("utf-8", "surrogateescape")[:100]
            if not pax_name.isascii():
                pax_name = b"PaxHeaders.0/entry"
            self._write(_header(pax_name, mode=0o644, uid=0, gid=0, size=len(records), mtime=mtime, typeflag=b"x"))
            self._write(records + b"\x00" * (-len(records) % BLOCK))
        self._write(
            _header(
                short,
                mode=entry.mode & 0o7777,
                uid=entry.uid if _fits(entry.uid, 8) else 0,
                gid=entry.gid if _fits(entry.gid, 8) else 0,
                size=size if _fits(size, 12) else 0,
                mtime=mtime,
                typeflag=_TYPEFLAG[entry.kind],
                linkname=link_b,
                devmajor=entry.devmajor,
                devminor=entry.devminor,
                prefix=prefix,
            )
        )
        if entry.kind == "file" and size:
            if data is None:
                raise ValueError(f"no data given for file {entry.path}")
            remaining = size
            while remaining:
                chunk = data.read(min(CHUNK, remaining))
                if not chunk:
                    raise InvalidArchive(f"{entry.path}: data ended {remaining} bytes early (it changed while read)")
                self._write(chunk)
                remaining -= len(chunk)
            if size % BLOCK:
                self._write(b"\x00" * (BLOCK - size % BLOCK))

    def close(self) -> None:
        """Write the end-of-archive marker (two zero blocks) and flush. Does not close ``out``."""
        self._write(b"\x00" * (2 * BLOCK))
        self.flush()


def entry_from_tarinfo(info: tarfile.TarInfo, *, what: str = "archive") -> TarEntry | None:
    """A :class:`TarEntry` for a member read by :mod:`tarfile`; ``None`` for what we drop.

    Paths are cleaned (UnsafePath for ``..``); hardlink targets too.
    """
    kind = _FROM_TARFILE.get(info.type)
    if kind is None:
        return None  # sockets and unknown types carry no content a layer needs
    path = clean_path(info.name, what=f"{what} member")
    if info.size < 0:  # a pax "size" header tarfile takes as it is
        raise InvalidArchive(f"{what}: damaged tar archive (member {info.name!r} has size {info.size})")
    linkname = info.linkname
    if kind == "hardlink":
        linkname = clean_path(linkname, what=f"{what} hardlink target of {info.name!r}")
    xattrs: dict[str, bytes] = {}
    for key, value in info.pax_headers.items():
        if key.startswith("SCHILY.xattr."):
            xattrs[key[len("SCHILY.xattr.") :]] = value.encode("utf-8", "surrogateescape")
    return TarEntry(
        path=path,
        kind=kind,
        mode=info.mode & 0o7777,
        uid=info.uid,
        gid=info.gid,
        size=info.size if kind == "file" else 0,
        mtime=int(info.mtime),
        linkname=linkname,
        devmajor=info.devmajor,
        devminor=info.devminor,
        xattrs=xattrs,
    )
