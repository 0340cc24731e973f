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
import queue
import tarfile
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Protocol

from assembler.archive.ustar import BLOCK as BLOCK
from assembler.archive.ustar import MAX_OWNER as MAX_OWNER
from assembler.archive.ustar import TYPEFLAG, Kind, fits, header, pax_records, plain_header, split_ustar
from assembler.errors import InvalidArchive, UnsafePath

CHUNK = 1 << 20
ALLOWED_XATTRS = frozenset({"security.capability"})
# The OCI image spec's whiteouts: ``.wh.NAME`` deletes NAME (and all below it) from the
# layers below; ``.wh..wh..opq`` in a folder hides everything the layers below hold in it.
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# tarfile's type flags are the header's bytes: ours, and two more spellings of a regular file.
_FROM_TARFILE: dict[bytes, Kind] = {flag: kind for kind, flag in TYPEFLAG.items()}
_FROM_TARFILE.update({tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file"})


class Writable(Protocol):
    def write(self, data: bytes | bytearray, /) -> int | None: ...


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
    mode = entry.mode & 0o7777
    mtime = min(int(entry.mtime), int(epoch)) if entry.mtime >= 0 else 0
    size = entry.size if entry.kind == "file" else 0
    dropped = any(k not in ALLOWED_XATTRS for k in entry.xattrs)
    if mode == entry.mode and mtime == entry.mtime and type(entry.mtime) is int and size == entry.size and not dropped:
        return entry  # already as wanted: most entries of a tree, and a copy costs microseconds each
    xattrs = {k: v for k, v in entry.xattrs.items() if k in ALLOWED_XATTRS}
    return replace(entry, mode=mode, mtime=mtime, size=size, xattrs=xattrs)


class Buffer(bytearray):
    """A buffer a :class:`TarWriter` fills and hands on (a full one is :data:`CHUNK` long)."""


class TarWriter:
    """Streams PAX tar members to ``out``; the caller gives entries in the order wanted.

    Headers and file data are gathered into writes of about 1 MiB (a tree of many small
    files does not cost a trip down the hashing/compressing chain per piece). File data is
    read straight into that buffer, and a full buffer is handed to ``out`` and never
    changed again (a new one is started), so ``out`` may keep it without a copy, unless
    it gives the buffer back through ``spare``.
    """

    def __init__(self, out: Writable, *, spare: queue.SimpleQueue[Buffer] | None = None) -> None:
        """``spare``: full buffers ``out`` is done with, given back to be filled again (a
        fresh 1 MiB buffer is zeroed memory the kernel must map: a GiB of them costs a
        tenth of a second of a core). Whoever gives a buffer back never reads it again."""
        self._out = out
        self._spare = spare
        self._new_buffer()

    def _new_buffer(self) -> None:
        buf = None
        if self._spare is not None:
            try:
                buf = self._spare.get_nowait()
            except queue.Empty:
                pass
        self._buf = buf if buf is not None else Buffer(CHUNK)
        self._view = memoryview(self._buf)
        self._pos = 0

    def _write(self, data: bytes) -> None:
        n = len(data)
        if self._pos + n > CHUNK:
            self.flush()
            if n >= CHUNK:
                self._out.write(data)
                return
        self._view[self._pos : self._pos + n] = data
        self._pos += n

    def flush(self) -> None:
        """Pass on what is gathered (``close`` does it too)."""
        if self._pos:
            buf, pos = self._buf, self._pos
            self._view.release()
            del buf[pos:]  # shrinks in place: no copy
            self._new_buffer()
            self._out.write(buf)

    def _copy_data(self, path: str, data: BinaryIO, size: int) -> None:
        readinto = getattr(data, "readinto", None)  # files and tar members have it: no copy
        remaining = size
        while remaining:
            if readinto is None:
                chunk = data.read(min(CHUNK, remaining))
                n = len(chunk)
                self._write(chunk)
            else:
                if self._pos == CHUNK:
                    self.flush()
                want = min(CHUNK - self._pos, remaining)
                n = readinto(self._view[self._pos : self._pos + want]) or 0
                self._pos += n
            if not n:
                raise InvalidArchive(f"{path}: data ended {remaining} bytes early (it changed while read)")
            remaining -= n

    def add(self, entry: TarEntry, data: BinaryIO | None = None) -> None:
        """Write one member; for a file, exactly ``entry.size`` bytes are read from ``data``.

        Raises InvalidArchive if ``data`` ends early (a file that shrank while we read it);
        ValueError (a caller's bug) if a file with content comes without ``data``.
        """
        name_b = entry.name.encode("utf-8", "surrogateescape")
        link_b = entry.linkname.encode("utf-8", "surrogateescape")
        size = entry.size if entry.kind == "file" else 0
        if (plain := plain_header(entry, name_b, link_b, size)) is not None:
            self._write(plain)
        else:
            self._headers(entry, name_b, link_b, size)
        if entry.kind == "file" and size:
            if data is None:
                raise ValueError(f"no data given for file {entry.path}")
            self._copy_data(entry.path, data, size)
            if size % BLOCK:
                self._write(_ZEROS[: BLOCK - size % BLOCK])

    def _headers(self, entry: TarEntry, name_b: bytes, link_b: bytes, size: int) -> None:
        """An entry's headers where a plain ustar header cannot hold it: a PAX header
        first when needed, then a ustar header with what fits."""
        pax = pax_records(entry, name_b, link_b, size)
        split = split_ustar(name_b) if name_b.isascii() else None
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
            self._write(header(pax_name, mode=0o644, uid=0, gid=0, size=len(records), mtime=mtime, typeflag=b"x"))
            self._write(records + b"\x00" * (-len(records) % BLOCK))
        self._write(
            header(
                short,
                mode=entry.mode & 0o7777,
                uid=entry.uid if fits(entry.uid, 8) else 0,
                gid=entry.gid if fits(entry.gid, 8) else 0,
                size=size if fits(size, 12) else 0,
                mtime=mtime,
                typeflag=TYPEFLAG[entry.kind],
                linkname=link_b,
                devmajor=entry.devmajor,
                devminor=entry.devminor,
                prefix=prefix,
            )
        )

    def close(self) -> None:
        """Write the end-of-archive marker (two zero blocks) and flush. Does not close ``out``."""
        self._write(_ZEROS)
        self.flush()


_ZEROS = bytes(2 * BLOCK)


def entry_from_tarinfo(info: tarfile.TarInfo, *, what: str = "archive") -> TarEntry | None:
    """A :class:`TarEntry` for a member read by :mod:`tarfile`; ``None`` for what we drop.

    Paths are cleaned (UnsafePath for ``..``); hardlink targets too.
    """
    kind = _FROM_TARFILE.get(info.type)
    if kind is None:
        return None  # sockets and unknown types carry no content a layer needs
    path = clean_path(info.name, what=f"{what} member")
    # PAX records (and base-256 fields) hold any integer, which tarfile takes as it is: a
    # negative size, an owner no uid_t holds (a layer keeps its base's owners: MAX_OWNER).
    for key, number, top in (("size", info.size, None), ("uid", info.uid, MAX_OWNER), ("gid", info.gid, MAX_OWNER)):
        if number < 0 or (top is not None and number > top):
            raise InvalidArchive(f"{what}: damaged tar archive (member {info.name!r} has {key} {number})")
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


Opener = Callable[[], AbstractContextManager[BinaryIO]]
"""Opens a member's data when the writer reaches it (so thousands of files are not open at once)."""

Member = tuple[TarEntry, Opener | None]
"""A layer's entry and what opens its data (None: no data, or the data is the entry's)."""
