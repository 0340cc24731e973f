"""``gpu: {archs: [...]}`` against the torch a manifest pins from PyPI (torch_gpus.json,
written by ``scripts/regen-facts torch-gpus`` from the wheels' own libtorch_python.so): a
wheel without kernels for a named GPU is refused at plan, naming the release that has them."""

from __future__ import annotations

from pathlib import Path

import pytest

from assembler.errors import ManifestError
from assembler.manifest.facts import read
from assembler.manifest.facts.gpus import covers
from assembler.manifest.load.manifest import load_manifest

MANIFEST = """name: gpus
params: {{torch_version: "{torch}"}}
bases: {{b: scratch}}
gpu: {{archs: [{archs}]}}
image:
  base: b
  layers:
    - run: ["pip install torch==${{torch_version}}"]
      name: torch
      python_sets: [{{name: torch, requirements: ["torch==${{torch_version}}"], python: "3.11"{index}}}]
"""


def _load(tmp_path: Path, torch: str, archs: str, index: str = "") -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.format(torch=torch, archs=archs, index=index))
    load_manifest(path)


def test_a_torch_without_kernels_for_a_named_gpu_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as e:
        _load(tmp_path, "2.6.0", "sm_90, sm_120")
    said = e.value.message
    assert "layer torch: python set torch: torch==2.6.0 (torch_version=2.6.0) has no kernels for sm_120" in said
    assert "PyPI's wheel (CUDA 12.4.127) was compiled for sm_50 sm_60 sm_70 sm_75 sm_80 sm_86 sm_90" in said
    assert "the first release that runs on sm_120: torch 2.8.0 (CUDA 12.8.90)" in said, said
    assert e.value.hint == "--set torch_version to 2.8.0" and e.value.line == 10
    _load(tmp_path, "2.8.0", "sm_90, sm_120")  # the release that has them
    _load(tmp_path, "2.6.0", "sm_89")  # an L40 runs sm_86's SASS
    _load(tmp_path, "2.7.0", "sm_120", ', index_url: "https://download.pytorch.org/whl/cu128"')  # another build
    _load(tmp_path, "9.9.0", "sm_120")  # a release the data does not know: nothing refused
    # a GPU later releases left out: the last that has it
    with pytest.raises(ManifestError, match=r"the last release that runs on sm_70: torch 2\.10\.0"):
        _load(tmp_path, "2.11.0", "sm_70")


def test_arch_coverage_follows_cuda_compatibility() -> None:
    assert covers("sm_89", ["sm_80", "sm_86"]) and covers("sm_90a", ["sm_90"])
    assert not covers("sm_100", ["sm_90"]) and not covers("sm_80", ["sm_86"])
    assert covers("sm_120", ["sm_90", "compute_90"]) and not covers("sm_80", ["compute_90"])


def test_the_data_says_where_it_comes_from_and_when() -> None:
    data = read("torch_gpus")
    assert data["fetched"] >= "2026-11-28" and "libtorch_python.so" in data["source"]
    assert data["releases"]["2.8.0"]["cudnn"] and "3.11" in data["releases"]["2.8.0"]["pythons"]


CHOSEN = """name: chosen
params: {{torch_version: "{torch}"}}
bases:
  devel: {{nvidia_cuda: cudnn-devel}}
  runtime: {{nvidia_cuda: runtime, os: {os}}}
gpu: {{archs: [sm_90]}}
compile:
  - name: ext
    base: devel
    run: ["pip install torch==${{torch_version}}"]
    python_sets: [{{name: build, requirements: ["torch==${{torch_version}}"], python: "3.11"}}]
    artifacts: {{so: {{path: /out/ext.so, to: /opt/ext.so}}}}
image:
  base: runtime
  layers:
    - artifact: ext.so
"""


def _chosen(tmp_path: Path, torch: str, os: str = "ubuntu22.04") -> dict[str, object]:
    path = tmp_path / "chosen.yaml"
    path.write_text(CHOSEN.format(torch=torch, os=os))
    return dict(load_manifest(path).manifest.bases)


def test_the_cuda_bases_are_chosen_from_the_torch_pin(tmp_path: Path) -> None:
    # torch 2.8.0's wheel: CUDA 12.8, cuDNN 9: the newest 12.8 tag nvidia/cuda publishes in each
    # flavor (12.8.2 was made without cuDNN)
    assert _chosen(tmp_path, "2.8.0") == {
        "devel": "docker://docker.io/nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04",
        "runtime": "docker://docker.io/nvidia/cuda:12.8.2-runtime-ubuntu22.04",
    }
    assert _chosen(tmp_path, "2.6.0")["devel"] == "docker://docker.io/nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04"
    assert str(_chosen(tmp_path, "2.11.0", os="ubi9")["runtime"]).startswith("docker://docker.io/nvidia/cuda:13.0.")
    with pytest.raises(ManifestError) as e:
        _chosen(tmp_path, "2.8.0", os="ubuntu16.04")
    assert "publishes no runtime tag on ubuntu16.04 for CUDA 12.8 (torch 2.8.0" in e.value.message
    assert e.value.line == 5
    with pytest.raises(ManifestError, match=r"torch 9\.9\.0 \(pinned by the manifest\) is not in .*torch_gpus"):
        _chosen(tmp_path, "9.9.0")


