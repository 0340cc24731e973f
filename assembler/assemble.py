"""The whole pipeline, and the only module that knows it: plan -> build -> write.

A :class:`Pipeline` resolves bases and sources, decides for each compile and runtime
step whether its cached result can be used (by step key), and stacks the layers on the
runtime base. ``plan()`` runs the same decisions without running anything (no buildah
needed); ``build()`` runs what is missing and writes every output. Library code
reports through ``report(Event)``; the CLI decides what the user sees.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembler.archive.layer import LayerBlob
from assembler.archive.view import TreeView
from assembler.cache import Cache, StepResult, key_of, temp_prefix
from assembler.compile import sources as srcs
from assembler.compile.buildah import Buildah
from assembler.compile.steps import (
    Mounted,
    Workspace,
    apt_install,
    compile_key,
    run_compile_step,
    run_runtime_step,
    runtime_key,
)
from assembler.errors import BadReference, CorruptBlob, InputError, InvalidImage
from assembler.image import ImageSetup, absolute_ref, config_changes, default_annotations, gpu_metadata
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.reference import ImageName, Ref, parse_ref
from assembler.proc import Runner
from assembler.spec import model as m
from assembler.spec import sourcefacts
from assembler.spec.load import Loaded
from assembler.transports import (
    Context,
    Written,
    check_replaceable,
    import_image,
    open_source,
    registry_options,
    write_output,
)
from assembler.transports import bootstrap as boot
from assembler.transports import rootfs as rootfs_transport
from assembler.transports.common import SourceImage

if TYPE_CHECKING:
    from assembler.transports.sif import SifInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """Something the user may want to see: ``kind`` plus fields."""

    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict)


Reporter = Callable[[Event], None]


def _quiet(event: Event) -> None:
    pass


@dataclass(frozen=True)
class Options:
    """How to build (from the command line; the manifest says what)."""

    cache_dir: Path
    epoch: int
    platform: Platform | None = None  # None: the manifest's
    registry: Any = None  # transports.remote.RegistryOptions
    outputs: tuple[str, ...] | None = None
    no_cache: bool = False
    rebuild: frozenset[str] = frozenset()
    storage_driver: str = "overlay"
    host_ca: bool = True
    compression: str | None = None  # None: the manifest's
    attach_sif: bool = False
    force: bool = False  # outputs may replace files that are not ours


@dataclass(frozen=True)
class LayerReport:
    index: int
    kind: str
    what: str
    digest: str | None
    size: int | None
    diff_id: str | None
    origin: str  # base | built | cached | will-build


@dataclass(frozen=True)
class StepReport:
    name: str
    kind: str  # compile | runtime
    state: str  # cached | built | will-run
    seconds: float
    key: str | None
    reason: str = ""
    artifacts: tuple[str, ...] = ()
    # What the manifest says the step is (its definition, base and source *specs*, the
    # definitions it depends on), not what it read: changes when the manifest changes.
    definition: str = ""


@dataclass(frozen=True)
class Result:
    image: Image
    layers: tuple[LayerReport, ...]
    steps: tuple[StepReport, ...]
    outputs: tuple[Written, ...]
    seconds: float

    @property
    def digest(self) -> str:
        return self.image.digest


@dataclass(frozen=True)
class Plan:
    """What a build would do, decided without running anything."""

    name: str
    target: str | None
    params: Mapping[str, str]
    bases: Mapping[str, str | None]  # name -> image digest when known
    steps: tuple[StepReport, ...]
    layers: tuple[LayerReport, ...]
    outputs: tuple[str, ...]
    # The runtime config (Entrypoint, Cmd, Env, User, ...) and manifest annotations the image
    # will have; complete when the base is known, else what the manifest itself sets.
    config: Mapping[str, Any] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    config_complete: bool = False


def resolve_epoch(cli_epoch: int | None, manifest_epoch: int | None, environ: Mapping[str, str] = os.environ) -> int:
    """``--epoch`` > ``SOURCE_DATE_EPOCH`` > the manifest's ``epoch`` > 0. Never the clock."""
    if cli_epoch is not None:
        return _epoch_in_range(cli_epoch, "--epoch")
    env = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if env:
        if not env.isdigit():
            raise InputError(f"SOURCE_DATE_EPOCH must be a whole number of seconds, got {env!r}")
        return _epoch_in_range(int(env), "SOURCE_DATE_EPOCH")
    return manifest_epoch or 0


