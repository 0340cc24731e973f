"""``assemble build`` and ``assemble plan``: a manifest into an image, or what that would do."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from assembler.assemble import Options, Plan, Result, assemble_variants, resolve_epoch
from assembler.cache import default_root
from assembler.cache.maintain import parse_size
from assembler.cli.arguments import param_sets, platform_arg, registry_options, slurm_args, storage_arg
from assembler.cli.buildargs import redo_command
from assembler.cli.console import err, mode_of, out, say, size
from assembler.cli.digestfile import check_digestfile, write_digest
from assembler.cli.keys import signer_of
from assembler.cli.progress import showing
from assembler.cli.userconfig import cache_budget, read_config
from assembler.errors import InputError
from assembler.manifest.text.suggest import known_names
from assembler.oci.artifact import Artifact
from assembler.oci.reference import absolute_ref, parse_ref
from assembler.pipeline.checks.idle import idle_sets
from assembler.pipeline.graph import step_names
from assembler.pipeline.lock.locking import with_lock
from assembler.pipeline.options import DEFAULT_LAYER_BUDGET, Event, Reporter
from assembler.pipeline.variants import Variant, load_variants
from assembler.proc import Runner

if TYPE_CHECKING:
    from assembler.sign import Verifier
    from assembler.transports.context import Written


def _options(args: argparse.Namespace, manifest_epoch: int | None, manifest_cache: str | None = None) -> Options:
    cli_to, cli_from = getattr(args, "cache_to", None), tuple(getattr(args, "cache_from", ()))
    cache_to = cli_to if cli_to is not None else manifest_cache
    cache_from = cli_from or ((manifest_cache,) if manifest_cache else ())
    if cache_to or cache_from:
        # bad input: exit 2 before any work (the registry client is loaded only when named)
        from assembler.stepcache.steps import parse_cache_ref

        for ref in (cache_to, *cache_from):
            if ref:
                parse_cache_ref(ref)
    sign_key = getattr(args, "sign", None)
    sign = signer_of(sign_key, "--sign") if sign_key else None
    cache_sign = getattr(args, "cache_sign", None)  # else --sign's key signs the cache's entries
    cache_signer = signer_of(cache_sign, "--cache-sign") if cache_sign and cache_sign != sign_key else sign
    return Options(
        cache_dir=(args.cache or default_root()).resolve(),
        epoch=resolve_epoch(args.epoch, manifest_epoch),
        platform=platform_arg(args.platforms[0]) if len(args.platforms) == 1 else None,
        registry=registry_options(args),
        outputs=tuple(args.outputs) if args.outputs else None,
        no_cache=args.no_cache,
        rebuild=frozenset(args.rebuild),
        storage_driver=args.storage_driver,
        buildah_root=storage_arg(args.storage),
        host_ca=not args.no_host_ca,
        compression=args.compression,
        attach_sif=args.attach_sif,
        force=args.force,
        jobs=args.jobs,
        cache_to=cache_to,
        cache_from=cache_from,
        executor=args.executor,
        slurm_args=slurm_args(args.slurm_args),
        deps_check=not getattr(args, "no_deps_check", False),
        sbom=not getattr(args, "no_sbom", False),
        artifacts=tuple(getattr(args, "artifact", None) or ()),
        sign=sign,
        cache_sign=cache_signer,
        cache_max=parse_size(getattr(args, "cache_max", None) or "5G"),
        layer_budget=_layer_budget(getattr(args, "layer_budget", None)),
        cache_trust=_trusted(getattr(args, "cache_trust", [])) if cache_to or cache_from else (),
        tests=not args.no_tests,
        test_on=args.test_on,
        slurm_sif=getattr(args, "slurm_sif", "shared"),
        keep_failed=args.keep_failed,
        preflight=not args.no_preflight,
        offline=args.offline,
    )


def _layer_budget(text: str | None) -> int:
    """``--layer-budget``'s bytes (0: no layer is cut); InputError for what is no size."""
    if text is None:
        return DEFAULT_LAYER_BUDGET
    try:
        return parse_size(text)
    except InputError as e:
        raise InputError(f"--layer-budget: {e}", hint="a size such as 512M or 1G, or 0 to cut no layer") from None


