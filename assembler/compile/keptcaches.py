"""A step's kept folders through a registry: where a :class:`FolderCache` (``--cache-to``,
``--cache-from``: :class:`assembler.stepcache.compile.CompileCaches`) restores them
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
(:func:`origins`). Under ``--cache-trust`` a folder restored from an entry no trusted key
signed (in an earlier run without it) is emptied before a step uses it: the step's own
under its kept-folder lock (:func:`assembler.compile.worktree.kept_folder`), a shared one
once no step of any build uses it (:class:`SharedFolders`).

A step's own kept folder is its alone while it runs; a ``shared_cache:`` folder is used by
the steps of every build at once. :class:`SharedFolders` holds each with ``flock`` on
``<folder>.lock``: shared while a step uses it, exclusive to change what it is (to restore
it, to empty it), so neither happens under a running step.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Collection
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Protocol

from assembler.archive.chunks import folder_is_empty
from assembler.cache import Cache, Origin, key_of
from assembler.compile.worktree import kept_path, remove_tree, restored_from, try_lock
from assembler.errors import CacheError
from assembler.manifest.schema import model as m

log = logging.getLogger(__name__)

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
    shared: Collection[str] = (),
    stop: Callable[[], bool] = bool,
) -> None:
    """The step's empty kept folder and its empty shared folders ``shared`` (those it holds
    alone: :attr:`SharedFolders.restorable`), filled from the registry where it has them
    (until ``stop()`` turns true)."""
    if step.cache and folder_is_empty(kept) and not stop():
        folders.restore(kept_tag(step.name, tree_key), kept, f"step {step.name}", stop=stop)
    for path in shared:
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


class SharedFolders:
    """The ``shared_cache:`` folders of ``step``, held while it runs (a context manager;
    raises CacheError when one cannot be prepared).

    Each is held shared (``flock LOCK_SH`` on ``<folder>.lock``) by every step using it, in
    any build; what changes the folder itself holds it alone (``LOCK_EX``), so nothing is
    taken from under a running step, and a restore is never renamed onto a folder a running
    step has mounted (it would not see it). With ``restoring`` (the caller restores empty
    folders), an empty folder nobody uses is held alone and listed in :attr:`restorable`
    until :meth:`settle`. With ``trusted`` (``--cache-trust``'s key ids), a folder restored
    from an entry none of them signed is emptied (a warning) once no step of any build uses
    it: nothing is built on it. Folders are taken in path order, so builds never wait on
    each other in a circle."""

    def __init__(
        self, cache: Cache, step: m.CompileStep, *, trusted: Collection[str] = (), restoring: bool = False
    ) -> None:
        self.cache = cache
        self.step = step
        self.trusted = trusted
        self.restoring = restoring
        self.restorable: list[str] = []  # shared_cache paths held alone, empty: to restore, then settle()
        self._locks: dict[str, IO[str]] = {}
        self._stack = ExitStack()

    def __enter__(self) -> SharedFolders:
        try:
            for path in sorted(self.step.shared_cache, key=lambda p: shared_folder(self.cache, p)):
                folder = shared_folder(self.cache, path)
                folder.mkdir(parents=True, exist_ok=True)
                lock = self._stack.enter_context(open(folder.with_name(folder.name + ".lock"), "a"))
                self._locks[path] = lock
                if self._take(path, lock, restore=self.restoring):
                    self.restorable.append(path)
        except OSError as e:
            self._stack.close()
            raise CacheError(f"step {self.step.name}: preparing its shared_cache folders: {e}") from e
        except BaseException:  # Ctrl-C while waiting: what is held goes
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()  # the files closed, their locks go

    def settle(self) -> None:
        """Restoring is over: the folders held alone for it are held shared, as the others.
        Raises CacheError."""
        try:
            for path in self.restorable:
                self._take(path, self._locks[path], restore=False)
        except OSError as e:
            raise CacheError(f"step {self.step.name}: preparing its shared_cache folders: {e}") from e
        self.restorable = []

    def _take(self, path: str, lock: IO[str], *, restore: bool) -> bool:
        """Hold ``path``'s folder shared, fit to build on; True instead when ``restore`` and
        it is empty and held alone (the caller restores it). Raises OSError."""
        folder = shared_folder(self.cache, path)
        alone = restore and try_lock(lock)  # nobody uses it: free to fill
        while True:
            if alone:
                self._empty_unvouched(path, folder)
                if restore and folder_is_empty(folder):
                    return True
            fcntl.flock(lock, fcntl.LOCK_SH)  # waits while another restores or empties it
            # What it is cannot change while it is held shared: nothing else to check after this.
            if self._vouched(folder):
                return False
            if not try_lock(lock):  # LOCK_SH is dropped, then: steps of other builds use it
                log.warning(
                    "step %s: shared_cache %s (%s) is in use by another build; waiting to empty it",
                    self.step.name,
                    path,
                    folder,
                )
                fcntl.flock(lock, fcntl.LOCK_EX)
            alone = True

    def _vouched(self, folder: Path) -> bool:
        origin = self.cache.folder_origin(folder) if self.trusted else None
        return origin is None or origin.signer in self.trusted

    def _empty_unvouched(self, path: str, folder: Path) -> None:
        """Held alone: ``folder`` emptied if it was restored from an entry ``trusted`` does
        not vouch for."""
        origin = self.cache.folder_origin(folder) if self.trusted else None
        if origin is None or origin.signer in self.trusted:
            return
        log.warning(
            "step %s: shared_cache %s (%s) was restored from %s, which no --cache-trust key signed: "
            "emptied, nothing is built on it",
            self.step.name,
            path,
            folder,
            restored_from(origin),
        )
        remove_tree(folder)
        self.cache.put_folder_origin(folder, None)  # made here from now on
        folder.mkdir()
