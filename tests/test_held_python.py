"""Sets resolved against what their base's Python holds (issue 49, item 4): ``pip install``
without ``-U`` keeps an installed version that satisfies the requirement, so the lock keeps
it too (assembler.pipeline.lock.heldpython, assembler.python.held), read from the base's layers
(an ``oci:`` base) or from the facts of an upstream image this machine cannot reach; a set
with ``upgrade: true`` moves its own requirements, as ``-U`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assembler.manifest.facts.basepython import Held
from assembler.manifest.lock.file import EnvEntry, Lock, read_lock, write_lock
from assembler.manifest.schema.pysets import PythonSet
from assembler.manifest.schema.setuses import SetUse
from assembler.pipeline.lock.heldpython import _SYSTEM, held_python
from assembler.python.held import preferences, preferred_text
from tests import yaml_helper
from tests.helpers import run_cli


def _use(where: str = "layers.deps:deps", **fields: object) -> SetUse:
    pyset = PythonSet(**{"requirements": ["transformers", "numpy"], "python": "3.12", **fields})  # type: ignore[arg-type]
    return SetUse(where, pyset, {}, "k", "e")


def test_what_the_base_holds_is_preferred_unless_a_set_moves_it() -> None:
    held = Held("lmsysorg/sglang:v0.4.5-rocm630", {"numpy": "1.26.4", "Transformers": "4.51.0"}, "facts")
    assert preferences(held, [_use()]) == {"numpy": "1.26.4", "transformers": "4.51.0"}
    upgraded = _use("layers.up:up", requirements=["transformers>=4.50"], upgrade=True)
    assert preferences(held, [_use(), upgraded]) == {"numpy": "1.26.4"}  # pip install -U transformers
    forced = _use("layers.f:f", requirements=["numpy==2.0.0"], force=True)
    assert preferences(held, [_use(), forced]) == {"transformers": "4.51.0"}
    assert preferences(None, [_use()]) == {}
    # the base's versions first, then what the lock had for other names (never both for one)
    text = preferred_text({"numpy": "1.26.4"}, "numpy==2.2.6\nrequests==2.32.3\n")
    assert text == "numpy==1.26.4\nrequests==2.32.3\n"


def test_upgrade_is_part_of_a_sets_definition_only_when_set() -> None:
    plain = PythonSet(requirements=["x"], python="3.12")
    assert "upgrade" not in plain.definition("linux/amd64")  # locks written before stay current
    assert PythonSet(requirements=["x"], python="3.12", upgrade=True).definition("linux/amd64")["upgrade"] is True


def test_the_system_pythons_folders_are_told_from_a_venvs() -> None:
    assert _SYSTEM.match("/usr/lib/python3/dist-packages") is not None
    found = _SYSTEM.match("/usr/local/lib/python3.12/dist-packages")
    assert found is not None and found.group(1) == "3.12"
    assert _SYSTEM.match("/opt/venv/lib/python3.12/site-packages") is None
    assert _SYSTEM.match("/usr/lib/python3.11/site-packages") is not None


def test_a_lock_says_what_of_the_base_it_kept(tmp_path: Path) -> None:
    lock = Lock("m.yaml")
    held = ("from: read from the layers of oci:base:latest", "numpy==1.24.2")
    lock.environments["k"] = EnvEntry({"python": "3.11"}, "2023-06-30T23:59:59Z", held=held)
    from assembler.manifest.schema.setuses import set_key

    key = set_key({"python": "3.11"})
    lock.environments = {key: lock.environments["k"]}
    write_lock(tmp_path / "m.lock", lock)
    assert read_lock(tmp_path / "m.lock").environments[key].held == held


def test_an_upstream_base_is_held_from_the_facts(tmp_path: Path) -> None:
    from assembler.manifest.load.manifest import load_manifest

    (tmp_path / "m.yaml").write_text(
        yaml_helper.dump(
            {
                "name": "x",
                "bases": {"b": "docker://lmsysorg/sglang:v0.4.5-rocm630"},
                "image": {
                    "base": "b",
                    "layers": [{"name": "deps", "run": ["pip install transformers"], "python_sets": [_set()]}],
                },
            }
        )
    )
    manifest = load_manifest(tmp_path / "m.yaml").manifest
    uses = [_use()]
    found = held_python(manifest, tmp_path, uses, platform="linux/amd64")
    assert found is not None and found.python["transformers"] == "4.51.0" and "Dockerfile.rocm" in found.source
    venv = [_use(environment="/opt/venv")]
    assert held_python(manifest, tmp_path, venv, platform="linux/amd64") is None


def _set(**fields: object) -> dict[str, object]:
    return {"requirements": ["transformers"], "python": "3.12", **fields}


# -- on a base this project built, read from its layers ------------------------------------

BASE = """\
name: held-base
bases: {devel: "oci:%s:latest"}
image:
  base: devel
  layers:
    - packages: [python3-numpy]          # Debian's NumPy 1.24.2
    - name: transformers
      run: ["pip install --break-system-packages transformers==4.46.3"]
