"""A wheel installed as layer members by pypa/installer, with no interpreter run and
nothing taken from the clock.

``installer.install`` reads the wheel (its WHEEL file, which scheme each file goes to, the
entry points) and hands each file to :class:`LayerDestination`, which makes a layer member
of it where pip would put it: the root and ``NAME.data/{purelib,platlib}`` to
site-packages, ``scripts`` to PREFIX/bin (``#!python`` becomes the image's interpreter),
``headers`` and ``data`` under the prefix; console and GUI entry points become installer's
launchers; ``INSTALLER`` and ``REQUESTED`` are added and ``RECORD`` is rewritten for where
the files landed (sorted). The wheel's RECORD is checked first (every file listed, its
sha256 and size right). No ``.pyc`` is written: compiling would put the interpreter's
choices (and its version) into the layer, and Python writes them when it first imports.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import posixpath
import zipfile
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from installer import install
from installer.destinations import WheelDestination
from installer.exceptions import InstallerError
from installer.records import Hash, RecordEntry, parse_record_file
from installer.scripts import Script
from installer.sources import WheelFile
from installer.utils import fix_shebang

from assembler.archive.layer import Member, Opener
from assembler.archive.tar import TarEntry, clean_path
from assembler.errors import InvalidArchive, UnsafePath

if TYPE_CHECKING:
    from collections.abc import Iterable

    from installer.scripts import ScriptSection
    from installer.utils import Scheme as SchemeName

INSTALLER = b"assemble\n"
# They sign the wheel's RECORD, which the install rewrites: not installed (nor listed).
_SIGNATURES = ("RECORD.jws", "RECORD.p7s")


@dataclass(frozen=True)
class Scheme:
    """Where a wheel's parts go in the image (absolute paths)."""

    prefix: str
    site_packages: str
    interpreter: str
    python: str  # X.Y

    def folder(self, part: str, dist: str) -> str:
        if part in ("purelib", "platlib"):
            return self.site_packages
        if part == "scripts":
            return posixpath.join(self.prefix, "bin")
        if part == "headers":
            return posixpath.join(self.prefix, "include", "site", f"python{self.python}", dist)
        if part == "data":
            return self.prefix
        raise InvalidArchive(f"unknown wheel data folder {part!r}")


def _sha256(data: bytes) -> Hash:
    return Hash("sha256", base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode())


def _bytes_opener(data: bytes) -> Opener:
    return lambda: cast(AbstractContextManager[BinaryIO], io.BytesIO(data))


def _zip_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Opener:
    return lambda: cast(AbstractContextManager[BinaryIO], zf.open(info))


class _Source(WheelFile):
    """installer's wheel file, its ``.data`` folder named as its ``.dist-info`` folder is
    (installer takes the file name's spelling, which a wheel may write otherwise: its
    data files would land in site-packages under that folder's name)."""

    @property
    def data_dir(self) -> str:
        return self.dist_info_dir.removesuffix(".dist-info") + ".data"


