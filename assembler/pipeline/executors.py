"""Where a build's compile steps run: an :class:`Executor`, chosen once from ``--executor``.

:class:`LocalExecutor` runs a step here, in a buildah container from its devel base
(:func:`assembler.compile.steps.run_compile_step`), and records its result under its key;
:class:`~assembler.pipeline.slurm.SlurmExecutor` submits it as a Slurm job, which builds
it into the shared cache, and reads its result from there. Runtime steps always run here:
they build on the image being stacked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from assembler.cache import Cache, Origin, StepResult, built_on
from assembler.compile import keptcaches
from assembler.compile import sources as srcs
from assembler.compile.steps import Mounted, Workspace, run_compile_step, toolchain_origin
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline.options import NodeOptions, Reporter
from assembler.pipeline.slurm import SlurmExecutor
from assembler.proc import Runner
from assembler.spec import model as m
from assembler.spec.load import Loaded


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


class LocalExecutor:
    """Runs each compile step here, in a buildah container (``--executor local``)."""

    def __init__(self, workspace: Callable[[str], Workspace], cache: Cache) -> None:
        self.workspace = workspace  # the workspace of a step, by its name (its log lines are the step's)
        self.cache = cache

    def run_compile(self, job: CompileJob, *, stop: Callable[[], bool]) -> dict[str, Layer]:
        # ``stop`` is not polled: the build cancels the runner, which kills the step's programs.
        ws = self.workspace(job.step.name)
        results = run_compile_step(
            job.step,
            base=job.base,
            sources=job.sources,
            inputs=job.inputs,
            ws=ws,
            key=job.key,
            tree_key=job.tree_key,
            fresh=job.fresh,
        )
        # What it ran on besides: its packages' layer and its kept folders. Either taken from
        # a registry unchecked makes the result unchecked.
        packages = toolchain_origin(job.step, job.base, ws)
        folders = keptcaches.origins(job.step, cache=self.cache, tree_key=job.tree_key)
        origin = built_on([job.built_on, packages, *folders])
        self.cache.put_step_result(job.key, StepResult(job.step.name, results), origin)
        return results


def executor_for(
    name: str,
    *,
    slurm_args: Sequence[str],
    node: NodeOptions,
    loaded: Loaded,
    cache: Cache,
    runner: Runner,
    report: Reporter,
    workspace: Callable[[str], Workspace],
) -> Executor:
    """The executor ``name`` (``--executor``: ``local`` or ``slurm``); a Slurm job's node
    builds its step of ``loaded`` with ``node``, submitted with ``slurm_args``."""
    if name == "slurm":
        return SlurmExecutor(cache, runner, report, slurm_args=slurm_args, loaded=loaded, node=node)
    return LocalExecutor(workspace, cache)
