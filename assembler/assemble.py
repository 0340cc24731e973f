"""The whole pipeline, and the only module that knows it: resolve -> build -> write.

:func:`resolve` decides, without running or writing anything, what a build will do: a
:class:`Plan`, a graph of steps (bases, compile and runtime steps, layers), each with its
key, its state (cached, or will-run and why) and what it depends on. :func:`build` executes
exactly that Plan and gives the image; :func:`write` hands the image to the writers of its
outputs. :func:`assemble` does the three. Library code reports through ``report(Event)``;
the CLI decides what the user sees.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from assembler.cache import Cache
from assembler.errors import AssemblerError, CorruptBlob, InputError
from assembler.oci.artifact import Artifact, FilesArtifact
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.reference import Ref, absolute_ref, parse_ref
from assembler.pipeline.build import artifacts, slurmnode
from assembler.pipeline.build.builder import Build, Built
from assembler.pipeline.build.builder import build as _execute
from assembler.pipeline.build.resolve import Plan, plan_of
from assembler.pipeline.checks import preflight
from assembler.pipeline.checks.attest import describe_built
from assembler.pipeline.checks.depcheck import check_built
from assembler.pipeline.checks.runimage import tested
from assembler.pipeline.graph import LayerReport, StepReport
from assembler.pipeline.image.imagetests import has_tests
from assembler.pipeline.options import BuildOptions, ContextOptions, Event, Options, Reporter, quiet, resolve_epoch
from assembler.pipeline.steps.slurm import Job
from assembler.pipeline.store.baseblobs import BaseBlobs, merged
from assembler.pipeline.variants import Variant, named, platform_groups, report_variant
from assembler.pipeline.writers import writer_for
from assembler.proc import Runner
from assembler.spec.loaded import Loaded
from assembler.transports import Context, Written
from assembler.transports.common import RegistryOptions, SourceImage
from assembler.transports.formats import Writer
from assembler.transports.target import Target

__all__ = [
    "Built",
    "Event",
    "LayerReport",
    "Options",
    "Plan",
    "Reporter",
    "Result",
    "StepReport",
    "assemble",
    "assemble_variants",
    "build",
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
    *,
    cache: Cache,
    runner: Runner,
    registry: RegistryOptions | None,
    report: Reporter,
) -> Context:
    return Context(
        cache=cache,
        runner=runner,
        platform=options.platform or Platform.parse(loaded.manifest.platform),
        epoch=options.epoch,
        compression=options.compression or loaded.manifest.compression,  # type: ignore[arg-type]
        registry=registry,
        progress=lambda n: report(Event("bytes", {"n": n, "what": "compressed"})),
        upload_progress=lambda n: report(Event("bytes", {"n": n, "what": "pushed"})),
        leave_out=(cache.root, *_output_paths(loaded, options)),
    )


def _output_paths(loaded: Loaded, options: ContextOptions) -> list[Path]:
    """The host files and folders the outputs write (a bad output is reported later, where
    the outputs are read)."""
    try:
        refs = _refs(loaded, options.outputs)
    except AssemblerError:
        return []
    return [Path(r.path) for r in refs if r.path]  # a registry's reference has no path


def resolve(loaded: Loaded, options: Options, *, runner: Runner | None = None, look_in_registry: bool = False) -> Plan:
    """What a build of ``loaded`` will do, decided without running a step, fetching, or
    writing a blob (see :mod:`assembler.pipeline.build.resolve` for what a plan can know).
    ``runner`` is only asked which tools there are and their versions. With
    ``look_in_registry`` (``assemble plan``), steps are also looked up in the registry step
    caches of ``--cache-from`` / ``--cache-to``: their records only, no blob."""
    return _resolve(loaded, options.for_build(), runner=runner, look_in_registry=look_in_registry)


def _resolve(loaded: Loaded, options: BuildOptions, *, runner: Runner | None, look_in_registry: bool = False) -> Plan:
    """:func:`resolve` with the options a build reads."""
    context = options.context
    ctx = _context(
        loaded,
        context,
        cache=Cache(context.cache_dir),
        runner=runner or Runner(),
        registry=context.registry,
        report=quiet,
    )
    with ExitStack() as stack:
        registry = None
        if look_in_registry and (options.caches.cache_from or options.caches.cache_to):
            from assembler.pipeline.store.registrycache import plan_steps  # the registry client, only when asked

            registry = stack.enter_context(closing(plan_steps(options.caches, ctx)))
        refs = _refs(loaded, context.outputs)

        def file_steps() -> list[str]:  # steps whose files are outputs
            return [n.partition(".")[0] for r in refs if r.holds_files for n in artifacts.names(loaded, r)]

        return plan_of(loaded, options, ctx, outputs=[str(r) for r in refs], file_steps=file_steps, registry=registry)


def build(
    plan: Plan, *, cache: Cache, runner: Runner, registry: RegistryOptions | None = None, report: Reporter = quiet
) -> Built:
    """Execute ``plan``: make its bases, run the steps it says will run, stack the layers.

    Raises StepFailed, ToolError, InvalidImage... (AssemblerErrors) when making fails;
    CorruptBlob when a cached blob turns out damaged (it is dropped: build again).
    """
    assert plan.loaded is not None and plan.options is not None, "a Plan from resolve()"
    ctx = _context(plan.loaded, plan.options.context, cache=cache, runner=runner, registry=registry, report=report)
    return _execute(plan, ctx, report=report)


def build_node_step(job: Job, *, runner: Runner, report: Reporter) -> StepReport:
    """The one compile step of a Slurm job, on its node (:mod:`assembler.pipeline.build.slurmnode`):
    the manifest resolved again against the shared cache, the step built (or found cached)
    under the key the submitter computed. Raises AssemblerError when this node computes
    another key, and what building raises."""
    options = slurmnode.node_options(job)
    plan = _resolve(job.loaded, options, runner=runner)
    context = options.context
    cache = Cache(context.cache_dir)
    ctx = _context(job.loaded, context, cache=cache, runner=runner, registry=context.registry, report=report)
    return slurmnode.build_step(plan, ctx, job, report=report)


def _image_target(
    built: Built,
    ctx: Context,
    loaded: Loaded,
    writers: Sequence[Writer],
    *,
    report: Reporter,
    options: Options,
    referrers: Sequence[Artifact],
) -> Target:
    """What the writers write of one image: a push mounts blobs from the base's repository
    and the step caches' (on the same registry); ``referrers`` (the SBOM, the provenance) go
    with it to every output (see transports.target.Target), signed with ``options.sign``'s key."""
    # The definition file inside a SIF names where the image lives (stable, not a temp path).
    names = [w.image_name for w in writers if w.image_name is not None]
    source_name = names[0] if names else f"assemble:{loaded.manifest.name}"
    base_repo = [built.base.registry_name] if built.base.registry_name else []
    return Target(  # a push mounts the base's layers, or finds them: only other outputs fetch them
        SourceImage(built.image, built.blobs, source_name),
        ctx,
        loaded.manifest.sif.compressor,
        f"{loaded.manifest.name}.sif",
        mount_from=[*base_repo, *options.cache_names()],
        sif_progress=lambda n: report(Event("bytes", {"n": n, "what": "sif"})),
        referrers=referrers,
        signer=options.sign,
    )


