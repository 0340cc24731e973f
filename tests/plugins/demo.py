"""The demo manifest built cold once per test session (``demo``), for every module that
needs it: the compile pipeline's tests and the reproducibility test, which builds it once
more into an empty cache and compares. CI thus builds the demo cold twice, not once per module.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, Ran, run_cli


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


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_bases: dict[str, Path]) -> Iterator[Demo]:
    project = tmp_path_factory.mktemp("demo")
    manifest, cold, seconds = build_cold(project, demo_bases)
    yield Demo(project, manifest, project / "cache", demo_bases, cold, seconds)
