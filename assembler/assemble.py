"""The whole pipeline, and the only module that knows it: open -> resolve -> build -> write.

:func:`open_run` puts one variant's build together once (a frozen
:class:`~assembler.pipeline.runs.run.Run`: the loaded manifest, the option groups, the
outputs parsed and their writers, the context and its cache), and every step below is
handed it. :func:`resolve` decides, without running or writing anything, what a build will do: a
:class:`Plan`, a graph of steps (bases, compile and runtime steps, layers), each with its
key, its state (cached, or will-run and why) and what it depends on. :func:`build` executes
exactly that Plan and gives the image; the checks after a build
(:data:`~assembler.pipeline.checks.after.AFTER_BUILD`) give what goes with it; :func:`write`
hands the image to the writers of its outputs. :func:`assemble` does it all. Library
code reports through ``report(Event)``; the CLI decides what the user sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from assembler.cache import Cache
from assembler.errors import AssemblerError, CorruptBlob, InputError
from assembler.manifest.load.loaded import Loaded
from assembler.oci.artifact import Artifact, FilesArtifact
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.reference import Ref, absolute_ref, parse_ref
from assembler.pipeline.checks import preflight
from assembler.pipeline.checks.after import AFTER_BUILD
from assembler.pipeline.graph import LayerReport, StepReport
from assembler.pipeline.image.imagetests import has_tests
from assembler.pipeline.options import ContextOptions, Event, Options, Reporter, quiet, resolve_epoch
from assembler.pipeline.runs import artifacts, slurmnode
from assembler.pipeline.runs.builder import Build, Built
from assembler.pipeline.runs.builder import build as _execute
from assembler.pipeline.runs.resolve import Plan, plan_of
from assembler.pipeline.runs.run import Run
from assembler.pipeline.steps.slurm import Job
from assembler.pipeline.store.baseblobs import BaseBlobs, merged
from assembler.pipeline.variants import Variant, named, platform_groups, report_variant
from assembler.pipeline.writers import Tee, writer_for
from assembler.proc import Runner
from assembler.transports import Context, Written
from assembler.transports.common import SourceImage
from assembler.transports.formats import Writer
from assembler.transports.hpc.squash import Squash
from assembler.transports.target import Target
from assembler.weights.models import prepare as prepare_weights

__all__ = [
    "Built",
    "Event",
    "LayerReport",
    "Options",
    "Plan",
    "Reporter",
    "Result",
    "Run",
    "StepReport",
    "assemble",
    "assemble_run",
    "assemble_variants",
    "build",
    "open_run",
    "output_refs",
    "resolve",
    "resolve_epoch",
    "write",
]


@dataclass(frozen=True)
class Result:
    image: Image
    layers: tuple[LayerReport, ...]
    steps: tuple[StepReport, ...]
    outputs: tuple[Written, ...]
    seconds: float
    step_cache: Mapping[str, int] = field(default_factory=dict)  # what the registry step cache did
    referrers: tuple[Artifact, ...] = ()  # the SBOM and provenance written with the image
    artifact: FilesArtifact | None = None  # --artifact: what the outputs hold instead of the image
    base_bytes_read: int = 0  # bytes of base layers brought into the cache (downloaded, copied)
    blobs: BaseBlobs | None = None  # reads the image's blobs (None: all in the cache)

    @property
    def digest(self) -> str:
        return self.artifact.digest if self.artifact is not None else self.image.digest


def output_refs(loaded: Loaded, options: Options) -> list[Ref]:
    """The outputs to write: ``-o`` flags if given, else the manifest's (paths: cwd-relative)."""
    return _refs(loaded, options.outputs)


def _refs(loaded: Loaded, outputs: Sequence[str] | None) -> list[Ref]:
    """:func:`output_refs` of the outputs ``outputs`` (None: the manifest's)."""
    texts = list(outputs) if outputs is not None else list(loaded.manifest.outputs)
    refs = []
    for i, text in enumerate(texts):
        try:
            ref = parse_ref(text)
        except ValueError as e:
            if outputs is not None:
                raise InputError(f"-o {text}: {e}") from None
            raise loaded.error(("outputs", i), str(e)) from None
        if ref.base_only:
            raise InputError(f"{text}: {ref.transport} is a base, not an output")
        refs.append(absolute_ref(ref, Path.cwd()))
    return refs


