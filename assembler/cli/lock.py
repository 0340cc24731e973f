"""``assemble lock``: resolve every Python set of a manifest's variants into its lock, and
the Debian packages of its bootstrapped bases and ``packages:``.

It takes a build's options (a build's command line locks as it is, ``lock`` for ``build``:
``assemble lock --cache`` was refused, issue 67), keys the bases by them, and records in
that cache the bases a build made before it that hold what it locks. Every failure exits
non-zero, saying what failed: a set that cannot be resolved or packages apt refused (2), a
Debian dry run that could not run (1, with doctor's fix where the host is the cause).

Light at import (the parser reads :func:`arguments` for every command): the locking code
is imported when the command runs."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cli.arguments import param_sets, platform_arg
from assembler.cli.buildargs import plan_arguments
from assembler.cli.console import out, say
from assembler.errors import AssemblerError, InputError, ManifestError
from assembler.oci.descriptor import Platform

if TYPE_CHECKING:
    from assembler.pipeline.lock.lockreport import Locked
    from assembler.pipeline.variants import Variant


def arguments(p: argparse.ArgumentParser) -> None:
    """A build's arguments (a build's command line locks as it is written, ``lock`` for
    ``build``: ``--cache``, ``--epoch``, ``--compression`` and ``--platform`` key the bases it
    takes from the build before it and leaves to the next), then the lock's own."""
    plan_arguments(p)
    g = p.add_argument_group(
        "locking",
        "what is resolved anew; of a build's options, --base and --source are refused (a lock is the "
        "manifest's) and those of outputs, tests and signing change nothing here",
    )
    g.add_argument(
        "--upgrade",
        action="store_true",
        help="resolve every set anew, as of today (the newest versions allowed; resolve_as_of left aside)",
    )
    g.add_argument(
        "--retry",
        action="store_true",
        help="try again what the lock records as failed (an index with no stand-in, a registry not reached)",
    )
    g.add_argument(
        "--upgrade-package",
        action="append",
        default=[],
        metavar="NAME",
        help="let this package move to its newest allowed version (repeatable)",
    )
    g.add_argument(
        "--pylock",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each locked Python set as a PEP 751 lock file, DIR/VARIANT/pylock.WHERE.toml "
        "(what uv pip install -r reads): the lock's versions and hashes, the files' URLs from the set's indexes",
    )


def cmd_lock(args: argparse.Namespace) -> int:
    from assembler.cache import default_root
    from assembler.manifest.lock.file import default_lock_path
    from assembler.pipeline.lock.locking import lock_name, lock_variants
    from assembler.pipeline.lock.lockreport import Asked
    from assembler.proc import Runner

    if args.base or args.source:
        raise InputError(
            f"{'--base' if args.base else '--source'}: a lock is the manifest's, not one build's replacement",
            hint="lock without it; a build with it applies the lock to what it does not replace",
        )
    sets = param_sets(args)
    path = (args.lock or default_lock_path(args.manifest)).resolve()
    variants = _variants(args, sets)
    if not args.targets and not sets and not args.platforms:
        variants += _locked_before(args, path, {lock_name(v, s) for v, s in variants})
    asked = Asked(args.upgrade, args.upgrade_package, args.retry, args.tls_verify)
    was = path.read_bytes() if path.is_file() else None
    done = lock_variants(variants, path=path, runner=Runner(), asked=asked)
    _show(args, path, done, len(variants))
    cache = (args.cache or default_root()).resolve()
    _lock_weights(args.manifest, cache)
    if args.pylock is not None:
        _pylocks(args.pylock, path, [d.variant for d in done], [v for v, _ in variants])
    _refuse_failures(done, path)
    # A lock that moved nothing has nothing new to take, unless a cache is named (the one a
    # build used, where the lock written before did not look).
    if args.cache is not None or not path.is_file() or path.read_bytes() != was:
        _reuse_built(args, path, cache, [v for v, _ in variants])
    return 0


def _refuse_failures(done: list[Locked], path: Path) -> None:
    """The lock's failures as the command's error, after the lock is written with them:
    sets that cannot be resolved and Debian packages apt refused (exit 2), then Debian sets
    whose dry run failed otherwise (exit 1: the host or the mirror), each once."""
    from assembler.hostuser import host_cause

    def whys(*states: str, apt: bool) -> list[str]:
        return list(dict.fromkeys(d.why for d in done if d.state in states and d.where.startswith("apt:") == apt))

    python, debian = whys("unresolvable", apt=False), whys("unresolvable", apt=True)
    if python or debian:
        hints = [
            *(["fix the sets that clash (force: true where upstream installs over another's pin)"] if python else []),
            *(["fix the Debian package names (apt-cache policy NAME on that suite)"] if debian else []),
        ]
        said = [
            *(["; ".join(python) + f" (recorded in {path.name}: plan --locked refuses it)"] if python else []),
            *(["; ".join(debian) + f" (recorded in {path.name}: plan and build refuse it)"] if debian else []),
        ]
        raise InputError("; ".join(said), hint=", ".join(hints) + ", then lock again")
    failed = whys("unresolved", apt=True)
    if failed:
        hint = next((h for why in failed if (h := host_cause(why))), None)
        raise AssemblerError(
            "Debian packages could not be locked: " + "; ".join(failed),
            hint=hint or "once fixed, assemble lock --retry tries them again (a lock keeps what failed)",
        )


