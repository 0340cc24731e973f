"""Which folders may be a cache: the ``CACHEDIR.TAG`` a cache carries.

A folder of the user's given as ``--cache`` by mistake (``.``, a project folder) must never
be filled with blobs, nor emptied by ``cache prune``: a cache folder is one that is new,
empty, tagged by us, or shaped like a cache made before the tag (then it is tagged). A
``CACHEDIR.TAG`` only says "some tool's cache" (cargo's ``target/`` has one): a tag that is
not ours is another tool's folder, refused as the user's are.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from assembler.errors import NotACache

CACHEDIR_TAG = "CACHEDIR.TAG"
# https://bford.info/cachedir/: the first line is the standard's, the rest is free.
_SIGNATURE = "Signature: 8a477f597d28d172789f06886806bc55"
# The line that tells our tag from another tool's (every tag assemble wrote has it).
_OURS = "# This folder is a cache of assemble (OCI image builds); it can be deleted."
_TAG_TEXT = f"{_SIGNATURE}\n{_OURS}\n# For information about cache directory tags see https://bford.info/cachedir/\n"
# A tag is a few lines; a bigger file (or a FIFO) is not read to its end to find ours.
_TAG_READ = 4096


def _tagged_by_us(tag: Path) -> bool:
    """Whether ``tag`` is a regular file holding our tag's lines (not a link, not another
    tool's tag)."""
    try:
        fd = os.open(tag, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return False
        lines = f.read(_TAG_READ).decode("utf-8", "replace").splitlines()
    return bool(lines) and lines[0] == _SIGNATURE and _OURS in lines


def claim(root: Path) -> None:
    """Make ``root`` a cache, or refuse it: a folder of the user's (``--cache .`` by
    mistake) or of another tool (its own ``CACHEDIR.TAG``) must never be filled, nor
    emptied by ``cache prune``. A cache made before the tag existed (``blobs/sha256`` and
    ``keys``) is tagged. Raises :class:`NotACache` (exit 2) for a folder refused."""
    tag = root / CACHEDIR_TAG
    if _tagged_by_us(tag):
        return
    if tag.exists() or tag.is_symlink():
        raise NotACache(
            f"{root} has a {CACHEDIR_TAG} that assemble did not write: it is another tool's cache; not using it",
            hint="pass --cache with a new or empty folder, or one assemble made",
        )
    if (
        root.is_dir()
        and any(root.iterdir())
        and not ((root / "blobs" / "sha256").is_dir() and (root / "keys").is_dir())
    ):
        raise NotACache(
            f"{root} is not empty and is not a cache of assemble (no {CACHEDIR_TAG}): not using it",
            hint="pass --cache with a new or empty folder, or one assemble made",
        )
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-tag-")
    with os.fdopen(fd, "w") as f:
        f.write(_TAG_TEXT)
    os.replace(tmp, root / CACHEDIR_TAG)
