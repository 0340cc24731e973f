"""``--executor slurm`` on a real one-node Slurm cluster (tests/plugins/slurm.py): each
compile step a build runs is a Slurm job (sacct lists it under the step's name), and the image
is the one a local build makes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import PYTHON, ROOT, layout_digest, run_cli, sh
from tests.plugins.demo import Demo, base_args, copy_project
from tests.plugins.slurm import Cluster
from tests.plugins.user import User

pytestmark = pytest.mark.slow

TWO_STEPS = """\
name: two-steps
bases:
  devel: oci:{devel}:latest
  runtime: oci:{runtime}:latest
compile:
  - name: first
    base: devel
    run: ["mkdir -p /out && echo one > /out/one.txt"]
    artifacts: {{one: {{path: /out/one.txt, to: /opt/one.txt}}}}
    resources: {{cpus: 1, mem: 200M, time: "10"}}
  - name: second
    base: devel
    inputs: [first.one]
    run: ["{second}"]
    artifacts: {{two: {{path: /out/two.txt, to: /opt/two.txt}}}}
image:
  base: runtime
  layers:
    - artifact: first.one
    - artifact: second.two
"""
SECOND_OK = "mkdir -p /out && cat /opt/one.txt > /out/two.txt && echo two >> /out/two.txt"


def two_steps(folder: Path, bases: dict[str, Path], second: str = SECOND_OK) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "m.yaml"
    # The steps need a shell, no toolchain: the runtime base serves as devel too (a node's
    # storage, and the unprivileged user's, pull 50 MB for them, not the 300 MB devel base).
    manifest.write_text(TWO_STEPS.format(devel=bases["runtime"], runtime=bases["runtime"], second=second))
    return manifest


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The node's buildah storage, kept from job to job as a node's local disk keeps it: the
    test process's own (``$ASSEMBLE_STORAGE``) where it has one, as a node's storage holds
    the bases earlier builds pulled (the jobs run on this machine, one module at a time)."""
    shared = os.environ.get("ASSEMBLE_STORAGE")
    return Path(shared) if shared else tmp_path_factory.mktemp("node") / "buildah"


def slurm_env(cluster: Cluster, node: Path) -> dict[str, str]:
    return {**cluster.env, "ASSEMBLE_NODE_STORAGE": str(node)}


def job_ids(cluster: Cluster) -> set[str]:
    return {j["JobID"] for j in cluster.sacct()}


def jobs_named(
    cluster: Cluster, names: set[str], *, since: set[str], by: str | None = None, ended: bool = True
) -> list[dict[str, str]]:
    """The jobs of these names in sacct that are not among the ``since`` ids, once each name
    is there (and, with ``ended``, has its end recorded): slurmctld tells slurmdbd of a job's
    end a moment after the job ends, and the cluster is shared, so an earlier test's job of
    the same name must not count."""
    deadline = time.monotonic() + 30
    while True:
        jobs = [j for j in cluster.sacct(user=by) if j["JobName"] in names and j["JobID"] not in since]
        done = not ended or all(j["State"] not in ("PENDING", "RUNNING", "COMPLETING") for j in jobs)
        if ({j["JobName"] for j in jobs} == names and done) or time.monotonic() > deadline:
            return jobs
        time.sleep(1)


def test_two_steps_on_slurm_give_the_local_image(
    tmp_path: Path, demo_bases: dict[str, Path], slurm_cluster: Cluster, node: Path
) -> None:
    manifest = two_steps(tmp_path / "p", demo_bases)
    local = run_cli([str(manifest), "--cache", str(tmp_path / "local"), "--json", "-o", f"oci:{tmp_path}/l:x"])
    assert local.code == 0, str(local)
    before = job_ids(slurm_cluster)
    ran = run_cli(
        [
            str(manifest),
            "--cache",
            str(tmp_path / "shared"),
            "--json",
            "--executor",
            "slurm",
            "-o",
            f"oci:{tmp_path}/s:x",
        ],
        env=slurm_env(slurm_cluster, node),
    )
    assert ran.code == 0, str(ran)
    assert ran.json["digest"] == local.json["digest"]
    assert {s["name"]: s["state"] for s in ran.json["steps"]} == {"first": "built", "second": "built"}
    jobs = jobs_named(slurm_cluster, {"first", "second"}, since=before)
    assert sorted(j["JobName"] for j in jobs) == ["first", "second"]
    assert {j["State"] for j in jobs} == {"COMPLETED"}
    logs = sorted(p.name for p in (tmp_path / "shared" / "logs").glob("slurm-*.log"))
    assert [n.split("-")[1] for n in logs] == ["first", "second"]
    print(f"\nsacct: {jobs}")
    # The second time, the shared cache has both steps: no job.
    again = run_cli(
        [
            str(manifest),
            "--cache",
            str(tmp_path / "shared"),
            "--json",
            "--executor",
            "slurm",
            "-o",
            f"oci:{tmp_path}/s:x",
        ],
        env=slurm_env(slurm_cluster, node),
    )
    assert again.code == 0 and {s["state"] for s in again.json["steps"]} == {"cached"}
    assert job_ids(slurm_cluster) - before == {j["JobID"] for j in jobs}


