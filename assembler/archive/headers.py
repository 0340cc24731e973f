"""What a layer's headers tell, gathered while the layer is written.

A build needs three things of every new layer's headers: its folders and symlinks (the
view the next layer lands on, :class:`LayerIndex`), the parents it leaves unnamed
(:func:`anchors`, whether it must be fitted onto the image below) and every entry's path,
kind and link target (the dependency check's file list). Read back from the blob, each is
a pass that decompresses, hashes and parses the whole layer: seconds for a GiB of CUDA
libraries, three times over. The writer already holds every entry, so it hands each one
here as it goes (``write_layer(headers=...)``) and the facts are remembered before anyone
reads the blob. It also shows each file's first bytes (:meth:`LayerHeaders.data`): a layer
with no ELF file in it (model weights, configs, pure-Python packages) has no facts for the
dependency check to read, and is not read back for them.

Given a list of :class:`LayerObserver`, it shows each what it reads as the files go by,
and hands it what it read once the layer is written (:meth:`LayerHeaders.remember`), to be
kept as the memo a reader of the blob would record: a new layer is not streamed again for
it. The SBOM's observer (``reads = "texts"``, a :class:`TextKeeper`) keeps the few files it
wants (package databases, Python metadata), whole. The dependency check's and the GPU-arch
labels' (``reads = "elf"``, an :class:`ElfReader`) read each ELF file once the writer has
read it: from the host file itself when the writer read one (it is seekable, and only its
headers are read), else from one spool of what went by (bounded in memory, as the reader
of the blob spools it); a layer of ``.so`` files (a pip layer of torch) is then not
decompressed again for them. A new observer is one class and one entry in the list its
writers are given (:attr:`assembler.transports.context.Context.observers`).

Entries are taken as a reader of the blob sees them: paths cleaned as
:func:`entry_from_tarinfo` cleans them, times as the header holds them.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, Protocol, cast

from assembler.archive.tar import TarEntry, clean_path
from assembler.archive.view import LayerIndex, anchors
from assembler.errors import UnsafePath

EntryFact = tuple[str, str, str]  # path, kind, link target: what the dependency check lists
ELF_MAGIC = b"\x7fELF"  # how an ELF file begins (assembler.deps reads these files)


TEXT_LIMIT = 64 << 20  # a wanted file bigger than this is left to the reader of the blob
# A host file changed this close to now (ns) may change again within the same tick of a
# coarse file clock, unseen by stat: its bytes are taken as they went by, not read again.
# (The clock is this machine's; a file server's may differ, by less than this one hopes.)
RACY_NS = 2_000_000_000
_SPOOL_IN_MEMORY = 4 << 20  # an ELF file read from elsewhere than a host file: spooled, to disk past this


class TextKeeper(Protocol):
    """An observer that keeps the texts of the files it wants, whole (see :class:`LayerObserver`)."""

    @property
    def reads(self) -> Literal["texts"]: ...

    def wanted(self, path: str) -> bool:
        """Whether this file's bytes are kept, to be read once it is written."""
        ...

    def read(self, path: str, data: BinaryIO) -> Any:
        """What is kept of the wanted file ``path``, its bytes in ``data``."""
        ...

    def remember(self, found: Mapping[str, Any], diff_id: str) -> None:
        """Keep what was read of every wanted file of the layer ``diff_id``, by path."""
        ...


class ElfReader(Protocol):
    """An observer that reads each ELF file (the dependency check's facts, the GPU code the
    labels name; see :class:`LayerObserver`)."""

    @property
    def reads(self) -> Literal["elf"]: ...

    @property
    def workdir(self) -> Path:
        """Where a file that is not read from the host is spooled."""
        ...

    def facts(self, stream: IO[bytes]) -> Mapping[str, Any] | None:
        """The facts of the ELF file in ``stream`` (seekable, at its start), as the reader's
        memo holds them; None when it cannot be parsed."""
        ...

    def reads_inside(self, path: str, head: bytes) -> bool:
        """Whether the reader looks into this file, which is no ELF file (it begins with
        ``head``): a wheel of ELF files. Its facts are then left to the reader of the blob."""
        ...

    def remember(self, found: Mapping[str, Any], diff_id: str) -> None:
        """Keep the facts of every ELF file of the layer ``diff_id``, by path (those that
        could not be parsed left out, as a reader of the blob leaves them out)."""
        ...


