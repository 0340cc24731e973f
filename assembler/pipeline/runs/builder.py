"""``build``: execute a :class:`~assembler.pipeline.runs.resolve.Plan`.

A :class:`Build` puts a build's walk together from its services, once: the step store (the
local cache, with the registry step cache of ``--cache-to`` / ``--cache-from`` over it), the
base blobs, the facts shared through that cache, the executor wrapped in its
:class:`~assembler.pipeline.steps.scheduler.Scheduler`, and the
:class:`~assembler.pipeline.runs.building.Building` mode. :meth:`Build.run` makes the bases the
plan names, then runs its compile steps in the plan's order (each after the steps it
depends on), then stacks the layers, running the runtime steps, exactly as the plan's graph
says. A step the plan found cached is taken from the cache; a step whose key the plan could
not know (what it builds on was not made yet) gets its key now, from what was just made.
With ``jobs`` > 1, compile steps run side by side while the layers are stacked (see the
scheduler).

With a registry step cache, the facts read from layers are shared through it too
(:mod:`assembler.stepcache.facts`), so a runner that finds every step there reads no
base layer. A Build is a context manager: the registry step cache stays open until it
closes, for the dependency check and the SBOM, whose facts go through it as well.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from assembler.cache import Origin
from assembler.cache.memos import SharedFacts
from assembler.compile import sources as srcs
from assembler.compile.steps import Workspace
from assembler.errors import InvalidImage
from assembler.oci.image import Image
from assembler.pipeline import graph
from assembler.pipeline.graph import LayerReport, StepReport
from assembler.pipeline.image.bases import Base
from assembler.pipeline.layers.observers import layer_observers
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.runs.building import Building, Workspaces
from assembler.pipeline.runs.resolve import Plan
from assembler.pipeline.runs.run import Run
from assembler.pipeline.steps.executors import executor_for
from assembler.pipeline.steps.jobs import Executor
from assembler.pipeline.steps.scheduler import Scheduler
from assembler.pipeline.store.baseblobs import BaseBlobs
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.store.stepstore import LocalSteps, RegistrySteps, StepStore
from assembler.pipeline.store.toolchains import Toolchains
from assembler.pipeline.walk.layerstack import finish, stacked
from assembler.pipeline.walk.modes import Services
from assembler.pipeline.walk.walk import Walk

if TYPE_CHECKING:
    from assembler.pipeline.store.registrycache import RegistryCaches


@dataclass(frozen=True)
class Built:
    """The image a build made, the base under it, and what it did to make it."""

    image: Image
    base: Base
    layers: tuple[LayerReport, ...]
    steps: tuple[StepReport, ...]
    # Reads the image's blobs: from the cache, a base's layers fetched when first read.
    blobs: BaseBlobs
    step_cache: Mapping[str, int] = field(default_factory=dict)  # what the registry step cache did
    # Every base and source the build used, by name (the SBOM and provenance name them).
    bases: Mapping[str, Base] = field(default_factory=dict)
    sources: Mapping[str, srcs.Source] = field(default_factory=dict)
    # The entries used that came from a registry step cache: key -> (what, where from).
    taken: Mapping[str, tuple[str, Origin]] = field(default_factory=dict)


def _locked(report: Reporter) -> Reporter:
    lock = threading.Lock()

    def locked(event: Event) -> None:  # steps report from several threads
        with lock:
            report(event)

    return locked


class Build:
    """A build of ``run`` as ``plan`` says: its walk, put together from its services (see the module's
    doc); ``wrap`` wraps the executor ``--executor`` names (a Slurm node's checks the key)."""

    def __init__(
        self, run: Run, plan: Plan, *, report: Reporter, wrap: Callable[[Executor], Executor] = lambda e: e
    ) -> None:
        loaded, options = run.loaded, run.options
        self.plan = plan
        report = _locked(report)
        ctx = replace(run.ctx, observers=layer_observers(run.cache, deps_check=options.deps_check))
        self.ctx = ctx
        self.report = report
        remote = options.caches  # the registry step caches' options
        origins = Origins(trusted=bool(remote.cache_trust), report=report)
        local = LocalSteps(ctx.cache, trusted=remote.trusted(), report=report)
        steps: StepStore = local
        self.caches: RegistryCaches | None = None  # --cache-to / --cache-from
        if remote.cache_to or remote.cache_from:
            from assembler.pipeline.store.registrycache import open_caches  # imports the registry client

            self.caches = open_caches(remote, ctx, report=report, unchecked=origins.used)
            steps = RegistrySteps(local, self.caches.steps, caches=self.caches)  # pip: and url: layers too
        self.workspaces = Workspaces(
            options.workspace,
            ctx,
            loaded.manifest,
            trusted=remote.trusted(),
            report=report,
            folders=self.caches.folders if self.caches is not None else None,
            toolchains=Toolchains(steps, origins, ctx.cache, report=report) if self.caches is not None else None,
        )
        # Where compile steps run (--executor), chosen once, and how many at a time.
        executor = executor_for(
            options.executor,
            slurm_args=options.slurm_args,
            node=options.node(),
            loaded=loaded,
            cache=ctx.cache,
            runner=ctx.runner,
            report=report,
            workspace=self.workspaces.for_step,
        )
        self.scheduler = Scheduler(wrap(executor), ctx.runner, jobs=options.jobs)
        self.blobs = BaseBlobs(ctx.cache)  # bases' layers: fetched when read
        mode = Building(self.scheduler, self.workspaces, steps=steps, blobs=self.blobs, origins=origins, report=report)
        services = Services(mode, steps, self.blobs, origins, report, self.facts)
        # What the plan's walk carried (the copy layers it found): not written again.
        self.walk = Walk(loaded, options.walk, ctx, services, carried=plan.carried)

    def __enter__(self) -> Build:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def facts(self) -> SharedFacts | None:
        """Facts read from layers, shared through the registry step cache (None: no cache)."""
        return self.caches.facts if self.caches is not None else None

    def workspace(self) -> Workspace:
        """The build's buildah workspace (the image's tests run in it too)."""
        return self.workspaces.get()

    def counts(self) -> dict[str, int]:
        """What the registry step cache did so far, compile caches and facts included."""
        return self.walk.store.counts()

    def run(self) -> Built:
        """Make the plan's image (see the module's doc); the registry step cache stays open
        until :meth:`close`."""
        walk, plan = self.walk, self.plan
        for what in plan.emulated:
            said = f"{what} runs under qemu-user (emulate: true): not a run on the target"
            self.report(Event("warning", {"text": said}))
        try:
            image, base, layers = self._parallel() if self.scheduler.jobs > 1 else self._in_order()
        finally:
            self.workspaces.wait_removals()
            self.ctx.runner.reset_cancel()
        assert image is not None and base is not None  # a build makes everything
        if set(walk.steps) != {s.name for s in plan.steps}:
            raise AssertionError(f"the build's steps {sorted(walk.steps)} are not the plan's")
        image = finish(walk, image, base)
        walk.cache.put_bytes(image.config_bytes)
        for desc in image.layers:
            if not walk.cache.has_blob(desc.digest, desc.size) and not self.blobs.pending(desc.digest):
                raise InvalidImage(f"blob {desc.digest} ({desc.size} bytes) is missing from the cache")
        steps = tuple(walk.steps[s.name] for s in plan.steps)
        used = {n: b for n, b in walk.obtained.bases.items() if b is not None}
        sources = {n: s for n, s in walk.obtained.sources.items() if s is not None}
        taken = dict(sorted(walk.taken.items()))
        return Built(image, base, tuple(layers), steps, self.blobs, self.counts(), used, sources, taken)

    def close(self) -> None:
        """Containers removed, the registry step cache closed (what it did reported)."""
        self.workspaces.wait_removals()
        self.ctx.runner.reset_cancel()
        if self.caches is not None:
            self.walk.store.close()
            self.report(Event("remote-cache", {"state": "done", **self.counts()}))

    def _in_order(self) -> tuple[Image | None, Base | None, list[LayerReport]]:
        walk = self.walk
        for name in self.plan.bases:
            walk.obtained.base(name)
        for planned in self.plan.steps:
            if planned.kind == "compile":
                walk.compile(graph.step_of(walk.man, planned.name))
        return stacked(walk)

    def _parallel(self) -> tuple[Image | None, Base | None, list[LayerReport]]:
        walk = self.walk
        names = [s.name for s in self.plan.steps if s.kind == "compile"]
        return self.scheduler.side_by_side(
            names, lambda name: walk.compile(graph.step_of(walk.man, name)), lambda: stacked(walk)
        )


def build(run: Run, plan: Plan, *, report: Reporter) -> Built:
    """Build ``run`` as ``plan`` says: see :class:`Build`."""
    with Build(run, plan, report=report) as made:
        return made.run()