def _epoch_in_range(epoch: int, what: str) -> int:
    if not 0 <= epoch <= m.MAX_EPOCH:
        raise InputError(f"{what} must be between 0 and {m.MAX_EPOCH} (the year 9999), got {epoch}")
    return epoch


@dataclass(frozen=True)
class Base:
    name: str
    image: Image
    what: str
    registry_name: ImageName | None = None


class Pipeline:
    """One plan or build of a loaded manifest. ``dry`` runs nothing and writes nothing."""

    def __init__(self, loaded: Loaded, options: Options, *, runner: Runner, report: Reporter, dry: bool) -> None:
        self.loaded = loaded
        self.man = loaded.manifest
        self.options = options
        self.runner = runner
        self.report = report
        self.dry = dry
        self.cache = Cache(options.cache_dir)
        platform = options.platform or Platform.parse(self.man.platform)
        compression = options.compression or self.man.compression
        self.ctx = Context(
            cache=self.cache,
            runner=runner,
            platform=platform,
            epoch=options.epoch,
            compression=compression,  # type: ignore[arg-type]
            registry=options.registry,
            progress=lambda n: report(Event("bytes", {"n": n, "what": "compressed"})),
            upload_progress=lambda n: report(Event("bytes", {"n": n, "what": "pushed"})),
        )
        self.bases: dict[str, Base | None] = {}
        self.sources: dict[str, srcs.Source] = {}
        self.artifacts: dict[str, dict[str, LayerBlob]] = {}
        self.steps: list[StepReport] = []
        self._ws: Workspace | None = None
        self._tool: str | None = None
        self._pending: set[str] = set()
        self._definitions: dict[str, str] = {}
        self._chain = ""  # definition of the image so far (base, then each layer)

    # -- tools ---------------------------------------------------------------------

    @property
    def tool(self) -> str:
        """buildah's version (part of step keys); in a plan without buildah, the last one seen."""
        if self._tool is None:
            recorded = self.cache.memo("tool-buildah") or {}
            if self.runner.which("buildah") is not None:
                self._tool = Buildah(self.runner, storage=self.cache.root / "buildah").version()
                if not self.dry and recorded.get("version") != self._tool:
                    self.cache.put_memo("tool-buildah", {"version": self._tool})
            else:
                self._tool = str(recorded.get("version", "buildah-missing"))
        return self._tool

    @property
    def ws(self) -> Workspace:
        if self._ws is None:
            buildah = Buildah(self.runner, storage=self.cache.root / "buildah", driver=self.options.storage_driver)
            # Steps always store zstd layers (fast, small); an image that wants gzip gets
            # them converted when it is assembled, so --compression reruns no step.
            self._ws = Workspace(
                buildah=buildah,
                cache=self.cache,
                epoch=self.ctx.epoch,
                compression="zstd",
                host_ca=self.options.host_ca,
                on_line=None,
            )
        return self._ws

    # -- bases and sources ---------------------------------------------------------

    def base(self, name: str) -> Base | None:
        """The base ``name``, read (or bootstrapped) into the cache; in a plan, only if that
        costs nothing (already cached, or a local layout/archive)."""
        if name in self.bases:
            return self.bases[name]
        spec = self.man.bases[name]
        self.report(Event("base", {"name": name, "state": "resolving"}))
        base = self._resolve_base(name, spec)
        self.bases[name] = base
        if base is not None:
            self.report(Event("base", {"name": name, "state": "ready", "digest": base.image.digest, "what": base.what}))
        return base

    def _resolve_base(self, name: str, spec: m.BaseSpec) -> Base | None:
        ctx = self.ctx
        if isinstance(spec, m.BootstrapBase):
            b = spec.bootstrap
            bspec = boot.BootstrapSpec(b.suite, b.variant, tuple(b.packages), b.mirror, tuple(b.components), b.keyring)
            what = f"bootstrap {b.suite}/{b.variant}" + (f" +{len(b.packages)} packages" if b.packages else "")
            image = boot.read(bspec, cache=ctx.cache, runner=ctx.runner, platform=ctx.platform, epoch=ctx.epoch,
                              compression=ctx.compression, dry=self.dry)  # fmt: skip
            return Base(name, image, what) if image is not None else None
        text = spec if isinstance(spec, str) else spec.ref
        platform = Platform.parse(spec.platform) if isinstance(spec, m.RefBase) and spec.platform else ctx.platform
        ref = absolute_ref(parse_ref(text), self.loaded.folder)
        if self.dry:
            if ref.transport == "rootfs":
                image = rootfs_transport.cached(Path(ref.path), cache=ctx.cache, platform=platform, epoch=ctx.epoch,
                                                compression=ctx.compression)  # fmt: skip
                return Base(name, image, str(ref)) if image is not None else None
            if ref.transport == "docker":
                image = self.cache.base_image(_resolved_key(ref, platform))
                return Base(name, image, str(ref), ref.name) if image is not None else None
        try:
            source = open_source(ref, replace(ctx, platform=platform))
            image = source.image if self.dry else import_image(source, ctx.cache, progress=ctx.progress)
        except InputError as e:
            raise self.loaded.error(("bases", name), str(e), hint=e.hint) from None
        if ref.transport == "docker" and not self.dry:
            self.cache.put_base_image(_resolved_key(ref, platform), image)
        return Base(name, image, str(ref), ref.name if ref.transport == "docker" else None)

    def source(self, name: str) -> srcs.Source | None:
        if name not in self.sources:
            spec = self.man.sources[name]
            if self.dry and isinstance(spec, m.GitSource):
                hit = self.cache.memo(_git_key(spec))
                if hit is None:
                    return None
                self.sources[name] = srcs.Source(name, Path(str(hit["path"])), str(hit["digest"]), spec.git)
                return self.sources[name]
            if self.dry and isinstance(spec, m.UrlSource):
                return srcs.Source(name, Path(), "sha256:" + spec.sha256, spec.url)
            src = srcs.resolve(name, spec, cache=self.cache, runner=self.runner, base_dir=self.loaded.folder)
            if isinstance(spec, m.GitSource):
                self.cache.put_memo(_git_key(spec), {"digest": src.digest, "path": str(src.path)})
            self.sources[name] = src
        return self.sources[name]

    # -- compile steps -------------------------------------------------------------

    def needed_steps(self) -> list[m.CompileStep]:
        """Compile steps the image's layers use, with the steps their inputs need."""
        by_name = {s.name: s for s in self.man.compile}
        want: set[str] = set()
        todo: list[str] = []
        for layer in self.man.image.layers:
            if isinstance(layer, m.ArtifactLayer):
                todo.append(layer.artifact.partition(".")[0])
            elif isinstance(layer, m.RunLayer):
                todo += [r.partition(".")[0] for r in layer.mounts]
        while todo:
            name = todo.pop()
            if name in want:
                continue
            want.add(name)
            todo += [r.partition(".")[0] for r in by_name[name].inputs]
        return [s for s in self.man.compile if s.name in want]

    def compile(self, step: m.CompileStep) -> dict[str, LayerBlob] | None:
        """The step's artifacts: from the cache when its key matches, else built (not in a plan)."""
        if step.name in self.artifacts:
            return self.artifacts[step.name]
        if step.name in self._pending:
            return None  # a plan already decided this step will run
        base = self.base(step.base or "")
        sources = {n: self.source(n) for n in step.sources}
        inputs = {ref: self._artifact(ref) for ref in step.inputs}
        if base is None or any(v is None for v in sources.values()) or any(v is None for v in inputs.values()):
            reason = "base not made yet" if base is None else "inputs not known yet"
            self._pending.add(step.name)
            self._report_compile(step, "will-run", None, reason)
            return None
        key_for = partial(
            compile_key,
            step,
            base=base.image.digest,
            inputs={r: b.diff_id for r, b in inputs.items() if b is not None},
            tool=self.tool,
            epoch=self.ctx.epoch,
            host_ca=self.options.host_ca,
        )
        key = key_for(sources={n: s.digest for n, s in sources.items() if s is not None})
        cached = self._cached_artifacts(key, step)
        forced = self.options.no_cache or step.name in self.options.rebuild
        if cached is not None and not forced:
            self._report_compile(step, "cached", key)
            self.report(Event("step", {"name": step.name, "state": "cached"}))
            self.artifacts[step.name] = cached
            return cached
        if self.dry:
            reason = "forced" if forced and cached is not None else "not built with these inputs"
            self._pending.add(step.name)
            self._report_compile(step, "will-run", key, reason)
            return None
        self.report(Event("step", {"name": step.name, "state": "running"}))
        started = time.monotonic()
        mounted = [Mounted(ref, blob, self._artifact_spec(ref).to) for ref, blob in inputs.items() if blob is not None]
        ws = self.ws
        ws.on_line = lambda line: self.report(Event("log", {"step": step.name, "line": line}))
        # What the step keeps between builds (build trees, working copies) is shared by the
        # builds of one definition whatever the sources: a source edit builds incrementally.
        tree_key = key_for(sources={n: "" for n in sources})
        results = run_compile_step(step, base=base.image, sources={n: s for n, s in sources.items() if s},
                                   inputs=mounted, ws=ws, key=key, tree_key=tree_key, fresh=forced)  # fmt: skip
        self.cache.put_step_result(key, StepResult(step.name, results))
        seconds = time.monotonic() - started
        self._report_compile(step, "built", key, seconds=seconds)
        self.report(Event("step", {"name": step.name, "state": "built", "seconds": seconds}))
        self.artifacts[step.name] = results
        return results

    def _report_compile(
        self, step: m.CompileStep, state: str, key: str | None, reason: str = "", *, seconds: float = 0.0
    ) -> None:
        self.steps.append(StepReport(step.name, "compile", state, seconds, key, reason, tuple(step.artifacts),
                                     self.step_definition(step)))  # fmt: skip

    def _base_definition(self, name: str) -> str:
        spec = self.man.bases[name]
        return key_of({"base": spec if isinstance(spec, str) else spec.model_dump(mode="json")})

    def step_definition(self, step: m.CompileStep) -> str:
        """A digest of what the manifest says about ``step`` and everything it builds on."""
        if step.name not in self._definitions:
            self._definitions[step.name] = key_of(
                {
                    "step": step.model_dump(mode="json", exclude={"name", "use", "with_", "runtime_packages"}),
                    "base": self._base_definition(step.base or ""),
                    "sources": {n: self.man.sources[n].model_dump(mode="json") for n in step.sources},
                    "inputs": {r: self.step_definition(self._step(r.partition(".")[0])) for r in step.inputs},
                    "platform": str(self.ctx.platform),
                }
            )
        return self._definitions[step.name]

    def _mount_definitions(self, mounts: Sequence[str]) -> dict[str, str]:
        return {ref: self.step_definition(self._step(ref.partition(".")[0])) for ref in mounts}

    def _layer_definition(self, spec: m.LayerSpec) -> str:
        if isinstance(spec, m.RunLayer):
            dump = spec.model_dump(mode="json", by_alias=True)
            return key_of({"layer": dump, "mounts": self._mount_definitions(spec.mounts)})
        if isinstance(spec, m.ArtifactLayer):
            return key_of(
                {"artifact": spec.artifact, "step": self.step_definition(self._step(spec.artifact.split(".")[0]))}
            )
        return key_of({"layer": spec.model_dump(mode="json", by_alias=True)})

    def _runtime_definition(self, definition: Mapping[str, object]) -> str:
        mounts = definition.get("mounts") or []
        assert isinstance(mounts, list)
        return key_of({"step": dict(definition), "below": self._chain, "mounts": self._mount_definitions(mounts)})

    def _cached_artifacts(self, key: str, step: m.CompileStep) -> dict[str, LayerBlob] | None:
        hit = self.cache.step_result(key)
        if hit is None or set(hit.artifacts) != set(step.artifacts):
            return None  # a step's result is all its artifacts, or a rebuild
        return dict(hit.artifacts)

    def _step(self, name: str) -> m.CompileStep:
        return next(s for s in self.man.compile if s.name == name)

    def _artifact_spec(self, ref: str) -> m.Artifact:
        step, _, name = ref.partition(".")
        return self._step(step).artifacts[name]

    def _artifact(self, ref: str) -> LayerBlob | None:
        step, _, name = ref.partition(".")
        results = self.compile(self._step(step))
        return results[name] if results is not None else None

    # -- image layers --------------------------------------------------------------

    def image(self) -> tuple[Image | None, Base | None, list[LayerReport]]:
        """The image with every layer (None in a plan where something is not built yet)."""
        base = self.base(self.man.image.base)
        reports: list[LayerReport] = []
        image: Image | None = None
        # A plan computes nothing it would have to write: a layer it does not know yet (not
        # built, or not yet fitted or converted) has no digest, and what it changes below is
        # unknown too. A build knows every layer.
        setup = ImageSetup(self.loaded, self.ctx, lookup_only=self.dry)
        # The folders and symlinks of the image so far: copy and artifact layers are fitted onto it.
        view: TreeView | None = None
        if base is not None:
            image, shipped_base = setup.convert_image(base.image)
            for i, (blob, diff_id) in enumerate(zip(shipped_base, base.image.diff_ids, strict=True)):
                digest, size = (blob.digest, blob.size) if blob is not None else (None, None)
                reports.append(LayerReport(i, "base", base.what, digest, size, diff_id, "base"))
            view = setup.view(image)
        else:
            reports.append(LayerReport(0, "base", self.man.image.base, None, None, None, "will-build"))
        self._chain = self._base_definition(self.man.image.base)
        for i, (spec, path) in enumerate(zip(self.man.image.layers, self.loaded.layer_paths, strict=True)):
            blobs, what, origin = self._layer(spec, path, image, i, setup)
            self._chain = key_of({"below": self._chain, "layer": self._layer_definition(spec)})
            if not blobs:
                reports.append(LayerReport(len(reports), _kind(spec), what, None, None, None, origin))
                image = view = None
                continue
            for blob, item in blobs:
                placed: LayerBlob | None = blob
                if isinstance(spec, m.CopyLayer | m.ArtifactLayer):
                    placed = setup.fit(blob, view) if view is not None else None
                shipped = setup.convert(placed) if placed is not None else None
                digest, size = (shipped.digest, shipped.size) if shipped is not None else (None, None)
                placed_id = placed.diff_id if placed is not None else None
                reports.append(LayerReport(len(reports), _kind(spec), item, digest, size, placed_id, origin))
                if placed is None or image is None or view is None:
                    image = view = None
                    continue
                view.apply(setup.index(placed.descriptor(), placed.diff_id))
                layer = shipped or placed  # a plan without the converted blob: the same diff_id
                comment = getattr(spec, "comment", None) or ""
                added = mutate.AddedLayer(layer.descriptor(), layer.diff_id, f"assemble: {item}", comment)
                image = mutate.append_layers(image, [added], epoch=self.ctx.epoch)
                if shipped is not None:
                    self.report(Event("layer", {"index": len(reports) - 1, "what": item, "digest": shipped.digest,
                                                "size": shipped.size, "origin": origin}))  # fmt: skip
        return image, base, reports

    def _layer(
        self, spec: m.LayerSpec, path: tuple[str | int, ...], image: Image | None, index: int, setup: ImageSetup
    ) -> tuple[list[tuple[LayerBlob, str]], str, str]:
        if isinstance(spec, m.CopyLayer):
            c = spec.copy_
            what = f"copy {c.from_} {c.to}"
            blob = setup.copy_layer(c, path)
            if blob is None:
                return [], what, "will-build"
            return [(blob, what)], what, "cached" if self.dry else "built"
        if isinstance(spec, m.ArtifactLayer):
            step_name, _, art = spec.artifact.partition(".")
            results = self.compile(self._step(step_name))
            names = [art] if art else sorted(self._step(step_name).artifacts)
            what = f"artifact {spec.artifact}"
            if results is None:
                return [], what, "will-build"
            state = next((s.state for s in self.steps if s.name == step_name), "cached")
            return [(results[n], f"artifact {step_name}.{n}") for n in names], what, state
        if isinstance(spec, m.RunLayer):
            name = spec.name or f"run-{index + 1}"
            commands = [(c, c) for c in spec.run]
            definition = spec.model_dump(mode="json", exclude={"name", "comment"})
            return self._runtime(name, commands, definition, image, spec.env, spec.mounts, spec.secrets,
                                 spec.exclude, spec.keep, f"run {' && '.join(spec.run)}"[:120],
                                 user=spec.user, workdir=spec.workdir)  # fmt: skip
        assert isinstance(spec, m.PackagesLayer)
        packages = self._packages(spec.packages)
        name = spec.name or f"packages-{index + 1}"
        what = f"packages {' '.join(packages)}"
        commands = [(f"apt-get install {' '.join(packages)}", apt_install(packages))]
        return self._runtime(name, commands, {"packages": packages}, image, {}, [], [], [], [], what, packages=True)

    def _packages(self, names: list[str]) -> list[str]:
        out: list[str] = []
        for name in names:
            if name == "from-steps":
                for step in self.needed_steps():
                    out += step.runtime_packages
            else:
                out.append(name)
        return list(dict.fromkeys(out))

    def _runtime(
        self,
        name: str,
        commands: list[tuple[str, str]],
        definition: Mapping[str, object],
        image: Image | None,
        env: Mapping[str, str],
        mounts: list[str],
        secrets: list[str],
        exclude: list[str],
        keep: list[str],
        what: str,
        *,
        user: str = "0:0",
        workdir: str | None = None,
        packages: bool = False,
    ) -> tuple[list[tuple[LayerBlob, str]], str, str]:
        mounted = {ref: self._artifact(ref) for ref in mounts}
        if image is None or any(b is None for b in mounted.values()):
            self.steps.append(StepReport(name, "runtime", "will-run", 0.0, None, "the image below is not built yet",
                                         definition=self._runtime_definition(definition)))  # fmt: skip
            return [], what, "will-build"
        key = runtime_key(
            {**definition, "secrets": secrets},
            parent=image,
            mounts={r: b.diff_id for r, b in mounted.items() if b is not None},
            tool=self.tool,
            epoch=self.ctx.epoch,
        )
        hit = self.cache.step_result(key)
        forced = self.options.no_cache or name in self.options.rebuild
        if hit is not None and not forced:
            blob = hit.layer
            if blob is not None:
                self.steps.append(StepReport(name, "runtime", "cached", 0.0, key,
                                             definition=self._runtime_definition(definition)))  # fmt: skip
                self.report(Event("step", {"name": name, "state": "cached"}))
                return [(blob, what)], what, "cached"
        if self.dry:
            self.steps.append(StepReport(name, "runtime", "will-run", 0.0, key, "not built with these inputs",
                                         definition=self._runtime_definition(definition)))  # fmt: skip
            return [], what, "will-build"
        self.report(Event("step", {"name": name, "state": "running"}))
        started = time.monotonic()
        ws = self.ws
        ws.on_line = lambda line: self.report(Event("log", {"step": name, "line": line}))
        mounts_list = [Mounted(r, b, self._artifact_spec(r).to) for r, b in mounted.items() if b is not None]
        blob = run_runtime_step(name, commands, image=image, env=env, mounts=mounts_list, secrets=secrets,
                                exclude=exclude, keep=keep, ws=ws, key=key, user=user, workdir=workdir,
                                packages=packages)  # fmt: skip
        self.cache.put_step_result(key, StepResult(name, layer=blob))
        seconds = time.monotonic() - started
        self.steps.append(StepReport(name, "runtime", "built", seconds, key,
                                     definition=self._runtime_definition(definition)))  # fmt: skip
        self.report(Event("step", {"name": name, "state": "built", "seconds": seconds}))
        return [(blob, what)], what, "built"

    # -- the whole ------------------------------------------------------------------

    def finish(self, image: Image, base: Base | None) -> Image:
        """Config, labels and annotations on top of the layers (``base`` None: not known yet)."""
        man = self.man
        gpu = gpu_metadata(self.loaded, self.needed_steps())
        env = image.container_config.get("Env") or []
        facts = self.source_facts()
        config = man.image.config.model_copy(update={"labels": sourcefacts.expand_all(man.image.config.labels, facts)})
        changes = config_changes(config, env, labels=gpu, keep_unknown=base is None)
        image = mutate.set_config(image, changes, epoch=self.ctx.epoch)
        defaults = (
            default_annotations(base.image, base.registry_name, man.name, self.ctx.epoch)
            if base is not None
            else {mt.ANNOTATION_CREATED: mutate.timestamp(self.ctx.epoch), mt.ANNOTATION_TITLE: man.name}
        )
        return mutate.set_annotations(image, {**defaults, **gpu, **sourcefacts.expand_all(man.annotations, facts)})

    def source_facts(self) -> dict[str, dict[str, str]]:
        """revision, version and url of each source labels or annotations name (in a plan,
        of those known without fetching)."""
        man = self.man
        names = {
            name
            for value in (*man.image.config.labels.values(), *man.annotations.values())
            for name, _ in sourcefacts.references(value)
        }
        facts = {}
        for name in sorted(names):
            spec = man.sources[name]
            # Only sources the build read anyway (or a local folder): a label never fetches.
            src = self.source(name) if name in self.sources or isinstance(spec, m.PathSource) else None
            if src is None:
                url = spec.git if isinstance(spec, m.GitSource) else spec.url if isinstance(spec, m.UrlSource) else ""
                version = spec.ref if isinstance(spec, m.GitSource) else ""
                # Not read: in a plan the revision shows as still to come; in a build, unknown.
                facts[name] = {"version": version, "url": url, **({} if self.dry else {"revision": ""})}
                continue
            if isinstance(spec, m.GitSource):
                commit = src.digest.removeprefix("git:").partition("+")[0]
                facts[name] = {"revision": commit, "version": spec.ref, "url": spec.git}
            else:
                url = spec.url if isinstance(spec, m.UrlSource) else ""
                facts[name] = {"revision": src.digest, "version": "", "url": url}
        return facts


