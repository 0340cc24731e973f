"""Labels from facts (assembler.pipeline.image.labels, assembler.manifest.load.labelfacts): versions from
the base's own config, ``${bases...}`` and ``${steps...}`` placeholders, refused when they
name nothing. Tiny images built from files (no container), their configs read back; the
CLI runs in this process (``run_cli_here``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import config_of, run_cli_here
from tests.helpers import run_cli_here as run_cli

BASE = """\
name: nvbase
bases: {nothing: scratch}
image:
  base: nothing
  layers:
    - copy: {from: ./hello.txt, to: /etc/hello.txt}
  config:
    env: {CUDA_VERSION: 12.4.0, NVARCH: x86_64}
    labels: {maintainer: NVIDIA CORPORATION, com.example.driver: "550"}
outputs: ['oci:base:latest']
"""

IMAGE = """\
name: onbase
params: {cuda_version: 12.4.1, rocm_version: "6.2"}
bases:
  runtime: oci:base:latest
  other: oci:base:latest
image:
  base: runtime
  layers:
    - copy: {from: ./hello.txt, to: /app/hello.txt}
  config:
    labels:
      com.example.cuda: ${bases.runtime.env.CUDA_VERSION}
      com.example.driver: ${bases.other.labels.com.example.driver}
      com.example.absent: ${bases.runtime.env.NOT_THERE}
annotations:
  com.example.maintainer: ${bases.runtime.labels.maintainer}
