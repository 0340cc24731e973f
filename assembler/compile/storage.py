"""Pruning the cache's buildah storage (``CACHE/buildah``) along with the cache.

Steps run in buildah containers made from images that the storage keeps between builds:

- a base handed to buildah (:func:`assembler.compile.handover.hand_over`), pulled from a
  layout made for the pull: buildah keeps its manifest, so the image's digest is the
  cache's manifest blob;
- a base with a step's packages installed (``localhost/assemble-devel:KEY``,
  :func:`assembler.compile.container.with_packages`), made on top of such a base.

An image is referenced while its manifest stays in the cache (named by a kept entry, or an
unnamed blob not pruned yet: a base read from a layout), a package image while the base its
layers start with is. Prune runs while it holds the cache alone,
so no build uses the storage then: every working container in it is a leftover of a killed
run and goes, every image no kept entry references goes, and so does the staging layout
``CACHE/buildah/layout`` that builds before the hand-over's own folders kept (copies).

:class:`BuildahStorage` is that storage as a part of the cache's size budget
(:mod:`assembler.cache.prune`): its size, and its images let go of as the blobs keeping
them go. It spares the containers ``--keep-failed`` kept (and the images they run on).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler.cache import Cache
from assembler.cache.maintain import storage_size
from assembler.cache.prune import Kept, keep_within
from assembler.compile.buildah import Buildah
from assembler.compile.keepfailed import kept_containers
from assembler.errors import ToolError
from assembler.proc import Runner

log = logging.getLogger(__name__)

PACKAGE_IMAGES = "localhost/assemble-devel:"


@dataclass
class StoragePruned:
    """What pruning buildah's storage removed (or would remove)."""

    containers: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # a name of each (its ID if unnamed)
    kept: int = 0  # images kept


@dataclass(frozen=True)
class _Stored:
    id: str
    names: tuple[str, ...]
    digest: str  # its manifest's: a pulled base keeps ours
    diff_ids: tuple[str, ...]

    @property
    def label(self) -> str:
        return self.names[0] if self.names else self.id


def _json(buildah: Buildah, *args: str) -> Any:
    out = buildah.call([*buildah.globals, *args]).stdout.strip()
    return json.loads(out) if out else []


def _images(buildah: Buildah) -> list[_Stored]:
    out = []
    for image in _json(buildah, "images", "--all", "--json") or []:
        image_id = str(image.get("id", ""))
        inspect = _json(buildah, "inspect", "--type", "image", image_id)
        diff_ids = (inspect.get("OCIv1", {}).get("rootfs", {}) or {}).get("diff_ids") or []
        names = tuple(str(n) for n in image.get("names") or ())
        out.append(_Stored(image_id, names, str(image.get("digest", "")), tuple(diff_ids)))
    return out


def _referenced(images: Sequence[_Stored], named: Collection[str]) -> set[str]:
    """IDs of the images kept: bases a kept entry names, and package images made on them."""
    bases = [i for i in images if i.digest in named]
    kept = {i.id for i in bases}
    for image in images:
        packages = any(n.startswith(PACKAGE_IMAGES) for n in image.names)
        if packages and any(image.diff_ids[: len(b.diff_ids)] == b.diff_ids for b in bases if b.diff_ids):
            kept.add(image.id)
    return kept


def prune_storage(
    buildah: Buildah, *, named: Collection[str], everything: bool, dry_run: bool, spare: Collection[str] = ()
) -> StoragePruned:
    """Remove leftover containers and unreferenced images from ``buildah``'s storage;
    ``named`` holds the digests of the blobs the cache keeps; the containers of ``spare``
    (IDs) stay, and the images they run on. The caller holds the cache alone. Raises
    ToolError when buildah cannot list the storage."""
    result = StoragePruned()
    if not (buildah.storage / "root").is_dir():
        return result
    containers = _json(buildah, "containers", "--json") or []
    result.containers = [str(c.get("id", "")) for c in containers if str(c.get("id", "")) not in spare]
    images = _images(buildah)
    kept = set() if everything else _referenced(images, named)
    kept |= {str(c.get("imageid", "")) for c in containers if str(c.get("id", "")) in spare}
    gone = [i for i in images if i.id not in kept]
    result.images = [i.label for i in gone]
    result.kept = len(images) - len(gone)
    if dry_run:
        return result
    for container in result.containers:
        buildah.rm(container)
    for image in gone:
        done = buildah.call([*buildah.globals, "rmi", "--force", image.id], check=False)
        if done.returncode != 0 and "image not known" not in done.stderr:
            raise ToolError(f"buildah could not remove image {image.label}", stderr_tail=done.stderr)
    shutil.rmtree(buildah.storage / "layout", ignore_errors=True)
    shutil.rmtree(buildah.storage / "tmp", ignore_errors=True)  # what killed `buildah run`s left
    log.info("buildah storage: removed %d containers, %d images", len(result.containers), len(gone))
    return result


def cache_buildah(storage: Path, runner: Runner) -> Buildah:
    """The buildah of a cache's own storage (``CACHE/buildah``), with the driver it was
    made with (it answers to no other)."""
    vfs = (storage / "root" / "vfs").is_dir() and not (storage / "root" / "overlay").is_dir()
    return Buildah(runner, storage=storage, driver="vfs" if vfs else "overlay")


class BuildahStorage:
    """buildah's storage in a cache as a part of its size budget
    (:class:`assembler.cache.maintain.Storage`). ``spare``: containers that stay (those
    ``--keep-failed`` kept); ``removed`` gathers what :meth:`release` removed."""

    def __init__(self, buildah: Buildah, *, spare: Collection[str] = ()) -> None:
        self.buildah = buildah
        self.spare = frozenset(spare)
        self.removed = StoragePruned()
        self._digests: frozenset[str] | None = None

    def size(self) -> int:
        return storage_size(self.buildah.storage)

    def keeps(self, digest: str) -> bool:
        if self._digests is None:
            images = _images(self.buildah) if (self.buildah.storage / "root").is_dir() else []
            self._digests = frozenset(i.digest for i in images)
        return digest in self._digests

    def release(self, named: Collection[str]) -> int:
        done = prune_storage(self.buildah, named=named, everything=False, dry_run=False, spare=self.spare)
        self.removed.containers += done.containers
        self.removed.images += done.images
        self.removed.kept = done.kept
        self._digests = None
        return self.size()


def keep_cache_within(cache: Cache, budget: int, *, runner: Runner) -> tuple[Kept, StoragePruned]:
    """Keep ``cache`` within ``budget`` bytes after a build (:func:`keep_within`), its own
    buildah storage (``CACHE/buildah``) counted and pruned with it, the containers failures
    kept spared; what was removed of that storage. Raises ToolError when buildah cannot
    list it."""
    root = cache.root / "buildah"
    if not (root / "root").is_dir():
        return keep_within(cache, budget), StoragePruned()
    storage = BuildahStorage(cache_buildah(root, runner), spare=kept_containers(cache))
    return keep_within(cache, budget, storage=storage), storage.removed
