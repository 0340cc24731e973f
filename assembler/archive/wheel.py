"""A wheel installed as layer members, as pip installs it (the binary distribution
format, PyPA spec), with no interpreter run and nothing taken from the clock.

The root of the wheel goes to site-packages; ``NAME.data/{purelib,platlib,scripts,headers,
data}`` to the scheme's folders; ``#!python`` scripts get the image's interpreter; console
and GUI entry points become scripts (pip's template); ``INSTALLER`` and ``REQUESTED`` are
added and ``RECORD`` is rewritten for where the files landed (sorted). No ``.pyc`` is
written: compiling would put the interpreter's choices (and its version) into the layer,
and Python writes them when it first imports, where it can.
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import posixpath
import zipfile
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, cast

from assembler.archive.layer import Member, Opener
from assembler.archive.tar import TarEntry, clean_path
from assembler.errors import InvalidArchive, UnsafePath

INSTALLER = b"assemble\n"
_SCRIPT = """\
#!{interpreter}
# -*- coding: utf-8 -*-
import re
import sys
from {module} import {head}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({call}())
"""


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


def _b64_sha256(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _bytes_opener(data: bytes) -> Opener:
    def opener() -> AbstractContextManager[BinaryIO]:
        return cast(AbstractContextManager[BinaryIO], io.BytesIO(data))

    return opener


def _zip_opener(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Opener:
    def opener() -> AbstractContextManager[BinaryIO]:
        return cast(AbstractContextManager[BinaryIO], zf.open(info))

    return opener


def _dist_info(zf: zipfile.ZipFile, what: str) -> str:
    tops = {name.split("/", 1)[0] for name in zf.namelist()}
    found = sorted(t for t in tops if t.endswith(".dist-info") and f"{t}/WHEEL" in zf.namelist())
    if len(found) != 1:
        raise InvalidArchive(f"{what}: a wheel has one NAME-VERSION.dist-info folder with a WHEEL file, found {found}")
    return found[0]


def _record_hashes(zf: zipfile.ZipFile, dist_info: str) -> dict[str, tuple[str, str]]:
    try:
        text = zf.read(f"{dist_info}/RECORD").decode()
    except KeyError:
        return {}
    return {row[0]: (row[1], row[2]) for row in csv.reader(io.StringIO(text)) if len(row) >= 3 and row[1]}


def _entry_points(zf: zipfile.ZipFile, dist_info: str) -> list[tuple[str, str]]:
    try:
        text = zf.read(f"{dist_info}/entry_points.txt").decode()
    except KeyError:
        return []
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # script names keep their case
    parser.read_string(text)
    out = []
    for section in ("console_scripts", "gui_scripts"):
        if parser.has_section(section):
            out += [(name, value.strip()) for name, value in parser.items(section)]
    return sorted(out)


class _Installed:
    """The members of one wheel, and the RECORD rows of where they landed."""

    def __init__(self, scheme: Scheme, epoch: int, what: str) -> None:
        self.scheme = scheme
        self.epoch = epoch
        self.what = what
        self.members: list[Member] = []
        self.record: list[tuple[str, str, str]] = []

    def add(self, dest: str, mode: int, size: int, opener: Opener, digest: str) -> None:
        path = clean_path(dest, what=self.what)
        self.members.append((TarEntry(path, "file", mode=mode, size=size, mtime=self.epoch), opener))
        rel = posixpath.relpath("/" + path, self.scheme.site_packages)
        self.record.append((rel, digest, str(size) if digest else ""))

    def add_bytes(self, dest: str, data: bytes, mode: int = 0o644) -> None:
        self.add(dest, mode, len(data), _bytes_opener(data), _b64_sha256(data))


def wheel_members(zf: zipfile.ZipFile, scheme: Scheme, *, epoch: int, what: str) -> list[Member]:
    """The files of the wheel ``zf`` installed into ``scheme`` (parent folders not included).

    Raises InvalidArchive for what is not a wheel, UnsafePath for a member that climbs out."""
    dist_info = _dist_info(zf, what)
    dist = dist_info.removesuffix(".dist-info").rsplit("-", 1)[0]
    data_dir = dist_info.removesuffix(".dist-info") + ".data"
    hashes = _record_hashes(zf, dist_info)
    out = _Installed(scheme, epoch, what)
    skip = {f"{dist_info}/{n}" for n in ("RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER", "REQUESTED")}
    for info in sorted(zf.infolist(), key=lambda i: i.filename):
        name = info.filename
        if name.endswith("/") or name in skip:
            continue
        if name.startswith("/") or ".." in name.split("/"):  # joined below: it would land outside its folder
            raise UnsafePath(f"{what}: member {name!r} climbs out of the wheel")
        mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
        if name.startswith(data_dir + "/"):
            part, _, rest = name[len(data_dir) + 1 :].partition("/")
            dest = posixpath.join(scheme.folder(part, dist), rest)
            if part == "scripts":
                _script(out, zf, info, dest)
                continue
        else:
            dest = posixpath.join(scheme.site_packages, name)
        digest, _ = hashes.get(name) or (_b64_sha256(zf.read(info)), "")
        out.add(dest, mode, info.file_size, _zip_opener(zf, info), digest)
    for script, target in _entry_points(zf, dist_info):
        module, _, attr = target.partition(":")
        attr = attr.split("[", 1)[0].strip()
        if not module.strip() or not attr:
            raise InvalidArchive(f"{what}: entry point {script} = {target!r} is not module:function")
        text = _SCRIPT.format(interpreter=scheme.interpreter, module=module.strip(), head=attr.split(".")[0],
                              call=attr)  # fmt: skip
        out.add_bytes(posixpath.join(scheme.prefix, "bin", script), text.encode(), 0o755)
    info_dir = posixpath.join(scheme.site_packages, dist_info)
    out.add_bytes(posixpath.join(info_dir, "INSTALLER"), INSTALLER)
    out.add_bytes(posixpath.join(info_dir, "REQUESTED"), b"")
    record = posixpath.join(info_dir, "RECORD")
    rows = [*sorted(out.record), (posixpath.relpath(record, scheme.site_packages), "", "")]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    data = buf.getvalue().encode()
    out.members.append((TarEntry(clean_path(record), "file", mode=0o644, size=len(data), mtime=epoch),
                        _bytes_opener(data)))  # fmt: skip
    return out.members


def _script(out: _Installed, zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: str) -> None:
    """A ``.data/scripts`` file: ``#!python`` (or ``#!pythonw``) replaced by the image's
    interpreter; executable when it has a ``#!`` line or was executable."""
    data = zf.read(info)
    if data.startswith(b"#!python"):
        _, nl, rest = data.partition(b"\n")
        data = f"#!{out.scheme.interpreter}".encode() + nl + rest
    executable = data.startswith(b"#!") or (info.external_attr >> 16) & 0o111
    out.add_bytes(dest, data, 0o755 if executable else 0o644)


def with_parents(members: Iterable[Member], *, epoch: int) -> list[Member]:
    """``members`` with a folder entry (0755) for every parent none of them names."""
    out = list(members)
    named = {entry.path for entry, _ in out}
    for entry, _ in list(out):
        parent = posixpath.dirname(entry.path)
        while parent and parent not in named:
            named.add(parent)
            out.append((TarEntry(parent, "dir", mode=0o755, mtime=epoch), None))
            parent = posixpath.dirname(parent)
    return out
