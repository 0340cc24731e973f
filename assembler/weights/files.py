"""One model's files as the lock and the packer see them: a relative path, a size, a sha256."""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True, order=True)
class WeightFile:
    """A file of a model: ``path`` relative to the model's folder (``/``-separated)."""

    path: str
    size: int
    sha256: str  # 64 hex digits

    @property
    def digest(self) -> str:
        """Its blob in the cache's store."""
        return "sha256:" + self.sha256

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


NAME_MAX = 255  # bytes of one part of a path, as Linux's file systems hold it


def plain_path(path: str) -> str | None:
    """``path`` as a model's file is named (relative, no ``.``/``..``/empty parts, each
    part a name a file system holds), or None when it is not one: what a server lists, or
    a pulled layer holds, is checked before it names a file."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        return None
    if any(len(p.encode("utf-8", "surrogateescape")) > NAME_MAX for p in parts):
        return None
    return path


def selector(include: Sequence[str], exclude: Sequence[str]) -> Callable[[str], bool]:
    """A test of a file's relative path: taken when it matches one of ``include`` (all, when
    none) and none of ``exclude``; a pattern matches the whole path or the file's name."""

    def matches(path: str, patterns: Sequence[str]) -> bool:
        name = PurePosixPath(path).name
        return any(fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

    def test(path: str) -> bool:
        return (not include or matches(path, include)) and not matches(path, exclude)

    return test


def set_digest(files: Iterable[WeightFile]) -> str:
    """The digest of a set of files, as ``sha256sum`` lists them (``HEX  PATH`` lines, sorted):
    the same files give the same digest wherever they came from."""
    lines = sorted(f"{f.sha256}  {f.path}" for f in files)
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()
