"""``--jobs N``: independent steps run at the same time, and one failure (or Ctrl-C) stops
them all, with their containers removed.

The steps below meet through a ``shared_cache:`` folder (one host folder for every step
that names the same path): each leaves a mark and waits for the other's, so they can only
both succeed if they really run at the same time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.helpers import PYTHON, buildah_containers, run_cli, sh

MEET = (
    "touch /sync/{me}; i=0; while [ ! -e /sync/{other} ] && [ $i -lt {tenths} ]; do sleep 0.1; i=$((i+1)); done; "
    "test -e /sync/{other} && mkdir -p /out && echo {me} > /out/{me}"
)

TWO_STEPS = """\
name: jobs
bases:
  devel: oci:{devel}:latest
  runtime: oci:{runtime}:latest
compile:
  - name: a
    base: devel
    shared_cache: [/sync]
    run: ['{a}']
    artifacts:
      out: {{path: /out/a, to: /app/a}}
  - name: b
    base: devel
    shared_cache: [/sync]
    run: ['{b}']
    artifacts:
      out: {{path: /out/b, to: /app/b}}
image:
  base: runtime
  layers:
    - artifact: a.out
    - artifact: b.out
"""


def _project(tmp_path: Path, bases: dict[str, Path], a: str, b: str) -> Path:
    text = TWO_STEPS.format(devel=bases["devel"], runtime=bases["runtime"], a=a, b=b)
    (tmp_path / "m.yaml").write_text(text)
    return tmp_path / "m.yaml"


def _long_sleep() -> str:
    """A sleep no other process on the machine runs (another checkout's test run may be
    sleeping 300 s too): what ``ps`` must no longer show once the build stopped."""
    return f"sleep 300.{os.getpid()}{time.monotonic_ns() % 100000:05d}"


def test_two_steps_run_at_the_same_time(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    meet_a = MEET.format(me="a", other="b", tenths=600)
    meet_b = MEET.format(me="b", other="a", tenths=600)
    _project(tmp_path, demo_bases, meet_a, meet_b)
    ran = run_cli(
        ["m.yaml", "--cache", "cache", "-o", "oci:out:x", "--jobs", "2", "--json", "--progress", "plain"], cwd=tmp_path
    )
    assert ran.code == 0, str(ran)
    assert {s["name"]: s["state"] for s in ran.json["steps"]} == {"a": "built", "b": "built"}
    # Each log line names its step.
    assert "[a] $ touch /sync/a" in ran.err and "[b] $ touch /sync/b" in ran.err, ran.err
    assert buildah_containers(tmp_path / "cache") == []
    # $ASSEMBLE_STORAGE (the test process's storage) held buildah's images, not the cache.
    assert (Path(os.environ["ASSEMBLE_STORAGE"]) / "root").is_dir() and not (tmp_path / "cache/buildah/root").exists()


def test_one_job_runs_steps_one_by_one(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    # The same meeting with --jobs 1 cannot happen: the first step gives up waiting.
    meet_a = MEET.format(me="a", other="b", tenths=50)
    meet_b = MEET.format(me="b", other="a", tenths=50)
    _project(tmp_path, demo_bases, meet_a, meet_b)
    # --storage names the storage (the test process's, with $ASSEMBLE_STORAGE cleared).
    storage = os.environ["ASSEMBLE_STORAGE"]
    ran = run_cli(
        ["m.yaml", "--cache", "cache", "--storage", storage, "-o", "oci:out:x", "--jobs", "1"],
        cwd=tmp_path,
        env={"ASSEMBLE_STORAGE": ""},
    )
    assert ran.code == 1, str(ran)
    assert "error: step a: command failed (exit 1)" in ran.err, ran.err
    assert not (tmp_path / "cache/buildah/root").exists(), "the step ran in the cache's own storage"


def test_a_failure_stops_the_other_steps(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    long = _long_sleep()
    _project(tmp_path, demo_bases, "sleep 2; echo a-broke; exit 7", f"touch /sync/b-started; {long}")
    temp_before = _buildah_temp_folders()
    started = time.monotonic()
    ran = run_cli(
        ["m.yaml", "--cache", "cache", "-o", "oci:out:x", "--jobs", "2", "--progress", "plain"],
        cwd=tmp_path,
        timeout=240,
    )
    seconds = time.monotonic() - started
    assert ran.code == 1, str(ran)
    err = ran.err[ran.err.index("error: ") :]
    # The first failure is what the user sees, not the step stopped because of it.
    assert err.startswith("error: step a: command failed (exit 7): sleep 2; echo a-broke; exit 7"), err
    assert "a-broke" in err
    assert seconds < 150, f"b's `{long}` was not stopped ({seconds:.0f} s)"
    assert buildah_containers(tmp_path / "cache") == []
    assert not (tmp_path / "out").exists()
    ps = sh(["ps", "-eo", "args"]).stdout
    assert long not in ps, ps
    # The stopped `buildah run` of b left its temp folder in buildah's storage, not /var/tmp.
    assert not _leaked_buildah_temp_folders(temp_before)


def _buildah_temp_folders() -> set[Path]:
    return {p for tmp in ("/var/tmp", "/tmp") for p in Path(tmp).glob("buildah[0-9]*")}


def _leaked_buildah_temp_folders(before: set[Path], wait: float = 120) -> set[Path]:
    """The buildah temp folders made since ``before`` that stay. Another worker's buildah
    (a test that runs it without our TMPDIR) makes and removes its own while this one runs:
    a leaked folder outlives ``wait``, that one goes when its command ends."""
    deadline = time.monotonic() + wait
    while (new := _buildah_temp_folders() - before) and time.monotonic() < deadline:
        time.sleep(1)
    return new


def test_interrupt_stops_every_running_step(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    long = _long_sleep()
    _project(tmp_path, demo_bases, f"touch /sync/a; {long}", f"touch /sync/b; {long}")
    cache = tmp_path / "cache"
    temp_before = _buildah_temp_folders()
    proc = subprocess.Popen(
        [PYTHON, "-m", "assembler", "m.yaml", "--cache", str(cache), "-o", "oci:out:x", "--jobs", "2"],
        cwd=tmp_path,
        env=dict(os.environ),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    marks = cache / "step-caches" / "_shared"
    while time.monotonic() < deadline and len(list(marks.glob("*/[ab]"))) < 2:
        time.sleep(0.2)
    assert len(list(marks.glob("*/[ab]"))) == 2, "both steps should be running"
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert buildah_containers(cache) == []
    ps = sh(["ps", "-eo", "args"]).stdout
    assert str(cache) not in ps and long not in ps, ps
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()
    # The stopped `buildah run`s left their temp folders in buildah's storage, not /var/tmp.
    assert not _leaked_buildah_temp_folders(temp_before)


def test_a_storage_that_is_a_file_is_exit_2(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    _project(tmp_path, demo_bases, "true", "true")
    (tmp_path / "file").write_text("not a folder")
    ran = run_cli(["m.yaml", "--cache", "cache", "--storage", "file", "-o", "oci:out:x"], cwd=tmp_path)
    assert ran.code == 2 and "error: --storage file:" in ran.err and "Traceback" not in ran.err, str(ran)
    assert not (tmp_path / "out").exists()


def test_jobs_must_be_a_whole_number(tmp_path: Path) -> None:
    ran = run_cli(["m.yaml", "--jobs", "0"], cwd=tmp_path)
    assert ran.code == 2 and "--jobs" in ran.err and "Traceback" not in ran.err, str(ran)
