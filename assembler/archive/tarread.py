"""Tar archives from elsewhere, read safely: the one reader of every tar this project did
not just write itself (base layers, ``rootfs:`` and ``url:`` tarballs, source archives,
compile-cache chunks, artifacts unpacked for a step).

:mod:`tarfile` parses the headers; :class:`_CheckedInfo` (its ``tarinfo`` class) refuses
what tarfile would take quietly:

- a header with a bad checksum, or cut short, after the first one: tarfile takes it as the
  end of the archive and drops every member after it (GNU tar reports an error);
- a GNU long name or PAX header bigger than :attr:`Limits.header` (tarfile reads it whole
  into memory: a header claiming a TiB is a MemoryError);
- sparse members, GNU or PAX: their holes unpack to zeros that no bound on the archive's
  own bytes counted (a 10 KiB tar holding a 2 GiB file).

:func:`members` then checks each member as :func:`assembler.archive.tar.entry_from_tarinfo`
turns it into a :class:`TarEntry`: numbers that are not numbers (a PAX ``mtime`` of
``nan``), paths longer than the kernel opens (``PATH_MAX``) or deeper than
:attr:`Limits.depth`, more members than :attr:`Limits.members`, and more bytes declared by
the regular files than :attr:`Limits.bytes`. Everything it refuses is
:class:`InvalidArchive` (exit 2) naming the archive and the member; a member that climbs
out of the root is :class:`UnsafePath`, as :func:`clean_path` says.
"""

from __future__ import annotations

import math
import os
import tarfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Protocol, cast

from assembler.archive.compress import DECOMPRESS_ERRORS
from assembler.archive.tar import TarEntry, entry_from_tarinfo
from assembler.errors import InputError, InvalidArchive

PATH_MAX = 4096  # Linux's PATH_MAX: a longer path cannot be opened in one call in the container
_MAX_EXTENSIONS = 16  # GNU long names and PAX headers before one member (GNU tar writes 3 at most)
_COPY_CHUNK = 1 << 20
_READ_BUFFER = 256 << 10  # tarfile's stream buffer: bigger ones cost more in re-slicing than they save


@dataclass(frozen=True)
class Limits:
    """How much of an archive is read before it is refused.

    ``members``: entries (of any kind); ``bytes``: what its regular files declare, in all
    (None: no bound but the archive's own size, for a tar on disk, whose members' data
    must be there); ``header``: one GNU long name or PAX header; ``path``: a member's path
    or link target, in bytes; ``depth``: a path's components. ``hint``: how to raise the
    bound on bytes, for the error."""

    members: int = 1 << 21
    bytes: int | None = None
    header: int = 1 << 20
    path: int = PATH_MAX
    depth: int = 1024
    hint: str | None = None


DEFAULT_LIMITS = Limits()


class _Damaged(Exception):
    """A header tarfile would end the archive at, or refuses no better than with a
    MemoryError. Not a :class:`tarfile.HeaderError`: ``TarFile.next`` passes it up."""


class _CheckedInfo(tarfile.TarInfo):
    """tarfile's member, with the checks of the module docstring. ``_limits`` is set on
    the class made for each archive (:func:`_info_class`)."""

    _limits = DEFAULT_LIMITS

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Any:
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as e:
            # The end of the archive (a zero block, or nothing more to read) stays the end;
            # a bad checksum, a number field that is no number, a block cut short do not.
            if type(e).__name__ in ("EOFHeaderError", "EmptyHeaderError"):
                raise
            raise _Damaged(f"damaged header ({e})") from None

    def _proc_gnulong(self, tf: tarfile.TarFile) -> Any:
        if not 0 <= self.size <= self._limits.header:
            raise _Damaged(f"a GNU long name or link of {self.size} bytes (at most {self._limits.header} are read)")
        return self._chained(tf, super()._proc_gnulong)  # type: ignore[misc]

    def _proc_pax(self, tf: tarfile.TarFile) -> Any:
        if not 0 <= self.size <= self._limits.header:
            raise _Damaged(f"a PAX header of {self.size} bytes (at most {self._limits.header} are read)")
        return self._chained(tf, super()._proc_pax)  # type: ignore[misc]

    @staticmethod
    def _chained(tf: tarfile.TarFile, proc: Callable[[tarfile.TarFile], Any]) -> Any:
        """``proc``, which reads the member's next header (recursively, in tarfile): a member
        has a few extension headers at most (a long name, a long link, a PAX header)."""
        depth = getattr(tf, "_assemble_headers", 0)
        if depth >= _MAX_EXTENSIONS:
            raise _Damaged(f"more than {_MAX_EXTENSIONS} extension headers before one member")
        tf._assemble_headers = depth + 1  # type: ignore[attr-defined]
        try:
            return proc(tf)
        finally:
            tf._assemble_headers = depth  # type: ignore[attr-defined]

    def _proc_sparse(self, tf: tarfile.TarFile) -> Any:
        raise _Damaged(f"sparse member {self.name!r} (GNU sparse files are not unpacked)")

    def _sparse(self, *_: object) -> None:
        raise _Damaged("a PAX sparse member (GNU.sparse records: sparse files are not unpacked)")

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _sparse


