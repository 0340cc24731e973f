"""The layers :mod:`assembler.archive.flatten` reads: a layer blob's tar members, in
archive order, with what opens each file's data; or a list of members (over- and underlays).

Paths are cleaned by :func:`clean_path` (UnsafePath for ``..``; absolute paths are taken
relative to the root); a hard link that climbs out is refused the same way. A damaged
layer (tarfile's errors, the decompressors') becomes InvalidImage naming the layer and
member; anything else is a bug and stays one.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import BinaryIO

from assembler.archive.compress import DECOMPRESS_ERRORS, Compression, decompressed
from assembler.archive.layer import Member
from assembler.archive.tar import TarEntry, clean_path, entry_from_tarinfo
from assembler.errors import InvalidImage

DataOpener = Callable[[], AbstractContextManager[BinaryIO]]
_READ_BUFFER = 256 << 10  # tarfile's stream buffer: bigger ones cost more in re-slicing than they save
# What reading a damaged layer raises: tarfile's own errors, the decompressors', and
# ValueError/OverflowError from tarfile for a header with an absurd number in it.
_READ_ERRORS: tuple[type[Exception], ...] = (tarfile.TarError, *DECOMPRESS_ERRORS)  # reading member data
_DAMAGED: tuple[type[Exception], ...] = (*_READ_ERRORS, ValueError, OverflowError)  # reading headers


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
        except _READ_ERRORS as e:
            raise InvalidImage(f"{self._what}: cannot read the data of {self._path!r}: {e}") from e


def tar_members(src: LayerSource) -> Iterator[tuple[TarEntry, DataOpener | None]]:
    """Entries of a layer blob in archive order (root entries have path ``""``)."""
    with src.open() as raw, decompressed(raw, src.compression) as plain:
        try:
            tf = tarfile.open(fileobj=plain, mode="r|", bufsize=_READ_BUFFER, errorlevel=2)  # noqa: SIM115
        except _DAMAGED as e:
            raise InvalidImage(f"{src.what}: not a tar layer ({e})") from e
        with tf:
            members = iter(tf)
            while True:
                try:
                    info = next(members)
                except StopIteration:
                    return
                except _DAMAGED as e:
                    raise InvalidImage(f"{src.what}: damaged layer ({e})") from e
                if info.type == tarfile.GNUTYPE_SPARSE or getattr(info, "sparse", None) is not None:
                    raise InvalidImage(f"{src.what}: sparse member {info.name!r} is not supported")
                entry = entry_from_tarinfo(info, what=src.what)  # UnsafePath for '..'
                if entry is None:
                    continue
                opener: DataOpener | None = None
                if entry.kind == "file":
                    opener = _extract_opener(tf, info, src.what, entry.path)
                yield entry, opener


def _extract_opener(tf: tarfile.TarFile, info: tarfile.TarInfo, what: str, path: str) -> DataOpener:
    def opener() -> AbstractContextManager[BinaryIO]:
        data = tf.extractfile(info)
        if data is None:
            raise InvalidImage(f"{what}: cannot read member {path!r}")
        return nullcontext(_GuardedReader(data, what, path))  # type: ignore[arg-type]

    return opener


def member_list(members: Sequence[Member], what: str) -> Iterator[tuple[TarEntry, DataOpener | None]]:
    for entry, opener in members:
        path = clean_path(entry.path, what=f"{what} member")
        linkname = entry.linkname
        if entry.kind == "hardlink":
            linkname = clean_path(linkname, what=f"{what} hard link target of {entry.path!r}")
        yield replace(entry, path=path, linkname=linkname), opener
