"""The suite's disk: what earlier runs left is removed before this one starts, and the free
space is said before the first test.

The full suite holds about 21 GiB at its peak (real builds: three workers' buildah stores,
the demo built on each, the CUDA toolkit unpacked), and a CI run once failed for want of
it (ENOSPC in the CUDA toolkit's build). pytest keeps a run's folders when a test failed
and removes them only at the end of the next run, and CI's machines are reused: a failed
run's 5-15 GiB would sit beside the next run's. So the controller removes earlier runs'
folders before any test starts (those of a run still going, whose lock names a live
process, stay), and the bases an older assemble bootstrapped for the tests
(``bases-v<other format>``).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from assembler.cache.temps import pid_alive
from tests.conftest import TEST_BASES, TEST_CACHE

PEAK_GIB = 21  # the full suite's peak use: df sampled through a clean-clone scripts/test, 2026-11-27


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def _in_use(run: Path) -> bool:
    """Whether the run of folder ``run`` is still going: its lock names a live process."""
    try:
        text = (run / ".lock").read_text().strip()
    except OSError:
        return False
    return text.isdigit() and pid_alive(int(text))


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    return points


def _remove(path: Path) -> bool:
    """Remove ``path``, after lazily unmounting what a killed build left mounted under it
    (buildah's overlays), deepest first. Where a mount stays (no right to unmount it), the
    folder stays too: removing files through a mount would reach into what it shows."""
    for point in sorted(_mounts_under(path), key=len, reverse=True):
        # no umount on PATH (the unit tier's sealed PATH, scripts/unit-sandbox): the mount stays
        with contextlib.suppress(FileNotFoundError):
            subprocess.run(["umount", "-l", point], capture_output=True)
    if _mounts_under(path):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def remove_earlier_runs(root: Path) -> list[Path]:
    """Remove the numbered run folders under ``root`` (pytest's ``pytest-of-USER``) whose run
    has ended; the ones removed."""
    gone = []
    for run in sorted(root.glob("pytest-[0-9]*")):
        if run.is_dir() and not run.is_symlink() and not _in_use(run) and _remove(run):
            gone.append(run)
    return gone


def remove_stale_bases(cache: Path, current: Path) -> list[Path]:
    """Remove bases that another bootstrap format made (``bases``, ``bases-v<N>``) from the
    test cache, holding its lock; none while another run holds it (bootstrapping the bases
    takes minutes, and waiting for it kept the unit tier, which uses none, that long)."""
    if not cache.is_dir():
        return []
    gone = []
    with open(cache / ".lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return []  # the next run removes them
        for path in sorted([*cache.glob("bases-v*"), cache / "bases"]):
            if path.is_dir() and path != current and _remove(path):
                gone.append(path)
    return gone


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def pytest_configure(config: pytest.Config) -> None:
    if not _is_controller(config) or config.option.basetemp:
        return
    root = Path(tempfile.gettempdir()).resolve() / f"pytest-of-{getpass.getuser()}"
    if root.is_dir():
        remove_earlier_runs(root)
    remove_stale_bases(TEST_CACHE, TEST_BASES)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The free space, first in the log: written as a line of its own, which ``-q`` (what
    scripts/test runs) keeps, where it drops the report's header."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and _is_controller(session.config):
        for line in disk_lines():
            reporter.write_line(line)


def disk_lines() -> list[str]:
    """What is free where the suite writes, and a warning under its peak."""
    free: dict[int, tuple[float, list[str]]] = {}  # by file system
    for place in (Path(tempfile.gettempdir()), TEST_CACHE):
        path = _existing(place)
        gib = shutil.disk_usage(path).free / (1 << 30)
        free.setdefault(path.stat().st_dev, (gib, []))[1].append(str(place))
    said = "; ".join(f"{gib:.1f} GiB free under {' and '.join(places)}" for gib, places in free.values())
    lines = [f"disk: {said}; the full suite holds up to about {PEAK_GIB} GiB at once"]
    if min(gib for gib, _ in free.values()) < PEAK_GIB:
        lines.append(f"disk: WARNING: under {PEAK_GIB} GiB free: builds may fail with 'no space left on device'")
    return lines