def _info_class(limits: Limits) -> type[tarfile.TarInfo]:
    return type("_CheckedInfo", (_CheckedInfo,), {"_limits": limits})


def open_tar(fileobj: IO[bytes], *, stream: bool, limits: Limits = DEFAULT_LIMITS) -> tarfile.TarFile:
    """``fileobj``'s tar, read through the checks here: as a stream (members in order, each
    one's data read before the next) or, ``stream=False``, from a seekable file (members
    read in any order). Raises what :func:`members` turns into InvalidArchive."""
    if stream:
        return tarfile.open(fileobj=fileobj, mode="r|", bufsize=_READ_BUFFER, errorlevel=2, tarinfo=_info_class(limits))
    return tarfile.open(fileobj=fileobj, mode="r:", errorlevel=2, tarinfo=_info_class(limits))


# What tarfile and the decompressors raise for damaged input: their errors, ours above,
# ValueError/OverflowError for absurd numbers, EOFError for data cut short, and OSError for
# a seek past the end of a file (a member's size pointing past it).
DAMAGE: tuple[type[Exception], ...] = (
    _Damaged,
    tarfile.TarError,
    EOFError,
    ValueError,
    OverflowError,
    OSError,
    *DECOMPRESS_ERRORS,
)


class _Checks:
    """The running counts of members against :class:`Limits` (from ``counted``: members
    and bytes of earlier archives bounded together with this one)."""

    def __init__(self, what: str, limits: Limits, counted: tuple[int, int]) -> None:
        self.what = what
        self.limits = limits
        self.count, self.bytes = counted

    def entry(self, info: tarfile.TarInfo) -> TarEntry | None:
        limits, name = self.limits, info.name
        self.count += 1
        if self.count > limits.members:
            raise InvalidArchive(f"{self.what}: more than {limits.members} members (at {name!r})")
        for label, value in (("path", name), ("link target", info.linkname)):
            size = len(value.encode("utf-8", "surrogateescape"))
            if size > limits.path:
                raise InvalidArchive(f"{self.what}: member {name[:200]!r}...: its {label} is {size} bytes long")
        if not isinstance(info.mtime, int) and not math.isfinite(info.mtime):
            raise InvalidArchive(f"{self.what}: member {name!r} has the modification time {info.mtime!r}")
        for field in ("uid", "gid", "mode", "devmajor", "devminor"):
            if getattr(info, field) < 0:
                raise InvalidArchive(f"{self.what}: member {name!r} has the {field} {getattr(info, field)}")
        entry = entry_from_tarinfo(info, what=self.what)  # UnsafePath for '..'; a negative size
        if entry is not None and entry.path.count("/") >= limits.depth:
            raise InvalidArchive(f"{self.what}: member {name[:200]!r}...: more than {limits.depth} folders deep")
        if entry is not None and entry.kind == "file":
            self.bytes += entry.size
            if limits.bytes is not None and self.bytes > limits.bytes:
                raise InvalidArchive(
                    f"{self.what}: its files hold more than {limits.bytes} bytes (at {name!r}): "
                    "a decompression bomb, or more than this archive may unpack to",
                    hint=limits.hint,
                )
        return entry


Members = Iterator[tuple[TarEntry, tarfile.TarInfo]]


