"""Compile-cache folders as content-addressed chunks: what ``--cache-to`` exports of a
step's ``cache:`` and ``shared_cache:`` folders (:mod:`assembler.stepcache.compile`).

A folder is scanned (:func:`scan`: each folder's names sorted, then its subfolders'), trimmed to a
size by leaving out its oldest files by mtime (:func:`evict`), and cut into chunks
(:func:`chunks`): a file of ``BIG`` bytes or more is a chunk of its own; smaller entries
are packed in scan order, a chunk ending after an entry whose path hashes to a boundary
(about one entry in ``SPREAD``) or once it holds ``CHUNK_MAX`` bytes. Boundaries come from
paths, not offsets, so a changed, added or removed file changes the chunk it is in (and at
most the rest of that run up to the next path boundary), not every chunk after it.

A chunk is a zstd-compressed PAX tar (:func:`write_chunk`), the same bytes for the same
entries: uid/gid 0, no user names, the entry's mode (set-id bits dropped), symlinks as
symlinks, and the **real** mtime to the nanosecond (a PAX ``mtime`` record). Unlike image
layers, times are not clamped to the epoch: make, ninja and cargo decide from mtimes what
is up to date, so a restored build tree must keep them.

:class:`Unpacking` writes chunks into a fresh folder being restored, through the one safe
unpacker (:mod:`assembler.archive.extract`): only regular files, folders and symlinks,
nothing outside the folder, times set exactly, folders' modes and times last, and the
members and bytes of all the chunks of an entry bounded together.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from assembler.archive.compress import DECOMPRESS_ERRORS, Writable, compressor, decompressed
from assembler.archive.extract import CHUNKS, Unpacker
from assembler.archive.tarread import DEFAULT_LIMITS, Limits
from assembler.errors import CacheError, InvalidArchive

BIG = 2 << 20  # a file this large is a chunk of its own
CHUNK_MAX = 8 << 20  # a chunk of small files ends once it holds this many bytes
SPREAD = 32  # about one path in SPREAD ends a chunk
_MODE_MASK = 0o1777  # no set-uid/set-gid bits from a cache


@dataclass(frozen=True)
class Entry:
    """One path of a folder: ``kind`` is ``dir``, ``file`` or ``link``."""

    rel: str
    kind: str
    size: int
    mtime_ns: int
    mode: int
    link: str = ""
    ino: int = 0
    ctime_ns: int = 0

    def identity(self) -> list[object]:
        """What tells this entry's bytes unchanged without reading them (ctime and inode:
        no tool sets them back)."""
        return [self.rel, self.kind, self.size, self.mtime_ns, self.mode, self.link, self.ino, self.ctime_ns]


def scan(folder: Path) -> list[Entry]:
    """Every folder, regular file and symlink under ``folder`` (others are left out), each
    folder before what it holds, names sorted. Raises OSError."""
    out: list[Entry] = []
    stack: list[tuple[str, str]] = [(str(folder), "")]
    while stack:
        path, prefix = stack.pop()
        with os.scandir(path) as it:
            names = sorted(it, key=lambda d: d.name)
        below: list[tuple[str, str]] = []
        for item in names:
            st = item.stat(follow_symlinks=False)
            rel = prefix + item.name
            mtime, mode = max(0, st.st_mtime_ns), stat.S_IMODE(st.st_mode) & _MODE_MASK
            ids = (st.st_ino, st.st_ctime_ns)
            if stat.S_ISDIR(st.st_mode):
                out.append(Entry(rel, "dir", 0, mtime, mode, "", *ids))
                below.append((item.path, rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                out.append(Entry(rel, "file", st.st_size, mtime, mode, "", *ids))
            elif stat.S_ISLNK(st.st_mode):
                out.append(Entry(rel, "link", 0, mtime, mode, os.readlink(item.path), *ids))
        stack.extend(reversed(below))
    return out


def evict(entries: Sequence[Entry], limit: int) -> tuple[list[Entry], list[Entry]]:
    """(what is kept, the files left out): the oldest files (by mtime) go until the
    regular files' bytes are at most ``limit``; folders and symlinks stay."""
    total = sum(e.size for e in entries if e.kind == "file")
    gone: set[str] = set()
    evicted: list[Entry] = []
    for e in sorted((e for e in entries if e.kind == "file"), key=lambda e: (e.mtime_ns, e.rel)):
        if total <= limit:
            break
        total -= e.size
        gone.add(e.rel)
        evicted.append(e)
    return [e for e in entries if e.rel not in gone], evicted


