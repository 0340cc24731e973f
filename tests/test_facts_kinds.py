"""Combinations refused by kind, not by example (issue 65, item 5): planned offline, each
refused with exit 2, naming the params that make the value and the fact that rules it out.

- a Python other than the one the target's base runs (``interpreters.json``: NGC's, SGLang's
  and AMD's images; ``distros.json``: what a bare base's distribution packages);
- a GPU arch of the other vendor in an arch list (an AMD target where nvcc takes CUDA archs,
  a CUDA arch where hipcc takes AMD targets), wherever the list is said;
- a ROCm release outside what its base's line was made for (``rocm_images.json``), or other
  than the one the image's base is.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assembler.errors import ManifestError
from assembler.manifest.facts import read
from assembler.manifest.facts.interpreters import start
from assembler.manifest.load.manifest import load_manifest
from tests.helpers import ROOT
from tests.test_params_coupled import planned, refused  # plans of manifests/NAME.yaml, by the CLI's main

MANIFESTS = ROOT / "manifests"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plan-cache")


# -- a Python other than the base's ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "args", "says"),
    [
        # NGC PyTorch 24.05 runs 3.10 (verl's default target)
        (
            "verl",
            ("--set", "python_version=3.12"),
            "layer torch resolves Python set torch for Python 3.12, which nothing installs: the base runs "
            "Python 3.10 (assembler/manifest/facts/interpreters.json); the base vendor is "
            "nvcr.io/nvidia/pytorch:24.05-py3",
        ),
        # NGC PyTorch 24.08 (another verl target)
        (
            "verl",
            ("--target", "sglang", "--set", "python_version=3.11"),
            "for Python 3.11, which nothing installs: the base runs Python 3.10 "
            "(assembler/manifest/facts/interpreters.json)",
        ),
        # SGLang's runtime image runs 3.12 (Dynamo's sglang target)
        (
            "dynamo",
            ("--target", "sglang", "--set", "python_version=3.10"),
            "layer dynamo resolves Python set sglang for Python 3.10, which nothing installs: "
            "the base runs Python 3.12",
        ),
        # NGC PyTorch 25.10 (Dynamo's TRT-LLM framework step): its `uv venv --python`, system Pythons only
        (
            "dynamo",
            ("--target", "trtllm", "--set", "python_version=3.11"),
            "compile step framework-trtllm runs python3.11, which nothing installs: the base runs Python 3.12",
        ),
        # SGLang's ROCm image (vLLM's Dockerfile.rocm_base: 3.12), verl-ROCm's default target
        (
            "verl-rocm",
            ("--set", "python_version=3.10"),
            "compile step torch-memory-saver resolves Python set setup for Python 3.10, which nothing installs: "
            "the base runs Python 3.12",
        ),
        # rocm/vllm-dev:base (vLLM's ROCm targets)
        (
            "vllm",
            ("--target", "rocm", "--set", "rocm_python=3.10"),
            "compile step wheel-rocm resolves Python set pip for Python 3.10, which nothing installs: "
            "the base runs Python 3.12",
        ),
        # a tag that names its Python: AWS's ...-gpu-py310-cu121-ubuntu20.04
        (
            "verl",
            ("--target", "ngc-vllm0.8-sagemaker", "--set", "python_version=3.11"),
            "the base runs Python 3.10 (its tag 2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04)",
        ),
        # a bootstrapped Debian 12 packages 3.11 only (cuda.yaml's toolkit set)
        (
            "cuda",
            ("--set", "python_version=3.12"),
            "compile step cuda resolves Python set toolkit for Python 3.12, "
            "which Debian 12 (bookworm) does not package",
        ),
        # ...where a deadsnakes line meant for Ubuntu gives nothing (vLLM's stand-in)
        (
            "vllm",
            ("--target", "standin", "--set-unlocked", "python_version=3.12"),
            "layer python installs python3.12, which Debian 12 (bookworm) does not package",
        ),
        # Ubuntu 24.04's python3 is 3.12, llama.cpp's full image installs it
        (
            "llamacpp",
            ("--target", "full", "--set-unlocked", "python_version=3.11"),
            "layer python-requirements resolves Python set setuptools for Python 3.11, which Ubuntu 24.04 (noble) "
            "does not package",
        ),
        # ...and on AMD's rocm/dev-ubuntu-24.04, which installs Ubuntu's python3
        (
            "llamacpp",
            ("--target", "full", "--set", "backend=rocm", "--set-unlocked", "python_version=3.10"),
            "which nothing installs: the base runs Python 3.12 (assembler/manifest/facts/interpreters.json): "
            "Ubuntu 24.04 (noble) has python3.12",
        ),
    ],
)
def test_a_python_the_base_does_not_run_is_refused(
    cache: Path, manifest: str, args: tuple[str, ...], says: str
) -> None:
    err = refused(cache, manifest, *args)
    assert says in err, err
    assert "(assembler/manifest/facts/" in err and "hint: --set " in err, err
    python = next(a.split("=", 1) for a in args if a.startswith(("python_version=", "rocm_python=")))
    assert f"{python[0]}={python[1]}" in err and "so that they agree" in err, err


def test_the_hint_names_the_python_the_base_runs(cache: Path) -> None:
    err = refused(cache, "verl", "--set", "python_version=3.12")
    assert "hint: --set python_version or base_image so that they agree" in err
    assert "the base's is 3.10: --set python_version=3.10" in err
    err = refused(cache, "dynamo", "--target", "sglang", "--set", "python_version=3.10")
    assert "the base's is 3.12: --set python_version=3.12" in err
    # and each plans with the base's own, or a base that has the Python asked for
    planned(cache, "verl", "--set", "python_version=3.10")
    planned(cache, "llamacpp", "--target", "full", "--set", "ubuntu_version=22.04")  # its choice: 3.10


def test_what_the_facts_say_each_shipped_base_runs() -> None:
    def runs(manifest: str, target: str | None, base: str) -> set[str]:
        found = start(load_manifest(MANIFESTS / f"{manifest}.yaml", target=target), base)
        assert found is not None, (manifest, target, base)
        return found.have

    assert runs("verl", "ngc-vllm", "vendor") == {"3.10"}
    assert runs("verl", "megatron", "vendor") == {"3.11"}
    assert runs("verl-rocm", "train", "devel") == {"3.9"}  # rocm/vllm:..._py3.9_...: its tag
    assert runs("dynamo", "trtllm", "pytorch") == {"3.12"}
    assert runs("llamacpp", None, "devel") == set()  # nvidia/cuda: none until python3 is installed
    assert runs("cuda", None, "debian") == set()  # a minbase bootstrap: none
    for name, entry in read("interpreters")["images"].items():
        assert entry["source"] and (entry["python"] == "python3" or entry["python"].startswith("3.")), name


# -- a GPU arch of the other vendor ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "args", "says"),
    [
        # the demo's CUDA_ARCHS (no constraint of its own)
        (
            "demo",
            ("--set", "cuda_archs=80;gfx90a"),
            "compile step kernels: CUDA_ARCHS (cuda_archs=80;gfx90a): gfx90a: an AMD GPU target (ROCm's, "
            "assembler/manifest/facts/rocm.json), not CUDA archs",
        ),
        # Dynamo's EP kernels: TORCH_CUDA_ARCH_LIST set on the command line
        (
            "dynamo",
            ("--set", "ep_arch_list=9.0;gfx942"),
            "compile step framework-vllm: TORCH_CUDA_ARCH_LIST (ep_arch_list=9.0;gfx942): gfx942: an AMD GPU target",
        ),
    ],
)
def test_an_amd_target_in_a_cuda_arch_list_is_refused(
    cache: Path, manifest: str, args: tuple[str, ...], says: str
) -> None:
    err = refused(cache, manifest, *args)
    assert says in err, err
    assert f"hint: --set {args[1].split('=')[0]} to NVIDIA GPU archs" in err, err


OTHER_VENDOR = """\
name: own
params: {{cuda: "{cuda}", rocm: "{rocm}"}}
bases:
  devel: docker://nvidia/cuda:12.8.1-devel-ubuntu24.04
  hip: docker://rocm/dev-ubuntu-24.04:6.4-complete
