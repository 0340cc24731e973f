"""Combinations refused from facts (issue 33, item 5; Why 6 and 7): planned offline, each
refused with exit 2 and a message naming the params and the fact that rules them out.

No manifest writes these checks: what its Python sets pin against PyPI's releases and
Requires-Python and PyTorch's per-CUDA indexes, its bases' tags against what the registry
publishes, the Pythons its steps run against what the distribution packages, its ROCm arch
lists against the base's ROCm release, and the version it claims against the git ref it
builds (assembler/manifest/facts/). A manifest written here, with no ``constraints:``, gets them
as the shipped ones do.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from assembler.errors import ManifestError
from assembler.manifest.facts import read
from assembler.manifest.facts.archs import release_of
from assembler.manifest.facts.bases import distribution, parse
from assembler.manifest.load.manifest import load_manifest
from tests.helpers import ROOT, run_cli_here

MANIFESTS = ROOT / "manifests"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plan-cache")


def refused(cache: Path, manifest: Path, *args: str) -> str:
    """The error of ``assemble plan MANIFEST ARGS``, which must exit 2 with no traceback."""
    ran = run_cli_here(["plan", str(manifest), "--cache", str(cache), *args])
    assert ran.code == 2 and ran.out == "", ran.err
    assert "Traceback" not in ran.err and ran.err.startswith("error: "), ran.err
    return ran.err


def planned(cache: Path, manifest: Path, *args: str) -> dict[str, Any]:
    ran = run_cli_here(["plan", str(manifest), "--cache", str(cache), "--json", *args])
    assert ran.code == 0, ran.err
    result: dict[str, Any] = json.loads(ran.out)
    return result


# -- Why 7: the examples --------------------------------------------------------------

# vLLM's arch lists for CUDA 11.8's nvcc (constraints: would refuse 10.0 and 12.0 first)
CUDA_11_8 = (
    "--set",
    "torch_cuda_arch_list=7.0 8.0 9.0",
    "--set",
    "deepgemm_arch_list=9.0",
    "--set",
    "ep_arch_list=9.0",
)


def test_vllm_cuda_11_8_with_torch_2_9_has_no_build_on_its_index(cache: Path) -> None:
    err = refused(cache, MANIFESTS / "vllm.yaml", "--set", "cuda_version=11.8.0", *CUDA_11_8)
    assert "torch==2.9.0 (torch_version (from vllm_torch=2.9.0)) has no cu118 build" in err
    assert "https://download.pytorch.org/whl/cu118 (torch_index_url (from cuda_version=11.8.0))" in err
    assert "carries torch 2.0.0 to 2.7.1 only (assembler/manifest/facts/torch_builds.json)" in err
    assert "hint: --set cuda_version or vllm_torch to a CUDA whose index builds torch 2.9.0 (cu126" in err
    # and torchvision the same way; the pair cu118 does build plans (vLLM's pins are the lock's business)
    err = refused(
        cache, MANIFESTS / "vllm.yaml", "--set", "cuda_version=11.8.0", *CUDA_11_8, "--set", "vllm_torch=2.7.1"
    )
    assert "torchvision==0.24.0 (vllm_torchvision=0.24.0) has no cu118 build" in err
    torch_2_7 = ("--set", "vllm_torch=2.7.1", "--set", "vllm_torchvision=0.22.1")
    planned(cache, MANIFESTS / "vllm.yaml", "--set", "cuda_version=11.8.0", *CUDA_11_8, *torch_2_7)


def test_vllm_python_3_8_is_refused_by_requires_python(cache: Path) -> None:
    err = refused(cache, MANIFESTS / "vllm.yaml", "--set", "python_version=3.8")
    assert "requires Python >=3.10 (its Requires-Python on PyPI, assembler/manifest/facts/pypi.json)" in err
    assert "not the set's 3.8 (python_version=3.8)" in err and "hint: --set python_version" in err
    # the wheel's own: vllm 0.11.1 (with the torch that admits 3.8, the release is what refuses)
    err = refused(cache, MANIFESTS / "vllm.yaml", "--set", "vllm_from=wheel", "--set", "python_version=3.9")
    assert "requires Python" in err and "python_version=3.9" in err


@pytest.mark.parametrize(
    ("manifest", "args", "says"),
    [
        # gfx950 (MI350) on ROCm 6.3: SGLang's rocm630 base, and llama.cpp's ROCm 6.3 image
        (
            "verl-rocm",
            ("--set", "pytorch_rocm_arch=gfx90a;gfx950"),
            "PYTORCH_ROCM_ARCH (pytorch_rocm_arch=gfx90a;gfx950) on ROCm 6.3 (the base devel, "
            "lmsysorg/sglang:v0.4.5-rocm630): gfx950: ROCm 6.3 does not build for it (ROCm 7.0 and newer do)",
        ),
        (
            "llamacpp",
            ("--set", "backend=rocm", "--set", "rocm_version=6.3", "--set", "rocm_docker_arch=gfx942;gfx950"),
            "AMDGPU_TARGETS (amdgpu_targets (from backend=rocm, rocm_docker_arch=gfx942;gfx950)) on ROCm 6.3 "
            "(the base devel, rocm/dev-ubuntu-24.04:6.3-complete): gfx950: ROCm 6.3 does not build for it",
        ),
        # no GPU at all, on a floating base whose release no tag says
        (
            "vllm",
            ("--target", "rocm", "--set", "pytorch_rocm_arch=gfx942;gfx9999"),
            "PYTORCH_ROCM_ARCH (pytorch_rocm_arch=gfx942;gfx9999): gfx9999: no GPU target of any ROCm release",
        ),
        # a CUDA arch where llama.cpp's ROCm build wants AMD targets (no constraint of its own)
        (
            "llamacpp",
            ("--set", "backend=rocm", "--set", "rocm_docker_arch=sm_80"),
            "AMDGPU_TARGETS (amdgpu_targets (from backend=rocm, rocm_docker_arch=sm_80)) on ROCm 6.4 "
            "(the base devel, rocm/dev-ubuntu-24.04:6.4-complete): sm_80: a CUDA arch, not a ROCm GPU target",
        ),
    ],
)
def test_rocm_archs_the_release_lacks_are_refused(cache: Path, manifest: str, args: tuple[str, ...], says: str) -> None:
    err = refused(cache, MANIFESTS / f"{manifest}.yaml", *args)
    assert says in err and "(assembler/manifest/facts/rocm.json)" in err, err


@pytest.mark.parametrize(
    ("manifest", "args", "says"),
    [
        # Why 5 of issue 49: verl-ROCm's train target builds vLLM 0.6.3 on ROCm 6.2, which knows
        # gfx1201; vLLM 0.6.3's CMake compiles for its own list only (gfx1201 alone: the build
        # stops an hour in; beside gfx90a: gfx1201 gets no kernels)
        (
            "verl-rocm",
            ("--target", "train", "--set", "pytorch_rocm_arch=gfx90a;gfx1201"),
            "compile step vllm: PYTORCH_ROCM_ARCH (pytorch_rocm_arch=gfx90a;gfx1201): gfx1201: vllm 0.6.3 "
            "does not compile for it (its HIP_SUPPORTED_ARCHS: gfx906, gfx908, gfx90a, gfx940, gfx941, gfx942, "
            "gfx1030, gfx1100)",
        ),
        (
            "verl-rocm",
            ("--set", "pytorch_rocm_arch=gfx1101"),  # ROCm 6.3 builds for it; vLLM 0.6.3 does not
            "gfx1101: vllm 0.6.3 does not compile for it",
        ),
        # vLLM 0.11.1's list has gfx1200 and gfx1201, not gfx1152 (which ROCm 6.2 and newer know)
        (
            "vllm",
            ("--target", "rocm", "--set", "pytorch_rocm_arch=gfx942;gfx1152"),
            "compile step wheel-rocm: PYTORCH_ROCM_ARCH (pytorch_rocm_arch=gfx942;gfx1152): gfx1152: vllm 0.11.1 "
            "does not compile for it",
        ),
    ],
)
def test_rocm_archs_the_release_built_does_not_compile_are_refused(
    cache: Path, manifest: str, args: tuple[str, ...], says: str
) -> None:
    err = refused(cache, MANIFESTS / f"{manifest}.yaml", *args)
    assert says in err and "(assembler/manifest/facts/hip_builds.json)" in err, err
    assert "to AMD targets vllm" in err and "compiles for" in err, err


def test_the_release_builds_archs_it_compiles_for(cache: Path) -> None:
    planned(cache, MANIFESTS / "verl-rocm.yaml", "--target", "train", "--set", "pytorch_rocm_arch=gfx90a;gfx1100")
    planned(cache, MANIFESTS / "vllm.yaml", "--target", "rocm", "--set", "pytorch_rocm_arch=gfx942;gfx1201")


def test_llamacpp_cuda_12_1_has_no_ubuntu_24_04_image(cache: Path) -> None:
    err = refused(cache, MANIFESTS / "llamacpp.yaml", "--set", "cuda_version=12.1.0")
    assert (
        "base devel: nvidia/cuda publishes no tag 12.1.0-devel-ubuntu24.04 (devel_image (from backend=cuda, "
        "cuda_version=12.1.0, ubuntu_version=24.04)): its 12.1.0-devel tags end in" in err
    )
    assert "ubuntu22.04 (assembler/manifest/facts/tags.json)" in err
    assert "hint: --set backend or cuda_version or ubuntu_version to a tag it has" in err
    # the seed's pair (000:220) exists, and a CUDA between releases is no tag at all
    planned(cache, MANIFESTS / "llamacpp.yaml", "--set", "cuda_version=12.1.0", "--set", "ubuntu_version=22.04")
    err = refused(cache, MANIFESTS / "llamacpp.yaml", "--set", "cuda_version=12.7.0")
    assert "no tag 12.7.0-devel-ubuntu24.04" in err and "around it are 12.6.2, 12.6.3, 12.8.0, 12.8.1" in err


@pytest.mark.parametrize(
    ("sets", "python", "release"),
    [
        (("ubuntu_version=20.04",), "3.10", "Ubuntu 20.04 (focal)"),  # its Python stays 3.10
        (("python_version=3.12",), "3.12", "Ubuntu 22.04 (jammy)"),
    ],
)
def test_deepspeed_python_its_ubuntu_does_not_package(
    cache: Path, sets: tuple[str, ...], python: str, release: str
) -> None:
    err = refused(cache, MANIFESTS / "deepspeed.yaml", *[a for kv in sets for a in ("--set", kv)])
    assert f"compile step wheel runs python{python}, which {release} does not package" in err
    assert "(assembler/manifest/facts/distros.json)" in err and f"python_version={python}" in err
    assert "hint: --set python_version or cuda_version or ubuntu_version so that they agree" in err


def test_deepspeed_python_its_ubuntu_packages_plans(cache: Path) -> None:
    planned(cache, MANIFESTS / "deepspeed.yaml", "--set", "ubuntu_version=20.04", "--set", "python_version=3.8")
    # jammy packages python3.11, but the step's packages (python3-dev, python3-venv) are 3.10's
    err = refused(cache, MANIFESTS / "deepspeed.yaml", "--set", "python_version=3.11")
    assert (
        "compile step wheel runs python3.11, which nothing installs (its packages and those before it give python3.10)"
        in err
    )


def test_a_torch_release_that_never_was_is_refused(cache: Path) -> None:
    # inside the range DeepSpeed's constraint allows (2.1.0 to 2.5.1), but never released
    err = refused(cache, MANIFESTS / "deepspeed.yaml", "--set", "torch_version=2.2.3")
    assert "torch==2.2.3 (torch_version=2.2.3) was never released: PyPI's torch has 2.2.1, 2.2.2, 2.3.0" in err
    assert "hint: --set torch_version to one of 2.2.1, 2.2.2, 2.3.0, 2.3.1" in err
    err = refused(cache, MANIFESTS / "vllm.yaml", "--set", "vllm_torch=2.4.2")
    assert "torch==2.4.2 (torch_version (from vllm_torch=2.4.2)) was never released" in err


# -- Why 6: a version against the ref it names, and the header's bump command --------------------


def test_vllm_version_alone_is_not_stamped_on_another_release(cache: Path) -> None:
    vllm = MANIFESTS / "vllm.yaml"
    err = refused(cache, vllm, "--set", "vllm_version=0.12.0")
    assert (
        "version 0.12.0 (vllm_version=0.12.0) is claimed for source vllm, whose ref "
        "439368496db48d8f992ba8c606a0c0b1eebbfa69 (vllm_ref=439368496db48d8f992ba8c606a0c0b1eebbfa69) is not "
        "that release: v0.12.0 is commit 4fd9d6a85 (assembler/manifest/facts/refs.json)" in err
    )
    assert "hint: --set vllm_ref=v0.12.0 (or its commit) with it" in err
    # seed 002's snapshot (main on 2025-10-30) is not v0.11.1, nor is another tag
    err = refused(cache, vllm, "--set", "vllm_ref=ded8ada86a3962477433054debbcef1d45161850")
    assert "whose ref ded8ada86a39" in err and "v0.11.1 is commit 439368496" in err
    assert "the tag v0.12.0 is release 0.12.0" in refused(cache, vllm, "--set", "vllm_ref=v0.12.0")
    # both, or the release's commit, plan; so does the snapshot with a version of its own
    planned(cache, vllm, "--set", "vllm_ref=v0.12.0", "--set", "vllm_version=0.12.0")
    planned(cache, vllm, "--set", "vllm_ref=4fd9d6a85", "--set", "vllm_version=0.12.0")
    planned(cache, vllm, "--set", "vllm_ref=ded8ada86a39", "--set", "vllm_version=0.11.1.dev200")


def _header_commands(name: str) -> list[list[str]]:
    """The ``assemble ...`` commands of a manifest's header comment (continuation lines joined)."""
    header = re.match(r"(?:#[^\n]*\n)+", (MANIFESTS / f"{name}.yaml").read_text())
    text = re.sub(r"\\\n#\s+", " ", header.group(0) if header else "")
    return [
        shlex.split(m, comments=True)
        for m in re.findall(r"^#\s+(assemble (?:lock|plan) manifests/\S+[^\n]*)$", text, re.M)
    ]


