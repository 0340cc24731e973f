"""The package as a user gets it: an sdist, a wheel built from it, installed into a fresh
venv outside the checkout. The recipes of ``layers/`` must come with it, and a manifest
anywhere must find them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.plugins.user import User

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
        "from assembler.manifest.load.recipes import packaged_recipes; print(packaged_recipes())",
        cwd=tmp_path,
    ).stdout.strip()
    shipped = Path(where)
    assert shipped.is_relative_to(venv) and shipped.name == "recipes", where
    assert sorted(p.name for p in shipped.glob("*.yaml")) == sorted(p.name for p in (ROOT / "layers").glob("*.yaml"))
    for recipe in shipped.glob("*.yaml"):
        assert recipe.read_bytes() == (ROOT / "layers" / recipe.name).read_bytes()
    # and the facts a plan checks combinations against (assembler/manifest/facts/*.json)
    facts = shipped.parent / "spec" / "facts"
    assert sorted(p.name for p in facts.glob("*.json")) == sorted(
        p.name for p in (ROOT / "assembler" / "spec" / "facts").glob("*.json")
    )

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


@pytest.mark.slow
def test_uv_tool_install_gives_a_working_assemble_on_path(tmp_path: Path) -> None:
    """A fresh clone installed as a tool (``uv tool install .``, into a tool folder of the
    test's, under nice): ``assemble`` on PATH with nothing else, its recipes and facts with
    it, and ``assemble doctor`` naming the programs it drives."""
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=_NOT_SHIPPED, symlinks=True)
    tools, bin_dir = tmp_path / "tools", tmp_path / "bin"
    uv = Path(sys.executable).parent / "uv"  # a dependency of assemble: in its venv
    env = {
        **os.environ,
        "UV_TOOL_DIR": str(tools),
        "UV_TOOL_BIN_DIR": str(bin_dir),
        "UV_NATIVE_TLS": "1",  # the system's trust store, as assemble's own downloads
    }
    python = sys.base_prefix + "/bin/python3"
    installed = subprocess.run(
        ["nice", "-n", "10", str(uv), "tool", "install", "--python", python, str(checkout)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    shutil.rmtree(checkout)  # nothing may come from the clone any more

    # Only the tool's folder and the system's on PATH: no .venv, no checkout.
    path = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    clean = {"PATH": path, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "xdg"), "LANG": "C.UTF-8"}
    work = tmp_path / "work"
    work.mkdir()

    def assemble(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["assemble", *args], cwd=work, env=clean, capture_output=True, text=True, timeout=120)

    from assembler import __version__

    version = assemble("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"assemble {__version__}", version
    doctor = assemble("doctor", "--json")
    assert doctor.returncode == 0, doctor
    report = json.loads(doctor.stdout)
    assert Path(report["python"]).is_relative_to(tools) and Path(report["uv"]).is_relative_to(tools), report
    found = {t["command"]: t for t in report["tools"]}
    assert found["buildah"]["path"] and found["buildah"]["version"] and found["buildah"]["needed"], found["buildah"]
    assert {"mmdebstrap", "tar2sqfs", "umoci", "git"} <= set(found)
    text = assemble("doctor")
    assert text.returncode == 0 and f"ok       buildah          {found['buildah']['version']}" in text.stdout, text

    shutil.copy(ROOT / "manifests" / "llamacpp.yaml", work)  # a recipe (use:) from the tool's own
    planned = assemble("plan", "llamacpp.yaml", "--set", "backend=cpu")
    assert planned.returncode == 0 and "compile  llama" in planned.stdout, planned


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="installs for every user, as root does on a login node")
def test_a_shared_install_runs_for_every_user(tmp_path: Path, user: User) -> None:
    """``scripts/install-shared`` as root runs it on a login node (issue 67): a venv outside
    any home, readable by all, ``assemble`` linked into a bin folder; an unprivileged user
    runs it, with nothing of the clone left. A PREFIX below a folder other users cannot
    enter (root's home, pytest's 0700 temp folder) is refused before anything is made."""
    from assembler import __version__

    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=_NOT_SHIPPED, symlinks=True)
    script = checkout / "scripts" / "install-shared"
    shared = Path(tempfile.mkdtemp(prefix="assemble-shared-", dir="/var/tmp"))
    try:
        os.chmod(shared, 0o755)
        refused = subprocess.run([script, tmp_path / "venv", shared / "bin"], capture_output=True, text=True)
        assert refused.returncode == 2 and "lets no other user through" in refused.stderr, refused.stderr
        assert not (tmp_path / "venv").exists() and not (shared / "bin").exists()
        _run("nice", "-n", "10", script, shared / "opt" / "assemble", shared / "bin", cwd=tmp_path, timeout=900)
        shutil.rmtree(checkout)
        # the user's own environment: no PYTHONPATH naming the checkout the suite runs from
        ran = user.run(["env", "-u", "PYTHONPATH", str(shared / "bin" / "assemble"), "--version"], cwd=user.home)
        assert (ran.returncode, ran.stdout.strip()) == (0, f"assemble {__version__}"), ran.stderr
        doctor = user.run(["env", "-u", "PYTHONPATH", str(shared / "bin" / "assemble"), "doctor", "--json"], user.home)
        assert Path(json.loads(doctor.stdout)["python"]).is_relative_to(shared / "opt"), doctor.stdout
    finally:
        shutil.rmtree(shared)
