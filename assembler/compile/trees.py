"""Artifact layers unpacked once for every step that mounts them at the same time.

A kernel step mounts the venv and the CUDA prefix it builds against (TGI's stand-in: 7.7 GB
unpacked); several such steps run at once, and each unpacking its own copy filled a disk
(issue 65's TGI row). :class:`Trees` unpacks a layer the first time a step mounts it, hands
the same folder to every step that mounts it while that one is in use (they see it
read-only), and removes it when the last of them is done.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.archive.compress import decompressed
from assembler.archive.extract import extract

if TYPE_CHECKING:
    from assembler.cache import Cache
    from assembler.oci.layer import Layer


@dataclass
class _Tree:
    lock: threading.Lock = field(default_factory=threading.Lock)  # held while it is unpacked
    folder: Path | None = None
    users: int = 0
    owner: ExitStack = field(default_factory=ExitStack)  # the cache's work folder it is in


def unpack(cache: Cache, blob: Layer, folder: Path, what: str) -> None:
    """``blob`` (a layer in ``cache``) unpacked into ``folder``, bounded and kept inside it
    (:func:`assembler.archive.extract.extract`); ``what`` names it in errors."""
    with cache.open_blob(blob.digest) as raw, decompressed(raw, blob.compression) as plain:
        extract(plain, folder, what=what)


class Trees:
    """The layers unpacked for the steps running now, by digest, each with how many use it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trees: dict[str, _Tree] = {}

    @contextmanager
    def unpacked(self, cache: Cache, blob: Layer, what: str) -> Iterator[Path]:
        """The folder ``blob`` is unpacked in (``what`` names it in errors), for as long as
        the caller needs it; unpacked by the first caller, removed after the last."""
        with self._lock:
            tree = self._trees.setdefault(blob.digest, _Tree())
            tree.users += 1
        try:
            with tree.lock:
                if tree.folder is None:
                    folder = tree.owner.enter_context(cache.workdir("tree-"))
                    try:
                        unpack(cache, blob, folder, what)
                    except BaseException:
                        tree.owner.close()
                        raise
                    tree.folder = folder
            yield tree.folder
        finally:
            with self._lock:
                tree.users -= 1
                last = tree.users == 0
                if last:
                    del self._trees[blob.digest]
            if last:
                tree.owner.close()  # outside the lock: removing gigabytes takes a while

    def __len__(self) -> int:
        with self._lock:
            return len(self._trees)
