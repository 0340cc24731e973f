"""The package as a user gets it: an sdist, a wheel built from it, installed into a fresh
venv outside the checkout. The recipes of ``layers/`` must come with it, and a manifest
anywhere must find them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_NOT_SHIPPED = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "demo-out", "out"
)


def _run(*argv: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_an_installed_wheel_ships_the_recipes(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=_NOT_SHIPPED, symlinks=True)
    sdist = _run(
        sys.executable,
        "-c",
        "from setuptools import build_meta; print(build_meta.build_sdist('../dist'))",
        cwd=checkout,
    ).stdout.split()[-1]
    # The wheel from the sdist, as pip builds one from PyPI: layers/ must be in the sdist.
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", "wheels", f"dist/{sdist}", cwd=tmp_path)
    (wheel,) = (tmp_path / "wheels").glob("assemble-*.whl")
    shutil.rmtree(checkout)
    venv = tmp_path / "venv"
    _run(sys.base_prefix + "/bin/python3", "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel, cwd=tmp_path)

    where = _run(
        venv / "bin/python",
        "-c",
        "from assembler.spec.recipes import packaged_recipes; print(packaged_recipes())",
        cwd=tmp_path,
    ).stdout.strip()
    shipped = Path(where)
    assert shipped.is_relative_to(venv) and shipped.name == "recipes", where
    assert sorted(p.name for p in shipped.glob("*.yaml")) == sorted(p.name for p in (ROOT / "layers").glob("*.yaml"))
    for recipe in shipped.glob("*.yaml"):
        assert recipe.read_bytes() == (ROOT / "layers" / recipe.name).read_bytes()

    # A manifest far from any checkout, using a recipe, with no search path set.
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "manifests" / "llamacpp.yaml", work)
    env_cmd = ["env", "-u", "ASSEMBLE_RECIPES", f"XDG_CACHE_HOME={tmp_path / 'xdg'}"]
    planned = _run(*env_cmd, venv / "bin/assemble", "plan", "llamacpp.yaml", "--set", "backend=cpu", cwd=work)
    assert "compile  llama" in planned.stdout, planned.stdout
    work.joinpath("m.yaml").write_text(
        "name: m\nbases: {devel: scratch, runtime: scratch}\n"
        "compile:\n  - name: s\n    use: no-such-recipe\n    base: devel\n"
        "image:\n  base: runtime\n  layers: [{artifact: s.wheel}]\n"
    )
    argv = [*env_cmd, str(venv / "bin/assemble"), "plan", "m.yaml"]
    unknown = subprocess.run(argv, cwd=work, capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown recipe 'no-such-recipe'" in unknown.stderr, unknown.stderr
    assert str(shipped) in unknown.stderr and "ASSEMBLE_RECIPES" in unknown.stderr, unknown.stderr
