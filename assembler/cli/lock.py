"""``assemble lock``: resolve every Python set of a manifest's variants into its lock."""

from __future__ import annotations

import argparse
import json
import shlex
from collections import Counter
from pathlib import Path

from assembler.cli.console import out, say
from assembler.errors import InputError, ManifestError
from assembler.pipeline.locking import lock_variants
from assembler.pipeline.variants import load_variants
from assembler.proc import Runner
from assembler.spec.lockfile import default_lock_path


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from assembler.cli.args import _pair
    from assembler.cli.registry_args import bool_arg as _bool

    p = sub.add_parser("lock", help="resolve every Python set of every target and variant into MANIFEST.lock")
    p.add_argument("manifest", type=Path, help="the manifest (YAML)")
    p.add_argument("--set", action="append", type=_pair, default=[], metavar="K=V", help="override a param")
    p.add_argument(
        "--set-unlocked",
        action="append",
        type=_pair,
        default=[],
        metavar="K=V",
        help="override a param even where the target or a chosen choice fixes it",
    )
    p.add_argument(
        "--target",
        action="append",
        dest="targets",
        default=[],
        metavar="TARGET",
        help="lock this target (repeatable; default: every target)",
    )
    p.add_argument("--lock", type=Path, default=None, metavar="FILE", help="the lock (default: MANIFEST.lock)")
    p.add_argument("--upgrade", action="store_true", help="resolve every set anew (the newest versions allowed)")
    p.add_argument(
        "--upgrade-package",
        action="append",
        default=[],
        metavar="NAME",
        help="let this package move to its newest allowed version (repeatable)",
    )
    p.add_argument(
        "--tls-verify",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="--tls-verify=false reads bases' digests from plain-HTTP (loopback) registries",
    )
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
    from assembler.cli.build import _sets

    sets = _sets(args)
    unlocked = frozenset(name for name, _ in args.set_unlocked)
    variants = []
    for target in args.targets or _targets(args.manifest) or [None]:
        try:
            variants += load_variants(args.manifest, sets=sets, unlocked=unlocked, targets=[target] if target else [])
        except ManifestError as e:
            # Every target by default: one that refuses a --set is not built with it either.
            if args.targets or " contradicts " not in e.message:
                raise
            say(f"  target {target}: not locked with these --set: {e.message}")
    if not variants:
        raise InputError("no target of the manifest takes these --set", hint="name a --target")
    path = (args.lock or default_lock_path(args.manifest)).resolve()
    done = lock_variants(
        variants,
        path=path,
        sets=sets,
        runner=Runner(),
        upgrade=args.upgrade,
        upgrade_packages=args.upgrade_package,
        tls_verify=args.tls_verify,
    )
    if args.json:
        shown = [
            {
                "variant": d.variant,
                "set": d.where,
                "key": d.key,
                "state": d.state,
                "pins": d.pins,
                **({"why": d.why} if d.why else {}),
            }
            for d in done
        ]
        out.print(json.dumps({"lock": str(path), "sets": shown}, indent=2), markup=False)
        return 0
    for d in done:
        why = f": {d.why}" if d.why else ""
        count = f"{d.pins:>4} pins" if not d.where.startswith(("bases.", "sources.")) else " " * 9
        say(f"  {d.variant:<28} {d.where:<36} {d.state:<10} {count}{why}")
    counts = Counter(d.state for d in {d.key: d for d in done}.values())
    say(
        f"{path}: {len(variants)} variant(s), "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + (" (no Python sets)" if not done else "")
    )
    return 0


def _targets(path: Path) -> list[str]:
    from assembler.spec.yamlfile import load

    data, _ = load(path)
    targets = data.get("targets") if isinstance(data, dict) else None
    return list(targets) if isinstance(targets, dict) else []
