"""What a walk is built from: its :class:`Mode` (plan or build) and its :class:`Services`.

A plan and a build walk a manifest the same way (:class:`assembler.pipeline.walk.walk.Walk`)
and look up the same keys; they differ in what they do with what the cache does not hold.
That difference is the walk's mode, one object: :class:`assembler.pipeline.runs.resolve.Planning`
looks up and writes nothing (what is missing will run),
:class:`assembler.pipeline.runs.building.Building` makes what is missing (through its
scheduler and executor) and records it. Each is handed values (a :class:`BaseWant`, a
:class:`~assembler.pipeline.steps.jobs.CompileJob`, a :class:`RuntimeJob`) and returns what
it made; the walk records it. A mode holds the
:class:`~assembler.pipeline.layers.maker.Maker` the walk's layer makers are given (``maker``:
look up, or make). The two modes implement one Protocol; neither inherits from the other,
nor does the walk from anything.

:class:`Services` is everything else a walk is given, once, when it is constructed; nothing
is assigned onto a walk or its services afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from assembler.cache.memos import SharedFacts
from assembler.pipeline.image.bases import Base
from assembler.pipeline.layers.maker import Maker
from assembler.pipeline.options import Reporter
from assembler.pipeline.steps.jobs import CompileJob
from assembler.pipeline.store.baseblobs import BaseBlobs
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.store.stepstore import StepStore

if TYPE_CHECKING:
    from assembler.archive.view import TreeView
    from assembler.compile import sources as srcs
    from assembler.compile.steps import Mounted
    from assembler.manifest.load.loaded import Loaded
    from assembler.manifest.lock.debpins import DebLocked
    from assembler.manifest.schema import model as m
    from assembler.oci.image import Image
    from assembler.oci.layer import Layer
    from assembler.pipeline.graph import RuntimeStep
    from assembler.pipeline.layers.setup import ImageSetup
    from assembler.transports.context import Context

T = TypeVar("T")
M = TypeVar("M", covariant=True)


@dataclass(frozen=True)
class BaseWant:
    """A base the walk needs: ``name``, as the manifest's ``spec`` gives it, and what
    obtaining it takes."""

    name: str
    spec: m.BaseSpec
    loaded: Loaded
    ctx: Context
    locked: DebLocked | None  # what the lock installs in it (a bootstrapped base)
    bootstrap: Callable[[], Base | None]  # a bootstrapped base from the cache, else made (a build) or None


@dataclass(frozen=True)
class RuntimeJob:
    """One runtime step to run under ``key`` on ``image``, with the artifacts it mounts."""

    step: RuntimeStep
    key: str
    image: Image
    mounted: Mapping[str, Layer]  # by reference (``STEP.ARTIFACT``)
    mounts: Sequence[Mounted]  # the same, with where each is mounted


@dataclass(frozen=True)
class Made(Generic[M]):
    """What a mode made, and how long making it took (the step's report says so)."""

    made: M
    seconds: float


class Mode(Protocol):
    """Plan or build: what a walk does where the cache does not hold something."""

    # Whether what the walk learns (buildah's version, facts read from layers) is recorded:
    # a build's is, a plan's never (a plan writes nothing).
    records: bool
    # The origin of a copy layer found by its content: found (a plan) or written (a build).
    copy_origin: str
    # Facts of a source not read: a plan shows its revision as still to come.
    unknown_facts: Mapping[str, str]
    # What the walk's layer makers do with what the cache does not hold: look it up only
    # (a plan: LOOKUP) or make it (a build: MAKE).
    maker: Maker

    # -- the walk's parts, each given as values ---------------------------------------

    def obtain_base(self, want: BaseWant) -> Base | None:
        """The base ``want`` names: read or made (a build), or what can be known without (a plan)."""
        ...

    def obtain_source(self, name: str, spec: m.SourceSpec, loaded: Loaded, ctx: Context) -> srcs.Source | None:
        """The source ``name``: fetched (a build), or as last fetched (a plan; None: never)."""
        ...

    def view_of(self, setup: ImageSetup, image: Image) -> TreeView | None:
        """The folders and symlinks of ``image`` (None: not known without writing)."""
        ...

    def here(self, steps: StepStore, blob: Layer) -> bool:
        """Whether ``blob`` (of a step result) is stacked: a build brings it in, a plan
        only reads what the cache holds."""
        ...

    def make_compile(self, job: CompileJob) -> Made[dict[str, Layer]] | None:
        """The step's artifacts, made (a build) or None (a plan: it will run). The walk
        records and shares what was made."""
        ...

    def make_runtime(self, job: RuntimeJob) -> Made[Layer] | None:
        """The runtime step's layer, made (a build) or None (a plan: it will run)."""
        ...


@dataclass(frozen=True)
class Services:
    """What a walk is constructed with (see the module's doc)."""

    mode: Mode
    steps: StepStore  # the local cache's records, or a registry step cache over them
    blobs: BaseBlobs  # reads layers: a build's bases fetched when first read
    origins: Origins  # where the entries used came from (the provenance names them)
    report: Reporter
    facts: SharedFacts | None = None  # facts read from layers, shared beyond the cache (a build's registry)