def write(target: Target, writers: Sequence[Writer], *, report: Reporter = quiet) -> list[Written]:
    """Write ``target`` (an image, the images of several platforms as one index, or an OCI
    artifact of files) to every output, in order; a SIF is made once for all that need it."""
    written: list[Written] = []
    try:
        for writer in writers:
            report(Event("output", {"ref": str(writer.ref), "state": "writing"}))
            for w in writer.write(target):
                report(
                    Event("output", {"ref": w.ref, "state": "done", "digest": w.digest, "uploaded": w.uploaded_bytes})
                )
                written.append(w)
    finally:
        target.cleanup()
    return written


def _outputs(loaded: Loaded, options: Options) -> tuple[list[Writer], list[Ref]]:
    """The writers of the image (or of the ``--artifact``), and the ``artifact:`` outputs (a
    step's files, written by :mod:`assembler.pipeline.build.artifacts`)."""
    refs = output_refs(loaded, options)
    attach_sif = loaded.manifest.sif.attach or options.attach_sif
    writers = [writer_for(ref, attach_sif=attach_sif) for ref in refs if not ref.holds_files]
    return writers, [r for r in refs if r.holds_files]


def _checked_outputs(loaded: Loaded, options: Options, report: Reporter = quiet) -> tuple[list[Writer], list[Ref]]:
    """:func:`_outputs`, every one checked before anything is built (InputError); a
    warning for each that ``--sign`` does not sign."""
    writers, files = _outputs(loaded, options)
    attested = options.sbom or (options.tests and has_tests(loaded.manifest))  # files next to an output
    for writer in writers:
        writer.check(force=options.force, sbom=attested)
        if options.sign is not None and not writer.signs:
            report(Event("warning", {"text": f"{writer.ref}: not signed (--sign signs docker:// and oci:DIR:TAG)"}))
    artifacts.check(loaded, files, force=options.force, cache_dir=options.cache_dir)
    if options.artifacts:
        artifacts.check_oci_outputs(loaded, options.artifacts, writers)
    return writers, files


def assemble(loaded: Loaded, options: Options, *, runner: Runner, report: Reporter = quiet) -> Result:
    """Resolve, build and write ``loaded``: the ``assemble MANIFEST`` command.

    Bad input raises InputError subclasses before any output is written; failures while
    building or writing raise other AssemblerErrors.
    """
    try:
        return _assemble_once(loaded, options, runner=runner, report=report)
    except CorruptBlob as e:
        # The damaged blob is gone: a second pass remakes what used it (step, base layer, conversion).
        report(Event("warning", {"text": f"{e}; dropped it from the cache and building again"}))
        return _assemble_once(loaded, options, runner=runner, report=report)


