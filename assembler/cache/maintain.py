"""Listing and verifying the cache (``assemble cache ls|verify``).

Everything the cache holds is an *item* with a size and a last use:

- entries (``step``, ``layer``, ``base``, ``memo``: see :mod:`.entries`), last used when a
  build last hit them (a hit stamps the record's mtime); their size counts the blobs they
  name;
- ``replay``: what the up-to-date check answers a build run again from (``uptodate/``,
  :mod:`.uptodate`), last used when written;
- ``log``: step logs; ``folder``: what steps keep between builds (``step-caches/``);
  ``source``: git mirrors, checkouts and downloads (``sources/``);
- ``blob``: a blob no entry names (an image read from a layout, a converted manifest).

Pruning is :mod:`.prune`'s.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler.cache.entries import CORRUPT, Cache, StepResult, blobs_of, kind_of, parse
from assembler.cache.uptodate import Records
from assembler.errors import InputError
from assembler.oci.digest import file_digest

FILE_KINDS = ("log", "folder", "source", "blob")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

APT_SLOT_LOCK = "slot.lock"  # in step-caches/_apt[-N]/: held by the step using that set (compile/apt.py)


def parse_size(text: str) -> int:
    """Bytes from ``50G``, ``512MiB``, ``1.5T``, ``1000`` (binary units). InputError if not."""
    match = _SIZE.match(text)
    if match is None:
        raise InputError(f"not a size: {text!r} (expected e.g. 50G, 512M, 1.5T)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_duration(text: str) -> float:
    """Seconds from ``7d``, ``12h``, ``30m``, ``45s``, ``2w``. InputError if not."""
    match = _DURATION.match(text)
    if match is None:
        raise InputError(f"not a duration: {text!r} (expected e.g. 7d, 12h, 30m)")
    return float(match.group(1)) * _SECONDS[match.group(2).lower()]


@dataclass
class Item:
    """One thing in the cache: ``size`` is its own bytes plus the blobs it names."""

    kind: str
    name: str
    path: Path
    own: int
    last_use: float
    blobs: tuple[str, ...] = ()
    lock: Path | None = None
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": str(self.path),
            "size": self.size,
            "last_use": self.last_use,
            "blobs": list(self.blobs),
        }


@dataclass
class Inventory:
    items: list[Item]
    blob_sizes: dict[str, int]  # digest -> bytes, every blob in the store
    total: int = 0
    refs: Counter[str] = field(default_factory=Counter)
    storage: int = 0  # buildah's storage (CACHE/buildah): base images and step containers, outside the entries


def _tree_size(path: Path) -> int:
    """Bytes of the files and links under ``path``, a file with several hard links there
    once; what cannot be read counts nothing."""
    total, seen = 0, set()
    for folder, dirs, files in os.walk(path, onerror=lambda e: None):
        for name in (*files, *dirs):
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def storage_size(storage: Path) -> int:
    """Bytes of buildah's storage in a cache (``CACHE/buildah``): its images' layers and
    containers (and the staging layout older builds kept, copies of blobs, till a prune)."""
    return _tree_size(storage) if storage.is_dir() else 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def records(cache: Cache) -> Iterator[Path]:
    for path in sorted(cache.keys.glob("*/*.json")):
        if not path.name.startswith("."):
            yield path


def _entry_blobs(cache: Cache, value: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """An entry's kind and the digests it names (a base: its manifest, config and layers)."""
    kind = kind_of(value)
    try:
        parsed = parse(kind, value)
    except CORRUPT:
        return kind, ()
    if isinstance(parsed, str):
        try:
            manifest = json.loads(cache.blob_path(parsed).read_bytes())
            named = [manifest["config"]["digest"], *(d["digest"] for d in manifest["layers"])]
        except (OSError, *CORRUPT):
            named = []
        return kind, (parsed, *(str(d) for d in named))
    return kind, tuple(d for d, _ in blobs_of(parsed))


def _entry_name(key: str, value: dict[str, Any]) -> str:
    step = value.get("step")
    prefix = key.rsplit("-", 1)[0] if "-" in key else ""
    label = str(step) if isinstance(step, str) else prefix
    return f"{label} {key[-16:]}".strip()


def inventory(cache: Cache) -> Inventory:
    """Every item of the cache (unreadable records are listed as ``corrupt`` entries)."""
    items: list[Item] = []
    for path in records(cache):
        try:
            value = dict(cache.read_record(path))
            kind, named = _entry_blobs(cache, value)
            name = _entry_name(path.stem, value)
        except (OSError, ValueError):
            kind, named, name = "corrupt", (), path.stem
        items.append(Item(kind, name, path, _own(path), _mtime(path), named))
    items += _files(cache)
    sizes = {"sha256:" + p.name: _own(p) for p in cache.blobs.iterdir() if not p.name.startswith(".")}
    refs: Counter[str] = Counter(d for item in items for d in set(item.blobs))
    for digest, size in sorted(sizes.items()):
        if refs[digest] == 0:
            path = cache.blob_path(digest)
            items.append(Item("blob", digest, path, size, _mtime(path), (digest,)))
            refs[digest] += 1
    for item in items:
        item.size = item.own + sum(sizes.get(d, 0) for d in set(item.blobs) if item.kind != "blob")
    total = sum(i.own for i in items if i.kind != "blob") + sum(sizes.values())
    return Inventory(items, sizes, total, refs, storage_size(cache.root / "buildah"))


