"""``--executor slurm``: each compile step a build must run becomes a Slurm job.

The submitting machine resolves the plan as usual. For a step it must run, it writes a job
file (the loaded manifest, the options the node reads:
:class:`~assembler.pipeline.options.NodeOptions`, the step and the key it expects) into the
shared cache's ``slurm/`` folder and submits ``python -m assembler.cli.step JOBFILE`` with
``sbatch``, named after the step, its output in the cache's ``logs/``. On the node, the job
resolves the manifest again against the shared cache (the bases, sources and inputs the
step needs are there: a step is submitted after what it builds on is made), checks that it
computes the same key, and builds that one step with rootless buildah in a node-local
storage (overlay does not work on NFS or Lustre). The submitter polls the job, shows its log
as it grows, and reads the step's result from the shared cache by its key. Assembly and
pushes stay on the submitting machine.

A failed job raises StepFailed with the step, the job id and the tail of its log. Ctrl-C
in the polling thread, or ``stop()`` turning true (another step failed, or Ctrl-C in the
main thread), cancels the job with ``scancel``. ``run_compile`` may be called from several
threads at once (one job each).
"""

from __future__ import annotations

import os
import pickle
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from assembler.cache import Cache, StepResult
from assembler.errors import AssemblerError, Cancelled, StepFailed, ToolError
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.oci.layer import Layer
from assembler.pipeline.options import Event, NodeOptions, Reporter
from assembler.pipeline.steps.jobs import CompileJob
from assembler.proc import Runner, tail

POLL_SECONDS = 1.0
SETTLE_SECONDS = 30.0  # how long a finished job's result may take to be seen here (NFS)
# Job states that are not over yet (squeue/scontrol's names).
_WAITING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


@dataclass(frozen=True)
class Job:
    """What a node needs to build one step: written by the submitter, read by the job."""

    loaded: Loaded
    options: NodeOptions
    step: str
    key: str


def write_job(cache: Cache, job: Job) -> Path:
    """The job file in the shared cache: written whole (temp file, then a rename), so a node
    never reads half of it. Only the submitting user's own jobs read it."""
    folder = cache.root / "slurm"
    folder.mkdir(exist_ok=True)
    path = folder / f"{job.step}-{job.key[:16]}.job"
    temp = folder / f".tmp-{os.uname().nodename}-p{os.getpid()}-{path.name}"
    # Its user's alone: it may carry the key that signs the step cache's entries (--cache-sign).
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pickle.dumps(job))
    os.replace(temp, path)
    return path


def read_job(path: Path) -> Job:
    try:
        job = pickle.loads(path.read_bytes())  # our own file, in the user's own cache
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise AssemblerError(f"cannot read the Slurm job file {path}: {e}") from None
    if not isinstance(job, Job):
        raise AssemblerError(f"{path} is not a Slurm job file")
    return job


def resource_args(res: m.Resources | None) -> list[str]:
    """A step's ``resources:`` as sbatch flags."""
    if res is None:
        return []
    flags: list[str] = []
    if res.cpus is not None:
        flags.append(f"--cpus-per-task={res.cpus}")
    if res.mem is not None:
        flags.append(f"--mem={res.mem}")
    if res.gpus is not None:
        flags.append(f"--gres=gpu:{res.gpus}")
    if res.time is not None:
        flags.append(f"--time={res.time}")
    if res.partition is not None:
        flags.append(f"--partition={res.partition}")
    return flags


