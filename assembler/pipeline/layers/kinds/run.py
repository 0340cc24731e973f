"""``run:`` layers: commands run on the image below; what they change is the layer."""

from __future__ import annotations

from assembler.cache import key_of
from assembler.manifest.schema import model as m
from assembler.pipeline.graph import NOT_IN_DEFINITION, Definitions, RuntimeStep
from assembler.pipeline.layers.kinds.base import Kind, Stacking
from assembler.pipeline.layers.placed import Placed


def runtime_step(spec: m.RunLayer, index: int) -> RuntimeStep:
    """The step of the ``index``-th layer ``spec``."""
    return RuntimeStep(
        name=spec.runtime_name(index),
        commands=tuple((c, c) for c in spec.run),
        # its Python sets act through the lock's pins in its env (LOCK_ENV), not as written
        definition=spec.model_dump(
            mode="json", exclude={"name", "comment", "python_sets", *_default(spec), *NOT_IN_DEFINITION}
        ),
        what=f"run {' && '.join(spec.run)}"[:120],
        env=spec.env,
        mounts=tuple(spec.mounts),
        secrets=tuple(spec.secrets),
        exclude=tuple(spec.exclude),
        keep=tuple(spec.keep),
        user=spec.user,
        workdir=spec.workdir,
        network=spec.network,
    )


def _default(spec: m.RunLayer) -> set[str]:
    """``network`` when it is the default: only false is said, so that the keys of the
    layers written before it stay."""
    return {"network"} if spec.network else set()


class RunKind(Kind[m.RunLayer]):
    model = m.RunLayer
    fitted = False  # made on the image below

    def place(self, spec: m.RunLayer, at: Stacking) -> Placed:
        return at.runtime(runtime_step(spec, at.index), at.image)

    def definition(self, spec: m.RunLayer, defs: Definitions) -> str:
        dump = spec.model_dump(mode="json", by_alias=True, exclude={*NOT_IN_DEFINITION, *_default(spec)})
        return key_of({"layer": dump, "mounts": defs.mounts(spec.mounts)})