def _context(
    loaded: Loaded,
    options: ContextOptions,
    outputs: Sequence[Ref],
    *,
    runner: Runner,
    report: Reporter,
) -> Context:
    """The context of a run: its cache opened once, the outputs' host paths left out of
    ``copy:`` layers."""
    cache = Cache(options.cache_dir)
    return Context(
        cache=cache,
        runner=runner,
        platform=options.platform or Platform.parse(loaded.manifest.platform),
        epoch=options.epoch,
        compression=options.compression or loaded.manifest.compression,  # type: ignore[arg-type]
        registry=options.registry,
        progress=lambda n: report(Event("bytes", {"n": n, "what": "compressed"})),
        upload_progress=lambda n: report(Event("bytes", {"n": n, "what": "pushed"})),
        leave_out=(cache.root, *(Path(r.path) for r in outputs if r.path)),  # a registry's has no path
    )


def open_run(
    loaded: Loaded, options: Options, *, runner: Runner | None = None, report: Reporter = quiet, check: bool = True
) -> Run:
    """One variant's :class:`Run`, put together once: its outputs parsed (InputError for a
    bad one) and their writers made; with ``check`` (a build's), every output checked
    against what is on disk (InputError) before its context and cache are opened, so that
    nothing is written where an output may not go."""
    refs = output_refs(loaded, options)
    attach_sif = loaded.manifest.sif.attach or options.attach_sif
    writers = tuple(writer_for(ref, attach_sif=attach_sif) for ref in refs if not ref.holds_files)
    files = tuple(r for r in refs if r.holds_files)
    if check:
        _check_outputs(loaded, writers, files, options, report)
    build_options = options.for_build()
    ctx = _context(loaded, build_options.context, refs, runner=runner or Runner(), report=report)
    return Run(loaded, build_options, ctx, tuple(refs), writers, files)


def _check_outputs(
    loaded: Loaded, writers: Sequence[Writer], files: Sequence[Ref], options: Options, report: Reporter
) -> None:
    """Every output checked before anything is built (InputError); a warning for each
    that ``--sign`` does not sign."""
    attested = options.sbom or (options.tests and has_tests(loaded.manifest))  # files next to an output
    for writer in writers:
        writer.check(force=options.force, sbom=attested)
        if options.sign is not None and not writer.signs:
            signed = "docker://, oci:DIR:TAG, sif: and oras://"
            report(Event("warning", {"text": f"{writer.ref}: not signed (--sign signs {signed})"}))
    artifacts.check(loaded, files, force=options.force, cache_dir=options.cache_dir)
    if options.artifacts:
        artifacts.check_oci_outputs(loaded, options.artifacts, writers)


def resolve(run: Run, *, look_in_registry: bool = False) -> Plan:
    """What a build of ``run`` will do, decided without running a step, fetching, or
    writing a blob (see :mod:`assembler.pipeline.runs.resolve` for what a plan can know).
    Its runner is only asked which tools there are and their versions. With
    ``look_in_registry`` (``assemble plan``), steps are also looked up in the registry step
    caches of ``--cache-from`` / ``--cache-to``: their records only, no blob."""
    caches = run.options.caches
    with ExitStack() as stack:
        registry = None
        if look_in_registry and (caches.cache_from or caches.cache_to):
            from assembler.pipeline.store.registrycache import plan_steps  # the registry client, only when asked

            registry = stack.enter_context(closing(plan_steps(caches, run.ctx)))

        def file_steps() -> list[str]:  # steps whose files are outputs
            return [n.partition(".")[0] for r in run.files for n in artifacts.names(run.loaded, r)]

        return plan_of(run, file_steps=file_steps, registry=registry)


def build(run: Run, plan: Plan, *, report: Reporter = quiet) -> Built:
    """Build ``run`` as ``plan`` says: make its bases, run the steps it says will run,
    stack the layers.

    Raises StepFailed, ToolError, InvalidImage... (AssemblerErrors) when making fails;
    CorruptBlob when a cached blob turns out damaged (it is dropped: build again).
    """
    return _execute(run, plan, report=report)


