"""A project's own files, read only where they are named: a Python set's requirements file
(:mod:`.reqfiles`) and the files its ``-r`` and ``-c`` lines name.

The file the manifest names is read where it is (followed where it links: the manifest
named it); a file it names only inside the project, the manifest's folder or the folder
of the file the manifest names. Otherwise a cloned project's ``-r /proc/self/environ``, or
a link of its own to ``~/.ssh/id_rsa``, would be read, and its text quoted in the error
that says it is no requirement. Each is read as a bounded regular file (never a FIFO or
a device, whose read waits or never ends, never a kernel file, whose size is not what it
holds), each once, and at most :data:`MAX_FILES` for one set: nesting alone is bounded in
depth, not in count (26 files each naming the next twice are 2^26 reads).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from assembler.errors import InputError
from assembler.manifest.text.urls import scrubbed

MAX_FILE_BYTES = 1 << 20  # a requirements file or pyproject.toml beyond this is refused
MAX_INCLUDES = 32  # -r files followed from one set, one inside the other
MAX_FILES = 64  # files read for one set: its own, every -r and -c (each counted once)


class FileError(InputError):
    """What is wrong with a requirements file, at ``where`` (``FILE:LINE``); the manifest's
    loader says it at the set's field. A URL it quotes is said without its credentials (a
    line's ``${TOKEN}`` is expanded by then)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(scrubbed(f"{where}: {message}"))


def read_text(path: Path, shown: str) -> str:
    """The text of the regular file at ``path``, at most :data:`MAX_FILE_BYTES`. Opened
    without waiting (a FIFO's open would wait for a writer) and checked as opened: a
    device or FIFO is refused before it is read (``/dev/zero`` never ends), and a file that
    holds other than its size says (a kernel file: ``/proc/self/environ`` says 0 bytes) is
    refused without a word of what it holds."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FileError(shown, "no such file") from None
    except OSError as e:
        raise FileError(shown, f"cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FileError(shown, "not a regular file (a folder, a device or a FIFO)")
        if st.st_size > MAX_FILE_BYTES:
            raise FileError(shown, f"{st.st_size} bytes: more than a requirements file holds ({MAX_FILE_BYTES})")
        try:
            data = f.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise FileError(shown, f"cannot be read: {e.strerror}") from None
    if len(data) != st.st_size:
        why = "a kernel file (/proc, /sys), or one written to while read"
        raise FileError(shown, f"holds {len(data)} bytes where its size says {st.st_size}: {why}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError(shown, f"not UTF-8 text (byte {e.start})") from None


def resolved(path: Path, where: str) -> Path:
    """``path`` with its links followed; FileError at ``where`` on a loop of links."""
    try:
        return path.resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: a loop of links
        raise FileError(where, f"{path}: cannot be read: {e}") from None


class Reader:
    """One set's files as they are read: the folders they may be in (``roots``: the
    project) and those read so far, each once for what it gives (requirements or
    constraints), at most :data:`MAX_FILES` in all."""

    def __init__(self, roots: tuple[Path, ...]) -> None:
        self.roots = tuple(dict.fromkeys(resolved(r, str(r)) for r in roots))
        self.seen: set[tuple[Path, bool]] = set()

    @classmethod
    def of(cls, project: Path, named: Path) -> Reader:
        """A reader for the file ``named`` in a manifest in ``project``: the project is
        that folder and the folder ``named`` is in, as written (its last link followed
        only to read it)."""
        return cls((project, named.parent))

    def included(self, path: Path, where: str, named: str) -> Path:
        """``path`` (named by the line ``named`` at ``where``) resolved, where it is inside
        the project; FileError at that line, naming it, where it is not."""
        real = resolved(path, where)
        if not any(real.is_relative_to(root) for root in self.roots):
            raise FileError(
                where,
                f"{named}: {real} is outside the project ({', '.join(map(str, self.roots))}): only the project's "
                "files are read (name it as a requirements_file, or copy it into the project)",
            )
        return real

    def first(self, real: Path, shown: str, *, constraint: bool, depth: int) -> bool:
        """Whether ``real`` is yet to be read (for requirements, or for constraints); FileError
        past :data:`MAX_INCLUDES` nested or :data:`MAX_FILES` read."""
        if depth > MAX_INCLUDES:
            raise FileError(shown, f"more than {MAX_INCLUDES} nested -r files")
        if (real, constraint) in self.seen:
            return False
        if len(self.seen) >= MAX_FILES:
            raise FileError(shown, f"more than {MAX_FILES} files read for one set (-r and -c)")
        self.seen.add((real, constraint))
        return True
