"""A packed model laid out as files: a folder in the cache (hard links to the files' blobs)
that the build's tests bind read-only at the model's ``at``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from assembler.cache import Cache, temp_prefix
from assembler.weights.pack import Packed

_DONE = ".assemble-complete"


def folder(packed: Packed, cache: Cache) -> Path:
    """The model's files under one folder of the cache (made once per set of files)."""
    root = cache.path("weights", "trees")
    final = root / packed.set_digest.removeprefix("sha256:")[:32]
    if (final / _DONE).is_file():
        cache.mark_used(final)
        return final
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("tree-"), dir=cache.root / "tmp"))
    try:
        for f in packed.files:
            dest = tmp / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob = cache.blob_file(f.digest)
            if blob is None:
                raise FileNotFoundError(f"weights {packed.name}: {f.path} ({f.digest}) is not in the cache")
            try:
                os.link(blob, dest)
            except OSError:  # another file system: a copy
                shutil.copyfile(blob, dest)
        (tmp / _DONE).touch()
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def mounts(models: Sequence[Packed], cache: Cache) -> tuple[tuple[str, str, bool], ...]:
    """A read-only bind of each model's folder at its ``at`` (ImageCommand.mounts)."""
    return tuple((str(folder(m, cache)), m.at, True) for m in models)
