"""Pruning the cache: ``assemble cache prune`` (everything, by age, to a size) and, after
every build, keeping the cache within its size budget, as BuildKit's garbage collector
keeps its cache within its policy's ``keepBytes`` (``--cache-max-size``,
``cache-max-size`` in the user's config file).

Pruning removes items (:mod:`.maintain`'s inventory), never a blob that a remaining entry
names: a blob goes when the last entry naming it goes. It holds the cache lock
exclusively, so it never runs while a build uses the cache; a kept step folder is also
skipped while anyone holds its lock. buildah's storage in the cache (``CACHE/buildah``)
counts in a size to prune to: a :class:`Storage` says how much it holds and lets go of
the images that only removed blobs kept (``compile/storage.py``).

The default budget is proportional to the disk, as BuildKit's (``DetectDefaultGCCap``: a
tenth of the filesystem its root is on): 10% of the filesystem the cache is on, at most
100 GiB (BuildKit caps its own defaults at 10 and 100 GB). A size (``50G``) or a share of
that filesystem (``10%``) may be given instead. After a build that finished, the least
recently used items go until the cache fits, never what this process used
(:class:`assembler.cache.filelock.Uses`: the build's own entries, folders and blobs, and
whatever was written or used since it started). The cache must be this process's alone for
that: when another build holds it, nothing is removed now (the last build to finish keeps
the budget).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from assembler.cache.entries import Cache
from assembler.cache.maintain import Inventory, Item, inventory, parse_size
from assembler.errors import CacheError, InputError

log = logging.getLogger(__name__)


class Storage(Protocol):
    """Space outside the store that the cache's blobs keep (buildah's images, each kept
    while the blob of its manifest is): counted in a size to prune to."""

    def size(self) -> int:
        """Its bytes now."""
        ...

    def keeps(self, digest: str) -> bool:
        """Whether it keeps something for the blob ``digest``."""
        ...

    def release(self, named: Collection[str]) -> int:
        """Let go of what no blob of ``named`` keeps; its bytes afterwards."""
        ...


@dataclass
class Pruned:
    removed: list[Item] = field(default_factory=list)
    in_use: list[Item] = field(default_factory=list)
    freed: int = 0
    left: int = 0  # the items' bytes left
    storage: int = 0  # a Storage's bytes left (not in ``left``)


def exclusive(cache: Cache) -> None:
    """Hold the cache lock alone (CacheError when a build is using the cache)."""
    if not cache.try_exclusive():
        raise CacheError(
            f"the cache at {cache.root} is in use by a running build or another prune",
            hint="prune again when it has finished",
        )


def prune(
    cache: Cache,
    *,
    keep_storage: int | None = None,
    older_than: float | None = None,
    everything: bool = False,
    dry_run: bool = False,
    now: float | None = None,
    storage: Storage | None = None,
) -> Pruned:
    """Remove items: all of them (``everything``), those unused for ``older_than``
    seconds, then the least recently used until the cache (``storage`` included) holds
    ``keep_storage`` bytes. A blob goes only with the last entry naming it. ``dry_run``
    reports and removes nothing. Raises CacheError when the cache is in use."""
    exclusive(cache)
    rules = Rules(keep_storage=keep_storage, older_than=older_than, everything=everything, now=now)
    return prune_held(cache, inventory(cache), rules, dry_run=dry_run, storage=storage)


@dataclass(frozen=True)
class Rules:
    """What :func:`prune_held` removes: everything, what was unused for ``older_than``
    seconds, then the least recently used beyond ``keep_storage`` bytes; never an item
    ``keep`` keeps, nor a blob of ``spare`` (it stays, named or not)."""

    keep_storage: int | None = None
    older_than: float | None = None
    everything: bool = False
    now: float | None = None
    keep: Callable[[Item], bool] = lambda item: False
    spare: Collection[str] = ()


def prune_held(
    cache: Cache, inv: Inventory, rules: Rules, *, dry_run: bool = False, storage: Storage | None = None
) -> Pruned:
    """:func:`prune`'s work, the cache already held alone; ``inv`` is its inventory."""
    held = storage.size() if storage is not None else 0
    result = Pruned(left=inv.total, storage=held)
    now = rules.now if rules.now is not None else time.time()
    cutoff = now - rules.older_than if rules.older_than is not None else None
    order = [i for i in sorted(inv.items, key=lambda i: (i.last_use, i.kind, i.name)) if not rules.keep(i)]
    tried: set[int] = set()
    for item in order:
        if rules.everything or (cutoff is not None and item.last_use < cutoff):
            tried.add(id(item))
            _remove(cache, inv, item, result, dry_run=dry_run, spare=rules.spare)
    if rules.keep_storage is None:
        return result
    if storage is not None and not dry_run and result.left + result.storage > rules.keep_storage:
        result.storage = storage.release(_named(inv, rules.spare))  # leftovers first: they cost no entry
    for item in order:
        if result.left + result.storage <= rules.keep_storage:
            break
        if id(item) in tried:
            continue
        _remove(cache, inv, item, result, dry_run=dry_run, spare=rules.spare)
        gone = [d for d in set(item.blobs) if inv.refs[d] == 0 and d not in rules.spare]
        if storage is not None and not dry_run and any(storage.keeps(d) for d in gone):
            result.storage = storage.release(_named(inv, rules.spare))
    return result