def _files(cache: Cache) -> list[Item]:
    """The items that are files and folders of their own, named by no blob: logs, records
    of the up-to-date check, kept step folders, sources."""
    items: list[Item] = []
    for path in sorted((cache.root / "logs").glob("*.log")):
        items.append(Item("log", path.name, path, _own(path), _mtime(path)))
    for path in Records(cache.root).files():
        items.append(Item("replay", path.stem[:16], path, _own(path), _mtime(path)))
    for path in sorted(cache.root.glob("step-caches/*/*")):
        if path.is_dir() and not path.is_symlink():
            if path.parent.name.startswith("_apt"):
                lock: Path | None = path.parent / APT_SLOT_LOCK
            else:
                lock = path.with_name(path.name + ".lock") if path.parent.name != "_shared" else None
            name = f"{path.parent.name}/{path.name}"
            items.append(Item("folder", name, path, _tree_size(path), _mtime(path), lock=lock))
    for path in sorted(cache.root.glob("sources/*/*")):
        if not path.name.startswith(".") and path.is_dir():
            items.append(Item("source", f"{path.parent.name}/{path.name}", path, _tree_size(path), _mtime(path)))
    return items


# The parts of a cache as ``cache ls`` shows them, in its order.
PARTS = (
    "step results",
    "bases",
    "layers",
    "blobs no entry names",
    "records",
    "kept build trees",
    "shared step caches",
    "apt lists and packages",
    "sources",
    "logs",
    "buildah storage",
)


def parts(inv: Inventory) -> dict[str, int]:
    """What each part of the cache holds on disk (:data:`PARTS`), each byte counted once,
    so that they add up to what a budget counts: a blob in the part of the first kind of
    entry naming it (step results, bases, layers: a base's layers that a step result also
    names are the step's), else among the blobs no entry names (bases read from layouts,
    images' manifests and configs); the records themselves; the folders steps keep by kind;
    sources (git mirrors, checkouts, downloads); step logs; buildah's storage."""
    claimed: dict[str, str] = {}
    for kind, part in (("step", "step results"), ("base", "bases"), ("layer", "layers")):
        for item in inv.items:
            if item.kind == kind:
                for digest in item.blobs:
                    claimed.setdefault(digest, part)
    out = dict.fromkeys(PARTS, 0)
    for digest, size in inv.blob_sizes.items():
        out[claimed.get(digest, "blobs no entry names")] += size
    for item in inv.items:
        if item.kind == "folder":
            group = item.name.split("/", 1)[0]
            part = "apt lists and packages" if group.startswith("_apt") else "kept build trees"
            out["shared step caches" if group == "_shared" else part] += item.own
        elif item.kind in ("source", "log"):
            out["sources" if item.kind == "source" else "logs"] += item.own
        elif item.kind != "blob":
            out["records"] += item.own
    out["buildah storage"] = inv.storage
    return out


def _own(path: Path) -> int:
    try:
        return path.lstat().st_size
    except OSError:
        return 0


# -- verify ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # "blob", "entry", "dangling"
    name: str
    why: str


def verify(cache: Cache, *, drop: bool = True, on_blob: Callable[[int], None] | None = None) -> list[Problem]:
    """Check every record (it parses as its kind) and every blob (its bytes are its
    digest), then every entry's blobs are present. With ``drop``, what is corrupt goes,
    and so do entries naming a blob that is gone (a build then makes them again)."""
    problems: list[Problem] = []
    for path in sorted(cache.blobs.iterdir()):
        if path.name.startswith("."):
            continue
        digest = "sha256:" + path.name
        try:
            actual = file_digest(path)
        except OSError as e:
            actual = f"unreadable ({e.strerror})"
        if actual != digest:
            problems.append(Problem("blob", digest, f"its bytes are {actual}"))
            if drop:
                path.unlink(missing_ok=True)
        if on_blob is not None:
            on_blob(_own(path))
    for path in records(cache):
        problem = _check_record(cache, path)
        if problem is not None:
            problems.append(problem)
            if drop:
                path.unlink(missing_ok=True)
    return problems


def _check_record(cache: Cache, path: Path) -> Problem | None:
    try:
        value = cache.read_record(path)
        kind = kind_of(value)
        parsed = parse(kind, value)
    except (OSError, *CORRUPT) as e:
        return Problem("entry", path.stem, f"unreadable: {e}")
    # A base's blobs are its manifest's: get_image reads (and digest-checks) it and its config.
    present = cache.get_image(parsed) is not None if isinstance(parsed, str) else cache.blobs_present(blobs_of(parsed))
    if not present:
        label = parsed.step if isinstance(parsed, StepResult) else kind
        return Problem("dangling", path.stem, f"{label} entry names a blob that is not in the cache")
    return None
