"""One variant's build as one value (:class:`Run`), put together once
(:func:`assembler.assemble.open_run`) and handed to every part that needs it: the plan
(:func:`assembler.pipeline.runs.resolve.plan_of`), the build
(:class:`assembler.pipeline.runs.builder.Build`), the checks after it and the writers.
Nothing in it is derived again along the way: the outputs are parsed once, the context
(and its cache) made once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from assembler.cache import Cache
from assembler.manifest.load.loaded import Loaded
from assembler.oci.reference import Ref
from assembler.pipeline.options import BuildOptions
from assembler.transports import Context

if TYPE_CHECKING:
    from assembler.transports.formats.writer import Writer
    from assembler.weights.pack import Packed


@dataclass(frozen=True)
class Run:
    """One variant's build: its loaded manifest, what resolving and building it read
    (``options``, in their groups), the context every part is given (the cache, the runner,
    the platform, the epoch...), its outputs as parsed (``-o``, else the manifest's), the
    writers of its image and the ``artifact:`` outputs (``files``), a step's files."""

    loaded: Loaded
    options: BuildOptions
    ctx: Context
    outputs: tuple[Ref, ...] = ()
    writers: tuple[Writer, ...] = ()
    files: tuple[Ref, ...] = ()
    # The model weights that go with the image (weights:), packed before the build: the
    # outputs carry them, the tests see them at their paths.
    weights: tuple[Packed, ...] = ()

    @property
    def cache(self) -> Cache:
        return self.ctx.cache

    def made(self, keys: frozenset[str]) -> Run:
        """This run, knowing the step keys earlier variants of the same command made (a
        ``--rebuild`` or ``--no-cache`` step is not made twice)."""
        walk = replace(self.options.walk, made_keys=keys)
        return replace(self, options=replace(self.options, walk=walk))
