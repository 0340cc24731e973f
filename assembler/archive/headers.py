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
dependency check to read, and is not read back for them. Given a :class:`TextKeeper` (the
SBOM's), it keeps what that reads of the few files it wants (package databases, Python
metadata) as they go by, so that a new layer is not streamed again for them either. Given
an :class:`ElfReader` (the dependency check's), it reads each ELF file's facts once the
writer has read the file: from the host file itself when the writer read one (it is
seekable, and only its headers are read), else from a spool of what went by (bounded in
memory, as the reader of the blob spools it); a layer of ``.so`` files (a pip layer of
torch) is then not decompressed again for them. A second :class:`ElfReader` (``gpu``: the
device code the GPU-arch labels name) reads each ELF file the same way, from the same
file or spool.

Entries are taken as a reader of the blob sees them: paths cleaned as
:func:`entry_from_tarinfo` cleans them, times as the header holds them.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol, cast

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
    """Which files' texts a reader of layers wants, and what it keeps of each."""

    def wanted(self, path: str) -> bool: ...

    def read(self, path: str, data: BinaryIO) -> str: ...


class ElfReader(Protocol):
    """What a reader of layers keeps of each ELF file (the dependency check's facts, the
    GPU code the labels name)."""

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
        self.kept = whole
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


def _each(reading: list[tuple[str, ElfReader]], stream: IO[bytes]) -> dict[str, Mapping[str, Any] | None]:
    """What each reader gives of the ELF file in ``stream``; a reader that fails is left out."""
    got: dict[str, Mapping[str, Any] | None] = {}
    for name, reader in reading:
        try:
            stream.seek(0)
            got[name] = reader.facts(stream)
        except Exception:  # that reader's facts are not known; the others' may be
            continue
    return got


class LayerHeaders:
    """The entries of one layer as written, or as read (metadata only: no file data is
    kept). ``data``: every file's data is shown (:meth:`data`), as a writer does; a reader
    of the headers alone says False, and :attr:`elf` is then None (not known)."""

    def __init__(
        self,
        *,
        data: bool = True,
        texts: TextKeeper | None = None,
        elf: ElfReader | None = None,
        gpu: ElfReader | None = None,
    ) -> None:
        self._entries: list[TarEntry] = []
        self.readable = True  # False: a reader refuses this layer (an unsafe path), so no facts
        self.elf: bool | None = False if data else None  # whether a file starts as an ELF file does
        self._heads: list[tuple[str, _Head, os.stat_result | None]] = []
        self._keeper = texts
        # What ``texts`` keeps of every file it wants (None: not known for every one of them).
        self.texts: dict[str, str] | None = {} if texts is not None and data else None
        self._readers = {name: r for name, r in (("elf", elf), ("gpu", gpu)) if r is not None}
        # What each ELF reader gives of every ELF file, by path (None: not known for every one).
        self._facts: dict[str, dict[str, Mapping[str, Any]] | None] = {
            name: {} if data else None for name in self._readers
        }
        self._path = ""  # the last entry added, as a reader sees its path
        self._size = 0  # and its size

    @property
    def elf_facts(self) -> dict[str, Mapping[str, Any]] | None:
        """The ``elf`` reader's facts of every ELF file, by path; None: not known for every one."""
        return self._facts.get("elf")

    @property
    def gpu_facts(self) -> dict[str, Mapping[str, Any]] | None:
        """The ``gpu`` reader's facts of every ELF file, by path; None: not known for every one."""
        return self._facts.get("gpu")

    def _reading(self) -> list[tuple[str, ElfReader]]:
        return [(name, r) for name, r in self._readers.items() if self._facts[name] is not None]

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
            self.texts = None
            self._facts = dict.fromkeys(self._facts)
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
        whole = self.texts is not None and self._keeper is not None and self._keeper.wanted(self._path)
        host, spool = None, None
        reading = self._reading()
        if reading:
            host = _host_file(data)
            if host is None or host.st_size != self._size or _recent(host):
                host, spool = None, reading[0][1].workdir
        head = _Head(data, whole=whole, spool=spool)
        self._heads.append((self._path, head, host))
        return cast(BinaryIO, head)

    def read(self) -> None:
        """The file whose data was handed out by :meth:`data` is written (its data is
        still open: a host file's ELF facts are read from it)."""
        path, head, host = self._heads.pop()
        if head.head == ELF_MAGIC:
            self.elf = True
            self._read_elf(path, head, host)
        else:
            for name, reader in self._reading():
                if reader.reads_inside(path, head.head):
                    self._facts[name] = None  # a wheel: its reader reads the blob
        if head.kept and self.texts is not None and self._keeper is not None:
            if head.whole is None:
                self.texts = None  # too big to keep here: the reader of the blob reads it
            else:
                self.texts[path] = self._keeper.read(path, io.BytesIO(head.whole))

    def _read_elf(self, path: str, head: _Head, host: os.stat_result | None) -> None:
        reading = self._reading()
        if not reading:
            if head.spool is not None:
                head.spool.close()
            return
        got: dict[str, Mapping[str, Any] | None] = {}
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
        for name, _ in reading:
            found = self._facts[name]
            if name not in got or found is None:
                self._facts[name] = None  # not known for every ELF file: the reader of the blob reads them
                continue
            facts = got[name]
            if facts is not None:  # as a reader's full scan records it: an ELF file it cannot parse is not listed
                found[path] = facts

    def close(self) -> None:
        """Let go of what a file whose writing failed left (its spool)."""
        for _, head, _ in self._heads:
            if head.spool is not None:
                head.spool.close()
        self._heads.clear()

    def index(self) -> LayerIndex:
        return LayerIndex.of(self._entries)

    def anchors(self) -> list[str]:
        return sorted(anchors(entry.path for entry in self._entries))

    def entries(self) -> list[EntryFact]:
        return [(entry.path, entry.kind, entry.linkname) for entry in self._entries]
