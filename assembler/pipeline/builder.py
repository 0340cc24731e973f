"""``build``: execute a :class:`~assembler.pipeline.resolve.Plan`.

The :class:`Builder` makes the bases the plan names, then runs its compile steps in the
plan's order (each after the steps it depends on), then stacks the layers, running the
runtime steps, exactly as the plan's graph says. A step the plan found cached is taken
from the cache; a step whose key the plan could not know (what it builds on was not made
yet) gets its key now, from what was just made.

With ``jobs`` > 1, each compile step waits in a thread of its own for the steps it
depends on, and the layers are stacked (runtime steps run) meanwhile: at most ``jobs``
steps (or base bootstraps) run at once. The first failure, or Ctrl-C, stops the others:
their programs are killed, their containers removed, and that first error is raised.

A base is read as its manifest and config; its layers come into the cache only when a step
runs on it or something reads them (:mod:`assembler.pipeline.baseblobs`). With a registry
step cache, the facts read from layers are shared through it too
(:mod:`assembler.transports.factcache`), so a runner that finds every step there reads no
base layer. A Builder is a context manager: the registry step cache stays open until it
closes, for the dependency check and the SBOM, whose facts go through it as well.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cache import Origin, StepResult
from assembler.compile import sources as srcs
from assembler.compile.buildah import Buildah
from assembler.compile.steps import Mounted, Workspace, run_runtime_step
from assembler.deps.elf import FactsAsWritten
from assembler.errors import Cancelled, InputError, InvalidImage
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline import exportagent, graph
from assembler.pipeline.baseblobs import BaseBlobs
from assembler.pipeline.executors import CompileJob, executor_for
from assembler.pipeline.graph import LayerReport, RuntimeStep, StepReport
from assembler.pipeline.labels import artifacts_read
from assembler.pipeline.maker import MAKE
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.resolve import Plan, base_ref
from assembler.pipeline.stepwalk import Base, git_key
from assembler.pipeline.toolchains import Toolchains
from assembler.pipeline.walk import Walk
from assembler.spec import model as m
from assembler.transports import Context, open_base, registry_options

if TYPE_CHECKING:
    from assembler.pipeline.registrycache import RegistryCaches
    from assembler.transports.compilecache import CompileCaches


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


class Builder(Walk):
    """A walk that makes what is not cached, in the order of a Plan."""

    def __init__(self, plan: Plan, ctx: Context, *, report: Reporter) -> None:
        assert plan.loaded is not None and plan.options is not None, "a Plan from resolve()"
        lock = threading.Lock()

        def locked(event: Event) -> None:  # steps report from several threads
            with lock:
                report(event)

        if plan.options.deps_check:  # the facts it needs of each ELF file, read as its layer is written
            ctx = replace(ctx, elf=FactsAsWritten(ctx.cache.tmp))
        super().__init__(plan.loaded, plan.options, ctx, report=locked, maker=MAKE)
        self.plan = plan
        self.setup.copies.update(plan.copies)  # found by the plan: not written again
        self.jobs = max(1, plan.options.jobs)
        self._ws: Workspace | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.jobs)
        self._futures: dict[str, Future[dict[str, Layer] | None]] = {}
        self._failed = threading.Event()
        self._first_error: BaseException | None = None
        self.folders: CompileCaches | None = None  # kept folders through the registry step cache, with it
        self.blobs = self.setup.blobs = BaseBlobs(ctx.cache)  # bases' layers: fetched when read
        # Where compile steps run (--executor), chosen once.
        self.executor = executor_for(
            plan.options,
            loaded=plan.loaded,
            cache=ctx.cache,
            runner=ctx.runner,
            report=self.report,
            workspace=self._step_workspace,
        )
        self.caches: RegistryCaches | None = None  # --cache-to / --cache-from
        if plan.options.cache_to or plan.options.cache_from:
            from assembler.pipeline.registrycache import open_caches  # imports the registry client

            self.caches = open_caches(plan.options, ctx, report=self.report, unchecked=self.origins.used)
            self.remote = self.prebuilt.remote = self.caches.steps  # pip: and url: layers are entries too
            self.folders = self.caches.folders
            self.facts = self.setup.shared = self.caches.facts

    def __enter__(self) -> Builder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self) -> Built:
        """Make the plan's image (see the module's doc); the registry step cache stays open
        until :meth:`close`."""
        return self._run()

    def remote_counts(self) -> dict[str, int]:
        """What the registry step cache did so far, compile caches and facts included."""
        return self.caches.counts() if self.caches is not None else {}

    def _run(self) -> Built:
        try:
            image, base, layers = self._parallel() if self.jobs > 1 else self._in_order()
        finally:
            if self._ws is not None:
                self._ws.wait_removals()
            self.ctx.runner.reset_cancel()
        assert image is not None and base is not None  # a build makes everything
        if set(self.steps) != {s.name for s in self.plan.steps}:
            raise AssertionError(f"the build's steps {sorted(self.steps)} are not the plan's")
        image = self.finish(image, base)
        self.cache.put_bytes(image.config_bytes)
        for desc in image.layers:
            if not self.cache.has_blob(desc.digest, desc.size) and not self.blobs.pending(desc.digest):
                raise InvalidImage(f"blob {desc.digest} ({desc.size} bytes) is missing from the cache")
        steps = tuple(self.steps[s.name] for s in self.plan.steps)
        remote = self.remote_counts()
        used = {n: b for n, b in self.bases.items() if b is not None}
        sources = {n: s for n, s in self.sources.items() if s is not None}
        taken = dict(sorted(self.taken.items()))
        return Built(image, base, tuple(layers), steps, self.blobs, remote, used, sources, taken)

    def close(self) -> None:
        """Containers removed, the registry step cache closed (what it did reported)."""
        if self._ws is not None:
            self._ws.wait_removals()
        self.ctx.runner.reset_cancel()
        if self.caches is not None:
            self.caches.close()
            self.report(Event("remote-cache", {"state": "done", **self.remote_counts()}))

    def _in_order(self) -> tuple[Image | None, Base | None, list[LayerReport]]:
        for name in self.plan.bases:
            self.base(name)
        for planned in self.plan.steps:
            if planned.kind == "compile":
                self.compile(graph.step_of(self.man, planned.name))
        return self.image()

    def _parallel(self) -> tuple[Image | None, Base | None, list[LayerReport]]:
        names = [s.name for s in self.plan.steps if s.kind == "compile"]
        # A thread per compile step (most of them wait); ``jobs`` slots bound the work.
        with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="step") as pool:
            for name in names:
                self._futures[name] = pool.submit(self._compile_task, name)
            try:
                made = self.image()
                for future in self._futures.values():
                    future.result()
                return made
            except BaseException as e:
                self._give_up(e)
                wait_all(self._futures.values())
                first = self._first_error
                if first is not None and first is not e:
                    raise first from None
                raise

    def _compile_task(self, name: str) -> dict[str, Layer] | None:
        try:
            return super().compile(graph.step_of(self.man, name))
        except BaseException as e:
            self._give_up(e)
            raise

    def _give_up(self, error: BaseException) -> None:
        """The first failure stops the build: running programs are killed, no step starts."""
        with self._lock:
            if self._first_error is None:
                self._first_error = error
            self._failed.set()
        self.ctx.runner.cancel()

    def compile(self, step: m.CompileStep) -> dict[str, Layer] | None:
        future = self._futures.get(step.name)
        if future is not None:  # running (or waiting) in its own thread
            return future.result()
        return super().compile(step)

    @contextmanager
    def _slot(self, what: str) -> Iterator[None]:
        """One of the ``jobs`` slots, for making ``what``; Cancelled once the build is given up."""
        while not self._slots.acquire(timeout=0.2):
            if self._failed.is_set():
                raise Cancelled(f"{what}: not started, the build is stopping")
        try:
            if self._failed.is_set():
                raise Cancelled(f"{what}: not started, the build is stopping")
            yield
        finally:
            self._slots.release()

    def _storage(self) -> Path:
        return self.options.buildah_root or self.cache.root / "buildah"

    @property
    def ws(self) -> Workspace:
        with self._lock:
            return self._workspace()

    def _workspace(self) -> Workspace:
        if self._ws is None:
            buildah = Buildah(self.ctx.runner, storage=self._storage(), driver=self.options.storage_driver)
            # Steps always store zstd layers (fast, small); an image that wants gzip gets
            # them converted when it is assembled, so --compression reruns no step.
            self._ws = Workspace(
                buildah=buildah,
                cache=self.cache,
                epoch=self.ctx.epoch,
                compression="zstd",
                host_ca=self.options.host_ca,
                folders=self.folders,
                # A step's packages travel as a layer only with a registry step cache: here
                # buildah's committed image of them is kept, and cheaper to make.
                toolchains=Toolchains(self) if self.caches is not None else None,
                # What the dependency check, the SBOM and the labels need of the layers
                # steps make is read as they are written, not read back.
                agent=exportagent.MODULE,
                agent_job={"elf_facts": self.options.deps_check, "read": artifacts_read(self.man)},
                keep_failed=self.options.keep_failed,
                trusted=frozenset(k.key_id for k in self.options.cache_trust),
            )
        return self._ws

    # -- bases and sources ------------------------------------------------------------

    def obtain_base(self, name: str, spec: m.BaseSpec) -> Base | None:
        ctx = self.ctx
        if isinstance(spec, m.BootstrapBase):
            return self._bootstrapped(name, spec)
        ref, platform = base_ref(self.loaded, spec, ctx.platform)
        try:
            image, fetch = open_base(ref, replace(ctx, platform=platform))
        except InputError as e:
            raise self.loaded.error(("bases", name), str(e), hint=e.hint) from None

        def fetch_layers() -> None:  # when they are read: a base that lies is still the manifest's error
            try:
                fetch()
            except InputError as e:
                raise self.loaded.error(("bases", name), str(e), hint=e.hint) from None

        self.blobs.put_off(image, fetch_layers)
        return Base(name, image, str(ref), ref.name)

    def obtain_source(self, name: str, spec: m.SourceSpec) -> srcs.Source | None:
        src = srcs.resolve(
            name,
            spec,
            cache=self.cache,
            runner=self.ctx.runner,
            base_dir=self.loaded.folder,
            limits=registry_options(self.ctx).limits,  # --network-timeout, --network-deadline
        )
        if isinstance(spec, m.GitSource):
            self.cache.put_memo(git_key(spec), {"digest": src.digest, "path": str(src.path)})
        return src

    def unknown_facts(self) -> dict[str, str]:
        return {"revision": ""}  # a source the build did not read: its revision is not known

    # -- steps --------------------------------------------------------------------------

    def _step_workspace(self, name: str) -> Workspace:
        """The workspace of step ``name``, whose log lines are reported as the step's."""
        return self.ws.for_step(lambda line: self.report(Event("log", {"step": name, "line": line})))

    def _running(self, name: str) -> float:
        """Report step ``name`` running: when it started."""
        self.report(Event("step", {"name": name, "state": "running"}))
        return time.monotonic()

    def _built(self, report: StepReport, started: float) -> None:
        seconds = time.monotonic() - started
        self._record(replace(report, state="built", seconds=seconds, reason=""))
        self.report(Event("step", {"name": report.name, "state": "built", "seconds": seconds}))

    def _bootstrapped(self, name: str, spec: m.BootstrapBase) -> Base | None:
        """A bootstrapped base: from the cache, else from a registry step cache (its layers
        downloaded only when needed: :meth:`need_blobs`), else made; exported to one."""
        remote = self.remote
        if remote is None:
            with self._slot(f"base {name}"):
                return self.bootstrap(name, spec)
        key, what = self.bootstrap_key(spec)
        if self.cache.base_image(key) is None or not self.vouched_here(key, f"base {name}"):
            fetched = remote.fetch_base(key, f"base {name}")
            if fetched is not None:
                self.blobs.put_off(fetched, partial(remote.ensure_base, key))
                self.note_taken(key, f"base {name}", fetched.diff_ids)
                return Base(name, fetched, what)
        with self._slot(f"base {name}"):
            base = self.bootstrap(name, spec)
        if base is not None:
            remote.export_base(key, base.image)
        return base

    def need_blobs(self, image: Image) -> None:
        self.blobs.need(image)

    def _fetch(self, blobs: list[Layer]) -> None:
        """Blobs a step mounts, downloaded now if they are a registry step result's."""
        for blob in blobs:
            if self.remote is not None:
                self.remote.ensure(blob)

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
    ) -> dict[str, Layer]:
        assert report.key is not None
        mounted = [Mounted(ref, blob, graph.artifact_spec(self.man, ref).to) for ref, blob in inputs.items()]
        self.need_blobs(base)
        self._fetch(list(inputs.values()))
        below = self.origins.below([*base.diff_ids, *(b.diff_id for b in inputs.values())])
        job = CompileJob(step, report.key, base, sources, mounted, tree_key=tree_key, fresh=forced, built_on=below)
        with self._slot(f"step {step.name}"):
            started = self._running(step.name)
            results = self.executor.run_compile(job, stop=self._failed.is_set)
        self.share_made(report.key, StepResult(step.name, results))  # recorded with what it is built on
        self._built(report, started)
        return results

    def make_runtime(self, rs: RuntimeStep, report: StepReport, *, image: Image, mounted: Mapping[str, Layer]) -> Layer:
        assert report.key is not None
        mounts = [Mounted(r, b, graph.artifact_spec(self.man, r).to) for r, b in mounted.items()]
        self.need_blobs(image)  # the image it runs on: its base's layers too
        self._fetch(list(mounted.values()))
        with self._slot(f"step {rs.name}"):
            started = self._running(rs.name)
            ws = self._step_workspace(rs.name)
            blob = run_runtime_step(
                rs.name,
                rs.commands,
                image=image,
                env=rs.env,
                mounts=mounts,
                secrets=rs.secrets,
                exclude=rs.exclude,
                keep=rs.keep,
                ws=ws,
                key=report.key,
                user=rs.user,
                workdir=rs.workdir,
                packages=rs.packages,
            )
        on = [*image.diff_ids, *(b.diff_id for b in mounted.values())]  # what it is built on
        self.record_made(report.key, StepResult(rs.name, layer=blob), on)
        self._built(report, started)
        return blob


def build(plan: Plan, ctx: Context, *, report: Reporter) -> Built:
    """Execute ``plan``: see :class:`Builder`."""
    with Builder(plan, ctx, report=report) as builder:
        return builder.run()
