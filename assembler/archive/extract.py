"""Unpacking tars from elsewhere into a folder, safely: the one path by which artifacts
mounted into build containers, downloaded source archives and compile-cache chunks land
on disk (and by which ``referrers --save`` writes its files: :func:`write_new`).

The archive is read by :mod:`assembler.archive.tarread` (damage, bounds, clean paths).
Every member is then written through the folder's own descriptors, so nothing lands
outside it whatever the archive or the folder holds:

- each parent folder is opened from the one above it with ``O_NOFOLLOW | O_DIRECTORY``:
  a symlink or a file on the way is refused (UnsafePath), whether the archive made it,
  an earlier archive into the same folder did, or it was there before;
- a file is created with ``O_EXCL | O_NOFOLLOW``; a member onto an existing entry
  replaces it without following it (a folder stays a folder and takes the member's mode;
  a non-folder is removed first), and replacing a folder with anything else is refused;
- folders' modes and times are set last, deepest first, through a descriptor of the
  folder itself, never through a link;
- hard links point at regular files already unpacked in the folder.

Owners are not restored (the files belong to whoever unpacks) and set-uid/set-gid bits
are dropped. What else differs between uses is a :class:`Policy`.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from assembler.archive.tar import TarEntry, clean_path
from assembler.archive.tarread import DEFAULT_LIMITS, Limits, data_of, reading
from assembler.errors import InputError, InvalidArchive, UnsafePath

_CHUNK = 1 << 20
_MODE_MASK = 0o1777  # no set-uid/set-gid bits from elsewhere
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FOLDERS = 64  # folder descriptors kept open between members (most archives go folder by folder)
_PAX_TIME = re.compile(r"-?[0-9]{1,20}(\.[0-9]+)?")
# What reading a damaged zip member raises: zipfile's errors, zlib's and the other
# decompressors', and NotImplementedError/RuntimeError for a method or an encryption it lacks.
_ZIP_DAMAGE: tuple[type[Exception], ...] = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


@dataclass(frozen=True)
class Policy:
    """What an unpacking does beyond the rules of the module docstring.

    ``strip``: leading path components dropped (``tar --strip-components``); ``times``:
    each member gets its modification time, to the nanosecond (a PAX ``mtime``), else the
    files' times are when they were written; ``others``: devices and fifos are refused
    (True) or skipped; ``hard_links``: hard links are made, or refused; ``file_bits`` and
    ``dir_bits``: permission bits added to every file's and folder's mode (whoever
    unpacks must be able to read the files and to go into and write the folders)."""

    strip: int = 0
    times: bool = False
    others: bool = False
    hard_links: bool = True
    file_bits: int = 0o400
    dir_bits: int = 0o700


# Compile-cache chunks: build trees whose tools decide from mtimes; only files, folders and symlinks.
CHUNKS = Policy(times=True, others=True, hard_links=False, file_bits=0, dir_bits=stat.S_IWUSR | stat.S_IXUSR)


class _ZipData:
    """A zip member's data, no more than its declared size; a damaged one is InvalidArchive."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> None:
        self._what = f"{what}: member {info.filename!r}"
        self._left = info.file_size
        try:
            self._data = zf.open(info)
        except _ZIP_DAMAGE as e:
            raise InvalidArchive(f"{self._what} cannot be read ({e})") from e

    def read(self, n: int = -1, /) -> bytes:
        try:
            data = self._data.read(min(n, self._left + 1) if n >= 0 else self._left + 1)
        except _ZIP_DAMAGE as e:
            raise InvalidArchive(f"{self._what} cannot be read ({e})") from e
        self._left -= len(data)
        if self._left < 0:
            raise InvalidArchive(f"{self._what} holds more than the size it declares")
        return data

    def __enter__(self) -> _ZipData:
        return self

    def __exit__(self, *exc: object) -> None:
        self._data.close()


