"""What the layers read so far decided of each path, as :mod:`assembler.archive.flatten`
reads them newest first: one small int per path (flag bits, and in bits 8+ the id of the
layer that decided it), and the OCI rules of what a lower layer's entry may still show
(whiteouts and opaque markers hide image content, never the underlay; a non-directory hides
what is below it; a directory an upper layer needs is implied)."""

from __future__ import annotations

from collections.abc import Iterator

from assembler.archive.tar import WHITEOUT_PREFIX

# Per-path state: flag bits, and (bits 8+) the id of the layer that decided the path.
DIR = 1  # a directory entry was written
OTHER = 2  # a non-directory entry was written (a file, link, device...)
IMPLICIT = 4  # a directory is needed (entries below it were written) but has no entry yet
WHITEOUT = 8  # deleted, with everything below it, for lower layers
OPAQUE = 16  # lower layers' contents below it are hidden (the path itself is not)
CLOSED = 32  # a lower-layer non-directory ended here: hides the path and what is below
FLAGS = 0xFF
HIDES_SELF = DIR | OTHER | WHITEOUT | CLOSED
HIDES_BELOW = OTHER | WHITEOUT | OPAQUE | CLOSED
UNDERLAY = 0  # the layer id of the underlay members


def parent_of(path: str) -> str:
    i = path.rfind("/")
    return path[:i] if i > 0 else ""


def ancestors(path: str) -> Iterator[str]:
    """``a/b``, ``a`` for ``a/b/c``: proper ancestors, nearest first."""
    i = path.rfind("/")
    while i > 0:
        yield path[:i]
        i = path.rfind("/", 0, i)


def under_whiteout_name(path: str) -> bool:
    """Whether a proper ancestor of ``path`` has a ``.wh.`` name."""
    parent = parent_of(path)
    return bool(parent) and (parent.startswith(WHITEOUT_PREFIX) or "/" + WHITEOUT_PREFIX in parent)


class View:
    """What the layers read so far (all upper ones) decided of each path: flag bits, and
    (bits 8+) the id of the layer that decided it; the rules of what still shows below."""

    def __init__(self) -> None:
        self.state: dict[str, int] = {}
        self.codes: dict[int, int] = {}
        self.layer = -1  # the layer being read

    def flags(self, path: str) -> int:
        return self.state.get(path, 0)

    def code(self, value: int) -> int:
        # One int object per distinct state value: most paths share a handful of them.
        return self.codes.setdefault(value, value)

    def mark(self, path: str, flag: int) -> None:
        """Add ``flag`` to ``path``'s state (a whiteout, an opaque marker, a closed directory)."""
        self.state[path] = self.code(self.flags(path) | flag)

    def decide(self, path: str, flag: int) -> None:
        """``path`` is written by the layer being read (``flag``: a directory or another entry);
        its ancestors are needed as directories."""
        old = self.state.get(path, 0) & FLAGS & ~IMPLICIT
        self.state[path] = self.code(old | flag | (self.layer << 8))
        for parent in ancestors(path):
            st = self.state.get(parent)
            if st is not None and st & (DIR | IMPLICIT):
                break  # its ancestors are marked already
            self.state[parent] = self.code((st or 0) | IMPLICIT)

    def visible(self, path: str) -> bool:
        """Whether a lower layer's entry at ``path`` would show in the final view, given
        everything the layers read so far (all upper ones) decided."""
        if self.layer == UNDERLAY:
            # Whiteouts and opaque markers delete image content, not what the output
            # format adds: only an entry of the image at the path (or a non-directory
            # above it) takes an underlay member's place.
            if self.state.get(path, 0) & (DIR | OTHER):
                return False
            return all(not self.state.get(parent, 0) & OTHER for parent in ancestors(path))
        if self.state.get(path, 0) & HIDES_SELF or self.state.get("", 0) & OPAQUE:  # "/.wh..wh..opq"
            return False
        return all(not self.state.get(parent, 0) & HIDES_BELOW for parent in ancestors(path))
