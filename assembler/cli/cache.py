"""``assemble cache ls|verify|prune``: the cache as a user sees it (display only; the work
is :mod:`assembler.cache.maintain`).

    assemble cache ls [--json]                 entries by kind, what each part of the cache holds, its budget
    assemble cache verify [--dry-run] [--json] check every entry and blob; drop what is corrupt
    assemble cache prune [--keep-storage SIZE] [--older-than DURATION] [--all] [--dry-run]

``verify`` exits 1 when it found anything corrupt (and dropped it, unless ``--dry-run``:
the next build makes it again), 0 when all is well. Bad input exits 2.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembler.cache import Cache, default_root
from assembler.cache import maintain as mt
from assembler.cache import prune as pr
from assembler.cli.console import err, out
from assembler.cli.userconfig import cache_budget
from assembler.errors import InputError

if TYPE_CHECKING:
    from assembler.compile.storage import BuildahStorage, StoragePruned

_out, _err = out, err
_ORDER = ("step", "layer", "base", "memo", "replay", "log", "folder", "source", "blob", "corrupt")


def _say(text: str) -> None:
    _out.print(text, markup=False)


def _argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def arguments(p: argparse.ArgumentParser) -> None:
    """The ``cache`` command's subcommands."""
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p), required=True)
    ls = actions.add_parser("ls", help="list entries by kind, what each part of the cache holds, and its budget")
    verify = actions.add_parser("verify", help="check every entry and blob; drop corrupt ones (exit 1 if any)")
    verify.add_argument("--dry-run", action="store_true", help="report only; drop nothing")
    prune = actions.add_parser("prune", help="remove entries by age and/or to a size (least recently used first)")
    prune.add_argument(
        "--keep-storage",
        type=_argtype(mt.parse_size),
        default=None,
        metavar="SIZE",
        help="remove the least recently used until the cache (buildah's storage in it included) holds at "
        "most SIZE (e.g. 50G)",
    )
    prune.add_argument(
        "--older-than",
        type=_argtype(mt.parse_duration),
        default=None,
        metavar="DURATION",
        help="remove what was not used for DURATION (e.g. 7d, 12h, 30m)",
    )
    prune.add_argument("--all", action="store_true", help="remove everything not in use")
    prune.add_argument("--dry-run", action="store_true", help="show what would go; remove nothing")
    for q in (ls, verify, prune):
        q.add_argument("--cache", type=Path, default=None, help="cache folder (default: $XDG_CACHE_HOME/assembler)")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.add_argument("-v", "--verbose", action="count", default=0)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def run(args: argparse.Namespace) -> int:
    """Run ``assemble cache ACTION``; its exit status."""
    root = (args.cache or default_root()).resolve()
    if args.action == "prune" and not (args.all or args.keep_storage is not None or args.older_than is not None):
        raise InputError("say what to prune", hint="pass --keep-storage SIZE, --older-than DURATION or --all")
    if root.exists() and not root.is_dir():
        raise InputError(f"{root} is not a folder")
    if not root.exists():
        _say(json.dumps({"root": str(root), "items": []}) if args.json else f"no cache at {root}")
        return 0
    cache = Cache(root)
    if args.action == "ls":
        return _ls(cache, as_json=args.json)
    if args.action == "verify":
        return _verify(cache, drop=not args.dry_run, as_json=args.json)
    return _prune(cache, args)


def _summary(items: list[mt.Item]) -> dict[str, dict[str, float]]:
    kinds: dict[str, dict[str, float]] = {}
    for item in items:
        k = kinds.setdefault(item.kind, {"count": 0, "size": 0, "last_use": 0.0})
        k["count"] += 1
        k["size"] += item.size
        k["last_use"] = max(k["last_use"], item.last_use)
    return dict(sorted(kinds.items(), key=lambda kv: _ORDER.index(kv[0]) if kv[0] in _ORDER else 99))