def _resolved_key(ref: Ref, platform: Platform) -> str:
    return "resolved-" + key_of({"ref": str(ref), "platform": str(platform)})


def _git_key(spec: m.GitSource) -> str:
    return "gitref-" + key_of({"url": spec.git, "ref": spec.ref})


def _kind(spec: m.LayerSpec) -> str:
    return {m.CopyLayer: "copy", m.ArtifactLayer: "artifact", m.RunLayer: "run", m.PackagesLayer: "packages"}[
        type(spec)
    ]


def output_refs(loaded: Loaded, options: Options) -> list[Ref]:
    """The outputs to write: ``-o`` flags if given, else the manifest's (paths: cwd-relative)."""
    texts = list(options.outputs) if options.outputs is not None else list(loaded.manifest.outputs)
    refs = []
    for i, text in enumerate(texts):
        try:
            ref = parse_ref(text)
        except BadReference as e:
            if options.outputs is not None:
                raise InputError(f"-o {text}: {e}") from None
            raise loaded.error(("outputs", i), str(e)) from None
        if ref.transport in ("rootfs", "scratch"):
            raise InputError(f"{text}: {ref.transport} is a base, not an output")
        refs.append(absolute_ref(ref, Path.cwd()))
    return refs


def plan(loaded: Loaded, options: Options, *, runner: Runner) -> Plan:
    """What ``build`` would do: steps cached or to run, the layers, the outputs. Runs nothing."""
    p = Pipeline(loaded, options, runner=runner, report=_quiet, dry=True)
    outputs = tuple(str(r) for r in output_refs(loaded, options))
    image, base, layers = p.image()
    bases = {name: (b.image.digest if b is not None else None) for name, b in p.bases.items()}
    complete = image is not None and base is not None
    if image is not None and base is not None:
        final = p.finish(image, base)
    else:
        # The base is not known yet: the config the manifest sets, ${VARS} of the base left as written.
        final = p.finish(mutate.scratch(p.ctx.platform, epoch=p.ctx.epoch), None)
    return Plan(loaded.manifest.name, loaded.target, loaded.params, bases, tuple(p.steps), tuple(layers), outputs,
                final.container_config, final.annotations, complete)  # fmt: skip


