"""How to build (the command line's part; the manifest says what), the epoch a build uses,
and how the pipeline reports what it does.

:class:`Options` is what the command line says, whole; only :mod:`assembler.assemble` (and
the command line) take it. It hands each part of the pipeline the group it reads: a walk its
:class:`WalkOptions`, the buildah workspace its :class:`WorkspaceOptions`, the registry step
caches their :class:`CacheOptions`, a build's Context its :class:`ContextOptions`; a build
of a plan the :class:`BuildOptions` that holds them, and a Slurm job's node the
:class:`NodeOptions` it builds a step with (what the job file carries)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from assembler.errors import InputError
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Platform

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from assembler.cache import Origin, StepResult
    from assembler.oci.image import Image
    from assembler.oci.layer import Layer
    from assembler.oci.reference import ImageName
    from assembler.sign import Signer, Verifier


# What a layer may hold of files before it is cut (--layer-budget): the CUDA libraries and
# torch, each hundreds of MB, become parts of their own, and vLLM's 12 GB image some 50
# layers, well below the 127 an overlay mount stacks.
DEFAULT_LAYER_BUDGET = 512 << 20


@dataclass(frozen=True)
class Event:
    """Something the user may want to see: ``kind`` plus fields."""

    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict)


Reporter = Callable[[Event], None]


def quiet(event: Event) -> None:
    pass


@dataclass(frozen=True)
class ContextOptions:
    """What a build's Context is made of (see ``assemble._context``): where the cache is,
    how registries are reached, the platform, epoch and compression of its layers, and the
    outputs (what the plan names, and what copy: layers leave out of the host's folders)."""

    cache_dir: Path
    registry: Any  # registry.types.RegistryOptions
    epoch: int
    platform: Platform | None  # None: the manifest's
    compression: str | None  # None: the manifest's
    outputs: tuple[str, ...] | None  # None: the manifest's


@dataclass(frozen=True)
class WalkOptions:
    """What a walk decides with besides its manifest: the keys of compile steps (whether
    the host's CA certificates are in them), the layers it cuts (``layer_budget``), and what
    it may take from the cache (``--no-cache``, ``--rebuild``, the keys made this run)."""

    host_ca: bool
    layer_budget: int
    no_cache: bool
    rebuild: frozenset[str]
    made_keys: frozenset[str]

    def forced(self, step: str, key: str) -> bool:
        """Whether ``step`` runs again under ``key`` though the cache holds it: under
        ``--no-cache`` or ``--rebuild STEP``, unless an earlier variant of this run made it."""
        return (self.no_cache or step in self.rebuild) and key not in self.made_keys


@dataclass(frozen=True)
class WorkspaceOptions:
    """How steps run here in buildah (:class:`assembler.pipeline.runs.building.Workspaces`)."""

    storage_driver: str
    buildah_root: Path | None  # None: the cache's buildah/
    host_ca: bool
    keep_failed: bool
    deps_check: bool  # the facts the dependency check needs are read as layers are written


@dataclass(frozen=True)
class CacheOptions:
    """The registry step caches: where entries go and come from, how they are signed and
    which keys are trusted, and what one exported compile cache holds at most."""

    cache_to: str | None
    cache_from: tuple[str, ...]
    cache_sign: Signer | None
    cache_trust: tuple[Verifier, ...]
    cache_max: int

    def refs(self) -> list[str]:
        """The step caches named, ``--cache-to``'s first."""
        return [r for r in (self.cache_to, *self.cache_from) if r]

    def names(self) -> list[ImageName]:
        """The step caches' repositories (a push to their registry mounts the steps' blobs from there)."""
        refs = self.refs()
        if not refs:
            return []
        from assembler.stepcache.steps import parse_cache_ref  # the registry client, only when named

        return [parse_cache_ref(r) for r in refs]

    def trusted(self) -> frozenset[str]:
        """The ids of the keys ``--cache-trust`` names."""
        return frozenset(k.key_id for k in self.cache_trust)


@dataclass(frozen=True)
class NodeOptions:
    """What a Slurm job's node builds its step with (:mod:`assembler.pipeline.runs.slurmnode`),
    the job file's options: the node resolves the manifest again and builds the step as the
    submitter would. Where buildah keeps its storage, how many steps run and where, the
    node decides (``workspace.buildah_root`` is None)."""

    context: ContextOptions
    walk: WalkOptions
    workspace: WorkspaceOptions
    caches: CacheOptions


@dataclass(frozen=True)
class BuildOptions:
    """What resolving and building a variant, and the checks after, read (a
    :class:`~assembler.pipeline.runs.run.Run` carries them), each part's group apart."""

    context: ContextOptions
    walk: WalkOptions
    workspace: WorkspaceOptions
    caches: CacheOptions
    executor: str  # where compile steps run: local | slurm
    jobs: int  # compile steps run at the same time
    slurm_args: tuple[str, ...]  # more sbatch arguments (compile steps' and tests' jobs)
    tests: bool  # the image's tests run before any output is written
    test_on: str  # where a test that does not say runs: local | slurm
    sbom: bool = True  # the SBOM and provenance go with the image
    slurm_sif: str = "shared"  # how test jobs reach the SIF: shared (read in place) | sbcast
    sign: Signer | None = None  # --sign: signs the docker:// and oci:DIR:TAG outputs
    # Every host the build reaches asked first (preflight); --offline: none, and refused if reached.
    preflight: bool = True
    offline: bool = False
    artifacts: tuple[str, ...] = ()  # --artifact STEP[.NAME]: the outputs hold these, no image

    @property
    def deps_check(self) -> bool:
        """Whether the image's ELF files are checked (the facts they need read as layers are written)."""
        return self.workspace.deps_check

    def node(self) -> NodeOptions:
        """What a Slurm job's node builds its step with: these, less where buildah keeps its storage."""
        return NodeOptions(self.context, self.walk, replace(self.workspace, buildah_root=None), self.caches)


@dataclass(frozen=True)
class Options:
    """How to build (from the command line; the manifest says what)."""

    cache_dir: Path
    epoch: int
    platform: Platform | None = None  # None: the manifest's
    registry: Any = None  # registry.types.RegistryOptions
    outputs: tuple[str, ...] | None = None
    no_cache: bool = False
    rebuild: frozenset[str] = frozenset()
    storage_driver: str = "overlay"
    host_ca: bool = True
    compression: str | None = None  # None: the manifest's
    attach_sif: bool = False
    force: bool = False  # outputs may replace files that are not ours
    cache_to: str | None = None  # docker://REG/REPO: step results are exported there
    cache_from: tuple[str, ...] = ()  # docker://REG/REPO...: step results are read from there
    # --cache-sign KEY (else --sign's): signs the entries exported to cache_to.
    cache_sign: Signer | None = None
    # --cache-trust PUB...: only entries one of these keys signed are taken (none: any entry).
    cache_trust: tuple[Verifier, ...] = ()
    # --cache-max SIZE: what one exported compile cache (a step's kept folder) holds at most.
    cache_max: int = 5 << 30
    jobs: int = 1  # steps run at the same time (independent ones; see pipeline.runs.builder)
    # Where compile steps run (see pipeline.steps.slurm): here, or each as a Slurm job on a node.
    executor: str = "local"  # local | slurm
    slurm_args: tuple[str, ...] = ()  # more sbatch arguments (--slurm-args, shlex-split)
    # buildah's storage for compile steps (None: the cache's buildah/). A Slurm job uses a
    # node-local one: overlay storage does not work on NFS or Lustre.
    buildah_root: Path | None = None
    # Step keys already made in this run (by an earlier variant): cached even under
    # --no-cache/--rebuild, so a step that variants share runs once per run.
    made_keys: frozenset[str] = frozenset()
    # Check that the ELF files of artifact and copy layers load in the image (see assembler.deps).
    deps_check: bool = True
    # Write an SPDX SBOM and a SLSA provenance with the image, as its referrers (see assembler.sbom).
    sbom: bool = True
    # --artifact STEP[.NAME]: the outputs hold these artifacts as an OCI artifact, no image.
    artifacts: tuple[str, ...] = ()
    # --sign KEY: the key that signs the docker:// and oci:DIR:TAG outputs (assembler.sign).
    sign: Signer | None = None
    # Run the image's tests (tests:) before any output is written (see pipeline.image.imagetests),
    # where a test does not say (on:): here in buildah, or on a Slurm node with Apptainer.
    tests: bool = True
    test_on: str = "local"  # local | slurm
    # --slurm-sif: a Slurm test job reads the SIF in the shared cache, or sbcast copies it to
    # each node's /tmp first (pipeline.checks.slurmtests).
    slurm_sif: str = "shared"  # shared | sbcast
    # --keep-failed: a failed compile step's container is kept to be entered (compile.keepfailed).
    keep_failed: bool = False
    # Before the first long step, every host the build will reach is asked (pipeline.checks.preflight);
    # --offline: none is asked, and a build that would reach one is refused.
    preflight: bool = True
    offline: bool = False
    # --layer-budget SIZE: a layer holding more bytes of files is cut along its packages
    # (Python's, Debian's) as the image ships (pipeline.cutlayers); 0: no layer is cut.
    layer_budget: int = DEFAULT_LAYER_BUDGET

    def context(self) -> ContextOptions:
        return _group(ContextOptions, self)

    def walk(self) -> WalkOptions:
        return _group(WalkOptions, self)

    def workspace(self) -> WorkspaceOptions:
        return _group(WorkspaceOptions, self)

    def caches(self) -> CacheOptions:
        return _group(CacheOptions, self)

    def for_build(self) -> BuildOptions:
        """What resolving and building read, in their groups."""
        return BuildOptions(
            context=self.context(),
            walk=self.walk(),
            workspace=self.workspace(),
            caches=self.caches(),
            executor=self.executor,
            jobs=self.jobs,
            slurm_args=self.slurm_args,
            tests=self.tests,
            test_on=self.test_on,
            sbom=self.sbom,
            slurm_sif=self.slurm_sif,
            sign=self.sign,
            preflight=self.preflight,
            offline=self.offline,
            artifacts=self.artifacts,
        )


_Group = TypeVar("_Group", bound="DataclassInstance")


def _group(group: type[_Group], options: Options) -> _Group:
    """The fields of ``options`` a group of the same names holds (``ContextOptions``...)."""
    return group(**{f.name: getattr(options, f.name) for f in fields(group)})


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


class RemoteSteps(Protocol):
    """A step cache in a registry (:class:`assembler.stepcache.steps.RemoteStepCache`)."""

    def fetch(
        self, key: str, what: str = "", check: Callable[[StepResult, Mapping[str, Path]], str | None] | None = None
    ) -> StepResult | None: ...

    def origin(self, key: str) -> Origin | None: ...

    def export(self, key: str, result: StepResult) -> None: ...

    def ensure(self, blob: Layer) -> None: ...

    def fetch_base(self, key: str, what: str = "") -> Image | None: ...

    def ensure_base(self, key: str) -> None: ...

    def export_base(self, key: str, image: Image) -> None: ...

    def counts(self) -> dict[str, int]: ...

    def close(self) -> None: ...