def test_the_headers_bump_commands_work_as_written(cache: Path) -> None:
    """``assemble lock manifests/vllm.yaml --set vllm_from=wheel --set vllm_version=0.12.0``:
    every target either takes the --set (the wheel target's release file included, its hashes
    the lock's) or refuses it as contradicting what the target fixes (the ROCm ones, which the
    lock leaves out), never with a stale pair of params."""
    (argv,) = [c for c in _header_commands("vllm") if c[1] == "lock"]
    assert argv[2:] == ["manifests/vllm.yaml", "--set", "vllm_from=wheel", "--set", "vllm_version=0.12.0"]
    sets = dict(kv.split("=", 1) for kv in argv[4::2])
    loaded = []
    for target in ("openai", "openai-nonroot", "vllm-base", "wheel", "rocm", "rocm-openai"):
        try:
            loaded.append(load_manifest(ROOT / argv[2], sets=sets, target=target))
        except ManifestError as e:
            assert target.startswith("rocm") and " contradicts " in e.message, e
    assert [x.target for x in loaded] == ["openai", "openai-nonroot", "vllm-base", "wheel"]
    for x in loaded:
        assert x.params["vllm_ref"] == "v0.12.0"
        pips = [layer for layer in x.manifest.image.layers if getattr(layer, "pip", None)]
        assert [(layer.pip, layer.locked) for layer in pips] == [(["vllm==0.12.0"], True)]  # type: ignore[union-attr]
    # and every `assemble plan` command of the headers plans as written (vllm.yaml's old-to-new
    # one takes PyPI's torch 2.6.0, as the seed's image did: cu121 has no 2.6.0)
    commands = [
        c
        for name in ("vllm", "llamacpp", "deepspeed", "dynamo", "tgi", "verl", "verl-rocm")
        for c in _header_commands(name)
        if c[1] == "plan"
    ]
    assert len(commands) >= 3 and "torch_index_url=https://pypi.org/simple" in commands[0]
    for argv in commands:
        ran = run_cli_here(["plan", str(ROOT / argv[2]), "--cache", str(cache), *argv[3:]])
        assert ran.code == 0, (argv, ran.err)