def _named(inv: Inventory, spare: Collection[str]) -> set[str]:
    """The blobs still in the cache: named by an item left, or spared."""
    return {d for d, n in inv.refs.items() if n > 0} | {d for d in spare if d in inv.blob_sizes}


def _remove(
    cache: Cache, inv: Inventory, item: Item, result: Pruned, *, dry_run: bool, spare: Collection[str] = ()
) -> None:
    with _unless_locked(item.lock) as free:
        if not free:
            result.in_use.append(item)
            return
        if dry_run:
            pass
        elif item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path, onerror=_writable_then_retry)
            if item.kind == "folder":
                cache.put_folder_origin(item.path, None)  # a folder made there again is made here
        else:
            item.path.unlink(missing_ok=True)
    freed = item.own if item.kind != "blob" else 0
    for digest in set(item.blobs):
        inv.refs[digest] -= 1
        if inv.refs[digest] == 0 and digest in inv.blob_sizes and digest not in spare:
            if not dry_run:
                cache.blob_path(digest).unlink(missing_ok=True)
            freed += inv.blob_sizes[digest]
    result.removed.append(item)
    result.freed += freed
    result.left -= freed


@contextmanager
def _unless_locked(lock: Path | None) -> Iterator[bool]:
    """Holds ``lock`` (a kept folder's lock file) exclusively if nobody else does: True.
    The lock file itself stays: a build waiting on it holds it open."""
    if lock is None or not lock.exists():
        yield True
        return
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True


def _writable_then_retry(func: Callable[[str], object], path: str, _exc: object) -> None:
    # Build trees may hold read-only folders (a step's chmod): make the parent writable.
    os.chmod(os.path.dirname(path), 0o755)
    if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o755)
    func(path)


# -- the budget -------------------------------------------------------------------------


DEFAULT_SHARE = 0.10
DEFAULT_CAP = 100 << 30
_SHARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def filesystem_size(path: Path) -> int:
    """Bytes of the filesystem ``path`` is on (its nearest existing folder's)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    st = os.statvfs(probe)
    return st.f_frsize * st.f_blocks


def default_budget(root: Path) -> int:
    """10% of the filesystem the cache at ``root`` is on, at most 100 GiB."""
    return min(int(filesystem_size(root) * DEFAULT_SHARE), DEFAULT_CAP)


def parse_budget(text: str, root: Path, *, what: str) -> int:
    """Bytes from a size (``50G``, ``512MiB``) or a share of the cache's filesystem
    (``10%``). InputError naming ``what`` (the option or setting) when it is neither."""
    match = _SHARE.match(text)
    if match is not None:
        share = float(match.group(1))
        if not 0 < share <= 100:
            raise InputError(f"{what} {text}: a share of the disk is more than 0% and at most 100%")
        return int(filesystem_size(root) * share / 100)
    try:
        return parse_size(text)
    except InputError as e:
        raise InputError(f"{what}: {e}", hint="a size (50G, 512M) or a share of the cache's disk (10%)") from None


@dataclass(frozen=True)
class Kept:
    """What keeping the budget did: ``pruned`` is None when it was not done because
    another build holds the cache; ``held`` what the cache holds afterwards (storage
    included), ``budget`` its budget."""

    budget: int
    held: int
    pruned: Pruned | None


def keep_within(cache: Cache, budget: int, *, storage: Storage | None = None) -> Kept:
    """Remove the least recently used items of ``cache`` (and what of ``storage`` only they
    kept) until it holds at most ``budget`` bytes, sparing everything this process used
    (``cache.uses``). Nothing is removed while another process uses the cache, nor when it
    fits; what this process used may keep it over its budget."""
    inv = inventory(cache)
    held = inv.total + (storage.size() if storage is not None else 0)
    if held <= budget:
        return Kept(budget, held, Pruned(left=inv.total, storage=held - inv.total))
    if not cache.try_exclusive():
        log.info(
            "the cache at %s holds %d bytes, over its budget of %d: in use by another build", cache.root, held, budget
        )
        return Kept(budget, held, None)
    try:
        uses = cache.uses

        def used(item: Item) -> bool:
            return item.last_use >= uses.since  # hit, stamped or written since this build began

        inv = inventory(cache)  # again, held alone: a build may have ended since
        rules = Rules(keep_storage=budget, keep=used, spare=frozenset(uses.blobs))
        pruned = prune_held(cache, inv, rules, storage=storage)
    finally:
        cache.share()
    return Kept(budget, pruned.left + pruned.storage, pruned)
