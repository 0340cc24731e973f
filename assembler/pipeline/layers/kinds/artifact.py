"""``artifact:`` layers: a compile step's artifacts, the step run (or found) first."""

from __future__ import annotations

from assembler.cache import key_of
from assembler.manifest.schema import model as m
from assembler.pipeline.graph import Definitions, step_of
from assembler.pipeline.layers.kinds.base import Kind, Stacking
from assembler.pipeline.layers.placed import Placed


class ArtifactKind(Kind[m.ArtifactLayer]):
    model = m.ArtifactLayer

    def place(self, spec: m.ArtifactLayer, at: Stacking) -> Placed:
        step_name, _, art = spec.artifact.partition(".")
        results = at.compile(step_name)
        names = [art] if art else sorted(step_of(at.loaded.manifest, step_name).artifacts)
        what = f"artifact {spec.artifact}"
        if results is None:
            return Placed([], what, "will-build")
        return Placed([(results[n], f"artifact {step_name}.{n}") for n in names], what, at.step_state(step_name))

    def step(self, spec: m.ArtifactLayer, index: int) -> str:
        return spec.artifact.partition(".")[0]

    def definition(self, spec: m.ArtifactLayer, defs: Definitions) -> str:
        return key_of({"artifact": spec.artifact, "step": defs.step(step_of(defs.man, spec.artifact.split(".")[0]))})
