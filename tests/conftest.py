"""Shared fixtures: bases are made once per run (mmdebstrap) and shared by every test.

``ASSEMBLE_TEST_CACHE`` (default ``/var/tmp/assemble-test-cache``) keeps the bootstrapped
root filesystems between runs on a developer machine; CI starts empty and makes them
once. Nothing here skips a test when a tool is missing: CI installs every tool, and a
missing one must fail loudly.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from assembler.debian.bootstrap import FORMAT as BOOTSTRAP_FORMAT

ROOT = Path(__file__).resolve().parent.parent
TEST_CACHE = Path(os.environ.get("ASSEMBLE_TEST_CACHE", "/var/tmp/assemble-test-cache"))
# Bases assemble bootstrapped for the tests, kept across runs: named by the bootstrap's
# format, so that bases an older assemble made (other bytes) are not taken for today's.
TEST_BASES = TEST_CACHE / f"bases-v{BOOTSTRAP_FORMAT}"
# The cache the bases are bootstrapped through, kept between runs: a budget, so that a
# machine CI reuses for months does not keep every generation of them (its default is
# 10% of the disk).
BASES_CACHE = ["--cache", str(TEST_CACHE / "bases-cache"), "--cache-max-size", "3G"]


@pytest.fixture()
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on 127.0.0.1 serving a fresh folder: (the URL prefix, the folder)."""
    from tests.helpers import serving_folder

    folder = tmp_path / "www"
    folder.mkdir()
    with serving_folder(folder) as url:
        yield url, folder


pytest_plugins = [
    "tests.plugins.disk",
    "tests.plugins.registry",
    "tests.plugins.demo",
    "tests.plugins.slurm",
    "tests.plugins.user",
    "tests.plugins.sigint",
    "tests.plugins.cost",
]

# Test tiers, decided for each test. ``integration``: a test that starts an outside program
# (buildah, docker-registry, skopeo, umoci, mmdebstrap, tar2sqfs, Apptainer, Slurm, uv,
# nvcc, cosign, useradd...) or reaches past this machine (PyPI); and, to keep the fast lane
# under two minutes, the tests marked ``# seconds`` (each took a second or more on the
# loaded 2-core VM). A test is integration when it uses a fixture named in OUTSIDE_FIXTURES
# (directly or through another fixture) or in its module's own ``OUTSIDE_FIXTURES`` (module
# fixtures that run such a program), or is marked ``@pytest.mark.integration`` (a whole
# module: ``pytestmark``; a comment says why), as a test that does one of those itself must
# be; ``slow`` (the multi-minute tests) implies it. ``unit``: every other test, what
# ``scripts/test --fast`` runs before every commit (under two minutes with the linters).
# Small system programs (sh, tar, git, ldconfig, openssl: scripts/unit-sandbox lists them)
# and the fakes a test writes do not count. scripts/test --fast enforces it: the unit tier
# runs in scripts/unit-sandbox, with only those programs on PATH and no network (loopback
# only), so a unit test that reaches for more fails there.
OUTSIDE_FIXTURES = frozenset(
    {
        "registry",  # docker-registry (tests/plugins/registry.py)
        "auth_registry",
        "fault_proxy",
        "debian_rootfs",  # mmdebstrap
        "demo_bases",  # assemble builds the bases: mmdebstrap, buildah
        "demo",  # the demo built cold (tests/plugins/demo.py)
        "slurm_cluster",  # mariadb, slurmdbd, slurmctld, slurmd (tests/plugins/slurm.py)
        "user",  # useradd, setpriv (tests/plugins/user.py)
    }
)


def tier(item: pytest.Item) -> str:
    """``integration`` or ``unit`` for one test (see OUTSIDE_FIXTURES)."""
    if item.get_closest_marker("integration") or item.get_closest_marker("slow"):
        return "integration"
    module = getattr(item, "module", None)
    own = getattr(module, "OUTSIDE_FIXTURES", frozenset())
    if unknown := sorted(own - set(dir(module))):
        raise pytest.UsageError(f"{item.path.name}: OUTSIDE_FIXTURES names no fixture of it: {unknown}")
    used = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    if callspec is not None:  # a parametrize argument is no fixture (the suite has no indirect ones)
        used -= set(callspec.params)
    return "integration" if used & (OUTSIDE_FIXTURES | own) else "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(tier(item))
    # The longest modules first, by the suite's own record of each module's worker-seconds
    # (tests/plugins/cost.py): scripts/test runs the suite on three workers, a module each
    # (xdist's loadfile), and a long module started last would run alone at the end.
    from tests.plugins.cost import order  # it reads TEST_CACHE from here

    rank = {name: i for i, name in enumerate(order(sorted({item.path.name for item in items})))}
    items.sort(key=lambda item: rank[item.path.name])


