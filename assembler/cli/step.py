"""``python -m assembler.cli.step JOBFILE``: one compile step, run by a Slurm job on a node.

See :mod:`assembler.pipeline.slurm`. The manifest is resolved again against the shared
cache; the step must get the key the submitter computed (else the node sees other files,
another buildah, or another epoch: an error, not a wrong result). What the step prints goes
to the job's output file, which the submitter shows.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from assembler.assemble import _context, resolve
from assembler.cache import Cache
from assembler.compile import sources as srcs
from assembler.errors import AssemblerError
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline import graph
from assembler.pipeline.builder import Builder
from assembler.pipeline.graph import StepReport
from assembler.pipeline.options import Event
from assembler.pipeline.slurm import node_storage, read_job
from assembler.proc import Runner
from assembler.spec import model as m


def _show(event: Event) -> None:
    if event.kind == "log":
        print(event.fields.get("line", ""), flush=True)
    elif event.kind in ("step", "base"):
        print(f"{event.kind} {event.fields.get('name')}: {event.fields.get('state')}", flush=True)


class OneStep(Builder):
    """A builder that makes one step, and only under the key the submitter expects."""

    expected = ""

    def make_compile(
        self,
        step: m.CompileStep,
        report: StepReport,
        *,
        base: Image,
        sources: Mapping[str, srcs.Source],
        inputs: Mapping[str, Layer],
        tree_key: str,
        forced: bool,
    ) -> dict[str, Layer]:
        if report.key != self.expected:
            raise AssemblerError(
                f"step {step.name}: this node computes the key {report.key}, the submitter {self.expected}",
                hint="the nodes must see the same manifest, sources and buildah version as the submitting machine",
            )
        return super().make_compile(
            step, report, base=base, sources=sources, inputs=inputs, tree_key=tree_key, forced=forced
        )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # scancel: stop as Ctrl-C does (the step's container is removed)


def main(job_path: Path) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    job = read_job(job_path)
    options = replace(job.options, executor="local", jobs=1, buildah_root=node_storage())
    runner = Runner()
    plan = resolve(job.loaded, options, runner=runner)
    cache = Cache(options.cache_dir)
    ctx = _context(job.loaded, options, cache=cache, runner=runner, registry=options.registry, report=_show)
    builder = OneStep(plan, ctx, report=_show)
    builder.expected = job.key
    try:
        builder.compile(graph.step_of(job.loaded.manifest, job.step))
    finally:
        if builder._ws is not None:
            builder._ws.wait_removals()
    made = builder.steps[job.step]
    if made.key != job.key:  # cached under another key: the same mismatch, found without running
        raise AssemblerError(f"step {job.step}: this node computes the key {made.key}, the submitter {job.key}")
    print(f"step {job.step}: {made.state} under key {job.key}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m assembler.cli.step JOBFILE", file=sys.stderr)
        raise SystemExit(2)
    try:
        code = main(Path(sys.argv[1]))
    except AssemblerError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr, flush=True)
        code = e.exit_code
    except KeyboardInterrupt:
        print("cancelled", file=sys.stderr, flush=True)
        code = 130
    raise SystemExit(code)
