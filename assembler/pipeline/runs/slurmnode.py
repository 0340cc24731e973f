"""The node side of ``--executor slurm`` (:mod:`assembler.pipeline.steps.slurm` is the submitter's).

A Slurm job runs ``python -m assembler.cli.step JOBFILE`` on a node: the manifest is
resolved again against the shared cache, and :func:`build_step` builds the one step the job
names, in a :class:`~assembler.pipeline.runs.builder.Build` whose executor is wrapped in
:class:`ExpectedKey`: the step must get the key the submitter computed (else the node sees
other files, another buildah, or another epoch: an error, not a wrong result).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from assembler.errors import AssemblerError
from assembler.oci.layer import Layer
from assembler.pipeline import graph
from assembler.pipeline.graph import StepReport
from assembler.pipeline.options import BuildOptions, Reporter
from assembler.pipeline.runs.builder import Build
from assembler.pipeline.runs.resolve import Plan
from assembler.pipeline.runs.run import Run
from assembler.pipeline.steps.jobs import CompileJob, Executor
from assembler.pipeline.steps.slurm import Job, node_storage


def _mismatch(step: str, here: str | None, expected: str) -> AssemblerError:
    return AssemblerError(
        f"step {step}: this node computes the key {here}, the submitter {expected}",
        hint="the nodes must see the same manifest, sources and buildah version as the submitting machine",
    )


class ExpectedKey:
    """An executor that runs a step only under the key the submitter expects (``key``)."""

    def __init__(self, executor: Executor, *, key: str) -> None:
        self.executor = executor
        self.key = key

    def run_compile(self, job: CompileJob, *, stop: Callable[[], bool]) -> dict[str, Layer]:
        if job.key != self.key:
            raise _mismatch(job.step.name, job.key, self.key)
        return self.executor.run_compile(job, stop=stop)


def node_options(job: Job) -> BuildOptions:
    """The options a node builds ``job``'s step with: the submitter's (``job.options``), the
    step run here in buildah, one at a time, in node-local storage; no test runs here, no
    SBOM is made, nothing is signed or written as an artifact, and no host is asked first
    (a node builds one step, not an image; the submitter's preflight asked them)."""
    node = job.options
    workspace = replace(node.workspace, buildah_root=node_storage())
    return BuildOptions(
        context=node.context,
        walk=node.walk,
        workspace=workspace,
        caches=node.caches,
        executor="local",
        jobs=1,
        slurm_args=(),
        tests=False,
        test_on="local",
        sbom=False,
        preflight=False,
    )


def build_step(run: Run, plan: Plan, job: Job, *, report: Reporter) -> StepReport:
    """``job``'s step, built from ``plan`` (``run``'s manifest resolved again on this node)
    under the key the submitter computed, or found cached under it. Raises AssemblerError
    when this node computes another key, and what building raises."""
    with Build(run, plan, report=report, wrap=partial(ExpectedKey, key=job.key)) as build:
        build.walk.compile(graph.step_of(job.loaded.manifest, job.step))
        made = build.walk.steps[job.step]
    if made.key != job.key:  # cached under another key: the same mismatch, found without running
        raise AssemblerError(f"step {job.step}: this node computes the key {made.key}, the submitter {job.key}")
    return made
