"""The layers :mod:`assembler.archive.flatten` reads: a layer blob's tar members, in
archive order, with what opens each file's data; or a list of members (over- and underlays).

A blob is read by :mod:`assembler.archive.tarread`, the one reader of tars from elsewhere:
paths are cleaned by :func:`clean_path` (UnsafePath for ``..``; absolute paths are taken
relative to the root), a hard link that climbs out is refused the same way, and a damaged
or unbounded layer (what tarread refuses, the decompressors' errors) becomes InvalidImage
naming the layer and member; anything else is a bug and stays one.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import BinaryIO

from assembler.archive.compress import Compression, decompressed
from assembler.archive.layer import Member
from assembler.archive.tar import TarEntry, clean_path
from assembler.archive.tarread import data_of, reading
from assembler.errors import InvalidArchive, InvalidImage

DataOpener = Callable[[], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True)
class LayerSource:
    """One layer to flatten: how to open its blob (compressed or not) and its name in errors."""

    what: str
    open: DataOpener
    compression: Compression | None = None  # None: sniffed from the magic number


class _GuardedReader:
    """Turns a damaged layer's read errors into InvalidImage naming the layer and member."""

    def __init__(self, inner: BinaryIO, what: str, path: str) -> None:
        self._inner = inner
        self._what = what
        self._path = path

    def read(self, n: int = -1) -> bytes:
        try:
            return self._inner.read(n)
        except InvalidArchive as e:  # tarread's guard: what the data's read raised, named
            raise InvalidImage(str(e)) from e


def tar_members(src: LayerSource) -> Iterator[tuple[TarEntry, DataOpener | None]]:
    """Entries of a layer blob in archive order (root entries have path ``""``), read by the one reader of tars from
    elsewhere (:mod:`assembler.archive.tarread`: damage, bounds, sparse members); what it
    refuses is InvalidImage here, naming the layer (a layer is part of an image), and a
    member that climbs out stays UnsafePath."""
    with src.open() as raw, decompressed(raw, src.compression) as plain:
        try:
            with reading(plain, what=src.what) as (tf, entries):
                for entry, info in entries:
                    yield entry, (_extract_opener(tf, info, src.what, entry.path) if entry.kind == "file" else None)
        except InvalidArchive as e:
            raise InvalidImage(str(e), hint=e.hint) from e


def _extract_opener(tf: tarfile.TarFile, info: tarfile.TarInfo, what: str, path: str) -> DataOpener:
    def opener() -> AbstractContextManager[BinaryIO]:
        try:
            data = data_of(tf, info, what=what)
        except InvalidArchive as e:
            raise InvalidImage(str(e)) from e
        return nullcontext(_GuardedReader(data, what, path))  # type: ignore[arg-type]

    return opener


def member_list(members: Sequence[Member], what: str) -> Iterator[tuple[TarEntry, DataOpener | None]]:
    for entry, opener in members:
        path = clean_path(entry.path, what=f"{what} member")
        linkname = entry.linkname
        if entry.kind == "hardlink":
            linkname = clean_path(linkname, what=f"{what} hard link target of {entry.path!r}")
        yield replace(entry, path=path, linkname=linkname), opener
