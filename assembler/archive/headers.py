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
metadata) as they go by, so that a new layer is not streamed again for them either.

Entries are taken as a reader of the blob sees them: paths cleaned as
:func:`entry_from_tarinfo` cleans them, times as the header holds them.
"""

from __future__ import annotations

import io
from dataclasses import replace
from typing import BinaryIO, Protocol, cast

from assembler.archive.tar import TarEntry, clean_path
from assembler.archive.view import LayerIndex, anchors
from assembler.errors import UnsafePath

EntryFact = tuple[str, str, str]  # path, kind, link target: what the dependency check lists
ELF_MAGIC = b"\x7fELF"  # how an ELF file begins (assembler.deps reads these files)


TEXT_LIMIT = 64 << 20  # a wanted file bigger than this is left to the reader of the blob


class TextKeeper(Protocol):
    """Which files' texts a reader of layers wants, and what it keeps of each."""

    def wanted(self, path: str) -> bool: ...

    def read(self, path: str, data: BinaryIO) -> str: ...


class _Head:
    """A file's data read through, its first bytes kept (a layer writer reads it once);
    with ``whole``, all of it (up to :data:`TEXT_LIMIT`: ``whole`` is then None)."""

    def __init__(self, data: BinaryIO, *, whole: bool = False) -> None:
        self._data = data
        self.head = b""
        self.whole: bytearray | None = bytearray() if whole else None
        self.kept = whole

    def _keep(self, chunk: bytes | memoryview) -> None:
        if len(self.head) < len(ELF_MAGIC):
            self.head += bytes(chunk[: len(ELF_MAGIC) - len(self.head)])
        if self.whole is not None:
            self.whole += chunk
            if len(self.whole) > TEXT_LIMIT:
                self.whole = None

    def read(self, size: int = -1, /) -> bytes:
        chunk = self._data.read(size)
        self._keep(chunk)
        return chunk

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


class LayerHeaders:
    """The entries of one layer as written, or as read (metadata only: no file data is
    kept). ``data``: every file's data is shown (:meth:`data`), as a writer does; a reader
    of the headers alone says False, and :attr:`elf` is then None (not known)."""

    def __init__(self, *, data: bool = True, texts: TextKeeper | None = None) -> None:
        self._entries: list[TarEntry] = []
        self.readable = True  # False: a reader refuses this layer (an unsafe path), so no facts
        self.elf: bool | None = False if data else None  # whether a file starts as an ELF file does
        self._heads: list[tuple[str, _Head]] = []
        self._keeper = texts
        # What ``texts`` keeps of every file it wants (None: not known for every one of them).
        self.texts: dict[str, str] | None = {} if texts is not None and data else None
        self._path = ""  # the last entry added, as a reader sees its path

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
            return
        mtime = max(0, int(entry.mtime))
        if path != entry.path or link != entry.linkname or mtime != entry.mtime or entry.mode & ~0o7777:
            entry = replace(entry, path=path, linkname=link, mtime=mtime, mode=entry.mode & 0o7777)
        if path:  # the root entry: no reader lists it
            self._entries.append(entry)
        self._path = path

    def data(self, data: BinaryIO) -> BinaryIO:
        """The data of the file just added, to be read through by the writer: its first
        bytes tell whether it is an ELF file."""
        whole = self.texts is not None and self._keeper is not None and self._keeper.wanted(self._path)
        head = _Head(data, whole=whole)
        self._heads.append((self._path, head))
        return cast(BinaryIO, head)

    def read(self) -> None:
        """The file whose data was handed out by :meth:`data` is written."""
        path, head = self._heads.pop()
        if head.head == ELF_MAGIC:
            self.elf = True
        if head.kept and self.texts is not None and self._keeper is not None:
            if head.whole is None:
                self.texts = None  # too big to keep here: the reader of the blob reads it
            else:
                self.texts[path] = self._keeper.read(path, io.BytesIO(head.whole))

    def index(self) -> LayerIndex:
        return LayerIndex.of(self._entries)

    def anchors(self) -> list[str]:
        return sorted(anchors(entry.path for entry in self._entries))

    def entries(self) -> list[EntryFact]:
        return [(entry.path, entry.kind, entry.linkname) for entry in self._entries]