def _assemble_once(loaded: Loaded, options: Options, *, runner: Runner, report: Reporter) -> Result:
    started = time.monotonic()
    writers, files = _checked_outputs(loaded, options, report)
    plan = resolve(loaded, options, runner=runner)
    if options.preflight or options.offline:  # before anything long: a host that is not there stops it now
        cached = options.cache_from or options.cache_to  # a registry step cache may hold what needs them
        replan = (lambda: resolve(loaded, options, runner=runner, look_in_registry=True)) if cached else None
        preflight.check(plan, offline=options.offline, report=report, replan=replan)
    cache = Cache(options.cache_dir)
    ctx = _context(loaded, options.context(), cache=cache, runner=runner, registry=options.registry, report=report)
    written_files: list[Written] = []
    if files or options.artifacts:
        made, steps = artifacts.build(plan, ctx, [*files, *options.artifacts], report=report)
        written_files = artifacts.write(loaded, files, made, cache)
        image = artifacts.as_image(made, ctx)
        if options.artifacts:  # the outputs hold the artifacts, not an image
            art = artifacts.as_oci(loaded, options.artifacts, made, epoch=ctx.epoch)
            source = SourceImage(image, cache, f"assemble:{loaded.manifest.name}")
            target = Target(source, ctx, mount_from=options.cache_names(), artifact=art, signer=options.sign)
            written_files += write(target, writers, report=report)
            return Result(image, (), steps, tuple(written_files), time.monotonic() - started, artifact=art)
        if not writers:
            return Result(image, (), steps, tuple(written_files), time.monotonic() - started)
    # The registry step cache stays open for the checks and the SBOM: their facts go through it too.
    with Build(plan, ctx, report=report) as builder:
        built = builder.run()
        report(Event("image", {"digest": built.image.digest}))
        facts = builder.walk.services.facts
        if options.deps_check:  # before any output: an image that cannot run is not written
            check_built(built, cache, report=report, shared=facts, absent=loaded.manifest.absent_libraries)
        tests = tested(built, plan, builder, report=report)  # before any output too: a failed test writes none
        referrers = describe_built(built, plan, cache, report=report, shared=facts) if options.sbom else []
        referrers += tests  # the test-result attestation goes with the SBOM and provenance
        target = _image_target(built, ctx, loaded, writers, report=report, options=options, referrers=referrers)
        written = [*write(target, writers, report=report), *written_files]
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


def assemble_variants(
    variants: Sequence[Variant], options: Options, *, runner: Runner, report: Reporter = quiet
) -> list[Result]:
    """Assemble each variant (see :mod:`assembler.pipeline.variants`), one after another
    with one cache: a step they share runs once in the run, for the first variant.
    Variants that differ only in platform are written as one index to their outputs."""
    for v in variants:  # every output checked before anything is built
        _checked_outputs(v.loaded, v.options(options))
    made: set[str] = set()
    results = []
    for group in platform_groups(variants):
        if len(group) == 1:
            opts = group[0].options(options)
            results.append(_variant(group[0], opts, made, len(variants), runner=runner, report=report))
            continue
        # Each platform's image alone first (no outputs), then one index over them all.
        built = [
            _variant(v, replace(v.options(options), outputs=()), made, len(variants), runner=runner, report=report)
            for v in group
        ]
        written = _write_index(group[0], built, options, runner=runner, report=report)
        results.extend(replace(r, outputs=tuple(written)) for r in built)
    return results


def _write_index(
    first: Variant, built: Sequence[Result], options: Options, *, runner: Runner, report: Reporter
) -> list[Written]:
    """The images of ``built`` (one per platform) as one index, to the outputs of ``first``."""
    opts = first.options(options)
    writers, files = _outputs(first.loaded, opts)  # checked before the images were built
    if files:
        raise InputError(f"{files[0]}: images of several platforms under one name go to oci: or docker:// outputs only")
    ctx = _context(
        first.loaded,
        opts.context(),
        cache=Cache(options.cache_dir),
        runner=runner,
        registry=options.registry,
        report=report,
    )
    blobs = merged(ctx.cache, [r.blobs for r in built if r.blobs is not None])
    target = Target(
        SourceImage(built[0].image, blobs, f"assemble:{first.loaded.manifest.name}"),
        ctx,
        platforms=[r.image for r in built],
        platform_referrers=[r.referrers for r in built],
        signer=options.sign,
    )
    return write(target, writers, report=report)


def _variant(v: Variant, options: Options, made: set[str], count: int, *, runner: Runner, report: Reporter) -> Result:
    """One variant (``options``: its own), its failure naming it; ``made`` gains the step keys it ran."""
    if count == 1:  # one image: reported as before, without variant events
        report = _no_variant_events(report)
    report_variant(report, v, "building")
    try:
        result = assemble(v.loaded, replace(options, made_keys=frozenset(made)), runner=runner, report=report)
    except AssemblerError as e:
        report_variant(report, v, "failed")
        raise named(e, v) if count > 1 else e from None
    made.update(s.key for s in result.steps if s.key is not None and s.state == "built")
    report_variant(report, v, "done", digest=result.digest, outputs=[w.ref for w in result.outputs])
    return result


def _no_variant_events(report: Reporter) -> Reporter:
    return lambda event: None if event.kind == "variant" else report(event)
