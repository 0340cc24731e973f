"""``packages:`` layers: apt-get install on the image below, lists and caches cleaned."""

from __future__ import annotations

from typing import TYPE_CHECKING

from assembler.compile.steps import apt_install
from assembler.pipeline import graph
from assembler.pipeline.graph import RuntimeStep
from assembler.pipeline.kinds.base import Kind, Stacking
from assembler.spec import model as m

if TYPE_CHECKING:
    from assembler.pipeline.walk import Placed


def runtime_step(man: m.Manifest, spec: m.PackagesLayer, index: int) -> RuntimeStep:
    """The step of the ``index``-th layer ``spec`` (``from-steps`` as the needed steps' packages)."""
    names = graph.packages(man, spec.packages)
    command = (f"apt-get install {' '.join(names)}", apt_install(names))
    return RuntimeStep(
        spec.runtime_name(index), (command,), {"packages": names}, f"packages {' '.join(names)}", packages=True
    )


class PackagesKind(Kind[m.PackagesLayer]):
    model = m.PackagesLayer
    fitted = False  # made on the image below

    def place(self, spec: m.PackagesLayer, at: Stacking) -> Placed:
        return at.runtime(runtime_step(at.walk.man, spec, at.index), at.image)