def _trusted(keys: list[Path]) -> tuple[Verifier, ...]:
    """The keys of ``--cache-trust``, else of the config file's ``cache-trust``; InputError
    when one does not load."""
    from assembler.sign import load_public_key  # cryptography: only when keys are named

    where = "--cache-trust"
    if not keys:
        config = read_config()
        keys, where = list(config.cache_trust), f"cache-trust of {config.path}"
    out = []
    for key in keys:
        try:
            data = key.read_bytes()
        except OSError as e:
            raise InputError(f"{where}: {key}: {e.strerror or e}") from None
        out.append(load_public_key(data, what=f"{where}: {key}"))
    return tuple(out)


def _load(args: argparse.Namespace) -> tuple[list[Variant], list[str]]:
    """The run's variants, and a warning for each ``--set`` that changes nothing."""
    bases = {}
    for name, ref in args.base:
        bases[name] = str(absolute_ref(parse_ref(ref), Path.cwd()))  # BadReference quotes the text
    sets, unlocked, sources = param_sets(args), frozenset(name for name, _ in args.set_unlocked), dict(args.source)
    variants = load_variants(
        args.manifest,
        sets=sets,
        unlocked=unlocked,
        targets=args.targets,
        all_targets=args.all_targets,
        bases=bases,
        sources=sources,
        outputs=args.outputs,
        platforms=[platform_arg(p) for p in args.platforms],
    )
    check_rebuild(args.rebuild, variants, args.manifest)
    idle = idle_sets(
        args.manifest, variants, sets=sets, unlocked=unlocked, bases=bases, sources=sources, outputs=args.outputs
    )
    variants, lock_warnings = with_lock(
        variants, path=args.lock, locked=args.locked, redo=redo_command(args), allow_unresolved=args.allow_unresolved
    )
    return variants, idle + lock_warnings


def check_rebuild(names: list[str], variants: list[Variant], manifest: Path) -> None:
    """InputError for a ``--rebuild`` that names no step of the variants built (a typo
    would otherwise rebuild nothing, silently), with the step it is most like."""
    steps = {name for v in variants for name in step_names(v.loaded.manifest)}
    for name in names:
        if name not in steps:
            raise InputError(
                f"--rebuild {name}: no step {name!r} in {manifest}", hint=known_names(name, steps, "its steps")
            )


def _result_json(result: Result) -> dict[str, Any]:
    return {
        "digest": result.digest,
        "seconds": round(result.seconds, 3),
        "layers": [dataclasses.asdict(layer) for layer in result.layers],
        "steps": [dataclasses.asdict(step) for step in result.steps],
        "outputs": [dataclasses.asdict(w) for w in result.outputs],
        "step_cache": dict(result.step_cache),
        "base_bytes_read": result.base_bytes_read,
        "referrers": [_referrer_json(a) for a in result.referrers],
    }


def _referrer_json(a: Artifact) -> dict[str, str]:
    return {"artifact_type": a.artifact_type, "digest": a.digest, "blob": a.blob.digest, "title": a.title}


def pushed(w: Written) -> str:
    """What writing an output to a registry sent: ``3 blob(s), 1.2 GiB uploaded, 5 there
    already`` (a plain build says it of each push, its weights' too, as ``watch`` does)."""
    return f"{w.uploaded_blobs} blob(s), {size(w.uploaded_bytes)} uploaded, {w.skipped_blobs} there already"


def _was_pushed(w: Written) -> bool:
    return bool(w.uploaded_blobs or w.skipped_blobs or w.mounted_blobs or w.uploaded_bytes)


def summary_lines(result: Result) -> list[str]:
    """What a build says of ``result`` (its time aside)."""
    lines = [f"image {result.digest}"]
    for layer in result.layers:
        layer_size = size(layer.size) if layer.size is not None else "?"
        lines.append(f"  {layer.index:>2} {layer.origin:<6} {layer_size:>10}  {layer.what}")
    for s in result.steps:
        lines.append(f"  step {s.name}: {s.state} ({s.seconds:.1f} s)")
    for w in result.outputs:
        lines.append(f"  -> {w.ref}" + (f": {pushed(w)}" if _was_pushed(w) else ""))
    lines.append(f"  base layers read: {size(result.base_bytes_read)}")
    if result.step_cache:
        c = result.step_cache
        lines.append(
            f"  step cache: {c['hits']} hit(s), {c['exported']} exported, {size(c['downloaded_bytes'])} down, "
            f"{c['uploaded_blobs']} blob(s) / {size(c['uploaded_bytes'])} up"
            + (f", {c['untrusted']} refused" if c.get("untrusted") else "")
        )
    return lines


