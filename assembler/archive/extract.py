"""Unpacking a tar stream into a folder, safely (for artifacts mounted into build
containers and for downloaded source archives).

Nothing lands outside the folder: member paths are cleaned (UnsafePath for ``..``),
no member is written through a symlink the archive made, hard links must point at
files already unpacked. Owners are not restored (the files belong to whoever unpacks)
and setuid/setgid bits are dropped. Devices and fifos are skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from assembler.archive.layer import iter_tar
from assembler.archive.tar import clean_path
from assembler.archive.tree import parents
from assembler.errors import UnsafePath

_CHUNK = 1 << 20


def extract(stream: BinaryIO, dest: Path, *, what: str, strip: int = 0) -> int:
    """Unpack the uncompressed tar ``stream`` into ``dest``; returns the number of entries.

    ``strip`` drops that many leading path components (like ``tar --strip-components``).
    """
    dest.mkdir(parents=True, exist_ok=True)
    links: set[str] = set()
    dirs: list[tuple[Path, int]] = []
    count = 0
    for entry, tf, info in iter_tar(stream, what=what):
        parts = entry.path.split("/")[strip:]
        if not parts:
            continue
        path = "/".join(parts)
        if any(p in links for p in parents(path)) or path in links:
            raise UnsafePath(f"{what}: member {entry.path!r} would be written through a symlink")
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry.kind == "dir":
            target.mkdir(exist_ok=True)
            os.chmod(target, 0o700)  # writable while unpacking; the real mode is set at the end
            dirs.append((target, (entry.mode & 0o1777) | 0o700))
        elif entry.kind == "file":
            data = tf.extractfile(info)
            if data is None:
                raise UnsafePath(f"{what}: cannot read member {entry.path!r}")
            _remove(target)
            with data, open(target, "wb") as out:
                shutil.copyfileobj(data, out, _CHUNK)
            os.chmod(target, (entry.mode & 0o1777) | 0o400)
        elif entry.kind == "symlink":
            _remove(target)
            os.symlink(entry.linkname, target)
            links.add(path)
        elif entry.kind == "hardlink":
            link_parts = clean_path(entry.linkname, what=f"{what} hard link").split("/")[strip:]
            source = dest / "/".join(link_parts)
            if not link_parts or any(p in links for p in parents("/".join(link_parts))) or not source.is_file():
                raise UnsafePath(f"{what}: hard link {entry.path!r} points at {entry.linkname!r}, not an unpacked file")
            _remove(target)
            os.link(source, target)
        else:
            continue  # devices and fifos: nothing a mounted artifact or a source needs
        count += 1
    for folder, mode in reversed(dirs):
        os.chmod(folder, mode)
    return count


def _remove(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()
