"""A build's :class:`~assembler.pipeline.walk.modes.Mode`: :class:`Building` makes what is not cached.

A base is read as its manifest and config; its layers come into the cache only when a step
runs on it or something reads them (:mod:`assembler.pipeline.store.baseblobs`). A bootstrapped
base, a compile step and a runtime step are made in one of the scheduler's slots
(:mod:`assembler.pipeline.steps.scheduler`): compile steps by its executor (here in buildah, or
on a Slurm node), runtime steps here in the build's :class:`Workspaces`, on the image being
stacked. What is made is recorded and shared through the walk's step store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from assembler import hostdisk
from assembler.archive.view import TreeView
from assembler.compile import sources as srcs
from assembler.compile.buildah import Buildah
from assembler.compile.steps import Workspace, run_runtime_step
from assembler.errors import InputError
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline.image.bases import Base, bootstrap_key, git_key
from assembler.pipeline.image.labels import artifacts_read
from assembler.pipeline.layers import exportagent
from assembler.pipeline.layers.maker import MAKE
from assembler.pipeline.layers.setup import ImageSetup
from assembler.pipeline.options import Event, Reporter, WorkspaceOptions
from assembler.pipeline.runs.resolve import base_ref
from assembler.pipeline.steps.jobs import CompileJob
from assembler.pipeline.steps.scheduler import Scheduler
from assembler.pipeline.store.baseblobs import BaseBlobs
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.store.stepstore import StepStore, note_taken
from assembler.pipeline.store.toolchains import Toolchains
from assembler.pipeline.walk.modes import BaseWant, Made, RuntimeJob
from assembler.transports import Context, open_base, registry_options

if TYPE_CHECKING:
    from assembler.stepcache.compile import CompileCaches

T = TypeVar("T")


class Workspaces:
    """The build's buildah :class:`Workspace`, made when a step first needs it; ``trusted``:
    the ids of the keys ``--cache-trust`` names."""

    def __init__(
        self,
        options: WorkspaceOptions,
        ctx: Context,
        man: m.Manifest,
        *,
        trusted: frozenset[str],
        report: Reporter,
        folders: CompileCaches | None = None,
        toolchains: Toolchains | None = None,
    ) -> None:
        self.options = options
        self.ctx = ctx
        self.man = man
        self.trusted = trusted
        self.report = report
        self.folders = folders  # kept folders through the registry step cache, with one
        # A step's packages travel as a layer only with a registry step cache: without one,
        # buildah's committed image of them is kept, and cheaper to make.
        self.toolchains = toolchains
        self._ws: Workspace | None = None
        self._lock = threading.Lock()

    def get(self) -> Workspace:
        with self._lock:
            if self._ws is None:
                self._ws = self._workspace()
            return self._ws

    def for_step(self, name: str) -> Workspace:
        """The workspace of step ``name``, whose log lines are reported as the step's."""
        return self.get().for_step(lambda line: self.report(Event("log", {"step": name, "line": line})))

    def wait_removals(self) -> None:
        """Every container removed (they are removed in the background)."""
        if self._ws is not None:
            self._ws.wait_removals()

    def _workspace(self) -> Workspace:
        options, cache = self.options, self.ctx.cache
        storage = options.buildah_root or cache.root / "buildah"
        if options.storage_driver == "overlay":  # before a step's hour: overlay cannot be on NFS or Lustre
            place = hostdisk.place("buildah's storage", storage)
            if place.network:
                (why,) = hostdisk.problems([place])
                raise InputError(why, hint="assemble doctor lists where a build keeps what it makes")
        buildah = Buildah(self.ctx.runner, storage=storage, driver=options.storage_driver)
        # Steps always store zstd layers (fast, small); an image that wants gzip gets
        # them converted when it is assembled, so --compression reruns no step.
        return Workspace(
            buildah=buildah,
            cache=cache,
            epoch=self.ctx.epoch,
            compression="zstd",
            host_ca=options.host_ca,
            folders=self.folders,
            toolchains=self.toolchains,
            # What the dependency check, the SBOM and the labels need of the layers
            # steps make is read as they are written, not read back.
            agent=exportagent.MODULE,
            agent_job={"elf_facts": options.deps_check, "read": artifacts_read(self.man)},
            keep_failed=options.keep_failed,
            trusted=self.trusted,
        )