@pytest.mark.parametrize("torch", ["2.11.0", "2.12.0", "2.12.1", "2.13.0", "2.14.0", "2.14.1"])
def test_a_cuda_13_0_torch_takes_the_newest_13_0_patch(tmp_path: Path, torch: str) -> None:
    # their wheels pin CUDA 13.0.2 or 13.0.3; nvidia/cuda's 13.0 images go to 13.0.3 (cuDNN 9)
    assert str(read("torch_gpus")["releases"][torch]["cuda"]).startswith("13.0.")
    assert _chosen(tmp_path, torch) == {
        "devel": "docker://docker.io/nvidia/cuda:13.0.3-cudnn-devel-ubuntu24.04",
        "runtime": "docker://docker.io/nvidia/cuda:13.0.3-runtime-ubuntu22.04",
    }


def test_torch_2_15_takes_a_cuda_13_2_tag(tmp_path: Path) -> None:
    assert str(read("torch_gpus")["releases"]["2.15.0"]["cuda"]).startswith("13.2.")
    assert _chosen(tmp_path, "2.15.0") == {
        "devel": "docker://docker.io/nvidia/cuda:13.2.1-cudnn-devel-ubuntu24.04",
        "runtime": "docker://docker.io/nvidia/cuda:13.2.1-runtime-ubuntu22.04",
    }


def test_the_cuda_tag_data_reaches_its_newest_release() -> None:
    data = read("tags")["repositories"]["nvidia/cuda"]
    newest = max(tuple(int(n) for n in tag.split("-")[0].split(".")) for tag in data["tags"])
    assert ".".join(map(str, newest)) == data["through"]


def test_a_cuda_newer_than_the_tag_data_is_refused_as_the_data_s_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # tags.json as it was through 13.0.0: torch 2.15.0's CUDA 13.2 is past the data, not absent
    from assembler.manifest.load import cudabase

    real = read("tags")
    cuda = real["repositories"]["nvidia/cuda"]
    old = [t for t in cuda["tags"] if tuple(int(n) for n in t.split("-")[0].split(".")) <= (13, 0, 0)]
    data = {**real, "repositories": {**real["repositories"], "nvidia/cuda": {**cuda, "tags": old, "through": "13.0.0"}}}
    monkeypatch.setattr(cudabase, "read", lambda name: data if name == "tags" else read(name))
    with pytest.raises(ManifestError) as e:
        _chosen(tmp_path, "2.15.0")
    said = e.value.message
    assert (
        "torch 2.15.0 (pinned by the manifest) is built with CUDA 13.2, newer than the releases "
        "assembler/manifest/facts/tags.json lists nvidia/cuda's tags for (through CUDA 13.0.0): "
        "the data does not reach it"
    ) in said, said
    assert "publishes no" not in said and e.value.line == 4
    assert e.value.hint == "regenerate it (scripts/regen-facts cuda-tags DIR), or name the base's tag"
    # a CUDA the data covers still takes its tag
    assert _chosen(tmp_path, "2.8.0")["devel"] == "docker://docker.io/nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04"


def test_a_cuda_base_needs_one_torch_pin(tmp_path: Path) -> None:
    path = tmp_path / "chosen.yaml"
    path.write_text(
        CHOSEN.format(torch="2.8.0", os="ubuntu22.04").replace(
            'requirements: ["torch==${torch_version}"]', 'requirements: ["numpy==2.1.0"]'
        )
    )
    with pytest.raises(ManifestError, match="the manifest and its lock pin no torch==X from PyPI") as e:
        load_manifest(path)
    assert e.value.line == 4 and "pin torch==X" in (e.value.hint or "")


def test_a_vllm_pin_takes_the_torch_its_lock_resolved(tmp_path: Path) -> None:
    from ruamel.yaml import YAML

    from assembler.manifest.schema.setuses import set_key

    path = tmp_path / "chosen.yaml"
    path.write_text(
        CHOSEN.format(torch="2.8.0", os="ubuntu22.04").replace(
            'requirements: ["torch==${torch_version}"]', 'requirements: ["vllm==0.11.1"]'
        )
    )
    definition = {"environment": "e" * 64, "requirements": ["vllm==0.11.1"]}
    entry = {**definition, "pins": "torch==2.6.0\nvllm==0.11.1\n"}
    YAML().dump(
        {"lock_version": 3, "manifest": "chosen", "sets": {set_key(definition): entry}}, tmp_path / "chosen.lock"
    )
    bases = load_manifest(path).manifest.bases
    assert bases["devel"] == "docker://docker.io/nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04"  # torch 2.6: CUDA 12.4