def test_a_failed_job_shows_the_step_its_job_id_and_its_log(
    tmp_path: Path, demo_bases: dict[str, Path], slurm_cluster: Cluster, node: Path
) -> None:
    manifest = two_steps(tmp_path / "p", demo_bases, second="echo the-marker-line; exit 3")
    before = job_ids(slurm_cluster)
    ran = run_cli(
        [str(manifest), "--cache", str(tmp_path / "shared"), "--executor", "slurm", "-o", f"oci:{tmp_path}/s:x"],
        env=slurm_env(slurm_cluster, node),
    )
    assert ran.code == 1, str(ran)
    (job,) = jobs_named(slurm_cluster, {"second"}, since=before)
    assert job["State"] == "FAILED", slurm_cluster.sacct()
    job_id = job["JobID"]
    assert f"step second: Slurm job {job_id} ended FAILED" in ran.err
    assert "the-marker-line" in ran.err and "exit 3" in ran.err


def test_ctrl_c_cancels_the_running_job(
    tmp_path: Path, demo_bases: dict[str, Path], slurm_cluster: Cluster, node: Path
) -> None:
    manifest = two_steps(tmp_path / "p", demo_bases, second="sleep 600")
    env = {**os.environ, **slurm_env(slurm_cluster, node)}
    before = job_ids(slurm_cluster)
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "assembler",
            str(manifest),
            "--cache",
            str(tmp_path / "shared"),
            "--executor",
            "slurm",
            "--progress",
            "plain",
            "-o",
            f"oci:{tmp_path}/s:x",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        running = [
            j for j in jobs_named(slurm_cluster, {"second"}, since=before, ended=False) if j["State"] == "RUNNING"
        ]
        if running:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(1)
    else:
        raise AssertionError("the job never ran")
    time.sleep(3)  # in the container's sleep by now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    job_id = running[0]["JobID"]
    deadline = time.monotonic() + 60
    while (state := {j["JobID"]: j["State"] for j in slurm_cluster.sacct()}[job_id]) == "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(1)
    assert state.startswith("CANCELLED"), state


def test_an_unprivileged_user_builds_on_slurm(
    tmp_path: Path,
    demo_bases: dict[str, Path],
    slurm_cluster: Cluster,
    user: User,
) -> None:
    work = user.home / "slurm-build"
    shutil.rmtree(work, ignore_errors=True)
    manifest = two_steps(work, demo_bases)
    sh(["chown", "-R", f"{user.name}:{user.name}", str(work)])
    local = run_cli([str(manifest), "--cache", str(tmp_path / "local"), "--json", "-o", f"oci:{tmp_path}/l:x"])
    assert local.code == 0, str(local)
    env = {"SLURM_CONF": str(slurm_cluster.conf)}
    args = [
        "env",
        *(f"{k}={v}" for k, v in env.items()),
        PYTHON,
        "-m",
        "assembler",
        str(manifest),
        "--cache",
        str(work / "cache"),
        "--json",
        "--executor",
        "slurm",
        "-o",
        f"oci:{work}/out:x",
    ]
    before = job_ids(slurm_cluster)
    proc = user.run(args, work)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["digest"] == local.json["digest"]
    jobs = jobs_named(slurm_cluster, {"first", "second"}, since=before, by=user.name)
    assert sorted(j["JobName"] for j in jobs) == ["first", "second"], jobs
    assert {j["User"] for j in jobs} == {user.name} and {j["State"] for j in jobs} == {"COMPLETED"}
    print(f"\nsacct -u {user.name}: {jobs}")
    sh(["rm", "-rf", str(work), f"/var/tmp/assemble-{user.uid}"])


def test_the_demo_on_slurm_gives_the_local_digest(
    tmp_path: Path, demo: Demo, slurm_cluster: Cluster, node: Path
) -> None:
    """The must-show: every step of the demo a Slurm job, the image the local build's."""
    manifest = copy_project(tmp_path / "project")
    local = demo.cold.json
    before = job_ids(slurm_cluster)
    ran = run_cli(
        [
            str(manifest),
            "--cache",
            str(tmp_path / "shared"),
            "--json",
            "--executor",
            "slurm",
            *base_args(demo.bases),
            "-o",
            f"oci:{tmp_path}/out:x",
        ],
        cwd=tmp_path / "project",
        env=slurm_env(slurm_cluster, node),
    )
    assert ran.code == 0, str(ran)
    assert ran.json["digest"] == local["digest"] == layout_digest(tmp_path / "out", "x")
    compile_steps = {s["name"] for s in ran.json["steps"] if s["kind"] == "compile"}
    assert {s["name"] for s in ran.json["steps"] if s["state"] == "built"} >= compile_steps
    jobs = jobs_named(slurm_cluster, compile_steps, since=before)
    assert sorted(j["JobName"] for j in jobs) == sorted(compile_steps)
    assert {j["State"] for j in jobs} == {"COMPLETED"}
    print(f"\ndemo on Slurm: {ran.json['digest']} (local {local['digest']}); sacct: {jobs}")
