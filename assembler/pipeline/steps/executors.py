"""Where a build's compile steps run: an :class:`Executor`, chosen once from ``--executor``.

:class:`LocalExecutor` runs a step here, in a buildah container from its devel base
(:func:`assembler.compile.steps.run_compile_step`), and records its result under its key;
:class:`~assembler.pipeline.steps.slurm.SlurmExecutor` submits it as a Slurm job, which builds
it into the shared cache, and reads its result from there. Runtime steps always run here:
they build on the image being stacked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from assembler.cache import Cache, StepResult, built_on
from assembler.compile import keptcaches
from assembler.compile.steps import Workspace, run_compile_step, toolchain_origin
from assembler.manifest.load.loaded import Loaded
from assembler.oci.layer import Layer
from assembler.pipeline.options import NodeOptions, Reporter
from assembler.pipeline.steps.jobs import CompileJob, Executor
from assembler.pipeline.steps.slurm import SlurmExecutor
from assembler.proc import Runner


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