outputs: ['oci:out:latest']
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "image.yaml").write_text(IMAGE)
    ran = run_cli([str(tmp_path / "base.yaml"), "--cache", str(tmp_path / "cache")], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    return tmp_path / "image.yaml"


def _labels(ran_json: dict[str, Any], folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    cfg = config_of(folder / "out", "latest")
    index = json.loads((folder / "out/index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((folder / "out/blobs/sha256" / digest).read_text())
    assert ran_json["digest"] == index["manifests"][0]["digest"]
    return cfg["config"].get("Labels") or {}, manifest["annotations"]


def test_versions_and_placeholders_come_from_the_base(tmp_path: Path) -> None:
    manifest = _project(tmp_path)
    ran = run_cli([str(manifest), "--cache", str(tmp_path / "cache"), "--json"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    labels, notes = _labels(ran.json, tmp_path)
    # The base's CUDA_VERSION, not the param (12.4.1: the devel image's, say); no ROCm
    # version: the base does not say one and its reference names none.
    assert labels["io.assemble.gpu.cuda.version"] == "12.4.0"
    assert "io.assemble.gpu.rocm.version" not in labels
    assert labels["com.example.cuda"] == "12.4.0"
    assert labels["com.example.driver"] == "550"
    assert "com.example.absent" not in labels  # empty: not claimed
    assert notes["com.example.maintainer"] == "NVIDIA CORPORATION"
    assert notes["io.assemble.gpu.cuda.version"] == "12.4.0"
    # A plan knows the base (a local layout): the same values.
    planned = run_cli_here(["plan", str(manifest), "--cache", str(tmp_path / "cache"), "--json"], cwd=tmp_path)
    assert planned.code == 0, str(planned)
    assert {k: v for k, v in planned.json["config"]["Labels"].items() if k.startswith("com.")} == {
        "com.example.cuda": "12.4.0",
        "com.example.driver": "550",
    }


def test_a_version_param_the_base_reference_names_labels_the_image(tmp_path: Path) -> None:
    manifest = _project(tmp_path)
    (tmp_path / "base.yaml").write_text(BASE.replace("    env: {CUDA_VERSION: 12.4.0, NVARCH: x86_64}\n", ""))
    ran = run_cli(
        [
            str(tmp_path / "base.yaml"),
            "--cache",
            str(tmp_path / "cache"),
            "-o",
            "oci:base:rocm6.2-cuda12.4.1",
            "-o",
            "oci:base:latest",
        ],
        cwd=tmp_path,
    )
    assert ran.code == 0, str(ran)
    named = manifest.read_text().replace("runtime: oci:base:latest", "runtime: oci:base:rocm6.2-cuda12.4.1")
    manifest.write_text(named)
    ran = run_cli([str(manifest), "--cache", str(tmp_path / "cache"), "--json"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    labels, _ = _labels(ran.json, tmp_path)
    assert (labels["io.assemble.gpu.cuda.version"], labels["io.assemble.gpu.rocm.version"]) == ("12.4.1", "6.2")
    assert "com.example.cuda" not in labels  # the base has no CUDA_VERSION now
    # --base with a reference that names neither: neither is claimed.
    ran = run_cli(
        [str(manifest), "--cache", str(tmp_path / "cache"), "--json", "--base", "runtime=oci:base:latest"], cwd=tmp_path
    )
    assert ran.code == 0, str(ran)
    labels, _ = _labels(ran.json, tmp_path)
    assert not {k for k in labels if k.endswith(".version")}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${steps.nope.cuda_archs}", "unknown compile step 'nope' in ${steps.nope...}"),
        ("${steps.nope.archs}", "expected ${steps.NAME.FIELD} with FIELD one of cuda_archs, rocm_archs"),
        ("${bases.nope.env.X}", "unknown base 'nope' in ${bases.nope...}"),
        ("${bases.runtime.config.X}", "expected ${bases.NAME.env.KEY} or ${bases.NAME.labels.KEY}"),
    ],
)
def test_a_placeholder_naming_nothing_is_refused_with_its_line(tmp_path: Path, value: str, message: str) -> None:
    manifest = _project(tmp_path)
    manifest.write_text(IMAGE.replace("${bases.runtime.env.NOT_THERE}", f"'{value}'"))
    ran = run_cli_here(["plan", str(manifest), "--cache", str(tmp_path / "cache")], cwd=tmp_path)
    assert ran.code == 2, str(ran)
    assert ran.err.startswith(f"error: {manifest}:14: image.config.labels.com.example.absent: "), ran.err
    assert message in ran.err and "Traceback" not in ran.err


def test_step_placeholders_wait_for_the_step_in_a_plan_and_go_in_a_build() -> None:
    from assembler.manifest.load.labelfacts import Facts, expand_all

    values = {"a": "${steps.k.cuda_archs}", "b": "${steps.k.rocm_archs}", "c": "${steps.other.cuda_archs}", "d": ""}
    made = {"k": {"cuda_archs": "sm_80;compute_80", "rocm_archs": ""}}
    # A plan: the step that ran is filled in, the other still to come; empty facts are not claimed.
    assert expand_all(values, Facts(made)) == {"a": "sm_80;compute_80", "c": "${steps.other.cuda_archs}", "d": ""}
    # A build: what it did not make it never will.
    assert expand_all(values, Facts(made, final=True)) == {"a": "sm_80;compute_80", "d": ""}


# -- torch's and Python's versions: read from the image, never the params ---------------------

PY_BASE = """\
name: pybase
bases: {nothing: scratch}
image:
  base: nothing
  layers:
    - copy: {from: ./dynload/, to: /usr/local/lib/python3.12/lib-dynload/}
  config:
    env: {PYTHON_VERSION: 3.12.7}
outputs: ['oci:pybase:latest']
"""

PY_IMAGE = """\
name: onpy
params: {torch_version: 9.9.9, python_version: "3.99"}
bases:
  runtime: oci:pybase:latest
  nothing: scratch
image:
  base: runtime
  layers:
    - copy: {from: ./venv/, to: /opt/venv/}
outputs: ['oci:out:latest']
"""

TORCH_METADATA = (
    "Metadata-Version: 2.1\nName: torch\nVersion: {v}\nSummary: tensors\n\nVersion: 0.0 (the description)\n"
)


def _python_project(tmp_path: Path) -> Path:
    (tmp_path / "dynload").mkdir()
    (tmp_path / "dynload" / "_ssl.so").write_text("not really\n")
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "torch-2.4.1+cu121.dist-info").mkdir(parents=True)
    (site / "torch-2.4.1+cu121.dist-info" / "METADATA").write_text(TORCH_METADATA.format(v="2.4.1+cu121"))
    (site / "torch").mkdir()
    (site / "torch" / "version.py").write_text("__version__ = '2.4.1+cu121'\n")
    (tmp_path / "venv" / "pyvenv.cfg").write_text(
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.9\n"
    )
    (tmp_path / "hello.txt").write_text("hello\n")
    (tmp_path / "base.yaml").write_text(PY_BASE)
    ran = run_cli([str(tmp_path / "base.yaml"), "--cache", str(tmp_path / "cache")], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    (tmp_path / "image.yaml").write_text(PY_IMAGE)
    return tmp_path / "image.yaml"


def _stack(tmp_path: Path, manifest: Path) -> dict[str, str]:
    ran = run_cli([str(manifest), "--cache", str(tmp_path / "cache"), "--json"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    labels, notes = _labels(ran.json, tmp_path)
    out = {
        k.removeprefix("io.assemble."): v for k, v in labels.items() if k.endswith(("torch.version", "python.version"))
    }
    assert out == {k.removeprefix("io.assemble."): v for k, v in notes.items() if k.endswith(".version")}
    return out


def test_torch_and_python_versions_are_read_from_the_image(tmp_path: Path) -> None:
    manifest = _python_project(tmp_path)
    # A plan has no image to read: it shows where the values will come from, not the params.
    ran = run_cli_here(["plan", str(manifest), "--cache", str(tmp_path / "cache"), "--json"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    shown = ran.json["config"]["Labels"]
    assert shown["io.assemble.torch.version"] == "${image.torch_version}"
    assert shown["io.assemble.python.version"] == "${image.python_version}"
    # Built: torch's dist-info, and the venv torch is in (its pyvenv.cfg gives the patch
    # version), not the base's PYTHON_VERSION nor the params (9.9.9, 3.99).
    assert _stack(tmp_path, manifest) == {"torch.version": "2.4.1+cu121", "python.version": "3.11.9"}
    # uv's and virtualenv's pyvenv.cfg say version_info (virtualenv's with .final.0)
    (tmp_path / "venv" / "pyvenv.cfg").write_text(
        "home = /opt/uv/python/bin\nimplementation = CPython\nuv = 0.9.5\nversion_info = 3.11.4.final.0\n"
    )
    assert _stack(tmp_path, manifest) == {"torch.version": "2.4.1+cu121", "python.version": "3.11.4"}

    # No venv, no torch: the base's PYTHON_VERSION; torch is not claimed.
    manifest.write_text(PY_IMAGE.replace("./venv/, to: /opt/venv/", "./hello.txt, to: /app/hello.txt"))
    assert _stack(tmp_path, manifest) == {"python.version": "3.12.7"}

    # On scratch: only the system folder that holds a lib-dynload says 3.10 (major.minor is
    # all it says). Two torch installs of different versions: neither is claimed.
    (tmp_path / "usr" / "lib" / "python3.10" / "lib-dynload").mkdir(parents=True)
    (tmp_path / "usr" / "lib" / "python3.10" / "lib-dynload" / "_ssl.so").write_text("x\n")
    other = tmp_path / "usr" / "lib" / "python3.10" / "dist-packages" / "torch-2.5.0.dist-info"
    other.mkdir(parents=True)
    (other / "METADATA").write_text(TORCH_METADATA.format(v="2.5.0"))
    (tmp_path / "usr" / "lib" / "python3" / "dist-packages").mkdir(parents=True)  # Debian's: no version
    on_scratch = PY_IMAGE.replace("base: runtime", "base: nothing").replace(
        "    - copy: {from: ./venv/, to: /opt/venv/}\n",
        "    - copy: {from: ./usr/, to: /usr/}\n    - copy: {from: ./venv/, to: /srv/venv/}\n",
    )
    (tmp_path / "venv" / "pyvenv.cfg").unlink()  # not a venv now: /srv/venv is no Python the image runs
    manifest.write_text(on_scratch)
    assert _stack(tmp_path, manifest) == {"python.version": "3.10"}

    # Nothing that says: nothing claimed (and no param is shown instead).
    manifest.write_text(
        on_scratch.replace("./usr/, to: /usr/", "./hello.txt, to: /hello.txt").replace(
            "./venv/, to: /srv/venv/", "./dynload/, to: /srv/dynload/"
        )
    )
    assert _stack(tmp_path, manifest) == {}
