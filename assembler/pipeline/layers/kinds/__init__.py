"""The table of image layer kinds: :data:`KINDS`, one :class:`~.base.Kind` per model.

A layer kind is one module of this package (a :class:`~.base.Kind` subclass: how its layer
is made or found, what defines it, what it warns of, what it fetched) and one entry here;
its manifest side is one entry in :data:`assembler.manifest.schema.model.LAYER_KINDS` (the key that
marks it, its model). :func:`register` adds both, so a kind can live outside the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from assembler.manifest.schema import model as m
from assembler.manifest.schema.prebuilt import When
from assembler.pipeline.layers.kinds.artifact import ArtifactKind
from assembler.pipeline.layers.kinds.base import Kind, Stacking, Starting
from assembler.pipeline.layers.kinds.copy import CopyKind
from assembler.pipeline.layers.kinds.packages import PackagesKind
from assembler.pipeline.layers.kinds.pip import PipKind
from assembler.pipeline.layers.kinds.run import RunKind
from assembler.pipeline.layers.kinds.url import UrlKind
from assembler.pipeline.layers.placed import Placed

__all__ = ["KINDS", "Kind", "Placed", "Stacking", "Starting", "States", "by_key", "of", "register", "unregister"]

KINDS: dict[type[When], Kind[Any]] = {
    k.model: k for k in (CopyKind(), ArtifactKind(), RunKind(), PackagesKind(), PipKind(), UrlKind())
}
if set(KINDS) != {k.model for k in m.LAYER_KINDS.values()}:  # the two floors' tables name the same kinds
    raise RuntimeError("assembler.pipeline.layers.kinds.KINDS and assembler.manifest.schema.model.LAYER_KINDS differ")


class States:
    """Each kind's state for one walk: made by its :meth:`Kind.start` from ``starting``
    (with what the plan's walk ``carried`` for it), handed to its layers."""

    def __init__(self, starting: Starting, carried: Mapping[str, object]) -> None:
        self._kinds = by_key()
        self._states = {
            key: kind.start(replace(starting, carried=carried.get(key))) for key, kind in self._kinds.items()
        }

    def of(self, key: str) -> Any:
        """The state of the kind ``key`` (``copy``, ``pip``...)."""
        return self._states[key]

    def carried(self) -> dict[str, object]:
        """What this walk (a plan's) leaves its build, by kind (:meth:`Kind.carry`)."""
        out = {key: kind.carry(self._states[key]) for key, kind in self._kinds.items()}
        return {key: value for key, value in out.items() if value is not None}


def by_key() -> dict[str, Kind[Any]]:
    """Every kind, by the key that marks its layers (``copy``, ``pip``...)."""
    return {key: KINDS[kind.model] for key, kind in m.LAYER_KINDS.items()}


def of(spec: When) -> Kind[Any]:
    """The kind of the layer ``spec``."""
    return KINDS[type(spec)]


def register(key: str, kind: Kind[Any], *, tag: str | None = None) -> None:
    """Let manifests use ``key:`` layers of ``kind`` (its model's layers); ``tag`` is the
    union tag pydantic reports them under (default ``KEY-layer``, unlike any field name).
    ValueError for a key or a model already registered."""
    if kind.model in KINDS:
        raise ValueError(f"a layer kind for {kind.model.__name__} is already registered")
    m.register_layer_kind(m.LayerKind(key, kind.model, tag or f"{key}-layer"))
    KINDS[kind.model] = kind


def unregister(key: str) -> None:
    """Forget the layer kind ``key`` (one :func:`register` added)."""
    KINDS.pop(m.LAYER_KINDS[key].model)
    m.unregister_layer_kind(key)
