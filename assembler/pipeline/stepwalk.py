"""The steps of a walk: its bases, sources, compile and runtime steps, each keyed and looked up.

:class:`StepWalk` computes each step's key (from its definition, base, inputs, sources and
buildah's version) and looks it up in the local cache, then in a registry step cache. What
happens when something is *not* cached is the subclass's (see
:mod:`assembler.pipeline.walk`, whose :class:`~assembler.pipeline.walk.Walk` adds stacking
the image's layers).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from assembler.archive.view import TreeView
from assembler.cache import StepResult, key_of
from assembler.cache.memos import SharedFacts
from assembler.cache.programs import program_version
from assembler.compile import sources as srcs
from assembler.compile.buildah import Buildah
from assembler.compile.steps import compile_key, runtime_key
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.oci.reference import ImageName
from assembler.pipeline import graph
from assembler.pipeline.cutlayers import LayerCutter
from assembler.pipeline.graph import RuntimeStep, StepReport
from assembler.pipeline.installed import check_installed
from assembler.pipeline.layers import ImageSetup
from assembler.pipeline.maker import Maker
from assembler.pipeline.options import Event, Options, RemoteSteps, Reporter
from assembler.pipeline.origins import Origins
from assembler.pipeline.prebuilt_layers import Prebuilt
from assembler.spec import model as m
from assembler.spec.load import Loaded
from assembler.transports import Context
from assembler.transports import bootstrap as boot


def _bootstrap_spec(spec: m.BootstrapBase) -> tuple[boot.BootstrapSpec, str]:
    b = spec.bootstrap
    bspec = boot.BootstrapSpec(b.suite, b.variant, tuple(b.packages), b.mirror, tuple(b.components), b.keyring)
    return bspec, f"bootstrap {b.suite}/{b.variant}" + (f" +{len(b.packages)} packages" if b.packages else "")


Placed = tuple[list[tuple[Layer, str]], str, str]  # (layer, what) of a layer spec, what, origin


def git_key(spec: m.GitSource) -> str:
    """The cache key of the commit and checkout a git source was last fetched as."""
    return "gitref-" + key_of({"url": spec.git, "ref": spec.ref, **({"commit": spec.commit} if spec.commit else {})})


@dataclass(frozen=True)
class Base:
    name: str
    image: Image
    what: str
    registry_name: ImageName | None = None


class StepWalk:
    """The steps of one walk through a loaded manifest; subclasses obtain what is not cached."""

    # A copy layer found (a plan) or written (a build).
    copy_origin = "built"
    # Whether what this walk learns (buildah's version) is recorded: a build's is, a plan's
    # never (a plan writes nothing).
    records = True

    def __init__(self, loaded: Loaded, options: Options, ctx: Context, *, report: Reporter, maker: Maker) -> None:
        self.loaded = loaded
        self.man = loaded.manifest
        self.options = options
        self.ctx = ctx
        self.cache = ctx.cache
        self.report = report
        self.defs = graph.Definitions(self.man, ctx.platform)
        self.maker = maker  # what is not cached: looked up only (a plan) or made (a build)
        self.setup = ImageSetup(loaded, ctx, maker=maker)
        self.prebuilt = Prebuilt(ctx, maker=maker)  # pip: and url: layers
        self.cutter = LayerCutter(ctx, maker=maker, budget=options.layer_budget)  # big layers, as the image ships
        self.prebuilt.used, self.prebuilt.vouched = self.note_taken, self.vouched_here
        self.bases: dict[str, Base | None] = {}
        self.sources: dict[str, srcs.Source | None] = {}
        self.artifacts: dict[str, dict[str, Layer]] = {}
        self.steps: dict[str, StepReport] = {}
        self._chain = ""  # definition of the image so far (base, then each layer)
        self._below: list[str] = []  # the steps whose layers are in the image so far
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._tool: str | None = None
        self.remote: RemoteSteps | None = None  # a registry step cache (a build's, or a plan's to look in)
        self.facts: SharedFacts | None = None  # facts read from layers, shared through it (a build's)
        self.from_registry: set[str] = set()  # the step keys found there, not here
        # Where the entries used came from, and what is made here from them.
        self.origins = Origins(trusted=bool(options.cache_trust), report=report)
        self.taken = self.origins.taken  # what the provenance names: key -> (what, origin)
        self._unvouched: set[str] = set()  # local entries --cache-trust refused (warned about once)

    # -- what subclasses provide ------------------------------------------------------

    def tool(self) -> str:
        """buildah's version (part of step keys); without buildah, the one last recorded."""
        with self._once("tool"):
            if self._tool is None:
                buildah = Buildah(self.ctx.runner, storage=self.cache.root / "buildah")
                found = self.ctx.runner.which("buildah")
                self._tool = program_version(
                    self.cache, "buildah", found, buildah.version, record=self.records, missing="buildah-missing"
                )
            return self._tool

    def bootstrap(self, name: str, spec: m.BootstrapBase) -> Base | None:
        """A bootstrapped base: from the cache, else made (a build) or None (a plan)."""
        bspec, _ = _bootstrap_spec(spec)
        key, what = self.bootstrap_key(spec)
        ctx = self.ctx
        image = self.cache.base_image(key) if self.vouched_here(key, f"base {name}") else None
        if image is not None:
            self.note_taken(key, f"base {name}", image.diff_ids)
        else:
            make = partial(
                boot.make,
                bspec,
                key,
                cache=ctx.cache,
                runner=ctx.runner,
                platform=ctx.platform,
                epoch=ctx.epoch,
                compression=ctx.compression,
            )
            image = self.maker.missing(make)
        return Base(name, image, what) if image is not None else None

    def bootstrap_key(self, spec: m.BootstrapBase) -> tuple[str, str]:
        """The cache key of a bootstrapped base, and what to call it."""
        bspec, what = _bootstrap_spec(spec)
        ctx = self.ctx
        tool = boot.tool_version(ctx.runner, self.cache, record=self.records)
        return boot.bootstrap_key(
            bspec, tool=tool, platform=ctx.platform, epoch=ctx.epoch, compression=ctx.compression
        ), what

    def need_blobs(self, image: Image) -> None:
        """A step is about to run on ``image``: a build brings in the base layers it put off."""

    def obtain_base(self, name: str, spec: m.BaseSpec) -> Base | None:
        raise NotImplementedError

    def obtain_source(self, name: str, spec: m.SourceSpec) -> srcs.Source | None:
        raise NotImplementedError

    def make_compile(
        self,
        step: m.CompileStep,
        report: StepReport,
        *,
        base: Image,
        sources: Mapping[str, srcs.Source],
        inputs: Mapping[str, Layer],
        tree_key: str,
        forced: bool,
    ) -> dict[str, Layer] | None:
        """The step's artifacts, made (a build) or None (a plan: it will run)."""
        raise NotImplementedError

    def make_runtime(
        self, rs: RuntimeStep, report: StepReport, *, image: Image, mounted: Mapping[str, Layer]
    ) -> Layer | None:
        raise NotImplementedError

    def view_of(self, image: Image) -> TreeView | None:
        """The folders and symlinks of ``image`` (None: not known without writing)."""
        return self.setup.view(image)

    def unknown_facts(self) -> dict[str, str]:
        """Facts of a source not read: a plan shows its revision as still to come."""
        return {}

    def vouched_here(self, key: str, what: str) -> bool:
        """Whether the local entry ``key`` (``what``) may be used: under ``--cache-trust``, one
        taken from a registry step cache must have been signed by a trusted key (a record taken
        unchecked is a warning and a miss: it is fetched or made again)."""
        trusted = {k.key_id for k in self.options.cache_trust}
        origin = self.cache.origin(key) if trusted else None
        if origin is None or origin.signer in trusted:
            return True
        if key not in self._unvouched:
            self._unvouched.add(key)
            where = f"docker://{origin.repository}:{origin.tag}"
            self.report(Event("warning", {"text": f"{what}: the local cache took it from {where} unchecked; not used"}))
        return False

    def note_taken(self, key: str, what: str, diff_ids: Iterable[str] = ()) -> None:
        """The entry ``key`` (``what``, its layers ``diff_ids``) is used: noted if it came
        from a registry step cache (or was made from what did)."""
        origin = (self.remote.origin(key) if self.remote is not None else None) or self.cache.origin(key)
        if origin is not None:
            self.origins.note(key, what, origin, diff_ids)

    def record_made(self, key: str, result: StepResult, on: Iterable[str]) -> None:
        """``result``, made here from the layers ``on``, recorded under ``key`` with the entry
        it is built on (:meth:`Origins.below`), then shared (:meth:`share_made`)."""
        self.cache.put_step_result(key, result, self.origins.below(on))
        self.share_made(key, result)

    def share_made(self, key: str, result: StepResult) -> None:
        """``result``, made here and recorded under ``key`` (with the entry it is built on),
        noted as built on that entry (the provenance names it, what is made from it is built
        on it too) and exported to the registry step cache (signed only if that entry was)."""
        # The record's origin, not the registry's: an entry the step cache holds under this
        # key (a step --rebuild ran again) is not what this result was made from.
        origin = self.cache.origin(key)
        if origin is not None:
            self.origins.note(key, f"step {result.step}", origin, [b.diff_id for b in result.layers()])
        if self.remote is not None:
            self.remote.export(key, result)

    # -- bases and sources --------------------------------------------------------------

    def _once(self, what: str) -> threading.Lock:
        """The lock under which ``what`` (a base, a source) is obtained, once for all steps."""
        with self._locks_lock:
            return self._locks.setdefault(what, threading.Lock())

    def base(self, name: str) -> Base | None:
        with self._once(f"base:{name}"):
            if name not in self.bases:
                self.report(Event("base", {"name": name, "state": "resolving"}))
                base = self.bases[name] = self.obtain_base(name, self.man.bases[name])
                if base is not None:
                    fields = {"name": name, "state": "ready", "digest": base.image.digest, "what": base.what}
                    self.report(Event("base", fields))
            return self.bases[name]

    def source(self, name: str) -> srcs.Source | None:
        with self._once(f"source:{name}"):
            if name not in self.sources:
                self.sources[name] = self.obtain_source(name, self.man.sources[name])
            return self.sources[name]

    # -- compile steps ----------------------------------------------------------------

    def _record(self, report: StepReport) -> StepReport:
        self.steps[report.name] = report
        return report

    def compile(self, step: m.CompileStep) -> dict[str, Layer] | None:
        """The step's artifacts: from the cache when its key matches, else made (a build)."""
        if step.name in self.artifacts or step.name in self.steps:
            return self.artifacts.get(step.name)  # decided already (None: it will run)
        base = self.base(step.base or "")
        sources = {n: self.source(n) for n in step.sources}
        inputs = {ref: self.artifact(ref) for ref in step.inputs}
        report = partial(
            StepReport,
            step.name,
            "compile",
            seconds=0.0,
            artifacts=tuple(step.artifacts),
            definition=self.defs.step(step),
            depends_on=graph.compile_depends(step),
        )
        if base is None or any(v is None for v in sources.values()) or any(v is None for v in inputs.values()):
            reason = "base not made yet" if base is None else "inputs not known yet"
            self._record(report(state="will-run", key=None, reason=reason))
            return None
        key_for = partial(
            compile_key,
            step,
            base=base.image.digest,
            inputs={r: b.diff_id for r, b in inputs.items() if b is not None},
            tool=self.tool(),
            epoch=self.ctx.epoch,
            host_ca=self.options.host_ca,
        )
        key = key_for(sources={n: s.digest for n, s in sources.items() if s is not None})
        cached = self.cache_artifacts(key, step)
        forced = (self.options.no_cache or step.name in self.options.rebuild) and key not in self.options.made_keys
        if cached is not None and not forced:
            self.note_taken(key, f"step {step.name}", [b.diff_id for b in cached.values()])
            self._record(report(state="cached", key=key, reason=self._where(key)))
            self.report(Event("step", {"name": step.name, "state": "cached"}))
            self.artifacts[step.name] = cached
            return cached
        reason = "forced" if forced and cached is not None else "not built with these inputs"
        # What the step keeps between builds (build trees, working copies) is shared by the
        # builds of one definition whatever the sources: a source edit builds incrementally.
        tree_key = key_for(sources={n: "" for n in sources})
        results = self.make_compile(
            step,
            report(state="will-run", key=key, reason=reason),
            base=base.image,
            sources={n: s for n, s in sources.items() if s is not None},
            inputs={r: b for r, b in inputs.items() if b is not None},
            tree_key=tree_key,
            forced=forced,
        )
        if results is not None:
            self.artifacts[step.name] = results
        return results

    def step_result(self, key: str, what: str) -> StepResult | None:
        """The step result ``key`` (of step ``what``): from the local cache (verified there:
        parsed, every blob present), else from the registry step cache (verified by digest,
        then stored locally)."""
        hit = self.cache.step_result(key) if self.vouched_here(key, f"step {what}") else None
        if hit is None and self.remote is not None and (hit := self.remote.fetch(key, what)) is not None:
            self.from_registry.add(key)
        if hit is not None and self.remote is not None:
            self.remote.export(key, hit)
        return hit

    def _where(self, key: str) -> str:
        return "in the registry step cache" if key in self.from_registry else ""

    def cache_artifacts(self, key: str, step: m.CompileStep) -> dict[str, Layer] | None:
        hit = self.step_result(key, step.name)
        if hit is None or set(hit.artifacts) != set(step.artifacts):
            return None  # a step's result is all its artifacts, or a rebuild
        return dict(hit.artifacts)

    def artifact(self, ref: str) -> Layer | None:
        step, _, name = ref.partition(".")
        results = self.compile(graph.step_of(self.man, step))
        return results[name] if results is not None else None

    # -- runtime steps ----------------------------------------------------------------

    def runtime(self, rs: RuntimeStep, image: Image | None) -> Placed:
        mounted = {ref: self.artifact(ref) for ref in rs.mounts}
        depends = (
            f"base:{self.man.image.base}",
            *dict.fromkeys([*self._below, *(f"step:{r.partition('.')[0]}" for r in rs.mounts)]),
        )
        report = partial(
            StepReport,
            rs.name,
            "runtime",
            seconds=0.0,
            definition=self.defs.runtime(rs.definition, self._chain),
            depends_on=depends,
        )
        if image is None or any(b is None for b in mounted.values()):
            self._record(report(state="will-run", key=None, reason="the image below is not built yet"))
            return [], rs.what, "will-build"
        known = {r: b for r, b in mounted.items() if b is not None}
        mounts = {r: b.diff_id for r, b in known.items()}
        definition = {**rs.definition, "secrets": list(rs.secrets)}
        key = runtime_key(definition, parent=image, mounts=mounts, tool=self.tool(), epoch=self.ctx.epoch)
        blob = self._cached_layer(key, rs.name)
        forced = (self.options.no_cache or rs.name in self.options.rebuild) and key not in self.options.made_keys
        if blob is not None and not forced:
            self.note_taken(key, f"step {rs.name}", [blob.diff_id])
            self._record(report(state="cached", key=key, reason=self._where(key)))
            self.report(Event("step", {"name": rs.name, "state": "cached"}))
            self._check_installed(rs, blob)
            return [(blob, rs.what)], rs.what, "cached"
        made = self.make_runtime(
            rs, report(state="will-run", key=key, reason="not built with these inputs"), image=image, mounted=known
        )
        if made is not None:
            self._check_installed(rs, made)
        return ([(made, rs.what)], rs.what, "built") if made is not None else ([], rs.what, "will-build")

    def _check_installed(self, rs: RuntimeStep, blob: Layer) -> None:
        """What the step installed into Python against its locked pins, where a lock is used."""
        status = self.loaded.lock
        if status is None or rs.packages or (status.state in ("none", "missing") and not status.locked):
            return
        for line in check_installed(rs.name, rs.env, self.ctx.cache, blob.diff_id, locked=status.locked):
            self.report(Event("warning", {"text": line}))

    def _cached_layer(self, key: str, what: str) -> Layer | None:
        hit = self.step_result(key, what)
        return hit.layer if hit is not None else None