class SlurmExecutor:
    """Runs compile steps as Slurm jobs (see the module's doc): an
    :class:`~assembler.pipeline.steps.jobs.Executor`; ``slurm_args``: more sbatch arguments
    (``--slurm-args``). A compile step's job builds it of ``loaded`` with ``node`` (a
    SlurmExecutor that runs only tests has neither)."""

    def __init__(
        self,
        cache: Cache,
        runner: Runner,
        report: Reporter,
        *,
        slurm_args: Sequence[str] = (),
        loaded: Loaded | None = None,
        node: NodeOptions | None = None,
    ) -> None:
        self.cache = cache
        self.runner = runner
        self.report = report
        self.slurm_args = tuple(slurm_args)
        self.loaded = loaded
        self.node = node

    def submit_argv(self, step: m.CompileStep, job_file: Path, log_path: Path) -> list[str]:
        node_cmd = [sys.executable, "-m", "assembler.cli.step", str(job_file)]
        return self.job_argv(step.name, node_cmd, log_path, resource_args(step.resources))

    def job_argv(self, name: str, command: Sequence[str], log_path: Path, flags: Sequence[str]) -> list[str]:
        """The ``sbatch`` of a job named ``name`` running ``command``, its output (stdout and
        stderr) in ``log_path``, with ``flags`` and then ``--slurm-args``."""
        return [
            "sbatch",
            "--parsable",
            f"--job-name={name}",
            f"--output={log_path}",
            f"--chdir={Path.cwd()}",
            *flags,
            *self.slurm_args,
            "--wrap",
            shlex.join(command),
        ]

    def run_job(
        self, name: str, argv: Sequence[str], log_path: Path, *, stop: Callable[[], bool]
    ) -> tuple[str, str, str]:
        """Submit ``argv`` (a :meth:`job_argv`) and wait for the job, its log shown as it
        grows (as ``name``'s): its id, its end state and its exit code (``N:SIGNAL``).
        Cancelled (the job with it) once ``stop()`` turns true."""
        log_path.unlink(missing_ok=True)
        job_id = self.runner.run(argv).stdout.strip().split(";")[0]
        self.report(Event("log", {"step": name, "line": f"Slurm job {job_id}"}))
        return (job_id, *self._wait(name, job_id, log_path, stop))

    def run_compile(self, job: CompileJob, *, stop: Callable[[], bool]) -> dict[str, Layer]:
        """Run ``job.step`` as a Slurm job and wait: its artifacts, from the cache. The node
        obtains the base, sources and inputs again, from the shared cache."""
        return self._run(job.step, job.key, stop=stop)

    def _run(self, step: m.CompileStep, key: str, *, stop: Callable[[], bool]) -> dict[str, Layer]:
        assert self.loaded is not None and self.node is not None, "compile steps come from a manifest"
        job_file = write_job(self.cache, Job(self.loaded, self.node, step.name, key))
        log_path = self.cache.root / "logs" / f"slurm-{step.name}-{key[:16]}.log"
        argv = self.submit_argv(step, job_file, log_path)
        try:
            job_id, state, code = self.run_job(step.name, argv, log_path, stop=stop)
        finally:  # the node read it (or never will): it may hold the step cache's signing key
            job_file.unlink(missing_ok=True)
        if state != "COMPLETED":
            text = log_path.read_text("utf-8", "replace") if log_path.exists() else ""
            last = tail(text)
            raise StepFailed(
                f"step {step.name}: Slurm job {job_id} ended {state} (exit {code})\n"
                f"--- last lines of its log ---\n{last}\n--- full log: {log_path}",
                step=step.name,
                command="sbatch",
                argv=argv,
                log_path=log_path,
                log_tail=last,
                hint="the log shows why; finished steps are cached, so run assemble again once fixed",
            )
        hit = self._result(key)
        if hit is None or set(hit.artifacts) != set(step.artifacts):
            raise StepFailed(
                f"step {step.name}: Slurm job {job_id} finished but left no result in {self.cache.root}",
                step=step.name,
                command="sbatch",
                argv=argv,
                log_path=log_path,
                hint="the cache must be a folder every node shares, at the same path",
            )
        return dict(hit.artifacts)

    def _result(self, key: str) -> StepResult | None:
        """The step's result, written by the node. NFS may remember for a while that the
        entry was missing here (a cached negative lookup): reading its folder revalidates it."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            hit = self.cache.step_result(key)
            if hit is not None or time.monotonic() > deadline:
                return hit
            try:
                os.listdir(self.cache.root / "keys" / key[:2])
            except OSError:
                pass
            time.sleep(POLL_SECONDS)

    def _wait(self, name: str, job_id: str, log_path: Path, stop: Callable[[], bool]) -> tuple[str, str]:
        """Poll until the job is over: its state and exit code. Cancels it when given up."""
        shown = 0
        try:
            while True:
                state, code = self._state(job_id)
                shown = self._show_log(name, log_path, shown)
                if state not in _WAITING:
                    return state, code
                if stop():
                    raise Cancelled(f"step {name}: Slurm job {job_id} cancelled, the build is stopping")
                time.sleep(POLL_SECONDS)
        except BaseException:
            self.runner.run(["scancel", job_id], check=False)
            raise

    def _state(self, job_id: str) -> tuple[str, str]:
        result = self.runner.run(["scontrol", "show", "job", "-o", job_id], check=False)
        if result.returncode == 0:
            fields = dict(f.split("=", 1) for f in result.stdout.split() if "=" in f)
            return fields.get("JobState", "UNKNOWN"), fields.get("ExitCode", "?")
        # Gone from the controller (MinJobAge): the accounting has it, where there is one.
        acct = self.runner.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,ExitCode"], check=False)
        line = acct.stdout.strip().splitlines()[:1]
        if acct.returncode != 0 or not line:
            raise ToolError(f"Slurm job {job_id}: neither scontrol nor sacct knows it", argv=acct.argv)
        state, _, code = line[0].partition("|")
        return state.split()[0], code

    def _show_log(self, name: str, log_path: Path, shown: int) -> int:
        """Report the log's new whole lines; how far it has been shown."""
        try:
            with open(log_path, "rb") as f:
                f.seek(shown)
                data = f.read()
        except OSError:
            return shown
        end = data.rfind(b"\n") + 1
        for line in data[:end].decode("utf-8", "replace").splitlines():
            self.report(Event("log", {"step": name, "line": line}))
        return shown + end


def node_storage(environ: Mapping[str, str] = os.environ) -> Path:
    """Where a job keeps buildah's storage: ``$ASSEMBLE_NODE_STORAGE``, else a per-user folder
    under /var/tmp (node-local on a cluster; overlay storage does not work on NFS)."""
    return Path(environ.get("ASSEMBLE_NODE_STORAGE") or f"/var/tmp/assemble-{os.getuid()}/buildah")