def build_node_step(job: Job, *, runner: Runner, report: Reporter) -> StepReport:
    """The one compile step of a Slurm job, on its node (:mod:`assembler.pipeline.runs.slurmnode`):
    the manifest resolved again against the shared cache, the step built (or found cached)
    under the key the submitter computed. Raises AssemblerError when this node computes
    another key, and what building raises."""
    options = slurmnode.node_options(job)
    ctx = _context(job.loaded, options.context, (), runner=runner, report=report)
    run = Run(job.loaded, options, ctx)
    return slurmnode.build_step(run, resolve(run), job, report=report)


def _image_target(built: Built, run: Run, *, report: Reporter, referrers: Sequence[Artifact]) -> Target:
    """What the writers write of one image: a push mounts blobs from the base's repository
    and the step caches' (on the same registry); ``referrers`` (the SBOM, the provenance) go
    with it to every output (see transports.target.Target), signed with ``--sign``'s key;
    the model weights (``run.weights``) beside it where an output can hold them."""
    man = run.loaded.manifest
    # The definition file inside a SIF names where the image lives (stable, not a temp path).
    names = [w.image_name for w in run.writers if w.image_name is not None]
    source_name = names[0] if names else f"assemble:{man.name}"
    base_repo = [built.base.registry_name] if built.base.registry_name else []
    return Target(  # a push mounts the base's layers, or finds them: only other outputs fetch them
        SourceImage(built.image, built.blobs, source_name),
        run.ctx,
        Squash.of(man.sif),
        f"{man.name}.sif",
        mount_from=[*base_repo, *run.options.caches.names()],
        sif_progress=lambda n: report(Event("bytes", {"n": n, "what": "sif"})),
        referrers=referrers,
        signer=run.options.sign,
        weights=run.weights,
    )


def write(target: Target, writers: Sequence[Writer], *, report: Reporter = quiet) -> list[Written]:
    """Write ``target`` (an image, the images of several platforms as one index, or an OCI
    artifact of files) to every output, in order (:class:`~assembler.pipeline.writers.Tee`)."""
    return Tee(writers).write(target, report=report)


def assemble(loaded: Loaded, options: Options, *, runner: Runner, report: Reporter = quiet) -> Result:
    """Resolve, build and write ``loaded``: the ``assemble MANIFEST`` command.

    Bad input raises InputError subclasses before any output is written; failures while
    building or writing raise other AssemblerErrors.
    """
    return assemble_run(open_run(loaded, options, runner=runner, report=report), report=report)


def assemble_run(run: Run, *, report: Reporter = quiet) -> Result:
    """Resolve, build and write ``run`` (its outputs checked when it was opened)."""
    try:
        return _assemble_once(run, report=report)
    except CorruptBlob as e:
        # The damaged blob is gone: a second pass remakes what used it (step, base layer, conversion).
        report(Event("warning", {"text": f"{e}; dropped it from the cache and building again"}))
        return _assemble_once(run, report=report)


def _assemble_once(run: Run, *, report: Reporter) -> Result:
    started = time.monotonic()
    plan = resolve(run)
    options = run.options
    if options.preflight or options.offline:  # before anything long: a host that is not there stops it now
        cached = options.caches.cache_from or options.caches.cache_to  # a registry step cache may hold them
        replan = (lambda: resolve(run, look_in_registry=True)) if cached else None
        preflight.check(run, plan, offline=options.offline, report=report, replan=replan)
    written_files, done = _artifact_outputs(run, plan, report=report, started=started)
    if done is not None:
        return done
    # Before the build: a model the lock does not match, or a Hub that does not answer, stops it now.
    run = replace(run, weights=tuple(prepare_weights(run.loaded, run.cache, warn=_warner(report))))
    # The registry step cache stays open for the checks and the SBOM: their facts go through it too.
    with Build(run, plan, report=report) as builder:
        built = builder.run()
        report(Event("image", {"digest": built.image.digest}))
        referrers: list[Artifact] = []
        for check in AFTER_BUILD:  # before any output: an image that fails one is not written
            referrers += check(run, built, builder, report)
        target = _image_target(built, run, report=report, referrers=referrers)
        written = [*write(target, run.writers, report=report), *written_files]
        step_cache = builder.counts()
    return Result(
        built.image,
        built.layers,
        built.steps,
        tuple(written),
        time.monotonic() - started,
        step_cache,
        tuple(referrers),
        base_bytes_read=built.blobs.read_bytes,  # after the outputs: one that holds bytes fetches them
        blobs=built.blobs,
    )


