"""``python -m assembler.cli.step JOBFILE``: one compile step, run by a Slurm job on a node.

The command line of the node side (:mod:`assembler.pipeline.runs.slurmnode`, beside the
submitter's :mod:`assembler.pipeline.steps.slurm`): the manifest is resolved again against the
shared cache and the step built under the key the submitter computed
(:func:`assembler.assemble.build_node_step`). What the step prints goes to the job's output
file, which the submitter shows.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from assembler.assemble import build_node_step
from assembler.errors import AssemblerError
from assembler.pipeline.options import Event
from assembler.pipeline.steps.slurm import read_job
from assembler.proc import Runner


def _show(event: Event) -> None:
    if event.kind == "log":
        print(event.fields.get("line", ""), flush=True)
    elif event.kind in ("step", "base"):
        print(f"{event.kind} {event.fields.get('name')}: {event.fields.get('state')}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # scancel: stop as Ctrl-C does (the step's container is removed)


def main(job_path: Path) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    job = read_job(job_path)
    made = build_node_step(job, runner=Runner(), report=_show)
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