class Building:
    """A build's mode: makes what is missing (in ``scheduler``'s slots, runtime steps in
    ``workspaces``) and records it."""

    records = True
    copy_origin = "built"
    maker = MAKE
    unknown_facts: Mapping[str, str] = {"revision": ""}  # a source the build did not read

    def __init__(
        self,
        scheduler: Scheduler,
        workspaces: Workspaces,
        *,
        steps: StepStore,
        blobs: BaseBlobs,
        origins: Origins,
        report: Reporter,
    ) -> None:
        self.scheduler = scheduler
        self.workspaces = workspaces
        self.steps = steps  # where results are recorded (a registry step cache over the local one)
        self.blobs = blobs  # bases' layers, fetched when first read
        self.origins = origins
        self.report = report

    def view_of(self, setup: ImageSetup, image: Image) -> TreeView | None:
        return setup.view(image)

    def here(self, steps: StepStore, blob: Layer) -> bool:
        steps.ensure(blob)  # a step result from a registry: its blob is fetched now it is needed
        return True

    # -- bases and sources ------------------------------------------------------------

    def obtain_base(self, want: BaseWant) -> Base | None:
        name, spec, ctx, loaded = want.name, want.spec, want.ctx, want.loaded
        if isinstance(spec, m.BootstrapBase):
            return self._bootstrapped(want, spec)
        ref, platform = base_ref(loaded, spec, ctx.platform)
        try:
            image, fetch = open_base(ref, replace(ctx, platform=platform))
        except InputError as e:
            raise loaded.error(("bases", name), str(e), hint=e.hint) from None

        def fetch_layers() -> None:  # when they are read: a base that lies is still the manifest's error
            try:
                fetch()
            except InputError as e:
                raise loaded.error(("bases", name), str(e), hint=e.hint) from None

        self.blobs.put_off(image, fetch_layers)
        return Base(name, image, str(ref), ref.name)

    def _bootstrapped(self, want: BaseWant, spec: m.BootstrapBase) -> Base | None:
        """A bootstrapped base: from the cache, else from a registry step cache (its layers
        downloaded only when needed), else made; exported to one."""
        store, name = self.steps, want.name
        key, what = bootstrap_key(want.ctx, spec, record=self.records, locked=want.locked)
        fetched = store.fetch_base(key, f"base {name}")
        if fetched is not None:
            self.blobs.put_off(fetched, partial(store.ensure_base, key))
            note_taken(store, self.origins, key, f"base {name}", fetched.diff_ids)
            return Base(name, fetched, what)
        with self.scheduler.slot(f"base {name}"):
            base = want.bootstrap()
        if base is not None:
            store.export_base(key, base.image)
        return base

    def obtain_source(self, name: str, spec: m.SourceSpec, loaded: Loaded, ctx: Context) -> srcs.Source | None:
        src = srcs.resolve(
            name,
            spec,
            cache=ctx.cache,
            runner=ctx.runner,
            base_dir=loaded.folder,
            limits=registry_options(ctx).limits,  # --network-timeout, --network-deadline
        )
        if isinstance(spec, m.GitSource):
            ctx.cache.put_memo(git_key(spec), {"digest": src.digest, "path": str(src.path)})
        return src

    # -- steps --------------------------------------------------------------------------

    def make_compile(self, job: CompileJob) -> Made[dict[str, Layer]]:
        self.blobs.need(job.base)
        _fetch(self.steps, (mounted.blob for mounted in job.inputs))
        with self.scheduler.slot(f"step {job.step.name}"):
            started = self._running(job.step.name)
            results = self.scheduler.run_compile(job)
        return Made(results, time.monotonic() - started)

    def make_runtime(self, job: RuntimeJob) -> Made[Layer]:
        rs = job.step
        self.blobs.need(job.image)  # the image it runs on: its base's layers too
        _fetch(self.steps, job.mounted.values())
        with self.scheduler.slot(f"step {rs.name}"):
            started = self._running(rs.name)
            blob = run_runtime_step(
                rs.name,
                rs.commands,
                image=job.image,
                env=rs.env,
                mounts=job.mounts,
                secrets=rs.secrets,
                exclude=rs.exclude,
                keep=rs.keep,
                ws=self.workspaces.for_step(rs.name),
                key=job.key,
                user=rs.user,
                workdir=rs.workdir,
                packages=rs.packages,
                network=rs.network,
            )
        return Made(blob, time.monotonic() - started)

    def _running(self, name: str) -> float:
        """Report step ``name`` running: when it started."""
        self.report(Event("step", {"name": name, "state": "running"}))
        return time.monotonic()


def _fetch(store: StepStore, blobs: Iterable[Layer]) -> None:
    """Blobs a step mounts, downloaded now if they are a registry step result's."""
    for blob in blobs:
        store.ensure(blob)