def _warner(report: Reporter) -> Callable[[str], None]:
    return lambda text: report(Event("warning", {"text": text}))


def _artifact_outputs(run: Run, plan: Plan, *, report: Reporter, started: float) -> tuple[list[Written], Result | None]:
    """The ``artifact:`` outputs (a step's files) written, and ``--artifact``'s OCI artifact
    written to the outputs in place of the image: what was written, and the result when
    no image is to be built (None: build it)."""
    wanted = run.options.artifacts
    if not run.files and not wanted:
        return [], None
    loaded, ctx = run.loaded, run.ctx
    made, steps = artifacts.build(run, plan, [*run.files, *wanted], report=report)
    written = artifacts.write(loaded, run.files, made, run.cache)
    image = artifacts.as_image(made, ctx)
    if wanted:  # the outputs hold the artifacts, not an image
        art = artifacts.as_oci(loaded, wanted, made, epoch=ctx.epoch)
        source = SourceImage(image, run.cache, f"assemble:{loaded.manifest.name}")
        names = run.options.caches.names()
        target = Target(source, ctx, mount_from=names, artifact=art, signer=run.options.sign)
        written += write(target, run.writers, report=report)
        return written, Result(image, (), steps, tuple(written), time.monotonic() - started, artifact=art)
    if not run.writers:
        return written, Result(image, (), steps, tuple(written), time.monotonic() - started)
    return written, None


def assemble_variants(
    variants: Sequence[Variant], options: Options, *, runner: Runner, report: Reporter = quiet
) -> list[Result]:
    """Assemble each variant (see :mod:`assembler.pipeline.variants`), one after another
    with one cache: a step they share runs once in the run, for the first variant.
    Variants that differ only in platform are written as one index to their outputs."""
    if len(variants) == 1:  # one image: reported as before, without variant events
        report = _no_variant_events(report)
    # Every variant opened, its outputs checked, before anything is built.
    runs = [open_run(v.loaded, v.options(options), runner=runner, report=report) for v in variants]
    of = {id(v): run for v, run in zip(variants, runs, strict=True)}
    made: set[str] = set()
    results = []
    for group in platform_groups(variants):
        if len(group) == 1:
            v = group[0]
            results.append(_variant(v, of[id(v)], made, len(variants), report=report))
            continue
        # Each platform's image alone first (no outputs), then one index over them all.
        built = []
        for v in group:
            alone = replace(v.options(options), outputs=())
            run = open_run(v.loaded, alone, runner=runner, report=report, check=False)
            built.append(_variant(v, run, made, len(variants), report=report))
        written = _write_index(of[id(group[0])], built, report=report)
        results.extend(replace(r, outputs=tuple(written)) for r in built)
    return results


def _write_index(first: Run, built: Sequence[Result], *, report: Reporter) -> list[Written]:
    """The images of ``built`` (one per platform) as one index, to the outputs of ``first``."""
    if first.files:
        raise InputError(
            f"{first.files[0]}: images of several platforms under one name go to oci: or docker:// outputs only"
        )
    # the models each platform's build packed, gathered again from the cache (warnings said once)
    weights = prepare_weights(first.loaded, first.cache, warn=lambda _: None)
    blobs = merged(first.cache, [r.blobs for r in built if r.blobs is not None])
    target = Target(
        SourceImage(built[0].image, blobs, f"assemble:{first.loaded.manifest.name}"),
        first.ctx,
        platforms=[r.image for r in built],
        platform_referrers=[r.referrers for r in built],
        signer=first.options.sign,
        weights=weights,
    )
    return write(target, first.writers, report=report)


def _variant(v: Variant, run: Run, made: set[str], count: int, *, report: Reporter) -> Result:
    """One variant (``run``: its own), its failure naming it; ``made`` gains the step keys it ran."""
    report_variant(report, v, "building")
    try:
        result = assemble_run(run.made(frozenset(made)), report=report)
    except AssemblerError as e:
        report_variant(report, v, "failed")
        raise named(e, v) if count > 1 else e from None
    made.update(s.key for s in result.steps if s.key is not None and s.state == "built")
    report_variant(report, v, "done", digest=result.digest, outputs=[w.ref for w in result.outputs])
    return result


def _no_variant_events(report: Reporter) -> Reporter:
    return lambda event: None if event.kind == "variant" else report(event)