def grew_cache(result: Result) -> bool:
    """Whether the build ``result`` may have added to its cache: it ran a step, wrote a
    layer, or brought in a base, a step or a folder. A build that did none of these (a
    no-change rebuild) leaves the cache as it was, so its budget is not checked then unless
    ``--cache-max-size`` asks: measuring buildah's storage and the cache walks every file
    of both (a second for the demo, twice the rest of such a build)."""
    return (
        any(step.state != "cached" for step in result.steps)
        or any(layer.origin not in ("base", "cached") for layer in result.layers)
        or result.base_bytes_read > 0
        or any(result.step_cache.values())
    )


def keep_budget(cache_dir: Path, budget: int, *, report: Reporter) -> None:
    """After a build: the cache kept within ``budget`` (what the build used stays); what
    was removed said as an info event, a failure as a warning (the outputs are written)."""
    from assembler.cache import Cache
    from assembler.compile.storage import keep_cache_within
    from assembler.errors import AssemblerError
    from assembler.trace import housekeeping

    try:
        with housekeeping():  # no input of the build (assembler.trace)
            kept, storage = keep_cache_within(Cache(cache_dir), budget, runner=Runner())
    except AssemblerError as e:
        report(Event("warning", {"text": f"the cache at {cache_dir} was not kept within its budget: {e}"}))
        return
    pruned = kept.pruned
    if pruned is None:
        text = f"cache: {size(kept.held)}, over its budget of {size(budget)}; another build uses it, which prunes it"
    elif pruned.removed or storage.images or storage.containers:
        text = (
            f"cache: over its budget of {size(budget)}: removed {len(pruned.removed)} items ({size(pruned.freed)})"
            + (f" and {len(storage.images)} buildah images" if storage.images else "")
            + f"; it holds {size(kept.held)}"
        )
    else:
        return
    report(Event("info", {"text": text, "budget": budget, "held": kept.held}))


class Recorder(Protocol):
    """What records a build for the up-to-date check (:class:`assembler.cli.uptodate.Recorder`)."""

    def watching(self, report: Reporter) -> Reporter:
        """``report``, with the recorder seeing each event first."""
        ...

    def finish(self, results: Sequence[Result], lines: Sequence[str]) -> None:
        """Record the finished build: its results and the lines it printed."""
        ...


def build_variants(args: argparse.Namespace, report: Reporter) -> tuple[list[Variant], list[Result]]:
    """Build what the command line asks (each variant), the cache then kept within its
    budget: the variants and their results (``assemble build``'s and ``assemble watch``'s)."""
    variants, idle = _load(args)
    options = _options(args, variants[0].loaded.manifest.epoch, variants[0].loaded.manifest.cache.registry)
    if args.digestfile is not None and len(variants) > 1:
        raise InputError("--digestfile takes one image; this run builds several", hint="use --json")
    budget = cache_budget(args.cache_max_size, options.cache_dir)
    for line in idle:
        report(Event("warning", {"text": line}))
    results = assemble_variants(variants, options, runner=Runner(), report=report)
    if args.cache_max_size is not None or any(map(grew_cache, results)):
        keep_budget(options.cache_dir, budget, report=report)
    return variants, results