def chunks(entries: Sequence[Entry]) -> list[list[Entry]]:
    """``entries`` cut into chunks (see the module docstring)."""
    out: list[list[Entry]] = []
    current: list[Entry] = []
    held = 0
    for e in entries:
        if e.kind == "file" and e.size >= BIG:
            if current:
                out.append(current)
                current, held = [], 0
            out.append([e])
            continue
        current.append(e)
        held += e.size + 512
        if held >= CHUNK_MAX or zlib.crc32(e.rel.encode()) % SPREAD == 0:
            out.append(current)
            current, held = [], 0
    if current:
        out.append(current)
    return out


def _mtime_text(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


class _Sink:
    def __init__(self, inner: Writable) -> None:
        self.inner = inner

    def write(self, data: bytes | bytearray) -> int:
        self.inner.write(data)
        return len(data)


def write_chunk(folder: Path, entries: Sequence[Entry], sink: Writable) -> None:
    """The chunk of ``entries`` (read from ``folder``) as zstd-compressed tar bytes into
    ``sink``. Raises OSError (a file gone or shorter than scanned: the folder changed)."""
    comp = compressor("zstd", sink)
    with tarfile.open(fileobj=_Sink(comp), mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for e in entries:
            info = tarfile.TarInfo(e.rel)
            info.mode, info.uid, info.gid, info.uname, info.gname = e.mode, 0, 0, "", ""
            info.mtime = e.mtime_ns // 1_000_000_000
            info.pax_headers = {"mtime": _mtime_text(e.mtime_ns)}
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, e.link
                tar.addfile(info)
            else:
                info.size = e.size
                with open(folder / e.rel, "rb") as f:
                    tar.addfile(info, f)
    comp.finish()


class Unpacking:
    """Chunks written into the fresh folder ``dest``, one after another, by the one safe
    unpacker (:class:`assembler.archive.extract.Unpacker`, policy ``CHUNKS``): within
    ``limits`` for all of them together (members, and the files' bytes: ``--cache-max``);
    :meth:`finish` sets the folders' modes and times once every chunk is in. Each chunk
    must be verified before it is given here (its digest checked on a spool)."""

    def __init__(self, dest: Path, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self._unpacker = Unpacker(dest, policy=CHUNKS, limits=limits)

    @property
    def files(self) -> int:
        return self._unpacker.files

    @property
    def bytes(self) -> int:
        return self._unpacker.bytes

    def add(self, stream: BinaryIO, *, what: str = "compile cache chunk") -> None:
        """Unpack one zstd-compressed chunk from ``stream``. Raises CacheError for a chunk
        that does not unpack, UnsafePath for one that would write outside ``dest``."""
        try:
            with decompressed(stream, "zstd") as raw:
                self._unpacker.add(raw, what=what)
        except DECOMPRESS_ERRORS as e:
            raise CacheError(f"{what} does not unpack: {e}") from e
        except InvalidArchive as e:
            raise CacheError(f"a compile cache chunk does not unpack: {e}") from e

    def finish(self) -> None:
        """Folders' modes and times, deepest first (writing into a folder changes its time)."""
        try:
            self._unpacker.finish()
        finally:
            self._unpacker.close()

    def close(self) -> None:
        self._unpacker.close()

    def __enter__(self) -> Unpacking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def folder_is_empty(path: Path) -> bool:
    """True when ``path`` is absent or an empty folder."""
    try:
        with os.scandir(path) as it:
            return next(iter(it), None) is None
    except FileNotFoundError:
        return True
