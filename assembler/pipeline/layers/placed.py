"""What placing one layer spec on the image gives (:meth:`~assembler.pipeline.layers.kinds.base.Kind.place`)."""

from __future__ import annotations

from typing import NamedTuple

from assembler.oci.layer import Layer


class Placed(NamedTuple):
    """What placing a layer spec gave: its layers, each with what it is; what the spec is;
    their origin (cached, built, or will-build: a plan, not made yet)."""

    layers: list[tuple[Layer, str]]
    what: str
    origin: str