class Unpacker:
    """Archives unpacked one after another into the folder ``dest`` (made if absent), within
    one :class:`Limits` for all of them (members and the files' bytes); :meth:`finish` sets
    the folders' modes and times. Use it in a ``with``: the folder descriptors are closed."""

    def __init__(self, dest: Path, *, policy: Policy = Policy(), limits: Limits = DEFAULT_LIMITS) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        self.policy = policy
        self.limits = limits
        self.files = 0
        self.bytes = 0
        self.members = 0
        self._root = os.open(dest, _DIR)
        self._open: OrderedDict[str, int] = OrderedDict()  # a folder's path -> its descriptor
        self._evicted: list[int] = []  # descriptors out of _open a member being written may still use
        self._folders: dict[str, tuple[int, int | None]] = {}  # path -> mode, mtime (ns) to set last

    def __enter__(self) -> Unpacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._close_evicted()
        for fd in self._open.values():
            os.close(fd)
        self._open.clear()
        if self._root >= 0:
            os.close(self._root)
            self._root = -1

    def add(self, stream: IO[bytes], *, what: str) -> int:
        """Unpack the uncompressed tar ``stream``; the number of members written. Raises
        InvalidArchive, UnsafePath."""
        count = 0
        counted = (self.members, self.bytes)
        with reading(stream, what=what, limits=self.limits, counted=counted) as (tf, entries):
            for entry, info in entries:
                self.members += 1
                parts = entry.path.split("/")[self.policy.strip :] if entry.path else []
                try:
                    if parts and self._member(tf, info, entry, parts, what):
                        count += 1
                finally:
                    self._close_evicted()
        return count

    def _close_evicted(self) -> None:
        for fd in self._evicted:
            os.close(fd)
        self._evicted.clear()

    def _member(self, tf: tarfile.TarFile, info: tarfile.TarInfo, entry: TarEntry, parts: list[str], what: str) -> bool:
        if entry.kind in ("char", "block", "fifo") or (entry.kind == "hardlink" and not self.policy.hard_links):
            if self.policy.others:
                raise UnsafePath(f"{what}: member {entry.path!r} is a {entry.kind}: only files, folders and symlinks")
            return False
        mtime = _mtime_ns(info, what) if self.policy.times else None
        if entry.kind == "dir":
            self._make_folder(parts, entry.mode, mtime, what, entry.path)
            return True
        parent = self._folder(parts[:-1], what, entry.path)
        name = parts[-1]
        self._clear(parent, name, "/".join(parts), what, keep_folder=False)
        if entry.kind == "file":
            self._file(parent, name, data_of(tf, info, what=what), entry.mode, mtime)
            self.bytes += entry.size
        elif entry.kind == "symlink":
            os.symlink(entry.linkname, name, dir_fd=parent)
            if mtime is not None:
                os.utime(name, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)
        else:
            self._hard_link(parent, name, entry, what)
        return True

    def add_zip(self, zf: zipfile.ZipFile, *, what: str) -> int:
        """Unpack the zip archive ``zf`` (its files and folders; a symlink entry becomes the
        file :mod:`zipfile` makes of it) within the same limits: the sizes its entries
        declare are counted before anything is written, and no file's data may run past
        what it declared. The number of members written. Raises InvalidArchive, UnsafePath."""
        infos = zf.infolist()
        declared = sum(info.file_size for info in infos)
        if self.members + len(infos) > self.limits.members:
            raise InvalidArchive(f"{what}: more than {self.limits.members} members")
        if self.limits.bytes is not None and self.bytes + declared > self.limits.bytes:
            raise InvalidArchive(
                f"{what}: its files hold more than {self.limits.bytes} bytes ({declared})", hint=self.limits.hint
            )
        count = 0
        for info in infos:
            self.members += 1
            path = clean_path(info.filename, what=f"{what} member")
            parts = path.split("/")[self.policy.strip :] if path else []
            if not parts:
                continue
            mode = (info.external_attr >> 16) if info.create_system == 3 else 0  # 3: made on Unix
            try:
                if info.is_dir():
                    self._make_folder(parts, mode or 0o755, None, what, path)
                else:
                    parent = self._folder(parts[:-1], what, path)
                    self._clear(parent, parts[-1], "/".join(parts), what, keep_folder=False)
                    data = _ZipData(zf, info, what)
                    self._file(parent, parts[-1], data, mode or 0o644, None)  # type: ignore[arg-type]
                    self.bytes += info.file_size
            finally:
                self._close_evicted()
            count += 1
        return count

    def _make_folder(self, parts: list[str], mode: int, mtime: int | None, what: str, member: str) -> None:
        parent = self._folder(parts[:-1], what, member)
        if not self._clear(parent, parts[-1], "/".join(parts), what, keep_folder=True):
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
        self._folders["/".join(parts)] = ((mode & _MODE_MASK) | self.policy.dir_bits, mtime)

    def _file(self, parent: int, name: str, data: BinaryIO, mode: int, mtime: int | None) -> None:
        fd = os.open(name, _NEW_FILE, 0o600, dir_fd=parent)
        with data, open(fd, "wb") as out:
            while chunk := data.read(_CHUNK):
                out.write(chunk)
            out.flush()
            os.fchmod(fd, (mode & _MODE_MASK) | self.policy.file_bits)
            self.files += 1
            if mtime is not None:
                os.utime(fd, ns=(mtime, mtime))

    def _hard_link(self, parent: int, name: str, entry: TarEntry, what: str) -> None:
        parts = entry.linkname.split("/")[self.policy.strip :]
        refused = UnsafePath(f"{what}: hard link {entry.path!r} points at {entry.linkname!r}, not an unpacked file")
        if not parts:
            raise refused
        try:
            source = self._folder(parts[:-1], what, entry.path, make=False)
            st = os.stat(parts[-1], dir_fd=source, follow_symlinks=False)
        except (FileNotFoundError, UnsafePath):
            raise refused from None
        if not stat.S_ISREG(st.st_mode):
            raise refused
        os.link(parts[-1], name, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)

    def _clear(self, parent: int, name: str, path: str, what: str, *, keep_folder: bool) -> bool:
        """Make room for ``name`` in ``parent``: whether a folder is there (and stays)."""
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_folder:
                return True
            raise UnsafePath(f"{what}: member {path!r} would replace the folder unpacked there")
        os.unlink(name, dir_fd=parent)
        return False

    def _folder(self, parts: list[str], what: str, member: str, *, make: bool = True) -> int:
        """The descriptor of the folder ``parts`` (made, with its parents, when absent and
        ``make``); UnsafePath when a symlink or a non-folder is on the way."""
        known = len(parts)
        while known and "/".join(parts[:known]) not in self._open:
            known -= 1  # the deepest folder on the way whose descriptor is open
        fd = self._root
        if known:
            key = "/".join(parts[:known])
            fd = self._open[key]
            self._open.move_to_end(key)
        for depth in range(known + 1, len(parts) + 1):
            fd = self._open_folder(fd, parts[depth - 1], make, what, member, "/".join(parts[:depth]))
        return fd

    def _open_folder(self, parent: int, name: str, make: bool, what: str, member: str, key: str) -> int:
        try:
            fd = os.open(name, _DIR, dir_fd=parent)
        except FileNotFoundError:
            if not make:
                raise
            os.mkdir(name, 0o777, dir_fd=parent)
            fd = os.open(name, _DIR, dir_fd=parent)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(
                    f"{what}: member {member!r} would be written through {key!r}, a symlink or a file"
                ) from None
            raise
        self._open[key] = fd
        if len(self._open) > _OPEN_FOLDERS:
            self._evicted.append(self._open.popitem(last=False)[1])  # closed once the member is written
        return fd

    def finish(self) -> None:
        """Folders' modes and times, deepest first (writing into a folder changes its time)."""
        for path in sorted(self._folders, key=lambda p: p.count("/"), reverse=True):
            mode, mtime = self._folders[path]
            fd = self._folder(path.split("/"), "unpacked folder", path, make=False)
            os.fchmod(fd, mode)
            if mtime is not None:
                os.utime(fd, ns=(mtime, mtime))
            self._close_evicted()
        self._folders.clear()


