"""One walk through a loaded manifest: its bases, sources and compile steps, each keyed and looked up.

:class:`Walk` computes each step's key (from its definition, base, inputs, sources and
buildah's version) and looks it up in its step store (the local cache, or a registry step
cache over it: :mod:`assembler.pipeline.store.stepstore`). What happens when something is *not*
cached is its mode's (:class:`assembler.pipeline.walk.modes.Mode`): a plan notes that it will
run, a build makes it. The image's layers are stacked on the walk by
:mod:`assembler.pipeline.walk.layerstack`, which decides the runtime steps as it goes
(:mod:`assembler.pipeline.walk.runtimesteps`, through this walk's :meth:`Walk.decide`).

A walk is constructed with its :class:`~assembler.pipeline.walk.modes.Services` and nothing else
is wired into it. Its decisions are made once each, whichever thread asks first (a build
runs compile steps side by side: :mod:`assembler.pipeline.steps.scheduler`); a step that failed
raises the same error to every thread that asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import partial

from assembler.cache import StepResult
from assembler.compile import cross
from assembler.compile.keys import NOT_IN_KEY
from assembler.compile.steps import Mounted, compile_key
from assembler.errors import InputError
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Platform
from assembler.oci.layer import Layer
from assembler.pipeline import graph
from assembler.pipeline.graph import StepReport
from assembler.pipeline.layers import kinds
from assembler.pipeline.layers.cutlayers import LayerCutter
from assembler.pipeline.layers.kinds.base import Starting
from assembler.pipeline.layers.setup import ImageSetup
from assembler.pipeline.options import Event, WalkOptions
from assembler.pipeline.steps.jobs import CompileJob
from assembler.pipeline.store.stepstore import note_taken, step_result
from assembler.pipeline.walk import lastbuild
from assembler.pipeline.walk.modes import Services
from assembler.pipeline.walk.obtain import Obtained, Once
from assembler.transports import Context


def _known(inputs: Mapping[str, Layer | None]) -> dict[str, Layer]:
    """The input artifacts that are made (a plan has none for a step that will run)."""
    return {r: b for r, b in inputs.items() if b is not None}


@dataclass(frozen=True)
class Decision:
    """What :meth:`Walk.decide` made of a step: the result ``taken`` from the cache, or why
    it is to be made (``reason``); ``forced``: --rebuild or --no-cache named it."""

    taken: StepResult | None
    reason: str
    forced: bool


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
        # Whose steps' last builds are recorded: this manifest's, for this target and platform.
        self._manifest = f"{loaded.path.resolve()}#{loaded.target or ''}@{ctx.platform}"
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
        self.setup = ImageSetup(ctx, maker=self.mode.maker, blobs=services.blobs, shared=services.facts)  # fit, convert
        # Each layer kind's state for this walk (``carried``: what the plan's walk left, by kind).
        mode = self.mode
        starting = Starting(loaded, ctx, mode.maker, self.store, self.origins, mode.records, mode.copy_origin, None)
        self.kinds = kinds.States(starting, carried or {})
        self.cutter = LayerCutter(
            ctx, maker=self.mode.maker, budget=options.layer_budget
        )  # big layers, as the image ships
        self.once = Once()
        # Bases, sources and buildah's version: obtained once each, before the steps on them.
        self.obtained = Obtained(loaded, ctx, services, self.once)
        self.artifacts: dict[str, dict[str, Layer]] = {}
        self.steps: dict[str, StepReport] = {}
        self._failed: dict[str, BaseException] = {}  # compile steps that raised, by name
        self.taken = self.origins.taken  # what the provenance names: key -> (what, origin)

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

    # -- compile steps ----------------------------------------------------------------

    def record_step(self, report: StepReport) -> StepReport:
        """``report`` is what the walk decided of its step (or, in a build, what it did)."""
        self.steps[report.name] = report
        return report

    def where(self, key: str) -> str:
        """Why a cached step's report says where it was found."""
        return "in the registry step cache" if self.store.from_registry(key) else ""

    def decide(self, name: str, key: str, hit: StepResult | None, report: Callable[..., StepReport]) -> Decision:
        """Step ``name`` under ``key``, of either kind: ``hit`` (what the cache holds under the
        key, None: nothing usable) is taken unless the step is forced (--rebuild, --no-cache),
        and reported cached; else the step is to be made, and why."""
        forced = self.options.forced(name, key)
        if hit is not None and not forced:
            self.note_taken(key, f"step {name}", [b.diff_id for b in hit.layers()])
            self.record_step(report(state="cached", key=key, reason=self.where(key)))
            self.report(Event("step", {"name": name, "state": "cached"}))
            return Decision(hit, "", forced)
        return Decision(None, "forced" if forced and hit is not None else lastbuild.STALE, forced)

    def compile(self, step: m.CompileStep) -> dict[str, Layer] | None:
        """The step's artifacts: from the cache when its key matches, else made (a build;
        None: a plan, it will run). Decided once: another thread asking waits for it."""
        with self.once(f"step:{step.name}"):
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
        base = self.obtained.base(step.base or "")
        sources = {n: self.obtained.source(n) for n in step.sources}
        inputs = {ref: self.artifact(ref) for ref in step.inputs}
        report = self._reporter(step)
        if base is None or any(v is None for v in sources.values()) or any(v is None for v in inputs.values()):
            reason = "base not made yet" if base is None else "inputs not known yet"
            self.record_step(report(state="will-run", key=None, reason=reason))
            return None
        step = targeted(self.loaded, step, base.image.platform, self.ctx.platform)
        key_for = partial(
            compile_key,
            step,
            base=base.image.digest,
            inputs={r: b.diff_id for r, b in inputs.items() if b is not None},
            tool=self.obtained.tool(),
            epoch=self.ctx.epoch,
            host_ca=self.options.host_ca,
        )
        digests = {n: s.digest for n, s in sources.items() if s is not None}
        key = key_for(sources=digests)
        hit = self.step_result(key, step.name)
        whole = hit is not None and set(hit.artifacts) == set(step.artifacts)  # else a rebuild
        decision = self.decide(step.name, key, hit if whole else None, report)
        if decision.taken is not None:
            self.artifacts[step.name] = dict(decision.taken.artifacts)
            return self.artifacts[step.name]
        made_from = self._made_from(step, base.image.digest, digests, known := _known(inputs))
        if decision.reason == lastbuild.STALE:
            decision = replace(decision, reason=lastbuild.reason(self.cache, self._manifest, step.name, made_from))
        # What the step keeps between builds (build trees, working copies) is shared by the
        # builds of one definition whatever the sources: a source edit builds incrementally.
        tree_key = key_for(sources={n: "" for n in sources})
        job = CompileJob(
            step,
            key,
            base.image,
            {n: s for n, s in sources.items() if s is not None},
            [Mounted(ref, blob, graph.artifact_spec(self.man, ref).to) for ref, blob in known.items()],
            tree_key=tree_key,
            fresh=decision.forced,
            built_on=self.origins.below([*base.image.diff_ids, *(b.diff_id for b in known.values())]),
        )
        will_run = report(state="will-run", key=key, reason=decision.reason)
        made = self.mode.make_compile(job)
        if made is None:
            self.record_step(will_run)
            return None
        self.share_made(key, StepResult(step.name, made.made))  # recorded with what it is built on
        lastbuild.record(self.cache, self._manifest, step.name, made_from)
        self.built(will_run, made.seconds)
        self.artifacts[step.name] = made.made
        return made.made

    def _reporter(self, step: m.CompileStep) -> Callable[..., StepReport]:
        """What makes the walk's reports of ``step`` (given its state, key and reason)."""
        return partial(
            StepReport,
            step.name,
            "compile",
            seconds=0.0,
            artifacts=tuple(step.artifacts),
            definition=self.defs.step(step),
            depends_on=graph.compile_depends(step),
        )

    def _made_from(
        self, step: m.CompileStep, base: str, sources: Mapping[str, str], inputs: Mapping[str, Layer]
    ) -> lastbuild.Inputs:
        """What ``step``'s key is made of, kept apart: recorded when it is built, so that a
        later miss names the input that changed (:mod:`assembler.pipeline.walk.lastbuild`)."""
        definition = lastbuild.definition_digests(step.model_dump(mode="json", exclude=NOT_IN_KEY))
        diff_ids = {r: b.diff_id for r, b in inputs.items()}
        return lastbuild.Inputs(base, sources, diff_ids, definition, self.obtained.tool())

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

    def artifact(self, ref: str) -> Layer | None:
        step, _, name = ref.partition(".")
        results = self.compile(graph.step_of(self.man, step))
        return results[name] if results is not None else None


def targeted(loaded: Loaded, step: m.CompileStep, on: Platform, target: Platform) -> m.CompileStep:
    """``step``, told the platform built (``target``) where its container's (``on``: its
    base's) is another: it cross-compiles (:mod:`assembler.compile.cross`); its own env wins."""
    try:
        told = cross.target_env(on, target)
    except InputError as e:
        where = ("compile", [s.name for s in loaded.manifest.compile].index(step.name), "base")
        raise loaded.error(where, str(e), hint=e.hint) from None
    return step.model_copy(update={"env": {**told, **step.env}}) if told else step