class LayerDestination(WheelDestination):
    """Where ``installer.install`` puts a wheel: layer members (``members``), not files.

    A file of the wheel is not read here: its member opens it in the zip again when the
    layer is written (torch's are GiB), and its RECORD row is the wheel's own (checked by
    ``validate_record`` before the install). Raises UnsafePath for a file that would land
    outside its scheme's folder."""

    def __init__(self, source: WheelFile, zf: zipfile.ZipFile, scheme: Scheme, *, epoch: int, what: str) -> None:
        self.zf = zf
        self.scheme = scheme
        self.epoch = epoch
        self.what = what
        self.dist = source.dist_info_dir.removesuffix(".dist-info").rsplit("-", 1)[0]
        self.skipped = {posixpath.join(source.dist_info_dir, name) for name in _SIGNATURES}
        # Rows as written: validate_record() checked those of the wheel's files, not the others.
        self.recorded = {row[0]: row for row in parse_record_file(source.read_dist_info("RECORD").splitlines())}
        self.members: dict[str, Member] = {}  # by image path: the last written wins (INSTALLER)

    def _place(self, scheme: str, path: str) -> str:
        """The image path (clean, relative) of ``path`` in ``scheme``'s folder."""
        if path.startswith("/") or ".." in path.split("/"):
            raise UnsafePath(f"{self.what}: {path!r} would land outside the wheel's {scheme} folder")
        return clean_path(posixpath.join(self.scheme.folder(scheme, self.dist), path), what=self.what)

    def _add(self, scheme: str, path: str, mode: int, size: int, opener: Opener) -> None:
        dest = self._place(scheme, path)
        self.members[dest] = (TarEntry(dest, "file", mode=mode, size=size, mtime=self.epoch), opener)

    def _add_bytes(self, scheme: str, path: str, data: bytes, mode: int) -> RecordEntry:
        self._add(scheme, path, mode, len(data), _bytes_opener(data))
        return RecordEntry(path, _sha256(data), len(data))

    def write_script(self, name: str, module: str, attr: str, section: ScriptSection) -> RecordEntry:
        _, data = Script(name, module, attr, section).generate(self.scheme.interpreter, "posix")
        return self._add_bytes("scripts", name, data, 0o755)

    def write_file(
        self, scheme: SchemeName, path: str | os.PathLike[str], stream: BinaryIO, is_executable: bool
    ) -> RecordEntry:
        path = os.fspath(path)
        if not isinstance(stream, zipfile.ZipExtFile):  # INSTALLER, REQUESTED: ours
            return self._add_bytes(scheme, path, stream.read(), 0o644)
        if stream.name in self.skipped:
            return RecordEntry(path, None, None)
        info = self.zf.getinfo(stream.name)
        # Executable as the zip says in any way (some zips set no file type): as before installer.
        mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
        if scheme == "scripts":
            head = stream.read(8)
            if head.startswith(b"#!python"):  # a script: small, rewritten in memory
                with fix_shebang(stream, self.scheme.interpreter) as fixed:
                    return self._add_bytes(scheme, path, fixed.read(), 0o755)
            mode = 0o755 if head.startswith(b"#!") else mode
        self._add(scheme, path, mode, info.file_size, _zip_opener(self.zf, info))
        return RecordEntry(path, RecordEntry.from_elements(*self.recorded[stream.name]).hash_, info.file_size)

    def finalize_installation(
        self, scheme: SchemeName, record_file_path: str, records: Iterable[tuple[SchemeName, RecordEntry]]
    ) -> None:
        site = self.scheme.site_packages
        rows: dict[str, tuple[str, str, str]] = {}
        for part, record in records:
            dest = "/" + self._place(part, record.path)
            if record.path not in self.skipped and record.path != record_file_path:
                rows[dest] = RecordEntry(posixpath.relpath(dest, site), record.hash_, record.size).to_row()
        path = self._place(scheme, record_file_path)
        buf = io.StringIO()
        itself = (posixpath.relpath("/" + path, site), "", "")
        csv.writer(buf, lineterminator="\n").writerows([*sorted(rows.values()), itself])
        data = buf.getvalue().encode()
        self.members[path] = (TarEntry(path, "file", mode=0o644, size=len(data), mtime=self.epoch), _bytes_opener(data))


def wheel_members(zf: zipfile.ZipFile, scheme: Scheme, *, filename: str, epoch: int, what: str) -> list[Member]:
    """The files of the wheel ``zf`` (named ``filename`` on its index: installer reads
    the project and version there; ``zf.filename`` is set to it) installed into
    ``scheme`` (parent folders not included).

    Raises InvalidArchive for what is not a wheel or whose RECORD does not match its
    files, UnsafePath for a member that climbs out."""
    for name in zf.namelist():
        if name.startswith("/") or ".." in name.split("/"):
            raise UnsafePath(f"{what}: member {name!r} climbs out of the wheel")
    zf.filename = filename
    try:
        source = _Source(zf)
        if "WHEEL" not in source.dist_info_filenames:
            raise InvalidArchive(f"{what}: {source.dist_info_dir} has no WHEEL file")
        source.validate_record()
        destination = LayerDestination(source, zf, scheme, epoch=epoch, what=what)
        install(source, destination, {"INSTALLER": INSTALLER, "REQUESTED": b""})
    except InstallerError as e:
        issues = getattr(e, "issues", None) or [str(e)]
        raise InvalidArchive(f"{what}: not a wheel pip installs: {'; '.join(issues[:5])}") from e
    except AssertionError as e:  # installer's entry-point parser asserts (a bad module:function)
        raise InvalidArchive(f"{what}: an entry point is not module:function") from e
    return list(destination.members.values())


def wheel_file(path: Path, folder: str, *, filename: str, epoch: int) -> Member:
    """The wheel file at ``path`` itself, as the member ``folder/filename`` (an image that
    ships the wheel, as ``pip download`` leaves it), read when the layer is written."""
    entry = TarEntry(
        clean_path(posixpath.join(folder, filename)), "file", mode=0o644, size=path.stat().st_size, mtime=epoch
    )
    return entry, lambda: cast(AbstractContextManager[BinaryIO], open(path, "rb"))  # the writer closes it