# -- a manifest of one's own: the same checks with no constraints ------------------------------

OWN = """\
name: own
params:
  cuda: "12.1.0"
  ubuntu: "22.04"
  python: "3.10"
  torch: "2.5.1"
  archs: gfx90a
bases:
  devel: docker://nvidia/cuda:${cuda}-devel-ubuntu${ubuntu}
  rocm: docker://rocm/dev-ubuntu-22.04:6.2-complete
compile:
  - name: hip
    base: rocm
    env: {GPU_TARGETS: "${archs}"}
    run: [hipcc --version]
    artifacts: {out: {path: /out, to: /out}}
image:
  base: devel
  layers:
    - packages: [python3-venv]
    - run: ["python${python} -m venv /opt/venv && /opt/venv/bin/pip install torch==${torch}"]
      name: torch
      python_sets:
        - {name: torch, requirements: ["torch==${torch}"], index_url: "https://download.pytorch.org/whl/cu121",
           python: "${python}"}
    - artifact: hip.out
"""


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (
            {"cuda": "12.1.0", "ubuntu": "24.04"},
            "publishes no tag 12.1.0-devel-ubuntu24.04 (cuda=12.1.0, ubuntu=24.04)",
        ),
        ({"torch": "2.6.0"}, "torch==2.6.0 (torch=2.6.0) has no cu121 build"),
        ({"python": "3.7", "ubuntu": "18.04"}, "torch==2.5.1 (torch=2.5.1) requires Python >=3.8.0"),
        ({"python": "3.12"}, "layer torch runs python3.12, which Ubuntu 22.04 (jammy) does not package"),
        ({"archs": "gfx950"}, "GPU_TARGETS (archs=gfx950) on ROCm 6.2 (the base rocm, "),
        ({"archs": "sm_90"}, "sm_90: a CUDA arch, not a ROCm GPU target"),
    ],
)
def test_a_new_manifest_gets_the_checks_without_constraints(tmp_path: Path, sets: dict[str, str], says: str) -> None:
    (tmp_path / "own.yaml").write_text(OWN)
    load_manifest(tmp_path / "own.yaml")  # as written: every fact agrees
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "own.yaml", sets=sets)
    assert says in str(caught.value) and caught.value.exit_code == 2, caught.value


# -- the facts themselves ------------------------------------------------------------------------


def test_what_the_facts_say_of_the_images_the_manifests_use() -> None:
    cuda = parse("docker://nvcr.io/nvidia/cuda:12.9.1-runtime-ubuntu24.04")
    assert cuda is not None and cuda.repository == "nvidia/cuda" and distribution(cuda) == ("ubuntu", "24.04")
    assert release_of("docker://rocm/dev-ubuntu-24.04:6.4-complete") == "6.4"
    assert release_of("docker://lmsysorg/sglang:v0.4.5-rocm630") == "6.3"
    assert release_of("docker://rocm/vllm:rocm6.2_mi300_ubuntu20.04_py3.9_vllm_0.6.4") == "6.2"
    assert release_of("docker://rocm/vllm-dev:base") is None  # a floating tag says no release
    # torch 2.9.0 is on cu126, cu128, cu129 (within its builds) and cu130, not cu118; vLLM 0.11.1 needs 3.10
    flavours = read("torch_builds")["flavours"]
    assert flavours["cu118"]["torch"][-1] == "2.7.1" and "2.9.0" in flavours["cu130"]["torch"]
    assert read("pypi")["packages"]["vllm"]["0.11.1"] == "<3.14,>=3.10"