def build(loaded: Loaded, options: Options, *, runner: Runner, report: Reporter = _quiet) -> Result:
    """Build the image ``loaded`` describes and write its outputs.

    Bad input raises InputError subclasses before any output is written; failures while
    building or writing raise other AssemblerErrors.
    """
    try:
        return _build_once(loaded, options, runner=runner, report=report)
    except CorruptBlob as e:
        # The damaged blob is gone from the cache already: a second pass remakes what used
        # it (a step, a base's layer, a conversion) and writes the outputs again.
        report(Event("warning", {"text": f"{e}; dropped it from the cache and building again"}))
        return _build_once(loaded, options, runner=runner, report=report)


def _build_once(loaded: Loaded, options: Options, *, runner: Runner, report: Reporter) -> Result:
    started = time.monotonic()
    outputs = output_refs(loaded, options)
    for ref in outputs:
        if ref.transport in ("oci", "oci-archive", "docker-archive", "sif"):
            check_replaceable(Path(ref.path), ref.transport, force=options.force)
    p = Pipeline(loaded, options, runner=runner, report=report, dry=False)
    image, base, layers = p.image()
    assert image is not None and base is not None  # a build makes everything
    image = p.finish(image, base)
    _check_blobs(image, p.cache)
    report(Event("image", {"digest": image.digest}))
    writer = _Outputs(p, image, base)
    try:
        for ref in outputs:
            report(Event("output", {"ref": str(ref), "state": "writing"}))
            for w in writer.write(ref):
                done = {"ref": w.ref, "state": "done", "digest": w.digest, "uploaded": w.uploaded_bytes}
                report(Event("output", done))
    finally:
        writer.cleanup()
    return Result(image, tuple(layers), tuple(p.steps), tuple(writer.written), time.monotonic() - started)


