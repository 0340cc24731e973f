"""Tests on the nodes that have the hardware (``--test-on slurm``, a test's ``on: slurm``):
the image as a SIF in the shared cache (:mod:`assembler.transports.hpc.sif`), each test a Slurm
job (through :class:`~assembler.pipeline.steps.slurm.SlurmExecutor`, as compile steps are) that
runs ``apptainer exec`` on it with the node's driver (``--nv`` for a GPU test, which also
asks for a GPU: ``--gres=gpu:N``).

With ``--slurm-sif sbcast`` each job first copies the SIF with ``sbcast`` to /tmp on every
node it holds (Slurm fans the one read of the shared folder out over its tree), runs there,
and removes the copies; the staging's time is in the job's log (shown as it grows), not
judged with the test's output.
Without (``shared``), the nodes read the SIF in place.

The SIF is squashed as the manifest's ``sif:`` says (compressor, block size), as its SIF
outputs are: the nodes' Apptainer reads what it reads, and a SIF read once and removed need
not take gzip's time (level 9: 20 s of CPU for a Debian root, many minutes for a GPU image)
where the manifest chose a faster compressor.

The test starts as ``docker run`` would: the image's environment (``--containall``: not the
submitter's), its working directory (``--pwd``), no network but loopback unless the test
asks (``--net --network none``); the user is the submitting one (Apptainer runs no
container as another). A job's time limit is the test's timeout and a minute, which the
test's command itself is held to by ``timeout``. As root, ``--no-privs``: root's full
capability set is refused where the node's bounding set lacks one, and a test needs none.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from assembler.cache import Cache
from assembler.oci.digest import digest_hex
from assembler.pipeline.image.imagetests import Judged, PlannedTest, Report, command_of, judge
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.steps.slurm import SlurmExecutor, resource_args
from assembler.transports import Context
from assembler.transports.common import SourceImage
from assembler.transports.hpc.squash import Squash

_TIMED_OUT = 124  # timeout(1)'s exit status for a command it stopped
SIF_WAYS = ("shared", "sbcast")
# A line the staging script writes before the test's own output (shown, not judged).
_STAGED = "assemble-slurm-sif: "
# $1 the SIF in the shared cache, $2 where on each node, then the test's command.
# The copies go when the job ends early too: Slurm sends SIGTERM at its time limit and on
# scancel (then SIGKILL after KillWait), and a node's /tmp must not keep gigabytes of SIF;
# the command runs in the background (its stdin kept) so that the trap runs at once.
_SBCAST = (
    "sif=$1 dest=$2; shift 2; "
    'clean() { if [ "${SLURM_JOB_NUM_NODES:-1}" -gt 1 ]; then srun --ntasks-per-node=1 rm -f "$dest"; '
    'else rm -f "$dest"; fi; }; '
    'pid=; stop() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; clean; exit "$1"; }; '
    "trap 'stop 143' TERM; trap 'stop 130' INT; "
    "t0=$(date +%s%N); "
    'if ! out=$(sbcast --force "$sif" "$dest" 2>&1); then '
    f'echo "{_STAGED}sbcast failed: $(echo "$out" | tr "\\n" " ")"; exit 125; fi; '
    f'echo "{_STAGED}sbcast to ${{SLURM_JOB_NUM_NODES:-1}} node(s) in $(( ($(date +%s%N) - t0) / 1000000 )) ms"; '
    '"$@" 0<&0 & pid=$!; wait "$pid"; rc=$?; trap - TERM INT; clean; '
    "exit $rc"
)


def apptainer_argv(test: PlannedTest, config: Mapping[str, Any], sif: Path, *, root: bool) -> list[str]:
    """The job's command for ``test`` on the SIF ``sif`` of an image of runtime ``config``."""
    cmd = command_of(test)
    args = ["apptainer", "--quiet", "exec", "--containall", "--pwd", cmd.workdir or config.get("WorkingDir") or "/"]
    args += ["--no-privs"] if root else []
    args += ["--nv"] if cmd.gpu else []
    args += [] if cmd.network else ["--net", "--network", "none"]
    args += [f"--env={key}={cmd.env[key]}" for key in sorted(cmd.env)]
    return ["timeout", "--kill-after=10", f"{test.seconds:g}", *args, str(sif), *cmd.argv]


def staged(command: Sequence[str], sif: Path, dest: str) -> list[str]:
    """``command`` (which runs the SIF at ``dest``) after ``sbcast`` has put ``sif`` there on
    every node of the job; the copies removed after, the command's exit status kept."""
    return ["sh", "-c", _SBCAST, "sh", str(sif), dest, *command]


def split_staging(output: str) -> tuple[list[str], str]:
    """The staging script's lines, and the test's own output."""
    lines = output.splitlines(keepends=True)
    said = [line.strip()[len(_STAGED) :] for line in lines if line.startswith(_STAGED)]
    return said, "".join(line for line in lines if not line.startswith(_STAGED))


