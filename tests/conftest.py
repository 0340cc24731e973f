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

ROOT = Path(__file__).resolve().parent.parent
TEST_CACHE = Path(os.environ.get("ASSEMBLE_TEST_CACHE", "/var/tmp/assemble-test-cache"))


@pytest.fixture()
def http_folder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on 127.0.0.1 serving a fresh folder: (the URL prefix, the folder)."""
    from tests.helpers import serving_folder

    folder = tmp_path / "www"
    folder.mkdir()
    with serving_folder(folder) as url:
        yield url, folder


pytest_plugins = ["tests.plugins.registry", "tests.plugins.demo", "tests.plugins.slurm", "tests.plugins.user"]

# Test tiers. ``unit``: modules that run no container, registry or other outside tool and
# take seconds: what ``scripts/test --fast`` runs before every commit (under two minutes
# with the linters). Every other module is ``integration``: the real buildah,
# docker-registry, skopeo, umoci, Apptainer, Slurm, or plans of every shipped manifest and
# target (test_manifests, test_params_coupled: tens of seconds each); ``slow`` marks the
# multi-minute tests. A module moves to ``unit`` by being named here.
UNIT_MODULES = frozenset(
    {
        "test_archive.py",
        "test_baseblobs.py",
        "test_cache_trust_checks.py",
        "test_audit_dynamo.py",
        "test_audit_llamads.py",
        "test_audit_tgi.py",
        "test_audit_verl.py",
        "test_audit_vllm.py",
        "test_cachedir.py",
        "test_doctor.py",
        "test_chunked.py",
        "test_chunks.py",
        "test_components.py",
        "test_copy_cache.py",
        "test_coverage.py",
        "test_driver.py",
        "test_facts.py",
        "test_hygiene.py",
        "test_labels.py",
        "test_layout.py",
        "test_messages.py",
        "test_outputs_safety.py",
        "test_preflight.py",
        "test_proc.py",
        "test_registries_conf.py",
        "test_registry_login.py",
        "test_retry.py",
        "test_sbom_packages.py",
        "test_schema.py",
        "test_sign_keys.py",
        "test_sources.py",
        "test_spec.py",
        "test_testspec.py",
        "test_unreachable.py",
        "test_untar.py",
        "test_view.py",
        "test_wheel.py",
        "test_worktree.py",
    }
)


# The modules that take longest (worker-seconds measured on 2 cores, warm test cache), longest
# first; the others follow. llama.cpp's leads: with an empty test cache it compiles
# llama.cpp and upstream's Dockerfile for real (about 36 minutes).
LONGEST_FIRST = {
    name: rank
    for rank, name in enumerate(
        (
            "test_upstream_llamacpp.py",  # 137 s warm
            "test_compile.py",  # 361
            "test_sif.py",  # 205
            "test_image.py",  # 196
            "test_registry_cache.py",  # 168
            "test_slurm.py",  # 160
            "test_chunked_tools.py",  # 150 (a Debian base written three times, podman pulls)
            "test_manifest_verl.py",  # 116
            "test_variants.py",  # 116
            "test_lock.py",  # 108
            "test_sif_publish.py",  # 96
            "test_reproducible.py",  # 85
            "test_enroot.py",  # 72
            "test_cache_cli.py",  # 56
            "test_progress.py",  # 50
            "test_remote.py",  # 43
            "test_cache_buildah.py",  # 41
            "test_manifest_llamacpp.py",  # 40
            "test_prebuilt.py",  # 39
            "test_jobs.py",  # 35
            "test_packaging.py",  # 31
            "test_cache_trust.py",
            "test_compile_cache_build.py",
            "test_deps.py",
            "test_lazy_base.py",
        )
    )
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = UNIT_MODULES - {p.name for p in Path(__file__).parent.glob("test_*.py")}
    if missing:
        raise pytest.UsageError(f"tests/conftest.py UNIT_MODULES names modules that are gone: {sorted(missing)}")
    for item in items:
        item.add_marker("unit" if item.path.name in UNIT_MODULES else "integration")
    # The longest modules first: scripts/test runs the suite on three workers, a module each
    # (xdist's loadfile), and a long module started last would run alone at the end.
    items.sort(key=lambda item: LONGEST_FIRST.get(item.path.name, len(LONGEST_FIRST)))


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

    out = TEST_CACHE / "bases"
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
                    "--cache",
                    str(TEST_CACHE / "bases-cache"),
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
