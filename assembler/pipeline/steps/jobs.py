"""A compile step as a value (:class:`CompileJob`) and what runs one (:class:`Executor`).

Both sit below the executors (:mod:`assembler.pipeline.steps.executors`, the local one;
:mod:`assembler.pipeline.steps.slurm`, Slurm's) and the scheduler that hands jobs to them, so
neither reaches up to the other for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from assembler.cache import Origin
from assembler.compile import sources as srcs
from assembler.compile.steps import Mounted
from assembler.manifest.schema import model as m
from assembler.oci.image import Image
from assembler.oci.layer import Layer


@dataclass(frozen=True)
class CompileJob:
    """One compile step to run under ``key``, with what it builds on (made already)."""

    step: m.CompileStep
    key: str
    base: Image
    sources: Mapping[str, srcs.Source]
    inputs: Sequence[Mounted]
    tree_key: str  # what the step keeps between builds is kept under this key
    fresh: bool  # forced (--no-cache, --rebuild): kept build trees are not reused
    # Where what it builds on came from (its base, its inputs), when they were taken from a
    # registry step cache: its result is built on that entry (None: made here).
    built_on: Origin | None = None


class Executor(Protocol):
    """Runs compile steps; may be called from several threads at once (one step each)."""

    def run_compile(self, job: CompileJob, *, stop: Callable[[], bool]) -> dict[str, Layer]:
        """The step's artifacts, recorded in the cache under ``job.key`` with what they are
        built on (:func:`assembler.cache.built_on`: ``job.built_on``, its packages' layer,
        its kept folders).

        Raises StepFailed or ToolError when the step fails; Cancelled once ``stop()`` turns
        true (another step failed, or Ctrl-C) where the executor waits on something."""
        ...
