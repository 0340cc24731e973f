"""What every kind of image layer does on the pipeline floor: :class:`Kind`, and the
:class:`Stacking` a layer is placed with.

A kind's manifest side (its key, its model, which compile steps it takes artifacts from,
which runtime step makes it) is the spec floor's (:data:`assembler.spec.model.LAYER_KINDS`
and the model's methods); what it takes to make or find its layer, what defines it, what
it warns of and what the provenance says it fetched is here, one subclass per kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from assembler.cache import key_of
from assembler.pipeline.graph import NOT_IN_DEFINITION, Definitions, RuntimeStep
from assembler.spec.prebuilt import When
from assembler.spec.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.archive.view import TreeView
    from assembler.cache import Cache
    from assembler.oci.image import Image
    from assembler.pipeline.walk import Placed, Walk
    from assembler.sbom.facts import DownloadFact

L = TypeVar("L", bound=When)


@dataclass(frozen=True)
class Stacking:
    """What a layer is placed with: the walk, its place in the manifest (``path``) and in
    the image's layers (``index``), the image below it and its folders and symlinks (None:
    not known yet, a plan), and the stack's way to decide a runtime step on that image."""

    walk: Walk
    path: PathKey
    index: int
    image: Image | None
    view: TreeView | None
    runtime: Callable[[RuntimeStep, Image | None], Placed]


class Kind(Generic[L]):
    """One kind of layer (``L`` its model): how its layer is made or found, what defines it,
    what it warns of, what it fetched. A new kind subclasses this in one module and is one
    entry in :data:`assembler.pipeline.kinds.KINDS` (:func:`assembler.pipeline.kinds.register`)."""

    model: type[L]
    # Whether its layers are fitted onto the image below (its files land through that
    # image's symlinks); a runtime step's layer is made on that image and needs no fitting.
    fitted: bool = True

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
