"""``resolve``: what a build would do, as data (a :class:`Plan`), decided without doing it.

What a plan can know offline, and what it reads from the cache:

- a base given as a local layout, archive or ``scratch`` is read from where it is; a
  ``docker://`` base only from the cache (the digest the last build resolved the reference
  to: a tag pushed since is not seen); a ``rootfs:`` tarball or a bootstrap base only once
  a build converted it (else its steps show ``will-run`` with "base not made yet");
- a folder source is hashed (its digest is remembered by the folder's stat fingerprint); a
  git source only as a build last fetched it; a URL source by the sha256 it must have;
- step results, layers fitted or converted, copy layers (by their content) are looked up
  in the cache, never written; buildah and mmdebstrap are asked their version only (without
  them, the version the last build recorded): no container runs, nothing is fetched.

A layer or step that depends on something not made yet is ``will-run``/``will-build`` with
no key or digest: it is only known once what it builds on is built.

:func:`plan_of` walks the manifest (:class:`~assembler.pipeline.walk.walk.Walk`) in the
:class:`Planning` mode, which is all that makes it a plan's walk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from assembler.archive.view import TreeView
from assembler.compile import sources as srcs
from assembler.debian.bootstrap import bootstrap_mirrors
from assembler.errors import InputError, NotFound
from assembler.manifest.hosts.reach import Need, needs
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.load.manifest import describe_base
from assembler.manifest.lock.apply import LockStatus
from assembler.manifest.schema import model as m
from assembler.oci import mutate
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.oci.reference import Ref, absolute_ref, parse_ref
from assembler.pipeline import graph
from assembler.pipeline.graph import LayerReport, StepReport
from assembler.pipeline.image.bases import Base, base_platform, git_key
from assembler.pipeline.image.imagetests import PlannedTest, planned
from assembler.pipeline.layers.maker import LOOKUP
from assembler.pipeline.layers.setup import ImageSetup
from assembler.pipeline.options import CacheOptions, RemoteSteps, WalkOptions, quiet
from assembler.pipeline.runs import emulation
from assembler.pipeline.runs.run import Run
from assembler.pipeline.store.baseblobs import BaseBlobs
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.store.stepstore import LocalSteps, RegistrySteps, StepStore
from assembler.pipeline.walk.layerstack import finish, stacked
from assembler.pipeline.walk.modes import BaseWant, Made, Services
from assembler.pipeline.walk.walk import Walk
from assembler.transports import Context, known_image
from assembler.weights.models import described

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """What a build will do: the steps (with their states, keys and dependencies), the
    layers, the config and the outputs. :func:`assembler.assemble.build` executes it."""

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
    # --base NAME=REF: name -> {"manifest": what the manifest says, "ref": what replaces it}.
    base_overrides: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # What each base is (its reference after --base and params, or ``bootstrap: SUITE``),
    # and which of them are bootstrapped.
    base_refs: Mapping[str, str] = field(default_factory=dict)
    bootstrapped: frozenset[str] = frozenset()
    needs: tuple[Need, ...] = ()  # each part that reaches a host, with the host (spec.reach)
    tests: tuple[PlannedTest, ...] = ()  # the tests a build runs on the image (none with --no-tests)
    lock: LockStatus | None = None  # what the lock did for this variant
    # The models beside the image (weights:): name -> their source, path and lock, in words.
    weights: Mapping[str, str] = field(default_factory=dict)
    # What runs under qemu-user here (emulate: true), in words: "step NAME (aarch64)"
    emulated: tuple[str, ...] = ()
    # What the plan's walk leaves its build, by layer kind (the copy layers it found by
    # hashing their files: the build takes them, checked present, instead of writing them again).
    carried: Mapping[str, object] = field(default_factory=dict, repr=False, compare=False)

    def reaches(self) -> dict[str, list[str]]:
        """host -> what reaches it, of the bases, steps, sources, layers and outputs of this plan."""
        found: dict[str, set[str]] = {}
        for need in self.needs:
            found.setdefault(need.host, set()).add(need.where)
        return {host: sorted(wheres) for host, wheres in sorted(found.items())}

    def graph(self) -> list[dict[str, Any]]:
        """Every node (bases, steps, layers) with what it depends on, in an order that
        runs each after what it depends on."""
        nodes: list[dict[str, Any]] = []
        for name, digest in self.bases.items():
            state = "cached" if digest is not None else "will-run"
            reason = "" if digest is not None else "base not resolved (made by the build)"
            kind = "bootstrap" if name in self.bootstrapped else "base"
            nodes.append(
                {"id": f"base:{name}", "kind": kind, "state": state, "key": digest, "reason": reason, "depends_on": []}
            )
        for s in self.steps:
            nodes.append(
                {
                    "id": f"step:{s.name}",
                    "kind": s.kind,
                    "state": s.state,
                    "key": s.key,
                    "reason": s.reason,
                    "depends_on": list(s.depends_on),
                }
            )
        for layer in self.layers:
            needs = [f"step:{layer.step}"] if layer.step else []
            nodes.append(
                {
                    "id": f"layer:{layer.index}",
                    "kind": layer.kind,
                    "state": layer.origin,
                    "key": layer.digest,
                    "reason": "",
                    "depends_on": needs,
                }
            )
        return nodes

    def to_json(self) -> dict[str, Any]:
        data = asdict(replace(self, carried={}, needs=(), tests=(), lock=None))
        for name in ("carried", "needs", "tests", "lock", "bootstrapped"):
            del data[name]
        data["params"] = dict(self.params)
        data["bases"] = dict(self.bases)
        data["base_overrides"] = {name: dict(o) for name, o in self.base_overrides.items()}
        data["graph"] = self.graph()
        data["lock"] = self.lock.to_json() if self.lock is not None else None
        data["base_refs"] = dict(self.base_refs)
        data["reaches"] = self.reaches()
        data["tests"] = [t.to_json() for t in self.tests]
        data["weights"] = dict(self.weights)
        return data


class Planning:
    """A plan's :class:`~assembler.pipeline.walk.modes.Mode`: looks things up and makes
    nothing, writes nothing; what is not cached will run."""

    records = False
    copy_origin = "cached"
    maker = LOOKUP
    unknown_facts: Mapping[str, str] = {}

    def obtain_base(self, want: BaseWant) -> Base | None:
        name, spec, ctx = want.name, want.spec, want.ctx
        if isinstance(spec, m.BootstrapBase):
            return want.bootstrap()
        ref, platform = base_ref(want.loaded, spec, ctx.platform)
        try:
            image = known_image(ref, replace(ctx, platform=platform))
        except InputError as e:
            raise want.loaded.error(("bases", name), str(e), hint=e.hint) from None
        return Base(name, image, str(ref), ref.name) if image is not None else None

    def obtain_source(self, name: str, spec: m.SourceSpec, loaded: Loaded, ctx: Context) -> srcs.Source | None:
        if isinstance(spec, m.GitSource):
            hit = ctx.cache.memo(git_key(spec))
            return srcs.Source(name, Path(str(hit["path"])), str(hit["digest"]), spec.git) if hit else None
        if isinstance(spec, m.UrlSource):
            return srcs.Source(name, Path(), "sha256:" + spec.sha256, spec.url)
        return srcs.resolve(name, spec, cache=ctx.cache, runner=ctx.runner, base_dir=loaded.folder)

    def view_of(self, setup: ImageSetup, image: Image) -> TreeView | None:
        # A base read from a layout or archive the cache does not hold yet (or one a build
        # never needed the bytes of): its digest and diff_ids are known (so are the keys of
        # steps on it); its layers' folders only where they are remembered.
        try:
            return setup.view(image)
        except NotFound:
            return None

    def here(self, steps: StepStore, blob: Layer) -> bool:
        return steps.holds(blob)

    def make_compile(self, job: object) -> Made[Any] | None:
        return None  # it will run

    def make_runtime(self, job: object) -> Made[Any] | None:
        return None


def plan_walk(
    loaded: Loaded, options: WalkOptions, caches: CacheOptions, ctx: Context, *, registry: RemoteSteps | None = None
) -> Walk:
    """The walk of a plan of ``loaded``: it reports nothing, writes nothing; ``caches``:
    the keys it trusts; ``registry``: the registry step caches it also looks in (their
    records only, no blob)."""
    report = quiet
    local = LocalSteps(ctx.cache, trusted=caches.trusted(), report=report)
    steps: StepStore = RegistrySteps(local, registry) if registry is not None else local
    origins = Origins(trusted=bool(caches.cache_trust), report=report)
    services = Services(Planning(), steps, BaseBlobs(ctx.cache), origins, report)
    return Walk(loaded, options, ctx, services)


def base_ref(loaded: Loaded, spec: m.BaseSpec, platform: Platform) -> tuple[Ref, Platform]:
    """A reference base's reference (paths made absolute) and platform."""
    assert not isinstance(spec, m.BootstrapBase | m.CudaBase)  # an nvidia_cuda: base is a reference once loaded
    text = spec if isinstance(spec, str) else spec.ref
    return absolute_ref(parse_ref(text), loaded.folder), base_platform(spec, platform)


