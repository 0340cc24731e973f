"""``packages:`` layers: apt-get install on the image below, lists and caches cleaned."""

from __future__ import annotations

from assembler.compile.apt import apt_install_locked
from assembler.compile.steps import apt_install
from assembler.manifest.lock.debpins import DebLocked
from assembler.manifest.schema import model as m
from assembler.pipeline import graph
from assembler.pipeline.graph import RuntimeStep
from assembler.pipeline.layers.kinds.base import Kind, Stacking
from assembler.pipeline.layers.placed import Placed


def runtime_step(man: m.Manifest, spec: m.PackagesLayer, index: int, locked: DebLocked | None = None) -> RuntimeStep:
    """The step of the ``index``-th layer ``spec`` (``from-steps`` as the needed steps' packages);
    ``locked``: the packages the lock says it installs, installed at their versions."""
    names = graph.packages(man, spec.packages)
    if locked is None:
        command = (f"apt-get install {' '.join(names)}", apt_install(names))
        definition: dict[str, object] = {"packages": names}
    else:
        command = (f"apt-get install {' '.join(names)} ({len(locked.debs)} locked)", apt_install_locked(locked))
        definition = {"packages": names, "locked": locked.digest}
    return RuntimeStep(spec.runtime_name(index), (command,), definition, f"packages {' '.join(names)}", packages=True)


class PackagesKind(Kind[m.PackagesLayer]):
    model = m.PackagesLayer
    fitted = False  # made on the image below

    def place(self, spec: m.PackagesLayer, at: Stacking) -> Placed:
        locked = at.locked_debs(f"apt:{spec.runtime_name(at.index)}")
        return at.runtime(runtime_step(at.loaded.manifest, spec, at.index, locked), at.image)