class _Outputs:
    """Writes one image to its outputs; a SIF is made once and reused for ``oras://``."""

    def __init__(self, p: Pipeline, image: Image, base: Base) -> None:
        self.p = p
        self.image = image
        self.base = base
        self.written: list[Written] = []
        self.sif: SifInfo | None = None
        self._tmp: Path | None = None
        docker = [r for r in output_refs(p.loaded, p.options) if r.transport == "docker"]
        # The definition file inside a SIF names where the image lives (stable, not a temp path).
        self.source_name = str(docker[0]) if docker else f"assemble:{p.man.name}"

    def _sif(self, path: Path | None = None) -> SifInfo:
        if path is None and self.sif is not None:
            return self.sif
        if path is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("sif-"), dir=self.p.cache.root / "tmp"))
            path = self._tmp / f"{self.p.man.name}.sif"
        from assembler.transports.sif import write_sif  # only builds with SIF outputs need it

        ctx = self.p.ctx
        source = SourceImage(self.image, ctx.cache, self.source_name)
        report = self.p.report  # its own byte count: the CLI shows SIF writing as its own bar
        info = write_sif(source, path, runner=ctx.runner, epoch=ctx.epoch, compressor=self.p.man.sif.compressor,
                         progress=lambda n: report(Event("bytes", {"n": n, "what": "sif"})))  # fmt: skip
        self.sif = info
        return info

    def write(self, ref: Ref) -> list[Written]:
        from assembler.transports.sif_publish import push_sif  # imports the registry client

        ctx = self.p.ctx
        out: list[Written] = []
        if ref.transport == "sif":
            info = self._sif(Path(ref.path))
            out.append(Written(str(ref), info.digest))
        elif ref.transport == "oras":
            assert ref.name is not None
            info = self._sif()
            pub = push_sif(info.path, info.digest, info.size, ref.name, options=registry_options(ctx),
                           progress=ctx.upload_progress)  # fmt: skip
            out.append(Written(pub.ref, pub.digest, pub.uploaded_bytes))
        else:
            base_name = self.base.registry_name
            same = [base_name] if base_name is not None and ref.name and base_name.registry == ref.name.registry else []
            out.append(write_output(ref, self.image, ctx, blobs=ctx.cache, mount_from=same))
            if ref.transport == "docker" and (self.p.man.sif.attach or self.p.options.attach_sif):
                assert ref.name is not None
                info = self._sif()
                pub = push_sif(info.path, info.digest, info.size, ref.name, options=registry_options(ctx),
                               subject=self.image.descriptor, progress=ctx.upload_progress)  # fmt: skip
                out.append(Written(f"{pub.ref} (referrer of {self.image.digest[:19]})", pub.digest, pub.uploaded_bytes))
        self.written += out
        return out

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _check_blobs(image: Image, cache: Cache) -> None:
    cache.put_bytes(image.config_bytes)
    for desc in image.layers:
        if not cache.has_blob(desc.digest, desc.size):
            raise InvalidImage(f"blob {desc.digest} ({desc.size} bytes) is missing from the cache")