compile:
  - name: cu
    base: devel
    run:
      - cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES="${{cuda}}" && cmake --build build
      - nvcc -arch=sm_90 -c k.cu && TORCH_CUDA_ARCH_LIST='9.0' python3 setup.py build
    artifacts: {{out: {{path: /out, to: /out}}}}
  - name: hip
    base: hip
    run: ["PYTORCH_ROCM_ARCH='${{rocm}}' python3 setup.py bdist_wheel"]
    artifacts: {{out: {{path: /out, to: /hip}}}}
image:
  base: devel
  layers: [{{artifact: cu.out}}, {{artifact: hip.out}}]
"""


@pytest.mark.parametrize(
    ("cuda", "rocm", "says"),
    [
        ("90;gfx942", "gfx942", "compile step cu: CMAKE_CUDA_ARCHITECTURES (cuda=90;gfx942): gfx942: an AMD GPU"),
        ("90", "gfx942;sm_90", "compile step hip: PYTORCH_ROCM_ARCH (rocm=gfx942;sm_90) on ROCm 6.4"),
        ("90", "gfx90a compute_80", "compute_80: a CUDA arch, not a ROCm GPU target"),
    ],
)
def test_an_arch_list_on_a_command_line_is_checked_without_constraints(
    tmp_path: Path, cuda: str, rocm: str, says: str
) -> None:
    path = tmp_path / "own.yaml"
    path.write_text(OTHER_VENDOR.format(cuda="90", rocm="gfx942"))
    load_manifest(path)  # as written: each list is its vendor's
    path.write_text(OTHER_VENDOR.format(cuda=cuda, rocm=rocm))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert says in str(caught.value) and caught.value.exit_code == 2, caught.value


# -- a ROCm release its base was not made for -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--set", "rocm_version=5.7"), "rocm/dev-ubuntu-24.04:5.7-complete"),
        (("--set", "rocm_version=6.1"), "rocm/dev-ubuntu-24.04:6.1-complete"),
        (("--set", "ubuntu_version=22.04", "--set", "rocm_version=5.2"), "rocm/dev-ubuntu-22.04:5.2-complete"),
    ],
)
def test_a_rocm_release_older_than_its_ubuntu_line_is_refused(cache: Path, args: tuple[str, ...], says: str) -> None:
    err = refused(cache, "llamacpp", "--set", "backend=rocm", *args)
    line = says.split(":")[0]
    since = read("rocm_images")["lines"][line]["since"]
    assert f"base devel: {says} (devel_image (from backend=rocm" in err, err
    assert f"but AMD made {line} from ROCm {since} on (ROCm/ROCm-docker" in err, err
    assert "assembler/manifest/facts/rocm_images.json" in err and "hint: --set backend or rocm_version" in err, err


def test_a_rocm_version_other_than_the_base_s_is_refused(cache: Path) -> None:
    err = refused(cache, "verl-rocm", "--set", "rocm_version=6.1")
    assert (
        "params.rocm_version: rocm_version=6.1 is not the ROCm of the image's base runtime, "
        "lmsysorg/sglang:v0.4.5-rocm630 (base_image=docker://lmsysorg/sglang:v0.4.5-rocm630), whose tag names ROCm 6.3"
        in err
    )
    assert "hint: --set rocm_version or base_image so that they agree (rocm_version=6.3 for this base)" in err
    err = refused(cache, "verl-rocm", "--target", "docker-sglang", "--set-unlocked", "rocm_version=6.2")
    assert "targets.docker-sglang.params.rocm_version: rocm_version=6.2 is not the ROCm" in err
    assert "v0.4.6.post1-rocm630" in err
    # the releases each line was made for, and a base whose tag names no release, plan
    planned(cache, "llamacpp", "--set", "backend=rocm", "--set", "ubuntu_version=22.04", "--set", "rocm_version=6.2")
    planned(cache, "verl-rocm", "--target", "train")  # rocm_version 6.2 on rocm/vllm:rocm6.2_...
