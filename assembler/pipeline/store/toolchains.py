"""Compile steps' installed packages as layers kept in the step caches (the local cache's
and, with ``--cache-to`` / ``--cache-from``, the registry's): what
:func:`assembler.compile.steps.run_compile_step` asks for through ``Workspace.toolchains``
before it installs a step's ``packages:``, so that a fresh machine downloads the installed
toolchain instead of running apt again."""

from __future__ import annotations

from assembler.cache import Cache, Origin, StepResult
from assembler.errors import AssemblerError
from assembler.oci.layer import Layer
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.store.stepstore import StepStore, note_taken, step_result


class Toolchains:
    """A :class:`assembler.compile.container.LayerStore` over a build's step store: an
    entry is looked up as a step result is (local record, vouched under ``--cache-trust``,
    else the registry's, verified), and exported to ``--cache-to`` as one; ``origins``
    notes where each one taken came from."""

    def __init__(self, steps: StepStore, origins: Origins, cache: Cache, *, report: Reporter) -> None:
        self.steps = steps
        self.origins = origins
        self.cache = cache
        self.report = report

    def take(self, key: str, what: str) -> Layer | None:
        hit = step_result(self.steps, key, what)
        if hit is None or hit.layer is None:
            return None
        if not self.cache.has_blob(hit.layer.digest, hit.layer.size):
            try:
                self.steps.ensure(hit.layer)  # from a registry step cache: verified as it lands
            except AssemblerError as e:
                self.report(Event("warning", {"text": f"{what}: its layer could not be read ({e}); installing"}))
                return None
        if not self.cache.has_blob(hit.layer.digest, hit.layer.size):
            return None
        note_taken(
            self.steps, self.origins, key, what, [hit.layer.diff_id]
        )  # the provenance names it; warned of if unchecked
        return hit.layer

    def origin(self, key: str) -> Origin | None:
        # As take() noted it: what this walk took, not what a record may say by now.
        return self.origins.origin_of(key)

    def keep(self, key: str, layer: Layer, what: str) -> None:
        result = StepResult(what, layer=layer)
        self.cache.put_step_result(key, result)
        self.steps.export(key, result)