def _mtime_ns(info: tarfile.TarInfo, what: str) -> int:
    """The member's modification time in ns: the PAX record exactly (tarfile's float is not)."""
    text = info.pax_headers.get("mtime")
    if text is None:
        return max(0, int(info.mtime)) * 1_000_000_000
    if not _PAX_TIME.fullmatch(text):
        raise InvalidArchive(f"{what}: member {info.name!r} has the modification time {text!r}")
    whole, _, frac = text.partition(".")
    return max(0, int(whole) * 1_000_000_000 + int((frac + "000000000")[:9]))


def extract(stream: BinaryIO, dest: Path, *, what: str, strip: int = 0, limits: Limits = DEFAULT_LIMITS) -> int:
    """Unpack the uncompressed tar ``stream`` into ``dest``; returns the number of entries.

    ``strip`` drops that many leading path components (like ``tar --strip-components``);
    devices and fifos are skipped."""
    with Unpacker(dest, policy=Policy(strip=strip), limits=limits) as unpacker:
        count = unpacker.add(stream, what=what)
        unpacker.finish()
    return count


def write_new(folder: Path, files: Iterable[tuple[str, Iterable[bytes]]], *, what: str) -> list[Path]:
    """Each ``(name, chunks)`` written as a new file directly in ``folder``: a name with a
    slash, ``.`` or ``..``, or one already taken (by anything, a symlink included), is
    refused (InputError) and nothing is written through a link. The files' paths."""
    root = os.open(folder, _DIR)
    written = []
    try:
        for name, chunks in files:
            if "/" in name or name in ("", ".", "..") or "\x00" in name:
                raise InputError(f"{what}: {name!r} is not a file name")
            try:
                fd = os.open(name, _NEW_FILE, 0o666, dir_fd=root)
            except FileExistsError:
                raise InputError(
                    f"{what}: {folder / name} exists already; not replacing it",
                    hint="save into an empty folder, or remove that file",
                ) from None
            with open(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
            written.append(folder / name)
    finally:
        os.close(root)
    return written