"""

VERSIONS = "import cv2, numpy, transformers; print(cv2.__version__, numpy.__version__, transformers.__version__)"
# what vLLM 0.6.3 imports (transformers 5 removed it): read from the source, as torch is not in the image
CLIP = (
    "import importlib.util as u, pathlib as p; "
    "f = p.Path(u.find_spec('transformers').origin).parent / 'models/clip/modeling_clip.py'; "
    "print('class CLIPSdpaAttention' in f.read_text())"
)
APP = f"""\
name: held-app
bases: {{b: "oci:base:latest"}}
image:
  base: b
  layers:
    - name: cv
      run: ["pip install --break-system-packages opencv-python-headless==4.8.0.74 'transformers>=4.45.2'"]
      python_sets:
        - {{requirements: [opencv-python-headless==4.8.0.74, "transformers>=4.45.2"], python: "3.11"}}
tests:
  - name: cv2
    command: [python3, -c, {json.dumps(VERSIONS)}]
    output: ['^4\\.8\\.0 1\\.24\\.2 4\\.46\\.3$']
  - name: clip
    command: [python3, -c, {json.dumps(CLIP)}]
    output: ['^True$']
"""


@pytest.mark.integration  # PyPI: uv's resolution, and the wheels installed
def test_a_set_keeps_what_its_base_holds_and_the_image_imports_cv2(demo_bases: dict[str, Path], tmp_path: Path) -> None:
    """Debian's NumPy 1.24.2 and a pip-installed transformers 4.46.3 in the base: a set of
    opencv-python-headless 4.8.0.74 (built against NumPy 1.x) and ``transformers>=4.45.2``
    (vLLM 0.6.3's) keeps both, where resolved as if the base were empty it pinned the
    newest NumPy of the date, and no transformers at all could be had as of opencv's date."""
    (tmp_path / "base.yaml").write_text(BASE % demo_bases["devel"])
    ran = run_cli(["base.yaml", "--cache", "cache", "-o", "oci:base:latest", "-q"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    (tmp_path / "app.yaml").write_text(APP)
    ran = run_cli(["lock", "app.yaml"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    lock = read_lock(tmp_path / "app.lock")
    pins = next(iter(lock.sets.values())).constraints()
    assert pins["numpy"] == "numpy==1.24.2" and pins["transformers"] == "transformers==4.46.3", pins
    (env,) = lock.environments.values()
    assert env.held[0] == "from: read from the layers of oci:base:latest" and "numpy==1.24.2" in env.held
    ran = run_cli(["app.yaml", "--cache", "cache", "-o", "oci:app:latest", "--locked"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    assert "test cv2: passed" in ran.err and "test clip: passed" in ran.err, ran.err