def cmd_build(args: argparse.Namespace, *, recorder: Recorder | None = None) -> int:
    """``assemble build``; ``recorder`` (:mod:`assembler.cli.uptodate`) sees its events and
    is given its results and what it printed, to record the build when it can be replayed."""
    check_digestfile(args.digestfile)
    with showing(mode_of(args), verbose=args.verbose) as shown:
        report = recorder.watching(shown) if recorder is not None else shown
        variants, results = build_variants(args, report)
    write_digest(args.digestfile, results[0].digest)
    lines: list[str] = []
    if args.json:
        as_json: Any = _result_json(results[0])
        if len(variants) > 1:
            as_json = [{**v.describe(), **_result_json(r)} for v, r in zip(variants, results, strict=True)]
        out.print(json.dumps(as_json, indent=2), markup=False)
    elif args.quiet:
        for result in results:
            say(result.digest)
    else:
        for v, result in zip(variants, results, strict=True):
            if len(variants) > 1:
                lines.append(f"variant {v.name}")
            lines += summary_lines(result)
        for line in lines:
            say(line)
        say(f"done in {sum(r.seconds for r in results):.1f} s")
    if recorder is not None:
        recorder.finish(results, lines)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from assembler.assemble import open_run, resolve

    variants, idle = _load(args)
    for line in idle:
        err.print(f"warning: {line}", markup=False)
    options = _options(args, variants[0].loaded.manifest.epoch, variants[0].loaded.manifest.cache.registry)
    runs = [open_run(v.loaded, v.options(options), runner=Runner(), check=False) for v in variants]
    plans = [resolve(run, look_in_registry=True) for run in runs]
    if options.offline:  # asks no host: a plan whose parts to make would reach one is refused
        from assembler.pipeline.checks.preflight import check

        for run, plan in zip(runs, plans, strict=True):
            check(run, plan, offline=True, report=lambda event: None)
    if args.json:
        shown: Any = plans[0].to_json()
        if len(variants) > 1:
            shown = [{**p.to_json(), **v.describe()} for v, p in zip(variants, plans, strict=True)]
        out.print(json.dumps(shown, indent=2), markup=False)
        return 0
    for v, plan in zip(variants, plans, strict=True):
        _print_plan(plan, v.name if len(variants) > 1 else None)
    return 0


def _print_weights_and_tests(result: Plan) -> None:
    if result.weights:
        say("weights (beside the image):")
        for name, what in result.weights.items():
            say(f"  {name:<20} {what}")
    say("tests:")
    for t in result.tests:
        marks = ", ".join(m for m in ("gpu" if t.spec.gpu else "", "network" if t.spec.network else "") if m)
        argv = shlex.join(t.argv) if t.argv else "(the base's entrypoint and cmd)"
        say(f"  {t.name:<20} {t.where:<6} {argv}" + (f"  [{marks}]" if marks else ""))


def _print_plan(result: Plan, variant: str | None) -> None:
    say(
        f"plan for {result.name}"
        + (f" (target {result.target})" if result.target else "")
        + (f": variant {variant}" if variant else "")
    )
    refs = result.base_refs
    for name, digest in result.bases.items():
        say(f"  base {name}: {refs.get(name, '?')} ({digest or 'not pulled or made yet'})")
        if name in result.base_overrides:
            over = result.base_overrides[name]
            say(f"    --base {name}={over['ref']} replaces {over['manifest']}")
    say("steps:")
    for s in result.steps:
        why = f" ({s.reason})" if s.reason else ""
        after = f"  after {', '.join(s.depends_on)}" if s.depends_on else ""
        say(f"  {s.kind:<8} {s.name:<20} {s.state}{why}{after}")
    say("layers:")
    for layer in result.layers:
        layer_size = size(layer.size) if layer.size is not None else "?"
        say(f"  {layer.index:>2} {layer.origin:<10} {layer_size:>10}  {layer.what}")
    say("outputs:")
    for o in result.outputs:
        say(f"  {o}")
    say("reaches:")
    for host, wheres in result.reaches().items():
        say(f"  {host:<36} {', '.join(wheres)}")
    _print_weights_and_tests(result)
    if result.emulated:
        say("emulated (emulate: true; qemu-user here):")
        for what in result.emulated:
            say(f"  {what}")
    lock = result.lock
    if lock is not None and lock.state != "none":
        say(f"lock: {lock.file} ({lock.state})")
        for where, state in lock.sets.items():
            why = f": {state['why']}" if state.get("why") and state["state"] == "unresolved" else ""
            as_of = f", as of {state['as_of']}" if state.get("as_of") else ""
            if state.get("debs"):  # Debian packages: how many, from which mirror and index
                as_of = f", {state['as_of']}"
            say(f"  {where:<40} {state['state']}{as_of}{why}")
