"""A packed model laid out as files: a folder in the cache (hard links to the files' blobs)
that the build's tests bind read-only at the model's ``at``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from assembler.cache import Cache, temp_prefix
from assembler.errors import NotFound
from assembler.weights.pack import Packed

DONE = ".assemble-complete"  # the mark of a folder made whole


def made_once(cache: Cache, final: Path, fill: Callable[[Path], None]) -> Path:
    """The folder ``final`` of the cache, ``fill``ed in a temporary folder and put in place
    whole (marked complete) the first time; as it is after that."""
    if (final / DONE).is_file():
        cache.mark_used(final)
        return final
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("weights-"), dir=cache.root / "tmp"))
    try:
        fill(tmp)
        (tmp / DONE).touch()
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def folder(packed: Packed, cache: Cache) -> Path:
    """The model's files under one folder of the cache (made once per set of files)."""

    def fill(tmp: Path) -> None:
        for f in packed.files:
            dest = tmp / f.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob = cache.blob_file(f.digest)
            if blob is None:
                raise NotFound(f"weights {packed.name}: {f.path} ({f.digest}) is not in the cache: build again")
            try:
                os.link(blob, dest)
            except OSError:  # another file system: a copy
                shutil.copyfile(blob, dest)

    return made_once(cache, cache.path("weights", "trees") / packed.set_digest.removeprefix("sha256:")[:32], fill)


def mounts(models: Sequence[Packed], cache: Cache) -> tuple[tuple[str, str, bool], ...]:
    """A read-only bind of each model's folder at its ``at`` (ImageCommand.mounts)."""
    return tuple((str(folder(m, cache)), m.at, True) for m in models)