def members(
    tf: tarfile.TarFile, *, what: str, limits: Limits = DEFAULT_LIMITS, counted: tuple[int, int] = (0, 0)
) -> Members:
    """The members of ``tf`` (opened by :func:`open_tar` with the same ``limits``) as
    entries, in archive order (members tarfile has no kind for are left out; the root's
    entry has the path ``""``). ``counted``: the members and files' bytes that earlier
    archives bounded together with this one held. Raises InvalidArchive for damage,
    naming the member it came after or at."""
    checks = _Checks(what, limits, counted)
    last = ""
    it = iter(tf)
    while True:
        try:
            info = next(it)
        except StopIteration:
            return
        except DAMAGE as e:
            after = f" after member {last!r}" if last else ""
            raise InvalidArchive(f"{what}: damaged tar archive{after}: {_text(e)}") from None
        last = info.name
        entry = checks.entry(info)
        if entry is not None:
            yield entry, info


def _text(e: Exception) -> str:
    if isinstance(e, OSError) and not isinstance(e, EOFError) and e.errno is not None:
        return "a member's size points past the end of the archive"
    return str(e) or type(e).__name__


class _GuardedData:
    """A member's data; a read that fails is InvalidArchive naming the archive and member."""

    def __init__(self, inner: IO[bytes], what: str, name: str) -> None:
        self._inner = inner
        self._what = what
        self._name = name

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._inner.read(n)
        except DAMAGE as e:
            raise InvalidArchive(f"{self._what}: cannot read the data of member {self._name!r}: {_text(e)}") from e

    def readinto(self, buffer: Any, /) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> _GuardedData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def data_of(tf: tarfile.TarFile, info: tarfile.TarInfo, *, what: str) -> BinaryIO:
    """The data of the regular file ``info`` (read through a guard: see :class:`_GuardedData`)."""
    try:
        data = tf.extractfile(info)
    except DAMAGE as e:
        raise InvalidArchive(f"{what}: cannot read the data of member {info.name!r}: {_text(e)}") from e
    if data is None:
        raise InvalidArchive(f"{what}: member {info.name!r} has no data to read")
    return _GuardedData(data, what, info.name)  # type: ignore[return-value]


def opener(tf: tarfile.TarFile, info: tarfile.TarInfo, *, what: str) -> Callable[[], AbstractContextManager[BinaryIO]]:
    """What opens the data of the regular file ``info`` when a layer writer wants it."""
    return lambda: cast(AbstractContextManager[BinaryIO], data_of(tf, info, what=what))


@contextmanager
def reading(
    fileobj: IO[bytes],
    *,
    what: str,
    stream: bool = True,
    limits: Limits = DEFAULT_LIMITS,
    counted: tuple[int, int] = (0, 0),
) -> Iterator[tuple[tarfile.TarFile, Members]]:
    """The tar of ``fileobj`` opened and its checked members (see :func:`members`), for a
    ``with``: InvalidArchive when not even its first header reads."""
    try:
        tf = open_tar(fileobj, stream=stream, limits=limits)
    except DAMAGE as e:
        raise InvalidArchive(f"{what}: not a readable tar archive ({_text(e)})") from None
    with tf:
        yield tf, members(tf, what=what, limits=limits, counted=counted)


# A compressed archive (a rootfs: or url: tarball, a source archive) may unpack to this
# many times its size, at least MIN_UNPACK bytes: real ones stay far below, a "zip bomb"
# does not. ASSEMBLE_ROOTFS_MAX_BYTES sets it (the name it had when only rootfs: had it).
MAX_RATIO = 32
MIN_UNPACK = 1 << 30
UNPACK_HINT = "set ASSEMBLE_ROOTFS_MAX_BYTES to a larger number of bytes if this archive is genuine"


def unpack_limit(compressed: int) -> int:
    """How many bytes an archive of ``compressed`` bytes may unpack to. Raises InputError
    for an ASSEMBLE_ROOTFS_MAX_BYTES that is no number."""
    env = os.environ.get("ASSEMBLE_ROOTFS_MAX_BYTES", "").strip()
    if env:
        if not env.isdigit():
            raise InputError(f"ASSEMBLE_ROOTFS_MAX_BYTES must be a number of bytes, got {env!r}")
        return int(env)
    return max(MIN_UNPACK, MAX_RATIO * compressed)


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def copy_bounded(stream: Readable, out: BinaryIO, limit: int, what: str) -> None:
    """``stream`` into ``out``; InputError once more than ``limit`` bytes came."""
    written = 0
    while chunk := stream.read(_COPY_CHUNK):
        written += len(chunk)
        if written > limit:
            raise InputError(f"{what}: unpacks to more than {limit} bytes (a decompression bomb?)", hint=UNPACK_HINT)
        out.write(chunk)