LayerObserver = TextKeeper | ElfReader
"""One reader of a layer's files as the layer is written, which keeps what it read as the
memo a reader of the blob would record. ``reads`` says which files it is shown: the ones
it wants, whole ("texts"), or every ELF file ("elf")."""


def _host_file(data: object) -> os.stat_result | None:
    """The state of the host file ``data`` reads (a regular file), else None."""
    try:
        st = os.fstat(data.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def file_state(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What tells a file's bytes changed without reading them: device, inode, size, mtime
    and ctime (ns). Whatever writes a file moves its ctime, which no tool sets back."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _recent(st: os.stat_result) -> bool:
    return max(st.st_mtime_ns, st.st_ctime_ns) > time.time_ns() - RACY_NS


class _Head:
    """A file's data read through, its first bytes kept (a layer writer reads it once);
    with ``whole``, all of it (up to :data:`TEXT_LIMIT`: ``whole`` is then None); with
    ``spool``, an ELF file's bytes are spooled there as they go by."""

    def __init__(self, data: BinaryIO, *, whole: bool = False, spool: Path | None = None) -> None:
        self._data = data
        self.head = b""
        self.whole: bytearray | None = bytearray() if whole else None
        self._spool_dir = spool
        self.spool: IO[bytes] | None = None

    def _keep(self, chunk: bytes | memoryview) -> None:
        if self.spool is not None:
            self._spooled(chunk)
        elif len(self.head) < len(ELF_MAGIC):
            taken = len(ELF_MAGIC) - len(self.head)
            self.head += bytes(chunk[:taken])
            if self.head == ELF_MAGIC and self._spool_dir is not None:
                # Closed once the file is written (LayerHeaders.read); on disk it has no name.
                self.spool = tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=str(self._spool_dir))  # noqa: SIM115
                self._spooled(self.head)
                self._spooled(chunk[taken:])
        if self.whole is not None:
            self.whole += chunk
            if len(self.whole) > TEXT_LIMIT:
                self.whole = None

    def _spooled(self, chunk: bytes | memoryview) -> None:
        if self.spool is None:
            return
        try:
            self.spool.write(chunk)
        except OSError:  # a full disk: the spool is dropped, and the layer written all the same
            self.spool.close()
            self.spool = None

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._data.read(size)
        self._keep(chunk)
        return chunk

    def fileno(self) -> int:
        return int(self._data.fileno())

    def readinto(self, buffer: memoryview, /) -> int:
        readinto = getattr(self._data, "readinto", None)
        if readinto is None:
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            n = len(chunk)
        else:
            n = readinto(buffer) or 0
        self._keep(buffer[:n])
        return n


def _each(reading: list[tuple[int, ElfReader]], stream: IO[bytes]) -> dict[int, Mapping[str, Any] | None]:
    """What each reader gives of the ELF file in ``stream``; a reader that fails is left out."""
    got: dict[int, Mapping[str, Any] | None] = {}
    for at, reader in reading:
        try:
            stream.seek(0)
            got[at] = reader.facts(stream)
        except Exception:  # that reader's facts are not known; the others' may be
            continue
    return got


class LayerHeaders:
    """The entries of one layer as written, or as read (metadata only: no file data is
    kept), and what its ``observers`` read of its files. ``data``: every file's data is
    shown (:meth:`data`), as a writer does; a reader of the headers alone says False, and
    :attr:`elf` and what every observer read are then None (not known)."""

    def __init__(self, *, data: bool = True, observers: Sequence[LayerObserver] = ()) -> None:
        self._entries: list[TarEntry] = []
        self.readable = True  # False: a reader refuses this layer (an unsafe path), so no facts
        self.elf: bool | None = False if data else None  # whether a file starts as an ELF file does
        self._heads: list[tuple[str, _Head, os.stat_result | None, list[tuple[int, TextKeeper]]]] = []
        self._observers = tuple(observers)
        # What each observer read of every file it reads, by path (None: not known for every one).
        self._found: list[dict[str, Any] | None] = [{} if data else None for _ in self._observers]
        self._keepers: list[tuple[int, TextKeeper]] = [
            (at, o) for at, o in enumerate(self._observers) if o.reads == "texts"
        ]
        self._readers: list[tuple[int, ElfReader]] = [
            (at, o) for at, o in enumerate(self._observers) if o.reads == "elf"
        ]
        self._path = ""  # the last entry added, as a reader sees its path
        self._size = 0  # and its size

    def found(self, observer: LayerObserver) -> dict[str, Any] | None:
        """What ``observer`` read of every file it reads, by path; None: not known for every one."""
        return self._found[self._observers.index(observer)]

    def remember(self, diff_id: str) -> None:
        """Hand each observer what it read of the layer ``diff_id``, where it read every
        file it reads (else the reader of the blob reads them)."""
        if not self.readable:
            return
        for observer, found in zip(self._observers, self._found, strict=True):
            if found is not None:
                observer.remember(found, diff_id)

    def _reading(self) -> list[tuple[int, ElfReader]]:
        return [(at, r) for at, r in self._readers if self._found[at] is not None]

    def _keeping(self, path: str) -> list[tuple[int, TextKeeper]]:
        return [(at, k) for at, k in self._keepers if self._found[at] is not None and k.wanted(path)]

    def add(self, entry: TarEntry) -> None:
        """``entry``, just written to the layer."""
        if not self.readable:
            return
        try:
            path = clean_path(entry.path)
            link = clean_path(entry.linkname) if entry.kind == "hardlink" else entry.linkname
        except UnsafePath:
            self.readable = False  # reading the blob back raises: leave that to the reader
            self._entries.clear()
            self._found = [None for _ in self._observers]
            return
        mtime = max(0, int(entry.mtime))
        if path != entry.path or link != entry.linkname or mtime != entry.mtime or entry.mode & ~0o7777:
            entry = replace(entry, path=path, linkname=link, mtime=mtime, mode=entry.mode & 0o7777)
        if path:  # the root entry: no reader lists it
            self._entries.append(entry)
        self._path = path
        self._size = entry.size

    def data(self, data: BinaryIO) -> BinaryIO:
        """The data of the file just added, to be read through by the writer: its first
        bytes tell whether it is an ELF file."""
        keeping = self._keeping(self._path)
        host, spool = None, None
        reading = self._reading()
        if reading:
            host = _host_file(data)
            if host is None or host.st_size != self._size or _recent(host):
                host, spool = None, reading[0][1].workdir
        head = _Head(data, whole=bool(keeping), spool=spool)
        self._heads.append((self._path, head, host, keeping))
        return cast(BinaryIO, head)

    def read(self) -> None:
        """The file whose data was handed out by :meth:`data` is written (its data is
        still open: a host file's ELF facts are read from it)."""
        path, head, host, keeping = self._heads.pop()
        if head.head == ELF_MAGIC:
            self.elf = True
            self._read_elf(path, head, host)
        else:
            for at, reader in self._reading():
                if reader.reads_inside(path, head.head):
                    self._found[at] = None  # a wheel: its reader reads the blob
        for at, keeper in keeping:
            found = self._found[at]
            if found is None:
                continue
            if head.whole is None:
                self._found[at] = None  # too big to keep here: the reader of the blob reads it
            else:
                found[path] = keeper.read(path, io.BytesIO(head.whole))

    def _read_elf(self, path: str, head: _Head, host: os.stat_result | None) -> None:
        reading = self._reading()
        if not reading:
            if head.spool is not None:
                head.spool.close()
            return
        got: dict[int, Mapping[str, Any] | None] = {}
        try:
            if head.spool is not None:
                with head.spool as spool:
                    got = _each(reading, spool)
            elif host is not None and file_state(host) == file_state(os.fstat(head.fileno())):
                # Only the file's headers and the sections read are read, through a buffer of its own.
                with open(head.fileno(), "rb", closefd=False) as again:
                    got = _each(reading, again)
                if file_state(host) != file_state(os.fstat(head.fileno())):
                    got = {}  # it changed while its facts were read
            # else: the host file changed while it was read, or its spool was dropped
        except Exception:  # whatever fails here, the reader of the blob meets (and reports) too
            got = {}
        for at, _ in reading:
            found = self._found[at]
            if at not in got or found is None:
                self._found[at] = None  # not known for every ELF file: the reader of the blob reads them
                continue
            facts = got[at]
            if facts is not None:  # as a reader's full scan records it: an ELF file it cannot parse is not listed
                found[path] = facts

    def close(self) -> None:
        """Let go of what a file whose writing failed left (its spool)."""
        for _, head, _, _ in self._heads:
            if head.spool is not None:
                head.spool.close()
        self._heads.clear()

    def index(self) -> LayerIndex:
        return LayerIndex.of(self._entries)

    def anchors(self) -> list[str]:
        return sorted(anchors(entry.path for entry in self._entries))

    def entries(self) -> list[EntryFact]:
        return [(entry.path, entry.kind, entry.linkname) for entry in self._entries]