def _reuse_built(args: argparse.Namespace, path: Path, cache: Path, variants: list[Variant]) -> None:
    """The bases and steps a build made before the lock (in ``cache``, keyed by the build's
    options), recorded under the lock's keys where they hold what it locks: the next build
    makes none of them again (:mod:`assembler.pipeline.lock.lockbases`, ``locksteps``)."""
    from assembler.assemble import Options, open_run, resolve
    from assembler.cli.arguments import registry_options
    from assembler.pipeline.lock.lockbases import reuse_bases
    from assembler.pipeline.lock.locking import with_lock
    from assembler.pipeline.lock.locksteps import reuse_steps
    from assembler.pipeline.options import resolve_epoch
    from assembler.proc import Runner

    if not variants or not path.is_file() or not cache.is_dir():  # no lock written, or nothing built
        return
    applied, _ = with_lock(variants, path=path, locked=False, redo="")
    options = Options(
        cache_dir=cache,
        epoch=resolve_epoch(args.epoch, variants[0].loaded.manifest.epoch),
        platform=platform_arg(args.platforms[0]) if len(args.platforms) == 1 else None,
        registry=registry_options(args),
        compression=args.compression,
    )
    for before, variant in zip(variants, applied, strict=True):
        if variant.loaded.lock is None:
            continue
        run = open_run(variant.loaded, variant.options(options), runner=Runner(), check=False)
        for name in reuse_bases(run):
            say(f"  base {name}: the one built before the lock holds what it locks: kept for the next build")
        built = open_run(before.loaded, before.options(options), runner=Runner(), check=False)
        for name in reuse_steps(built, run, resolve):
            say(f"  step {name}: the one built before the lock installed what it locks: kept for the next build")


def _lock_weights(manifest: Path, cache: Path) -> None:
    """The manifest's models (weights:) locked file by file in MANIFEST.weights.lock, their
    files fetched into ``cache`` (the build's, where it finds them)."""
    from assembler.cache import Cache
    from assembler.manifest.load.manifest import load_manifest
    from assembler.weights.lock import lock_path
    from assembler.weights.models import lock_all

    loaded = load_manifest(manifest)
    if not loaded.manifest.weights:
        return
    count, changed = lock_all(loaded, Cache(cache))
    say(f"{lock_path(loaded.path).name}: {count} model(s) locked" + ("" if changed else ", unchanged"))


def _pylocks(folder: Path, path: Path, variants: list[str], loaded: list[Variant]) -> None:
    """The Python sets of ``variants`` as PEP 751 files under ``folder``: their files read
    from the indexes the lock names, as the ``loaded`` variants give them (credentials and all)."""
    from assembler.manifest.lock.file import read_lock
    from assembler.pipeline.lock.locking import indexes_of
    from assembler.python.pylock import files_of, write_pylocks

    files = files_of(indexes_of(loaded))
    written, skipped = write_pylocks(read_lock(path), variants, folder.resolve(), files=files)
    for where, why in skipped:
        say(f"  {where}: no pylock.toml: {why}")
    say(f"{folder}: {len(written)} pylock.toml file(s)" + (f", {len(skipped)} set(s) without" if skipped else ""))


def _variants(args: argparse.Namespace, sets: dict[str, str]) -> list[tuple[Variant, dict[str, str]]]:
    from assembler.pipeline.variants import load_variants

    unlocked = frozenset(name for name, _ in args.set_unlocked)
    variants = []
    for target in args.targets or _every_target(args.manifest):
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
    from assembler.manifest.lock.file import read_lock
    from assembler.pipeline.lock.locking import lock_name
    from assembler.pipeline.variants import load_variants

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


def _every_target(path: Path) -> list[str | None]:
    """What ``assemble lock`` locks with no ``--target``: every target, and the manifest's own
    image where a build with no ``--target`` makes that one (no ``default_target``): a lock of
    ``standin`` alone left ``plan --locked`` of the default image stale."""
    from assembler.manifest.text.yamlfile import load

    data, _ = load(path)
    targets: list[str | None] = list(_targets(path))
    if not targets or (isinstance(data, dict) and data.get("image") is not None and not data.get("default_target")):
        targets.insert(0, None)
    return targets


def _targets(path: Path) -> list[str]:
    from assembler.manifest.text.yamlfile import load

    data, _ = load(path)
    targets = data.get("targets") if isinstance(data, dict) else None
    return list(targets) if isinstance(targets, dict) else []
