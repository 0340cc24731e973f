"""Compile steps' installed packages as layers kept in the step caches (the local cache's
and, with ``--cache-to`` / ``--cache-from``, the registry's): what
:func:`assembler.compile.steps.run_compile_step` asks for through ``Workspace.toolchains``
before it installs a step's ``packages:``, so that a fresh machine downloads the installed
toolchain instead of running apt again."""

from __future__ import annotations

from assembler.cache import Origin, StepResult
from assembler.errors import AssemblerError
from assembler.oci.layer import Layer
from assembler.pipeline.options import Event
from assembler.pipeline.stepwalk import StepWalk


class Toolchains:
    """A :class:`assembler.compile.container.LayerStore` over ``walk``'s step caches: an
    entry is looked up as a step result is (local record, vouched under ``--cache-trust``,
    else the registry's, verified), and exported to ``--cache-to`` as one."""

    def __init__(self, walk: StepWalk) -> None:
        self.walk = walk

    def take(self, key: str, what: str) -> Layer | None:
        hit = self.walk.step_result(key, what)
        if hit is None or hit.layer is None:
            return None
        remote = self.walk.remote
        if remote is not None and not self.walk.cache.has_blob(hit.layer.digest, hit.layer.size):
            try:
                remote.ensure(hit.layer)  # verified as it lands
            except AssemblerError as e:
                self.walk.report(Event("warning", {"text": f"{what}: its layer could not be read ({e}); installing"}))
                return None
        if not self.walk.cache.has_blob(hit.layer.digest, hit.layer.size):
            return None
        self.walk.note_taken(key, what, [hit.layer.diff_id])  # the provenance names it; warned of if unchecked
        return hit.layer

    def origin(self, key: str) -> Origin | None:
        # As take() noted it: what this walk took, not what a record may say by now.
        return self.walk.origins.origin_of(key)

    def keep(self, key: str, layer: Layer, what: str) -> None:
        result = StepResult(what, layer=layer)
        self.walk.cache.put_step_result(key, result)
        if self.walk.remote is not None:
            self.walk.remote.export(key, result)