def job_flags(test: PlannedTest) -> list[str]:
    """sbatch flags of ``test``'s job: its time limit, a GPU for a GPU test, its ``resources:``."""
    flags = [f"--time={math.ceil(test.seconds / 60) + 1}"]
    res = test.spec.resources
    if test.spec.gpu and (res is None or res.gpus is None):
        flags.append("--gres=gpu:1")
    return flags + resource_args(res)


def exit_of(state: str, code: str) -> tuple[int | None, str]:
    """A finished job's exit status and why it failed otherwise ("" when it ran to its end)."""
    status = int(code.partition(":")[0]) if code.partition(":")[0].isdigit() else None
    if state == "TIMEOUT" or (state == "FAILED" and status == _TIMED_OUT):
        return None, "timed out (its timeout, or its job's time limit)"
    if state in ("COMPLETED", "FAILED") and status is not None:
        return status, ""
    return None, f"its Slurm job ended {state} (exit {code})"


class SlurmTests:
    """Runs tests as Slurm jobs, on a SIF of the image in the shared cache."""

    def __init__(
        self,
        executor: SlurmExecutor,
        cache: Cache,
        ctx: Context,
        report: Reporter,
        *,
        sif: str = "shared",
        squash: Squash | None = None,
    ) -> None:
        if sif not in SIF_WAYS:
            raise ValueError(f"--slurm-sif {sif}: one of {', '.join(SIF_WAYS)}")
        self.executor = executor
        self.cache = cache
        self.ctx = ctx
        self.report = report
        self.sif = sif
        self.squash = squash or Squash()
        self.stop: Callable[[], bool] = lambda: False

    @classmethod
    def of(
        cls,
        slurm_args: Sequence[str],
        ctx: Context,
        *,
        report: Reporter,
        sif: str = "shared",
        squash: Squash | None = None,
    ) -> SlurmTests:
        """Through a Slurm executor that submits with ``slurm_args`` (``--slurm-args``), the SIF
        reached as ``sif`` (``--slurm-sif``) says, squashed as ``squash`` says (the manifest's
        ``sif:``; without one, gzip at 128 KiB blocks)."""
        executor = SlurmExecutor(ctx.cache, ctx.runner, report, slurm_args=slurm_args)
        return cls(executor, ctx.cache, ctx, report, sif=sif, squash=squash)

    def run(self, tests: Sequence[PlannedTest], source: SourceImage, judged: Judged) -> dict[str, Report]:
        """Each test as a job on a SIF of ``source``'s image (removed afterwards); its report."""
        image = source.image
        sif = self.cache.path("slurm") / f"test-{digest_hex(image.digest)[:16]}-p{os.getpid()}.sif"
        out = {}
        try:
            self._write_sif(source, sif)
            for test in tests:
                out[test.name] = self._one(test, image.container_config, image.digest, sif, judged)
        finally:
            sif.unlink(missing_ok=True)
        return out

    def _write_sif(self, source: SourceImage, path: Path) -> None:
        from assembler.transports.hpc.sif import write_sif  # tar2sqfs and the SIF writer: only here

        self.report(Event("info", {"text": f"tests on Slurm: the image as {path} ({self.squash.describe()})"}))
        write_sif(
            source,
            path,
            runner=self.ctx.runner,
            epoch=self.ctx.epoch,
            squash=self.squash,
        )

    def _one(self, test: PlannedTest, config: Mapping[str, Any], digest: str, sif: Path, judged: Judged) -> Report:
        root = os.geteuid() == 0
        if self.sif == "sbcast":  # node-local: named by this host and process, as the shared one is
            dest = f"/tmp/{sif.stem}-{socket.gethostname()}.sif"
            command = staged(apptainer_argv(test, config, Path(dest), root=root), sif, dest)
        else:
            command = apptainer_argv(test, config, sif, root=root)
        log = self.cache.root / "logs" / f"slurm-test-{test.name}-{digest_hex(digest)[:12]}.log"
        argv = self.executor.job_argv(f"test-{test.name}", command, log, job_flags(test))
        self.report(Event("test", {"name": test.name, "state": "running", "on": "slurm"}))
        started = time.monotonic()
        job, state, code = self.executor.run_job(f"test {test.name}", argv, log, stop=self.stop)
        said, output = split_staging(log.read_text("utf-8", "replace") if log.exists() else "")
        if any(line.startswith("sbcast failed") for line in said):
            reason = f"the SIF could not be put on its nodes: {said[-1]} (Slurm job {job})"
            return judged(test, digest, None, output, reason, time.monotonic() - started)
        status, why = exit_of(state, code)
        reason = judge(test.spec, status, output) if status is not None else f"{why} (Slurm job {job})"
        return judged(test, digest, status, output, reason, time.monotonic() - started)
