"""Which folders may be a cache: the ``CACHEDIR.TAG`` a cache carries.

A folder of the user's given as ``--cache`` by mistake (``.``, a project folder) must never
be filled with blobs, nor emptied by ``cache prune``: a cache folder is one that is new,
empty, tagged, or shaped like a cache made before the tag (then it is tagged).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from assembler.errors import CacheError

CACHEDIR_TAG = "CACHEDIR.TAG"
# https://bford.info/cachedir/: the first line is the standard's, the rest is free.
_TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This folder is a cache of assemble (OCI image builds); it can be deleted.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


def claim(root: Path) -> None:
    """Make ``root`` a cache, or refuse it: a folder of the user's (``--cache .`` by
    mistake) must never be filled, nor emptied by ``cache prune``. A cache made before the
    tag existed (``blobs/sha256`` and ``keys``) is tagged."""
    if (root / CACHEDIR_TAG).is_file():
        return
    if (
        root.is_dir()
        and any(root.iterdir())
        and not ((root / "blobs" / "sha256").is_dir() and (root / "keys").is_dir())
    ):
        raise CacheError(
            f"{root} is not empty and is not a cache of assemble (no {CACHEDIR_TAG}): not using it",
            hint="pass --cache with a new or empty folder, or one assemble made",
        )
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-tag-")
    with os.fdopen(fd, "w") as f:
        f.write(_TAG_TEXT)
    os.replace(tmp, root / CACHEDIR_TAG)
