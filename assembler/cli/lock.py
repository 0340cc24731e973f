"""``assemble lock``: resolve every Python set of a manifest's variants into its lock.

Light at import (the parser reads :func:`arguments` for every command): the locking code
is imported when the command runs."""

from __future__ import annotations

import argparse
import json
import shlex
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cli.arguments import param_args, param_sets, platform_arg, tls_verify_arg
from assembler.cli.console import out, say
from assembler.errors import InputError, ManifestError
from assembler.oci.descriptor import Platform

if TYPE_CHECKING:
    from assembler.pipeline.lock.lockreport import Locked
    from assembler.pipeline.variants import Variant


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", type=Path, help="the manifest (YAML)")
    param_args(p)
    p.add_argument(
        "--target",
        action="append",
        dest="targets",
        default=[],
        metavar="TARGET",
        help="lock this target (repeatable; default: every target)",
    )
    p.add_argument("--lock", type=Path, default=None, metavar="FILE", help="the lock (default: MANIFEST.lock)")
    p.add_argument(
        "--platform",
        action="append",
        dest="platforms",
        default=[],
        metavar="PLATFORM",
        help="lock for this os/arch[/variant] (repeatable; default: the manifest's): bases pinned per platform",
    )
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="resolve every set anew, as of today (the newest versions allowed; resolve_as_of left aside)",
    )
    p.add_argument(
        "--retry",
        action="store_true",
        help="try again what the lock records as failed (an index with no stand-in, a registry not reached)",
    )
    p.add_argument(
        "--upgrade-package",
        action="append",
        default=[],
        metavar="NAME",
        help="let this package move to its newest allowed version (repeatable)",
    )
    p.add_argument(
        "--pylock",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each locked Python set as a PEP 751 lock file, DIR/VARIANT/pylock.WHERE.toml "
        "(what uv pip install -r reads): the lock's versions and hashes, the files' URLs from the set's indexes",
    )
    tls_verify_arg(p, help="--tls-verify=false reads bases' digests from plain-HTTP (loopback) registries")
    p.add_argument("--json", action="store_true", help="print what was locked as JSON on stdout")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (twice: debug)")


def redo_command(args: argparse.Namespace) -> str:
    """The ``assemble lock`` command line that brings the lock of a build or plan up to date."""
    argv = ["assemble", "lock", str(args.manifest)]
    for target in args.targets:
        argv += ["--target", target]
    for key, value in args.set:
        argv += ["--set", f"{key}={value}"]
    for key, value in args.set_unlocked:
        argv += ["--set-unlocked", f"{key}={value}"]
    if getattr(args, "lock", None) is not None:
        argv += ["--lock", str(args.lock)]
    return shlex.join(argv)


def cmd_lock(args: argparse.Namespace) -> int:
    from assembler.pipeline.lock.locking import lock_name, lock_variants
    from assembler.pipeline.lock.lockreport import Asked
    from assembler.proc import Runner
    from assembler.spec.lockfile import default_lock_path

    sets = param_sets(args)
    path = (args.lock or default_lock_path(args.manifest)).resolve()
    variants = _variants(args, sets)
    if not args.targets and not sets and not args.platforms:
        variants += _locked_before(args, path, {lock_name(v, s) for v, s in variants})
    asked = Asked(args.upgrade, args.upgrade_package, args.retry, args.tls_verify)
    done = lock_variants(variants, path=path, runner=Runner(), asked=asked)
    _show(args, path, done, len(variants))
    _lock_weights(args.manifest)
    if args.pylock is not None:
        _pylocks(args.pylock, path, [d.variant for d in done], [v for v, _ in variants])
    errors = list(dict.fromkeys(d.why for d in done if d.state == "unresolvable"))
    if errors:
        raise InputError(
            "; ".join(errors) + f" (recorded in {path.name}: plan --locked refuses it)",
            hint="fix the sets that clash (force: true where upstream installs over another's pin), then lock again",
        )
    return 0


def _lock_weights(manifest: Path) -> None:
    """The manifest's models (weights:) locked file by file in MANIFEST.weights.lock."""
    from assembler.cache import Cache, default_root
    from assembler.spec.load import load_manifest
    from assembler.weights.lock import lock_path
    from assembler.weights.models import lock_all

    loaded = load_manifest(manifest)
    if not loaded.manifest.weights:
        return
    count, changed = lock_all(loaded, Cache(default_root().resolve()))
    say(f"{lock_path(loaded.path).name}: {count} model(s) locked" + ("" if changed else ", unchanged"))


