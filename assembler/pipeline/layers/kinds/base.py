"""What every kind of image layer does on the pipeline floor: :class:`Kind`, and the
:class:`Stacking` a layer is placed with.

A kind's manifest side (its key, its model, which compile steps it takes artifacts from,
which runtime step makes it) is the manifest floor's (:data:`assembler.manifest.schema.model.LAYER_KINDS`
and the model's methods); what it takes to make or find its layer, what defines it, what
it warns of and what the provenance says it fetched is here, one subclass per kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from assembler.cache import key_of
from assembler.manifest.schema.prebuilt import When
from assembler.manifest.text.yamlfile import PathKey
from assembler.oci.layer import Layer
from assembler.pipeline.graph import NOT_IN_DEFINITION, Definitions, RuntimeStep
from assembler.pipeline.layers.maker import Maker
from assembler.pipeline.layers.placed import Placed

if TYPE_CHECKING:
    from assembler.archive.view import TreeView
    from assembler.cache import Cache
    from assembler.manifest.load.loaded import Loaded
    from assembler.manifest.lock.debpins import DebLocked
    from assembler.oci.image import Image
    from assembler.pipeline.store.origins import Origins
    from assembler.pipeline.store.stepstore import StepStore
    from assembler.sbom.facts import DownloadFact
    from assembler.transports.context import Context

L = TypeVar("L", bound=When)


@dataclass(frozen=True)
class Starting:
    """What a walk gives each kind once, when it starts (:meth:`Kind.start`): the manifest,
    the build's context, what to do with what the cache does not hold (a plan's or a
    build's :class:`~assembler.pipeline.layers.maker.Maker`), where step results are recorded and
    where the entries used came from, and what a plan's walk left for its build."""

    loaded: Loaded
    ctx: Context
    maker: Maker
    steps: StepStore
    origins: Origins
    records: bool  # a build's walk: what it learns is recorded (a plan's writes nothing)
    copy_origin: str  # the origin of a layer found by its content: "cached" (a plan) or "built"
    carried: Any  # what :meth:`Kind.carry` gave at the end of the plan's walk (None: nothing)


@dataclass(frozen=True)
class Stacking:
    """What a layer is placed with: its place in the manifest (``path``) and in the image's
    layers (``index``), the image below it and its folders and symlinks (None: not known
    yet, a plan), the walk's narrow parts, and its kind's state for this walk."""

    path: PathKey
    index: int
    image: Image | None
    view: TreeView | None
    loaded: Loaded
    ctx: Context
    maker: Maker
    # The stack's way to decide a runtime step on that image.
    runtime: Callable[[RuntimeStep, Image | None], Placed]
    # A compile step's artifacts by its name, run or found first (None: it will run, a plan).
    compile: Callable[[str], Mapping[str, Layer] | None]
    step_state: Callable[[str], str]  # what the walk decided of a compile step: cached, built, will-run
    locked_debs: Callable[[str], DebLocked | None]  # what the lock installs at a place (``apt:packages-1``)
    state: Any  # what the kind's :meth:`Kind.start` made for this walk


class Kind(Generic[L]):
    """One kind of layer (``L`` its model): how its layer is made or found, what defines it,
    what it warns of, what it fetched. A new kind subclasses this in one module and is one
    entry in :data:`assembler.pipeline.layers.kinds.KINDS` (:func:`assembler.pipeline.layers.kinds.register`)."""

    model: type[L]
    # Whether its layers are fitted onto the image below (its files land through that
    # image's symlinks); a runtime step's layer is made on that image and needs no fitting.
    fitted: bool = True

    def start(self, starting: Starting) -> object:
        """This kind's state for one walk (a plan's or a build's), handed back as
        :attr:`Stacking.state` to each of its layers; the default keeps none."""
        return None

    def carry(self, state: Any) -> object:
        """What a plan's walk leaves its build of this kind's ``state`` (the build's
        :meth:`start` gets it as :attr:`Starting.carried`); the default: nothing."""
        return None

    def place(self, spec: L, at: Stacking) -> Placed:
        """The layers of ``spec`` with what each is, what ``spec`` is, and their origin
        (cached, built, or will-build: a plan, not made yet)."""
        raise NotImplementedError(f"{type(self).__name__}.place")

    def step(self, spec: L, index: int) -> str | None:
        """The step that makes the ``index``-th layer ``spec`` (None: no step)."""
        return spec.runtime_name(index)

    def definition(self, spec: L, defs: Definitions) -> str:
        """What the manifest says ``spec`` is, as a digest: changes exactly when it does."""
        return key_of({"layer": spec.model_dump(mode="json", by_alias=True, exclude=NOT_IN_DEFINITION)})

    def warning(self, spec: L, at: Stacking) -> str | None:
        """A warning about ``spec`` where it lands, if it needs one. Raises ManifestError
        (the layer's file:line) for a layer that cannot land there."""
        return None

    def downloads(self, spec: L, architecture: str, cache: Cache) -> list[DownloadFact]:
        """The pinned files ``spec`` fetched (the provenance's inputs), as far as known."""
        return []

    def reports(self, spec: L) -> int:
        """How many layer reports a made layer of ``spec`` gives that a preflight counts as
        its part ``layer:I`` (fetched from hosts while it is made); 0: none."""
        return 0
