"""One walk through a loaded manifest: its bases, sources and compile steps, each keyed and looked up.

:class:`Walk` computes each step's key (from its definition, base, inputs, sources and
buildah's version) and looks it up in its step store (the local cache, or a registry step
cache over it: :mod:`assembler.pipeline.stepstore`). What happens when something is *not*
cached is its mode's (:class:`assembler.pipeline.modes.Mode`): a plan notes that it will
run, a build makes it. The image's layers are stacked on the walk by
:mod:`assembler.pipeline.layerstack`, which decides the runtime steps as it goes.

A walk is constructed with its :class:`~assembler.pipeline.modes.Services` and nothing else
is wired into it. Its decisions are made once each, whichever thread asks first (a build
runs compile steps side by side: :mod:`assembler.pipeline.scheduler`); a step that failed
raises the same error to every thread that asks for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from assembler.cache import StepResult
from assembler.cache.programs import program_version
from assembler.compile import sources as srcs
from assembler.compile.buildah import Buildah
from assembler.compile.steps import Mounted, compile_key
from assembler.oci.layer import Layer
from assembler.pipeline import graph, kinds
from assembler.pipeline.bases import Base, bootstrap_key, bootstrap_spec
from assembler.pipeline.cutlayers import LayerCutter
from assembler.pipeline.graph import StepReport
from assembler.pipeline.jobs import CompileJob
from assembler.pipeline.kinds.base import Starting
from assembler.pipeline.layers import ImageSetup
from assembler.pipeline.modes import BaseWant, Services
from assembler.pipeline.options import Event, WalkOptions
from assembler.pipeline.stepstore import note_taken, step_result
from assembler.spec import model as m
from assembler.spec.debs import DebLocked
from assembler.spec.loaded import Loaded
from assembler.transports import Context
from assembler.transports import bootstrap as boot


class Walk:
    """One walk through a loaded manifest, in the mode and with the services it is given."""

    def __init__(
        self,
        loaded: Loaded,
        options: WalkOptions,
        ctx: Context,
        services: Services,
        *,
        carried: Mapping[str, object] | None = None,
    ) -> None:
        self.loaded = loaded
        self.man = loaded.manifest
        self.options = options
        self.ctx = ctx
        self.cache = ctx.cache
        self.services = services
        self.mode = services.mode  # what is not cached: looked up only (a plan) or made (a build)
        self.store = services.steps
        self.origins = services.origins
        self.report = services.report
        self.defs = graph.Definitions(self.man, ctx.platform)
        self.setup = ImageSetup(ctx, maker=self.mode, blobs=services.blobs, shared=services.facts)  # fit, convert
        # Each layer kind's state for this walk (``carried``: what the plan's walk left, by kind).
        self.kind_states = {
            key: kind.start(self._starting((carried or {}).get(key))) for key, kind in kinds.by_key().items()
        }
        self.cutter = LayerCutter(ctx, maker=self.mode, budget=options.layer_budget)  # big layers, as the image ships
        self.bases: dict[str, Base | None] = {}
        self.sources: dict[str, srcs.Source | None] = {}
        self.artifacts: dict[str, dict[str, Layer]] = {}
        self.steps: dict[str, StepReport] = {}
        self._failed: dict[str, BaseException] = {}  # compile steps that raised, by name
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._tool: str | None = None
        self.taken = self.origins.taken  # what the provenance names: key -> (what, origin)

    def _starting(self, carried: object) -> Starting:
        mode = self.mode
        return Starting(self.loaded, self.ctx, mode, self.store, self.origins, mode.records, mode.copy_origin, carried)

    def carried(self) -> dict[str, object]:
        """What this walk (a plan's) leaves its build, by layer kind (:meth:`Kind.carry`)."""
        out = {key: kind.carry(self.kind_states[key]) for key, kind in kinds.by_key().items()}
        return {key: value for key, value in out.items() if value is not None}

    def kind_state(self, key: str) -> Any:
        """The state of layer kind ``key`` (``copy``, ``pip``...) in this walk."""
        return self.kind_states[key]

    def tool(self) -> str:
        """buildah's version (part of step keys); without buildah, the one last recorded."""
        with self._once("tool"):
            if self._tool is None:
                buildah = Buildah(self.ctx.runner, storage=self.cache.root / "buildah")
                found = self.ctx.runner.which("buildah")
                self._tool = program_version(
                    self.cache, "buildah", found, buildah.version, record=self.mode.records, missing="buildah-missing"
                )
            return self._tool

    def locked_debs(self, where: str) -> DebLocked | None:
        """What the lock installs at ``where`` (``apt:bases.NAME``, ``apt:packages-1``), if it does."""
        lock = self.loaded.lock
        return lock.debian.get(where) if lock is not None else None

    def bootstrap(self, name: str, spec: m.BootstrapBase) -> Base | None:
        """A bootstrapped base: from the cache, else made (a build) or None (a plan)."""
        bspec, _ = bootstrap_spec(spec)
        locked = self.locked_debs(f"apt:bases.{name}")
        key, what = bootstrap_key(self.ctx, spec, record=self.mode.records, locked=locked)
        ctx = self.ctx
        image = self.cache.base_image(key) if self.store.vouched(key, f"base {name}") else None
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
                locked=locked,
            )
            image = self.mode.missing(make)
        return Base(name, image, what) if image is not None else None

    def note_taken(self, key: str, what: str, diff_ids: Iterable[str] = ()) -> None:
        """The entry ``key`` (``what``, its layers ``diff_ids``) is used: noted if it came
        from a registry step cache (or was made from what did)."""
        note_taken(self.store, self.origins, key, what, diff_ids)

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
        self.store.export(key, result)

    # -- bases and sources --------------------------------------------------------------

    def _once(self, what: str) -> threading.Lock:
        """The lock under which ``what`` (a base, a source, a step) is decided, once for all."""
        with self._locks_lock:
            return self._locks.setdefault(what, threading.Lock())

    def base(self, name: str) -> Base | None:
        with self._once(f"base:{name}"):
            if name not in self.bases:
                self.report(Event("base", {"name": name, "state": "resolving"}))
                base = self.bases[name] = self.mode.obtain_base(self._want(name))
                if base is not None:
                    fields = {"name": name, "state": "ready", "digest": base.image.digest, "what": base.what}
                    self.report(Event("base", fields))
            return self.bases[name]

    def _want(self, name: str) -> BaseWant:
        spec = self.man.bases[name]
        if not isinstance(spec, m.BootstrapBase):
            return BaseWant(name, spec, self.loaded, self.ctx, None, lambda: None)
        locked = self.locked_debs(f"apt:bases.{name}")
        return BaseWant(name, spec, self.loaded, self.ctx, locked, partial(self.bootstrap, name, spec))

    def source(self, name: str) -> srcs.Source | None:
        with self._once(f"source:{name}"):
            if name not in self.sources:
                self.sources[name] = self.mode.obtain_source(name, self.man.sources[name], self.loaded, self.ctx)
            return self.sources[name]

    # -- compile steps ----------------------------------------------------------------

    def record_step(self, report: StepReport) -> StepReport:
        """``report`` is what the walk decided of its step (or, in a build, what it did)."""
        self.steps[report.name] = report
        return report

    def where(self, key: str) -> str:
        """Why a cached step's report says where it was found."""
        return "in the registry step cache" if self.store.from_registry(key) else ""

    def compile(self, step: m.CompileStep) -> dict[str, Layer] | None:
        """The step's artifacts: from the cache when its key matches, else made (a build;
        None: a plan, it will run). Decided once: another thread asking waits for it."""
        with self._once(f"step:{step.name}"):
            failed = self._failed.get(step.name)
            if failed is not None:
                raise failed
            if step.name in self.artifacts or step.name in self.steps:
                return self.artifacts.get(step.name)  # decided already (None: it will run)
            try:
                return self._decide(step)
            except BaseException as e:
                self._failed[step.name] = e
                raise

    def _decide(self, step: m.CompileStep) -> dict[str, Layer] | None:
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
            self.record_step(report(state="will-run", key=None, reason=reason))
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
        forced = self.options.forced(step.name, key)
        if cached is not None and not forced:
            self.note_taken(key, f"step {step.name}", [b.diff_id for b in cached.values()])
            self.record_step(report(state="cached", key=key, reason=self.where(key)))
            self.report(Event("step", {"name": step.name, "state": "cached"}))
            self.artifacts[step.name] = cached
            return cached
        reason = "forced" if forced and cached is not None else "not built with these inputs"
        # What the step keeps between builds (build trees, working copies) is shared by the
        # builds of one definition whatever the sources: a source edit builds incrementally.
        tree_key = key_for(sources={n: "" for n in sources})
        known = {r: b for r, b in inputs.items() if b is not None}
        job = CompileJob(
            step,
            key,
            base.image,
            {n: s for n, s in sources.items() if s is not None},
            [Mounted(ref, blob, graph.artifact_spec(self.man, ref).to) for ref, blob in known.items()],
            tree_key=tree_key,
            fresh=forced,
            built_on=self.origins.below([*base.image.diff_ids, *(b.diff_id for b in known.values())]),
        )
        will_run = report(state="will-run", key=key, reason=reason)
        made = self.mode.make_compile(job)
        if made is None:
            self.record_step(will_run)
            return None
        self.share_made(key, StepResult(step.name, made.made))  # recorded with what it is built on
        self.built(will_run, made.seconds)
        self.artifacts[step.name] = made.made
        return made.made

    def built(self, report: StepReport, seconds: float) -> None:
        """The step of ``report`` was made, in ``seconds``."""
        self.record_step(replace(report, state="built", seconds=seconds, reason=""))
        self.report(Event("step", {"name": report.name, "state": "built", "seconds": seconds}))

    def step_state(self, name: str) -> str:
        """What the walk decided of compile step ``name`` (cached, built, will-run)."""
        report = self.steps.get(name)
        return report.state if report is not None else "cached"

    def artifacts_of(self, name: str) -> dict[str, Layer] | None:
        """Compile step ``name``'s artifacts (None: it will run)."""
        return self.compile(graph.step_of(self.man, name))

    def step_result(self, key: str, what: str) -> StepResult | None:
        """The step result ``key`` (of step ``what``): from the local cache (verified there:
        parsed, every blob present), else from the registry step cache (verified by digest,
        then stored locally)."""
        return step_result(self.store, key, what)

    def cache_artifacts(self, key: str, step: m.CompileStep) -> dict[str, Layer] | None:
        hit = self.step_result(key, step.name)
        if hit is None or set(hit.artifacts) != set(step.artifacts):
            return None  # a step's result is all its artifacts, or a rebuild
        return dict(hit.artifacts)

    def artifact(self, ref: str) -> Layer | None:
        step, _, name = ref.partition(".")
        results = self.compile(graph.step_of(self.man, step))
        return results[name] if results is not None else None
