"""The demo manifest built cold once per machine and its inputs (``demo``), for every module
that needs it: the compile pipeline's tests, the plan's, the SBOM's, Enroot's, Slurm's.

The cold build is made under the test cache's lock into ``TEST_CACHE/demo-KEY`` (kept.py; KEY: the
digest of what decides its bytes: assemble's own code, the demo's manifest, recipes and
sources, the bases, buildah, Python), and each test process takes a copy of that folder
(project, cache, outputs, the cold build's report): the suite's three workers and the
next run on the same machine build nothing, where each worker built it cold before (three
to four cold builds a run). A change to any of those inputs builds it again, once. The
tests whose subject is a cold build build their own: the reproducibility test (a second
cache, compared), the unprivileged user's and the registry cache's exporting machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, Ran, run_cli
from tests.plugins.kept import inputs_key, kept


def copy_project(dest: Path) -> Path:
    """The demo manifest with its recipes and example sources, in a folder of the test's own."""
    for part in ("manifests", "layers", "examples"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("target", "build", "__pycache__"))
    return dest / "manifests" / "demo.yaml"


def base_args(bases: dict[str, Path], runtime: str = "runtime") -> list[str]:
    return ["--base", f"devel=oci:{bases['devel']}:latest", "--base", f"runtime=oci:{bases[runtime]}:latest"]


def steps_by_state(ran: Ran) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for step in ran.json["steps"]:
        out.setdefault(step["state"], set()).add(step["name"])
    return out


@dataclass
class Demo:
    project: Path
    manifest: Path
    cache: Path
    bases: dict[str, Path]
    cold: Ran
    cold_seconds: float

    def build(self, *extra: str, runtime: str = "runtime", env: dict[str, str] | None = None) -> Ran:
        args = [
            str(self.manifest),
            "--cache",
            str(self.cache),
            "--json",
            *base_args(self.bases, runtime),
            "-o",
            "oci:out/demo:latest",
            *extra,
        ]
        ran = run_cli(args, cwd=self.project, env=env)
        assert ran.code == 0, str(ran)
        return ran


def build_cold(project: Path, bases: dict[str, Path]) -> tuple[Path, Ran, float]:
    """The demo copied into ``project`` and built there into an empty cache (``project/cache``),
    written to ``out/demo:latest`` (which later builds replace) and ``out/cold:latest``."""
    manifest = copy_project(project)
    started = time.monotonic()
    args = [
        str(manifest),
        "--cache",
        str(project / "cache"),
        "--json",
        *base_args(bases),
        "-o",
        "oci:out/demo:latest",
        "-o",
        "oci:out/cold:latest",
    ]
    cold = run_cli(args, cwd=project)
    assert cold.code == 0, str(cold)
    return manifest, cold, time.monotonic() - started


def demo_key(bases: dict[str, Path]) -> str:
    """The digest of what decides the demo's cold build: assemble's code, the demo's
    manifest, recipes and sources (as :func:`copy_project` copies them), the bases, buildah
    and Python."""
    return inputs_key(
        ("assembler", "manifests", "layers", "examples"),
        *(f"{name}\0".encode() + (bases[name] / "index.json").read_bytes() for name in sorted(bases)),
    )


def _kept_cold(bases: dict[str, Path]) -> Path:
    """The folder of the demo's cold build for these inputs (tests/plugins/kept.py)."""

    def make(tmp: Path) -> None:
        _, cold, seconds = build_cold(tmp, bases)
        (tmp / "cold.json").write_text(json.dumps({"ran": asdict(cold), "seconds": seconds}))

    return kept("demo", demo_key(bases), make, done="cold.json")


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_bases: dict[str, Path]) -> Iterator[Demo]:
    """The demo built cold (once per machine and inputs), copied into this process's own
    folder: its tests edit sources and build again there."""
    kept = _kept_cold(demo_bases)
    project = tmp_path_factory.mktemp("demo")
    subprocess.run(["cp", "-a", "--reflink=auto", f"{kept}/.", str(project)], check=True)
    report = json.loads((project / "cold.json").read_text())
    cold = Ran(**report["ran"])
    yield Demo(project, project / "manifests" / "demo.yaml", project / "cache", demo_bases, cold, report["seconds"])