def _pylocks(folder: Path, path: Path, variants: list[str], loaded: list[Variant]) -> None:
    """The Python sets of ``variants`` as PEP 751 files under ``folder``: their files read
    from the indexes the lock names, as the ``loaded`` variants give them (credentials and all)."""
    from assembler.pipeline.lock.locking import indexes_of
    from assembler.python.pylock import files_of, write_pylocks
    from assembler.spec.lockfile import read_lock

    files = files_of(indexes_of(loaded))
    written, skipped = write_pylocks(read_lock(path), variants, folder.resolve(), files=files)
    for where, why in skipped:
        say(f"  {where}: no pylock.toml: {why}")
    say(f"{folder}: {len(written)} pylock.toml file(s)" + (f", {len(skipped)} set(s) without" if skipped else ""))


def _variants(args: argparse.Namespace, sets: dict[str, str]) -> list[tuple[Variant, dict[str, str]]]:
    from assembler.pipeline.variants import load_variants

    unlocked = frozenset(name for name, _ in args.set_unlocked)
    variants = []
    for target in args.targets or _targets(args.manifest) or [None]:
        try:
            loaded = load_variants(
                args.manifest,
                sets=sets,
                unlocked=unlocked,
                targets=[target] if target else [],
                platforms=[platform_arg(p) for p in args.platforms],
            )
        except ManifestError as e:
            # Every target by default: one that refuses a --set is not built with it either.
            if args.targets or " contradicts " not in e.message:
                raise
            say(f"  target {target}: not locked with these --set: {e.message}")
            continue
        variants += [(v, sets) for v in loaded]
    if not variants:
        raise InputError("no target of the manifest takes these --set", hint="name a --target")
    return variants


def _locked_before(args: argparse.Namespace, path: Path, have: set[str]) -> list[tuple[Variant, dict[str, str]]]:
    """The variants the lock holds that a plain ``assemble lock`` would not load (those
    locked with ``--set``s: ``openai vllm_from=wheel``), loaded again with their ``--set``s."""
    from assembler.pipeline.lock.locking import lock_name
    from assembler.pipeline.variants import load_variants
    from assembler.spec.lockfile import read_lock

    try:
        names = list(read_lock(path, older=True).variants) if path.is_file() else []
    except InputError:
        return []  # a lock of a format this assemble cannot read: written anew
    targets = set(_targets(args.manifest))
    out = []
    for name in names:
        if name in have:
            continue
        words = name.split()
        target = words[0] if words and words[0] in targets else None
        sets = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        platforms = [Platform.parse(w) for w in words[1:] if "/" in w and "=" not in w]
        try:
            loaded = load_variants(args.manifest, sets=sets, targets=[target] if target else [], platforms=platforms)
        except ManifestError as e:
            say(f"  {name}: not locked again (kept as the lock has it): {e.message}")
            continue
        out += [(v, sets) for v in loaded if lock_name(v, sets) == name]
    return out


def _show(args: argparse.Namespace, path: Path, done: list[Locked], variants: int) -> None:
    if args.json:
        shown = [
            {
                "variant": d.variant,
                "set": d.where,
                "key": d.key,
                "state": d.state,
                "pins": d.pins,
                **({"why": d.why} if d.why else {}),
                **({"environment": d.environment, "as_of": d.as_of} if d.environment else {}),
            }
            for d in done
        ]
        out.print(json.dumps({"lock": str(path), "sets": shown}, indent=2), markup=False)
        return
    for d in done:
        why = f": {d.why}" if d.why and d.state != "unresolvable" else ""
        unit = "debs" if d.where.startswith("apt:") else "pins"
        count = f"{d.pins:>4} {unit}" if not d.where.startswith(("bases.", "sources.")) else " " * 9
        say(f"  {d.variant:<28} {d.where:<36} {d.state:<12} {count}{why}")
    # each environment's date and its rule, once (its variants' environments are often one)
    dates: dict[tuple[str, str], list[str]] = {}
    for d in done:
        if d.environment:
            names = dates.setdefault((d.environment, d.as_of), [])
            if d.variant not in names:
                names.append(d.variant)
    for (environment, as_of), names in dates.items():
        which = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        say(f"  {environment} ({which}): resolved as of {as_of}")
    counts = Counter(d.state for d in {d.key: d for d in done}.values())
    say(
        f"{path}: {variants} variant(s), "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + (" (no Python sets)" if not done else "")
    )


def _targets(path: Path) -> list[str]:
    from assembler.spec.yamlfile import load

    data, _ = load(path)
    targets = data.get("targets") if isinstance(data, dict) else None
    return list(targets) if isinstance(targets, dict) else []
