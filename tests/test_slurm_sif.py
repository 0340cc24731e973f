"""``--slurm-sif sbcast``: a test's Slurm job copies the SIF to /tmp on its nodes first.

The staging script runs here in ``sh`` with a stand-in ``sbcast`` on PATH (the real one
needs a running job: tests/test_imagetests.py runs it on the test cluster): the copy is
made before the test's command runs on it, removed after, the command's exit status kept,
the staging's line split from the test's output, and a failed copy named.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from assembler.pipeline.checks.slurmtests import split_staging, staged


def _fake_sbcast(folder: Path, *, fails: bool = False) -> dict[str, str]:
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "sbcast"
    body = 'echo "sbcast: error: Can not open $2"; exit 1' if fails else '[ "$1" = --force ] && cp "$2" "$3"'
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_NUM_NODES": "1"}


def test_the_sif_is_copied_before_the_command_and_removed_after(tmp_path: Path) -> None:
    sif, dest = tmp_path / "shared.sif", tmp_path / "node-tmp.sif"
    sif.write_bytes(b"SIF bytes")
    command = ["sh", "-c", f'cat "{dest}"; echo; exit 3']
    done = subprocess.run(staged(command, sif, str(dest)), env=_fake_sbcast(tmp_path), capture_output=True, text=True)
    assert done.returncode == 3, done
    said, output = split_staging(done.stdout)
    assert output == "SIF bytes\n"
    assert len(said) == 1 and said[0].startswith("sbcast to 1 node(s) in ") and said[0].endswith(" ms"), said
    assert not dest.exists() and sif.exists()


def test_a_failed_copy_runs_nothing_and_says_why(tmp_path: Path) -> None:
    sif, dest, ran = tmp_path / "shared.sif", tmp_path / "node-tmp.sif", tmp_path / "ran"
    env = _fake_sbcast(tmp_path, fails=True)
    done = subprocess.run(staged(["touch", str(ran)], sif, str(dest)), env=env, capture_output=True, text=True)
    assert done.returncode == 125 and not ran.exists()
    said, output = split_staging(done.stdout)
    assert said == [f"sbcast failed: sbcast: error: Can not open {sif}"] and output == ""


def test_a_job_ended_early_leaves_no_copy_behind(tmp_path: Path) -> None:
    """Slurm's SIGTERM (a time limit, scancel) stops the command and removes the copy."""
    sif, dest, started = tmp_path / "shared.sif", tmp_path / "node-tmp.sif", tmp_path / "started"
    sif.write_bytes(b"SIF bytes")
    command = ["sh", "-c", f'touch "{started}"; exec sleep 60']
    proc = subprocess.Popen(staged(command, sif, str(dest)), env=_fake_sbcast(tmp_path), stdout=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists() and dest.read_bytes() == b"SIF bytes"
    proc.terminate()
    assert proc.wait(timeout=10) == 143
    assert not dest.exists() and sif.exists()
