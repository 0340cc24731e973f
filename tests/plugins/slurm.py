"""A one-node Slurm cluster on this machine, with accounting (so ``sacct`` lists jobs).

Debian 12's Slurm (22.05) records jobs for ``sacct`` only through slurmdbd, which keeps them
in MariaDB: the fixture runs a MariaDB of its own (a data folder and a port of its own),
slurmdbd, slurmctld and slurmd, all in the foreground as its children, on free ports, with a
slurm.conf of its own (``SLURM_CONF``), and stops them by PID (setpriv execs the daemons
run as other users, so the PIDs are theirs). munged is started as the munge user if it is
not running (and stopped by the last cluster on the machine to end). Needs root (the
daemons run as root and launch jobs as the submitting user), as the test machines and CI
are.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import sh

MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MUNGE_USERS = Path(tempfile.gettempdir()) / "assemble-tests-munge.lock"  # see _munge
MUNGE_OURS = Path(tempfile.gettempdir()) / "assemble-tests-munge.pid"  # the munged the clusters started


@dataclass
class Cluster:
    folder: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def sacct(self, *, user: str | None = None) -> list[dict[str, str]]:
        """Jobs as sacct lists them (one line per job, not its steps)."""
        fields = ["JobID", "JobName", "User", "State", "ExitCode"]
        who = ["-u", user] if user else ["-a"]
        out = sh(
            ["sacct", "-n", "-X", "-P", *who, "-S", "now-1days", "-o", ",".join(fields)], env={**os.environ, **self.env}
        ).stdout
        return [dict(zip(fields, line.split("|"), strict=True)) for line in out.splitlines() if line]

    def jobs_named(self, names: set[str], *, wait: float = 60.0) -> dict[str, dict[str, str]]:
        """The last job of each name, waiting for slurmdbd to record them all (it records
        finished jobs a little later, seconds more on a loaded machine)."""
        deadline = time.monotonic() + wait
        while True:
            jobs = {j["JobName"]: j for j in self.sacct()}
            done = all(jobs.get(n, {}).get("State") not in (None, "RUNNING", "PENDING") for n in names)
            if done or time.monotonic() > deadline:
                return jobs
            time.sleep(1)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait(what: str, ready: object, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(ready) and ready():
            return
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: {p.args!r} exited {p.returncode}")
        time.sleep(0.5)
    raise AssertionError(f"{what}: not ready within {timeout} s")


def _munge_answers() -> bool:
    return MUNGE_SOCKET.exists() and subprocess.run(["munge", "-n"], capture_output=True).returncode == 0


@contextlib.contextmanager
def _munge() -> Iterator[None]:
    """munged for the block: the one running, else one started as the munge user, stopped
    by the last cluster of the machine to end. Each cluster holds a shared lock on
    MUNGE_USERS while it runs: the suite's workers run clusters at once (test_slurm and
    test_imagetests), and the worker that started munged stopped it at its module's end,
    under the other's sbatch ("Munge encode failed", test_slurm, 2026-11-29)."""
    fd = os.open(MUNGE_USERS, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # started or joined one at a time
        if not _munge_answers():
            if not Path("/etc/munge/munge.key").exists():
                sh(["runuser", "-u", "munge", "--", "/usr/sbin/mungekey", "--create"])
            sh(["install", "-d", "-o", "munge", "-g", "munge", "-m", "755", "/run/munge"])
            argv = ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "--", "/usr/sbin/munged"]
            proc = subprocess.Popen([*argv, "--foreground"], start_new_session=True)
            _wait("munged", _munge_answers, [proc])
            MUNGE_OURS.write_text(str(proc.pid))
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no other cluster runs now
        except BlockingIOError:
            pass  # the last one to end stops it
        else:
            _stop_ours()
        os.close(fd)


def _stop_ours() -> None:
    """The munged a cluster started (MUNGE_OURS names it), stopped; one found running is left."""
    try:
        pid = int(MUNGE_OURS.read_text())
    except (FileNotFoundError, ValueError):
        return
    MUNGE_OURS.unlink()
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        if Path(f"/proc/{pid}/comm").read_text().strip() == "munged":  # not a PID reused since
            os.kill(pid, 15)
    deadline = time.monotonic() + 30
    while _munge_answers() and time.monotonic() < deadline:
        time.sleep(0.2)


def _configs(folder: Path, ports: list[int]) -> Path:
    db, dbd, ctld, slurmd = ports
    host = socket.gethostname().split(".")[0]
    (folder / "slurm.conf").write_text(f"""\
ClusterName=asmtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd}
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=2000 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    dbd_conf = folder / "slurmdbd.conf"  # next to slurm.conf: where slurmdbd looks with SLURM_CONF
    dbd_conf.write_text(f"""\
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
DbdPort={dbd}
SlurmUser=root
PidFile={folder}/slurmdbd.pid
LogFile={folder}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db}
StorageUser=root
StorageLoc=asmtest_acct
""")
    dbd_conf.chmod(0o600)
    return folder / "slurm.conf"


def _mariadb(folder: Path, port: int) -> subprocess.Popen[bytes]:
    data = folder / "db"
    data.mkdir()
    shutil.chown(data, "mysql", "mysql")
    sh(
        [
            "mariadb-install-db",
            "--user=mysql",
            f"--datadir={data}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
    )
    as_mysql = ["setpriv", "--reuid=mysql", "--regid=mysql", "--init-groups", "--"]  # exec'd: its PID is mariadbd's
    return subprocess.Popen(
        [
            *as_mysql,
            "/usr/sbin/mariadbd",
            "--no-defaults",
            f"--datadir={data}",
            f"--port={port}",
            "--bind-address=127.0.0.1",
            f"--socket={data}/mysql.sock",
            f"--pid-file={data}/mysql.pid",
            "--innodb-buffer-pool-size=16M",
            f"--log-error={data}/mysql.err",
        ]
    )


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[Cluster]:
    if os.geteuid() != 0 or shutil.which("slurmctld") is None or shutil.which("slurmdbd") is None:
        pytest.skip("needs root and Debian's slurmctld, slurmd, slurmdbd, munge, mariadb-server (scripts/setup)")
    with one_node_cluster() as cluster:
        yield cluster


@contextlib.contextmanager
def one_node_cluster() -> Iterator[Cluster]:
    """The cluster, up for the block (scripts/bench-hpc uses it too)."""
    # A folder every user can pass through: mysql runs as its own user, jobs as theirs.
    folder = Path(tempfile.mkdtemp(prefix="asm-slurm-", dir="/tmp"))
    folder.chmod(0o755)
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "SLURM_CONF": str(_configs(folder, ports := _free_ports(4)))}
    with _munge():  # stopped after the daemons that use it
        try:
            procs.append(_mariadb(folder, ports[0]))
            _wait("mariadb", lambda: _listening(ports[0]), procs)
            procs.append(subprocess.Popen(["slurmdbd", "-D"], env=env))
            _wait("slurmdbd", lambda: _listening(ports[1]), procs)
            procs.append(subprocess.Popen(["slurmctld", "-D", "-i"], env=env))
            _wait("slurmctld", lambda: _listening(ports[2]), procs)
            procs.append(subprocess.Popen(["slurmd", "-D"], env=env))

            def idle() -> bool:
                out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout
                return out.strip() == "idle"

            _wait("slurmd", idle, procs)
            yield Cluster(folder, Path(env["SLURM_CONF"]))
        finally:
            for proc in reversed(procs):  # by PID, the last started first
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            shutil.rmtree(folder, ignore_errors=True)