def plan_of(run: Run, *, file_steps: Callable[[], Sequence[str]], registry: RemoteSteps | None = None) -> Plan:
    """The plan of ``run`` (see the module's doc), walked in the :class:`Planning` mode:
    the image stacked, the steps ``file_steps()`` names (their files are outputs) decided
    too, the config on top; ``registry``: see :func:`plan_walk`."""
    loaded, options, ctx = run.loaded, run.options, run.ctx
    man = loaded.manifest
    walk = plan_walk(loaded, options.walk, options.caches, ctx, registry=registry)
    image, base, layers = stacked(walk)
    for name in file_steps():
        walk.compile(graph.step_of(man, name))
    bases = {name: (b.image.digest if b is not None else None) for name, b in walk.obtained.bases.items()}
    complete = image is not None and base is not None
    if image is not None and base is not None:
        final = finish(walk, image, base)
    else:
        # The base is not known yet: the config the manifest sets, ${VARS} of the base left as written.
        final = finish(walk, mutate.scratch(ctx.platform, epoch=ctx.epoch), None)
    overrides = {name: {"manifest": o.manifest, "ref": o.ref} for name, o in loaded.base_overrides.items()}
    outputs = tuple(str(r) for r in run.outputs)
    steps = tuple(walk.steps.values())
    # what would run under qemu-user: refused here unless the manifest says emulate: true
    will_run = {s.name for s in steps if s.state != "cached"}
    emulated = emulation.emulated(loaded, ctx.platform, will_run, steps_here=options.executor == "local")
    reached = needs(
        man,
        [s.name for s in steps],
        list(bases),
        outputs=outputs,
        caches=options.caches.refs(),
        mirrors=bootstrap_mirrors(man),
        folder=loaded.folder,
    )
    tests = planned(loaded, final.container_config, test_on=options.test_on) if options.tests else []
    return Plan(
        man.name,
        loaded.target,
        loaded.params,
        bases,
        steps,
        tuple(layers),
        outputs,
        final.container_config,
        final.annotations,
        complete,
        overrides,
        base_refs={name: describe_base(man.bases[name]) for name in bases if name in man.bases},
        bootstrapped=frozenset(n for n, spec in man.bases.items() if isinstance(spec, m.BootstrapBase)),
        needs=tuple(reached),
        tests=tuple(tests),
        lock=loaded.lock,
        carried=walk.kinds.carried(),
        weights=described(loaded),
        emulated=tuple(emulated),
    )