def _ls(cache: Cache, *, as_json: bool) -> int:
    inv = mt.inventory(cache)
    kinds = _summary(inv.items)
    parts = mt.parts(inv)
    budget = cache_budget(None, cache.root)
    if as_json:
        data = {
            "root": str(cache.root),
            "total": inv.total,
            "storage": inv.storage,
            "held": sum(parts.values()),
            "budget": budget,
            "parts": parts,
            "kinds": kinds,
            "items": [i.to_json() for i in inv.items],
        }
        _say(json.dumps(data, indent=2))
        return 0
    for kind in kinds:
        items = sorted((i for i in inv.items if i.kind == kind), key=lambda i: -i.last_use)
        for item in items:
            _say(f"{kind:<7} {_size(item.size):>10}  {_when(item.last_use)}  {item.name}")
    _say("")
    _say(f"{'KIND':<7} {'COUNT':>6} {'SIZE':>10}  LAST USE")
    for kind, k in kinds.items():
        _say(f"{kind:<7} {int(k['count']):>6} {_size(int(k['size'])):>10}  {_when(k['last_use'])}")
    _say(f"total: {_size(inv.total)} in {cache.root} (an entry's size counts the blobs it names, shared or not)")
    _say("")
    _say(f"{'PART':<24} {'SIZE':>10}")
    for part, n in parts.items():
        _say(f"{part:<24} {_size(n):>10}")
    _say(
        f"the cache holds {_size(sum(parts.values()))} (each byte once, buildah's images and containers included); "
        f"its budget: {_size(budget)} (--cache-max-size, else cache-max-size of the config file, else 10% of its "
        "disk, at most 100 GiB): a build removes the least recently used beyond it"
    )
    return 0


def _verify(cache: Cache, *, drop: bool, as_json: bool) -> int:
    problems = mt.verify(cache, drop=drop)
    if as_json:
        _say(json.dumps({"dropped": drop, "problems": [p.__dict__ for p in problems]}, indent=2))
    else:
        done = "dropped" if drop else "found (not dropped: --dry-run)"
        for p in problems:
            _say(f"{p.kind} {p.name}: {p.why}: {done}")
        _say(f"{len(problems)} corrupt" + (f", {done}; the next build makes them again" if problems else ": all good"))
    return 1 if problems else 0


def _prune_storage(
    cache: Cache, result: pr.Pruned, args: argparse.Namespace, counted: BuildahStorage | None
) -> StoragePruned:
    """buildah's storage pruned to what the entries left behind reference (the cache is
    still held alone: :func:`pr.prune` took it), with what ``counted`` (the storage as
    ``--keep-storage`` counted it) already removed."""
    from assembler.compile.storage import cache_buildah, prune_storage  # buildah's code only when pruning
    from assembler.proc import Runner

    gone = {i.path for i in result.removed}
    # What stays: the blobs kept entries name and the unnamed blobs kept (a layout base's manifest).
    named = {d for i in mt.inventory(cache).items if i.path not in gone for d in i.blobs}
    buildah = cache_buildah(cache.root / "buildah", Runner())
    done = prune_storage(buildah, named=named, everything=args.all, dry_run=args.dry_run)
    if counted is not None:
        done.containers[:0] = counted.removed.containers
        done.images[:0] = counted.removed.images
    return done


def _counted_storage(cache: Cache, args: argparse.Namespace) -> BuildahStorage | None:
    """buildah's storage in the cache as ``--keep-storage`` counts it (None: not pruned to a size)."""
    if args.keep_storage is None or args.dry_run or not (cache.root / "buildah" / "root").is_dir():
        return None
    from assembler.compile.storage import BuildahStorage, cache_buildah
    from assembler.proc import Runner

    return BuildahStorage(cache_buildah(cache.root / "buildah", Runner()))


def _prune(cache: Cache, args: argparse.Namespace) -> int:
    counted = _counted_storage(cache, args)
    result = pr.prune(
        cache,
        keep_storage=args.keep_storage,
        older_than=args.older_than,
        everything=args.all,
        dry_run=args.dry_run,
        storage=counted,
    )
    storage = _prune_storage(cache, result, args, counted)
    if args.json:
        data = {
            "dry_run": args.dry_run,
            "freed": result.freed,
            "left": result.left,
            "removed": [i.to_json() for i in result.removed],
            "in_use": [i.to_json() for i in result.in_use],
            "buildah": {"containers": storage.containers, "images": storage.images, "kept": storage.kept},
        }
        _say(json.dumps(data, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    if args.verbose:
        for item in result.removed:
            _say(f"{verb} {item.kind} {item.name} (last used {_when(item.last_use)})")
    for item in result.in_use:
        _err.print(f"kept {item.kind} {item.name}: in use by a running build", markup=False)
    _say(f"{verb} {len(result.removed)} items, {_size(result.freed)}; the cache holds {_size(result.left)}")
    if storage.containers or storage.images:
        if args.verbose:
            for name in storage.images:
                _say(f"{verb} buildah image {name}")
        _say(
            f"buildah storage: {verb} {len(storage.containers)} leftover containers, {len(storage.images)} images "
            f"({storage.kept} kept)"
        )
    return 0
