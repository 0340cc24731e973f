"""A step's kept folders through a registry: where a :class:`FolderCache` (``--cache-to``,
``--cache-from``: :class:`assembler.transports.compilecache.CompileCaches`) restores them
before a compile step runs and exports them after it built.

Two kinds of entries, keyed as the host keeps the folders:

- a step's kept folder (``step-caches/STEP/<tree key>``: its ``cache:`` folders and the
  working copies of its sources, with their sync state), by the step's definition key
  (its key without its sources' content), only for a step that declares ``cache:``
  folders. The working copies go with the build tree so that make, ninja and cargo see
  unchanged sources older than their outputs after a restore: the next sync replaces (and
  makes newer) only the files whose content changed;
- each ``shared_cache:`` folder (``step-caches/_shared/<path key>``), by its path, as it
  is shared on the host.

A folder is restored only when it is empty (a first build of that definition here, or a
fresh machine) and the step is not forced (``--no-cache``, ``--rebuild``: empty folders).
Where a restored folder came from stays beside it for as long as it holds anything
(:meth:`assembler.cache.Cache.folder_origin`): a step built in it is built on that entry
(:func:`origins`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from assembler.archive.chunks import folder_is_empty
from assembler.cache import Cache, Origin, key_of
from assembler.compile.worktree import kept_path
from assembler.spec import model as m

TAG_PREFIX = "ccache-"


class FolderCache(Protocol):
    """Folders restored from and exported to a registry; failures are its own warnings."""

    def restore(self, tag: str, folder: Path, what: str, *, stop: Callable[[], bool] = bool) -> bool:
        """Fill the empty ``folder`` from the entry ``tag``; whether it did. Once ``stop()``
        turns true it gives up, between chunks, leaving the folder empty."""
        ...

    def export(self, tag: str, folder: Path, what: str) -> None:
        """Make ``folder`` the entry ``tag`` of the target repository."""
        ...


def kept_tag(step: str, tree_key: str) -> str:
    """The entry of step ``step``'s kept folder for the definition ``tree_key``."""
    return TAG_PREFIX + key_of({"kept": step, "tree": tree_key})


def shared_tag(path: str) -> str:
    """The entry of the ``shared_cache:`` folder ``path``."""
    return TAG_PREFIX + key_of({"shared": path})


def shared_folder(cache: Cache, path: str) -> Path:
    """Where the host keeps the ``shared_cache:`` folder ``path``."""
    return cache.path("step-caches", "_shared", key_of({"path": path})[:16])


def restore(
    folders: FolderCache,
    step: m.CompileStep,
    *,
    cache: Cache,
    kept: Path,
    tree_key: str,
    stop: Callable[[], bool] = bool,
) -> None:
    """The step's empty kept folder and shared folders, filled from the registry where it
    has them (until ``stop()`` turns true)."""
    if step.cache and folder_is_empty(kept) and not stop():
        folders.restore(kept_tag(step.name, tree_key), kept, f"step {step.name}", stop=stop)
    for path in step.shared_cache:
        folder = shared_folder(cache, path)
        if folder_is_empty(folder) and not stop():
            folders.restore(shared_tag(path), folder, f"step {step.name}: shared_cache {path}", stop=stop)


def export(folders: FolderCache, step: m.CompileStep, *, cache: Cache, kept: Path, tree_key: str) -> None:
    """The step's kept folder (when it declares ``cache:`` folders) and shared folders,
    exported after it built."""
    if step.cache:
        folders.export(kept_tag(step.name, tree_key), kept, f"step {step.name}")
    for path in step.shared_cache:
        folders.export(shared_tag(path), shared_folder(cache, path), f"step {step.name}: shared_cache {path}")


def origins(step: m.CompileStep, *, cache: Cache, tree_key: str) -> list[Origin]:
    """Where the step's kept folder and shared folders came from, those restored from a
    registry (in an earlier build or this one): what the step builds in them is built on
    those entries."""
    folders = [kept_path(cache, step.name, tree_key)] if step.cache else []
    folders += [shared_folder(cache, path) for path in step.shared_cache]
    return [o for o in map(cache.folder_origin, folders) if o is not None]