# Modules with a failed test or fixture: their work folders stay for a post-mortem.
_FAILED_MODULES: set[str] = set()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        _FAILED_MODULES.add(item.nodeid.split("::")[0])
    return report


def reclaim_at_teardown(request: pytest.FixtureRequest, *paths: Path) -> None:
    """Remove ``paths`` when the fixture's scope ends, unless a test of its module failed.

    The suite moves tens of GiB (real builds, 2 GiB layers); pytest's own retention drops a
    passed test's ``tmp_path`` at once but keeps module fixtures' folders to the session's
    end, which on a small disk is the difference between passing and ENOSPC."""
    module = request.node.nodeid.split("::")[0]

    def reclaim() -> None:
        if module not in _FAILED_MODULES:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)

    request.addfinalizer(reclaim)


def _locked_build(target: Path, argv: list[str], env: dict[str, str] | None = None) -> Path:
    """Run ``argv`` (which writes ``target``) once, even with parallel test processes."""
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            # mmdebstrap picks its output format from the extension: keep ".tar" last.
            tmp = target.with_name(".tmp-" + target.name)
            tmp.unlink(missing_ok=True)
            subprocess.run(
                [*argv[:-1], str(tmp)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, **(env or {})},
            )
            os.replace(tmp, target)
    return target


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    """A Debian bookworm minbase root filesystem tarball (mmdebstrap), made once."""
    target = TEST_CACHE / "bookworm-minbase.tar"
    # mmdebstrap's own epoch, given to it alone: changing this process's environment here
    # would change the epoch of every build a later test runs.
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "1700000000")
    argv = ["mmdebstrap", "--variant=minbase", "--quiet", "bookworm", str(target)]
    return _locked_build(target, argv, env={"SOURCE_DATE_EPOCH": epoch})


@pytest.fixture(scope="session", autouse=True)
def shared_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One buildah storage for every build of this test process that does not name its own
    (``$ASSEMBLE_STORAGE``, as a node-local ``--storage`` shared by a user's caches): each
    base is pulled and each toolchain installed once per worker, not once per test. Tests
    of the cache's own storage (prune, secrets in it, an interrupted build leaving it
    deletable) set ``ASSEMBLE_STORAGE=`` for their builds."""
    path = tmp_path_factory.getbasetemp() / "buildah-storage"
    os.environ["ASSEMBLE_STORAGE"] = str(path)
    yield path
    os.environ.pop("ASSEMBLE_STORAGE", None)
    if (path / "root").exists():
        g = ["buildah", "--root", str(path / "root"), "--runroot", str(path / "run"), "--storage-driver", "overlay"]
        subprocess.run([*g, "rm", "--all"], capture_output=True)  # unmounts what a container left mounted
    # Its files (every base and toolchain, hundreds of thousands) go in a process of their own
    # that outlives this one: deleting them here kept each worker 15-17 s after its last test.
    subprocess.Popen(
        ["rm", "-rf", str(path)], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


OWN_STORAGE = {"ASSEMBLE_STORAGE": ""}  # a build's env: buildah's storage in its cache (CACHE/buildah)


@pytest.fixture()
def assemble_cli() -> list[str]:
    """argv prefix to run the CLI in a subprocess (as a user would)."""
    return [sys.executable, "-m", "assembler"]


@pytest.fixture()
def clean_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with a private XDG cache, for CLI subprocesses."""
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg-cache")
    yield env


@pytest.fixture(scope="session")
def demo_bases() -> dict[str, Path]:
    """The demo manifest's bases (plus a second runtime base), bootstrapped once by assemble
    itself and exported as OCI layouts every user can read: ``--base NAME=oci:...``."""
    from tests import yaml_helper

    out = TEST_BASES
    demo = yaml_helper.load(ROOT / "manifests" / "demo.yaml")
    specs = {
        "devel": demo["bases"]["devel"]["bootstrap"],
        "runtime": demo["bases"]["runtime"]["bootstrap"],
        # Another runtime base (one more package): changing the runtime base must rebuild no compile step.
        "runtime-alt": {**demo["bases"]["runtime"]["bootstrap"], "packages": ["less"]},
    }
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    paths = {}
    with open(TEST_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, spec in specs.items():
            layout = out / name
            paths[name] = layout
            if (layout / "index.json").exists():
                continue
            work = TEST_CACHE / f"base-{name}"
            work.mkdir(parents=True, exist_ok=True)
            (work / "base.yaml").write_text(
                yaml_helper.dump(
                    {
                        "name": f"base-{name}",
                        "bases": {"b": {"bootstrap": spec}},
                        "image": {"base": "b"},
                    }
                )
            )
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "assembler",
                    "base.yaml",
                    *BASES_CACHE,
                    "-o",
                    f"oci:{layout}:latest",
                ],
                cwd=work,
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"bootstrapping {name} failed:\n{proc.stderr}")
        subprocess.run(["chmod", "-R", "a+rX", str(out)], check=True)
    return paths
