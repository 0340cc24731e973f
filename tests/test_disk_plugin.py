"""tests/plugins/disk.py: earlier runs' folders and stale bases go before a run; a run still
going, and whatever a leftover mount shows, stay."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plugins.disk import remove_earlier_runs, remove_stale_bases


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_ended_runs_go_and_a_run_still_going_stays(tmp_path: Path) -> None:
    root = tmp_path / "pytest-of-me"
    for n in (1, 2, 3, 10):
        (root / f"pytest-{n}" / "popen-gw0" / "x").mkdir(parents=True)
    (root / "pytest-1" / ".lock").write_text(str(_dead_pid()))
    (root / "pytest-2" / ".lock").write_text(str(os.getpid()))  # this process: alive
    (root / "pytest-3" / ".lock").write_text("not a pid")
    (root / "pytest-current").symlink_to(root / "pytest-2")
    (root / "other").mkdir()

    gone = remove_earlier_runs(root)

    assert sorted(p.name for p in gone) == ["pytest-1", "pytest-10", "pytest-3"]
    assert sorted(p.name for p in root.iterdir()) == ["other", "pytest-2", "pytest-current"]
    assert (root / "pytest-2" / "popen-gw0" / "x").is_dir()


def test_bases_of_other_formats_go_and_todays_stay(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for name in ("bases", "bases-v4", "bases-v5", "bases-cache", "upstream"):
        (cache / name / "devel").mkdir(parents=True)
    (cache / "bases-v3").write_text("a file, not bases")

    gone = remove_stale_bases(cache, cache / "bases-v5")

    assert sorted(p.name for p in gone) == ["bases", "bases-v4"]
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "bases-cache", "bases-v3", "bases-v5", "upstream"]
    assert remove_stale_bases(tmp_path / "none", tmp_path / "none" / "bases-v5") == []


@pytest.mark.timeout(20)  # before: waited as long as the other run held the lock
def test_stale_bases_wait_for_no_run_that_holds_the_cache(tmp_path: Path) -> None:
    """A run bootstrapping the bases holds the test cache's lock for minutes: another run
    (the unit tier, which uses no base) starts at once and leaves the stale ones to the next."""
    cache = tmp_path / "cache"
    (cache / "bases-v4" / "devel").mkdir(parents=True)
    with open(cache / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another open file: flock excludes it as another process
        assert remove_stale_bases(cache, cache / "bases-v5") == []
        assert (cache / "bases-v4" / "devel").is_dir()
    assert remove_stale_bases(cache, cache / "bases-v5") == [cache / "bases-v4"]


@pytest.mark.integration  # mount, umount
def test_a_mount_left_in_a_run_is_undone_and_what_it_shows_survives(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("kept")
    root = tmp_path / "pytest-of-me"
    point = root / "pytest-4" / "popen-gw1" / "buildah-storage" / "overlay" / "merged"
    point.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(outside), str(point)], check=True)
    try:
        assert (point / "precious").exists()
        remove_earlier_runs(root)
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
    assert not (root / "pytest-4").exists()
    assert (outside / "precious").read_text() == "kept"
    assert str(point) not in Path("/proc/self/mountinfo").read_text()
