"""Coupled params, planned offline with the real manifests (issue 12, point 2).

A target or a chosen choice fixes the params it sets: a ``--set`` contradicting one is
refused (exit 2) naming both the ``--set`` and the target or choice with its file:line,
unless ``--set-unlocked``. Bases follow version params. Platforms a manifest does not
declare are refused, as are CUDA arch lists the CUDA version's nvcc cannot compile
(``constraints:``). ``plan`` shows ``--base`` overrides. Each contradiction the issue
lists has its test here; nothing is built.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from assembler.cli import main
from assembler.errors import ManifestError
from assembler.manifest.load.constraints import nvcc_misses
from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.text.yamlfile import load
from tests.helpers import ROOT
from tests.test_manifests import plan_in_process

MANIFESTS = ROOT / "manifests"


@pytest.fixture(autouse=True)
def _no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSEMBLE_TRACEBACK", raising=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plan-cache")


def plan(cache: Path, name: str, *args: str, json_out: bool = True) -> tuple[int, str, str]:
    """``assemble plan manifests/NAME.yaml [--json] ARGS`` through the CLI's main."""
    ran = plan_in_process(MANIFESTS / f"{name}.yaml", *args, cache=cache, json_out=json_out)
    return ran.code, ran.out, ran.err


def planned(cache: Path, name: str, *args: str) -> dict[str, Any]:
    code, out, err = plan(cache, name, *args)
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def refused(cache: Path, name: str, *args: str) -> str:
    """The one error line (and hint) of a plan that must fail with exit 2."""
    code, out, err = plan(cache, name, *args)
    assert code == 2 and out == "", err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and all(line.startswith(("error: ", "hint: ")) for line in lines), err
    return err


def at(name: str, *path: str | int) -> str:
    """``manifests/NAME.yaml:LINE`` of a value, as errors name it."""
    file = MANIFESTS / f"{name}.yaml"
    _, locs = load(file)
    return f"{file}:{locs.line(path)}: {'.'.join(map(str, path))}"


def labels(plan_json: dict[str, Any]) -> dict[str, str]:
    return {k.removeprefix("io.assemble."): v for k, v in plan_json["config"]["Labels"].items()}


def definitions(plan_json: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["definition"] for s in plan_json["steps"]}


# -- vLLM: the gpu choice and the targets -----------------------------------------------------


def test_vllm_gpu_rocm_on_the_cuda_target_is_refused(cache: Path) -> None:
    err = refused(cache, "vllm", "--set", "gpu=rocm")
    assert f"{at('vllm', 'targets', 'openai', 'params', 'gpu')}: --set gpu=rocm contradicts target openai" in err
    assert "hint: --target rocm sets gpu=rocm" in err
    # The ROCm build is its own target: ROCm bases, the ROCm wheel, no CUDA version
    rocm = planned(cache, "vllm", "--target", "rocm")
    assert (rocm["params"]["devel_image"], rocm["params"]["cuda_version"]) == ("rocm/vllm-dev:base", "")
    assert [s["name"] for s in rocm["steps"]] == [
        "rocm-system",
        "rocm-setup",
        "uv",
        "hub",
        "wheel-rocm",
        "vllm",
        "app-files",
    ]
    # Asked for explicitly, the override is the user's
    unlocked = planned(cache, "vllm", "--set-unlocked", "gpu=rocm")
    assert (unlocked["params"]["gpu"], unlocked["target"]) == ("rocm", "openai")


def test_vllm_rocm_target_with_gpu_cuda_is_refused(cache: Path) -> None:
    err = refused(cache, "vllm", "--target", "rocm", "--set", "gpu=cuda")
    assert f"{at('vllm', 'targets', 'rocm', 'params', 'gpu')}: --set gpu=cuda contradicts target rocm" in err
    assert "hint: --target openai sets gpu=cuda" in err
    # what the rocm target's gpu choice fixes cannot be set either, and the same value is no contradiction
    err = refused(cache, "vllm", "--target", "rocm", "--set", "cuda_version=12.8.1")
    assert (
        f"{at('vllm', 'choices', 'gpu', 'rocm', 'cuda_version')}: --set cuda_version=12.8.1 contradicts choice "
        'gpu=rocm, which sets cuda_version=""' in err
    )
    assert planned(cache, "vllm", "--target", "rocm", "--set", "gpu=rocm")["params"]["gpu"] == "rocm"


def test_vllm_rocm_target_refuses_the_pypi_wheel(cache: Path) -> None:
    # PyPI has CUDA builds of vllm only: the ROCm targets compile theirs, and said so silently before.
    for target in ("rocm", "rocm-openai"):
        err = refused(cache, "vllm", "--target", target, "--set", "vllm_from=wheel")
        assert (
            f"{at('vllm', 'choices', 'gpu', 'rocm', 'vllm_from')}: --set vllm_from=wheel contradicts choice "
            "gpu=rocm, which sets vllm_from=source" in err
        ), err
    rocm = planned(cache, "vllm", "--target", "rocm", "--set", "vllm_from=source")
    assert [s["name"] for s in rocm["steps"] if s["kind"] == "compile"] == ["wheel-rocm", "app-files"]
    # the CUDA targets take the wheel as before
    wheel = planned(cache, "vllm", "--set", "vllm_from=wheel")
    assert [x["what"] for x in wheel["layers"] if x["kind"] == "pip"] == ["pip vllm==0.11.1"]


# -- vLLM: the "old to new is a few --sets" comment, and CUDA arch lists ---------------------


def _comment_command() -> list[str]:
    """The ``assemble plan manifests/vllm.yaml ...`` command in vllm.yaml's header comment."""
    text = (MANIFESTS / "vllm.yaml").read_text()
    match = re.search(r"^#   (assemble plan .*?)(?=\n#(?!     ))", text, re.MULTILINE | re.DOTALL)
    assert match, "vllm.yaml's header shows the old-to-new command"
    return shlex.split(re.sub(r"\\\n#\s+", " ", match.group(1)))


def test_vllm_old_to_new_comment_plans_and_its_cuda_12_1_refuses_sm_100(cache: Path) -> None:
    argv = _comment_command()
    assert argv[:3] == ["assemble", "plan", "manifests/vllm.yaml"]
    old = planned(cache, "vllm", *argv[3:])
    assert labels(old)["gpu.cuda.version"] == "12.1.1"
    assert not {"10.0", "12.0"} & set(old["params"]["torch_cuda_arch_list"].split())
    # Without its arch list, CUDA 12.1 would be asked for 10.0 and 12.0, which its nvcc lacks
    pairs = list(zip(argv[3::2], argv[4::2], strict=True))
    assert all(flag == "--set" for flag, _ in pairs)
    without = [a for flag, kv in pairs if not kv.startswith("torch_cuda_arch_list=") for a in (flag, kv)]
    assert len(without) == len(argv) - 5
    err = refused(cache, "vllm", *without)
    assert (
        f"{at('vllm', 'constraints', 0)}: CUDA 12.1.1's nvcc cannot compile 10.0 (needs CUDA 12.8 or newer), "
        "12.0 (needs CUDA 12.8 or newer) of torch_cuda_arch_list" in err
    )
    assert "hint: --set torch_cuda_arch_list=... without them, or --set cuda_version=..." in err


def test_cuda_13_refuses_the_archs_it_dropped(cache: Path) -> None:
    err = refused(cache, "vllm", "--set", "cuda_version=13.0.1")
    assert "CUDA 13.0.1's nvcc cannot compile 7.0 (dropped in CUDA 13.0) of torch_cuda_arch_list" in err
    # NVIDIA makes no CUDA 13 image on Ubuntu 20.04 (tags.json): its 22.04 devel image builds it
    cuda13 = ("--set", "cuda_version=13.0.1", "--set", "devel_image=nvidia/cuda:${cuda_version}-devel-ubuntu22.04")
    err = refused(cache, "vllm", *cuda13[:2], "--set", "torch_cuda_arch_list=7.5 8.0 9.0 10.0 12.0")
    assert "nvidia/cuda publishes no tag 13.0.1-devel-ubuntu20.04" in err and "ubuntu22.04, ubuntu24.04" in err
    ok = planned(cache, "vllm", *cuda13, "--set", "torch_cuda_arch_list=7.5 8.0 9.0 10.0 12.0")
    assert labels(ok)["gpu.cuda.version"] == "13.0.1"
    refused(cache, "deepspeed", "--set", "torch_cuda_arch_list=9.0;10.0")  # CUDA 12.2
    refused(cache, "tgi", "--set", "cuda_version=11.7.1")  # its list has 9.0, which needs 11.8
    err = refused(cache, "tgi", "--set", "cuda_version=11.8.0", "--set", "torch_cuda_arch_list=8.0;8.6")
    assert f"{at('tgi', 'constraints', 1)}: CUDA 11.8.0's nvcc cannot compile 9.0a (needs CUDA 12.0 or newer)" in err
    planned(cache, "llamacpp", "--set", "cuda_docker_arch=86;120")  # CMake's form; CUDA 12.8.1 has sm_120
    refused(cache, "llamacpp", "--set", "cuda_version=12.6.3", "--set", "cuda_docker_arch=86;120")
    # no CUDA in a CPU build: nothing to check
    planned(cache, "llamacpp", "--set", "backend=cpu", "--set", "cuda_docker_arch=86;120")


def test_arch_lists_in_the_wrong_syntax_are_refused(cache: Path) -> None:
    """CMake (llama.cpp's CMAKE_CUDA_ARCHITECTURES) and torch (TORCH_CUDA_ARCH_LIST) each
    stop on the other's spelling, and CMake on an empty list, an hour into the build."""
    for value in ("sm_90", "9.0", "86;9.0+PTX"):
        err = refused(cache, "llamacpp", "--set", f"cuda_docker_arch={value}")
        assert f"{at('llamacpp', 'constraints', 0)}: cuda_docker_arch" in err and "not cmake's arch syntax" in err
    err = refused(cache, "llamacpp", "--set", "cuda_docker_arch=")
    assert "the arch list: an empty list is not cmake's arch syntax" in err
    planned(cache, "llamacpp", "--set", "cuda_docker_arch=75-virtual;86;90a-real;native")
    err = refused(cache, "tgi", "--set", "torch_cuda_arch_list=80;90")
    assert f"{at('tgi', 'constraints', 0)}: torch_cuda_arch_list: '80', '90' are not torch's arch syntax" in err
    assert "hint: --set torch_cuda_arch_list=8.0;8.6;9.0+PTX" in err
    refused(cache, "vllm", "--set", "ep_arch_list=sm_90a")
    refused(cache, "deepspeed", "--set", "torch_cuda_arch_list=8.0;compute_90")
    planned(cache, "deepspeed", "--set", "torch_cuda_arch_list=8.0;9.0a+PTX")
    planned(cache, "llamacpp", "--set", "backend=cpu", "--set", "cuda_docker_arch=9.0")  # no CUDA: no check


def test_a_flag_older_nvcc_lacks_needs_its_cuda_version(cache: Path) -> None:
    """llama.cpp passes nvcc -objtemp (reproducible objects), which nvcc 12.4 brought: the
    cuda_version choice leaves it out below 12.4, and a --set-unlocked putting it back is refused."""
    err = refused(
        cache,
        "llamacpp",
        "--set",
        "cuda_version=12.1.0",
        "--set",
        "ubuntu_version=22.04",  # nvidia/cuda has no 12.1 image for 24.04
        "--set",
        "cuda_docker_arch=80;90",
        "--set-unlocked",
        "nvcc_append_flags=-objtemp",
    )
    assert (
        f"{at('llamacpp', 'constraints', 1)}: CUDA 12.1.0 is older than 12.4, which nvcc_append_flags "
        "(-objtemp) needs" in err
    )
    assert "hint: --set cuda_version=12.4 or newer, or --set-unlocked nvcc_append_flags=... without it" in err
    jammy = ("--set", "ubuntu_version=22.04")
    assert (
        planned(cache, "llamacpp", "--set", "cuda_version=12.4.1", *jammy)["params"]["nvcc_append_flags"] == "-objtemp"
    )
    assert planned(cache, "llamacpp", "--set", "cuda_version=12.1.0", *jammy)["params"]["nvcc_append_flags"] == ""


def test_tgi_versions_that_must_agree_are_refused_apart(cache: Path) -> None:
    """The devel image's CUDA and the runtime base's; the kernels' torch and the one the
    server's uv.lock pins (tgi_version fixes it; tests/test_audit_tgi.py has the rest)."""
    err = refused(cache, "tgi", "--set", "cuda_version=12.6.3")
    assert f"{at('tgi', 'constraints', 2)}: cuda_version 12.6.3 and runtime_cuda_version 12.4.0 differ" in err
    assert "hint: --set cuda_version and runtime_cuda_version to one major.minor version" in err
    ok = planned(cache, "tgi", "--set", "cuda_version=12.6.3", "--set", "runtime_cuda_version=12.6.2")
    other = planned(cache, "tgi", "--set", "cuda_version=12.6.3", "--set", "runtime_cuda_version=12.6.3")
    assert definitions(ok)["system"] != definitions(other)["system"]  # the runtime base is the one set
    err = refused(cache, "tgi", "--set", "torch_version=2.6.0")
    assert "--set torch_version=2.6.0 contradicts choice tgi_version=3.3.4, which sets torch_version=2.7.0" in err
    err = refused(cache, "tgi", "--set", "cuda_version=latest")
    assert f"{at('tgi', 'constraints', 0, 'cuda_version')}: not a CUDA version: 'latest'" in err


@pytest.mark.parametrize(
    ("archs", "cuda", "misses"),
    [
        ("7.0 7.5 8.0 8.9 9.0 10.0 12.0", (12, 9), []),
        ("8.0;9.0a", (11, 8), ["9.0a (needs CUDA 12.0 or newer)"]),
        ("sm_100f 120-real", (12, 8), ["sm_100f (needs CUDA 12.9 or newer)"]),
        ("86;89;90-virtual", (11, 8), []),
        ("default", (11, 0), []),
        ("6.1 8.5", (12, 4), ["8.5 (not a CUDA arch this check knows)"]),
        ("6.1+PTX", (13, 0), ["6.1+PTX (dropped in CUDA 13.0)"]),
    ],
)
def test_nvcc_arch_table(archs: str, cuda: tuple[int, int], misses: list[str]) -> None:
    assert nvcc_misses(archs, cuda) == misses


# -- Dynamo: engines and CUDA versions ---------------------------------------------------------


def test_dynamo_engine_sglang_on_the_vllm_target_is_refused(cache: Path) -> None:
    err = refused(cache, "dynamo", "--set", "engine=sglang")
    assert (
        f"{at('dynamo', 'targets', 'vllm', 'params', 'engine')}: --set engine=sglang contradicts target vllm "
        "(the default_target), which sets engine=vllm" in err
    )
    assert "hint: --target sglang sets engine=sglang; or --set-unlocked engine=sglang overrides it anyway" in err
    sglang = planned(cache, "dynamo", "--target", "sglang")
    assert sglang["params"]["runtime_image"] == "lmsysorg/sglang:v0.5.6.post2-runtime"


def test_dynamo_cuda_version_moves_both_bases(cache: Path) -> None:
    old = planned(cache, "dynamo")
    new = planned(cache, "dynamo", "--set", "cuda_version=13.0")
    dl_base, cuda = "nvcr.io/nvidia/cuda-dl-base", "nvcr.io/nvidia/cuda"
    assert (old["params"]["devel_image"], old["params"]["runtime_image"]) == (
        f"{dl_base}:25.06-cuda12.9-devel-ubuntu24.04",
        f"{cuda}:12.9.1-runtime-ubuntu24.04",
    )
    # build.sh's VLLM_BASE_IMAGE_TAG_CU13 and VLLM_RUNTIME_IMAGE_TAG_CU13
    assert (new["params"]["devel_image"], new["params"]["runtime_image"]) == (
        f"{dl_base}:25.11-cuda13.0-devel-ubuntu24.04",
        f"{cuda}:13.0.2-runtime-ubuntu24.04",
    )
    assert labels(new)["gpu.cuda.version"] == "13.0"
    # every step on the devel image changes; the manylinux wheel builder's CPU-only ones do not
    a, b = definitions(old), definitions(new)
    assert {"cuda", "cuda-jit", "nats-etcd", "framework-vllm"} <= {k for k in a if a[k] != b[k]}
    assert a["dynamo-py"] == b["dynamo-py"] and a["gdrcopy"] == b["gdrcopy"]
    sglang = planned(cache, "dynamo", "--target", "sglang", "--set", "cuda_version=13.0")
    assert sglang["params"]["runtime_image"] == "lmsysorg/sglang:v0.5.6.post2-cu130-runtime"


def test_dynamo_cuda_version_the_engine_fixes_or_no_image_has_is_refused(cache: Path) -> None:
    err = refused(cache, "dynamo", "--target", "trtllm", "--set", "cuda_version=12.9")
    assert (
        f"{at('dynamo', 'choices', 'engine', 'trtllm', 'cuda_version')}: --set cuda_version=12.9 contradicts "
        "choice engine=trtllm, which sets cuda_version=13.0" in err
    )
    trtllm = planned(cache, "dynamo", "--target", "trtllm")  # the engine's choice picks the CUDA choice
    assert (trtllm["params"]["cuda_version"], trtllm["params"]["cuda_full"]) == ("13.0", "13.0.2")
    err = refused(cache, "dynamo", "--set", "cuda_version=12.8")
    assert f"{at('dynamo', 'params', 'cuda_version')}: cuda_version=12.8 is not one of the choices: 12.9, 13.0" in err


# -- platforms -----------------------------------------------------------------------------


def test_platforms_a_manifest_does_not_declare_are_refused(cache: Path) -> None:
    err = refused(cache, "dynamo", "--platform", "linux/arm64")
    assert f"{at('dynamo', 'platforms')}: --platform linux/arm64: this manifest builds only linux/amd64" in err
    assert planned(cache, "dynamo", "--platform", "linux/amd64")["name"] == "dynamo"
    err = refused(cache, "vllm", "--target", "rocm", "--platform", "linux/arm64")
    assert f"{at('vllm', 'targets', 'rocm', 'platforms')}: --platform linux/arm64: target rocm builds only" in err
    # The CUDA targets declare no limit; on this x86 machine an arm64 build of the default
    # target would compile under qemu-user, which plan refuses unless the manifest says
    # emulate: true, and the stand-in made of pip: layers runs nothing (issue 69)
    if os.uname().machine == "x86_64":
        code, _, err = plan(cache, "vllm", "--platform", "linux/arm64")  # (its lock has no arm64 pins: a warning)
        assert code == 2 and f"{at('vllm', 'compile', 0)}: step wheel (aarch64) would run under qemu-user" in err, err
    plan_arm = planned(cache, "vllm", "--target", "standin-wheels", "--platform", "linux/arm64", "--locked")
    assert plan_arm["emulated"] == [] and plan_arm["steps"] == [], plan_arm


def test_a_manifest_platform_outside_its_platforms_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: m\nplatform: linux/arm64\nplatforms: [linux/amd64]\nbases: {b: scratch}\nimage: {base: b}\n"
    )
    out, captured = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(captured):
        code = main(["plan", str(tmp_path / "m.yaml"), "--cache", str(tmp_path / "c")])
    err = captured.getvalue()
    assert code == 2 and out.getvalue() == "", err
    assert f"{tmp_path / 'm.yaml'}:3: platforms: platform linux/arm64 (the manifest's platform:)" in err


# -- targets and choices that disagree, in the manifest itself ---------------------------------


def test_a_target_and_a_choice_fixing_one_param_differently_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: m\n"
        "params: {engine: a, cuda: '12'}\n"
        "choices:\n"
        "  engine:\n"
        "    a: {}\n"
        "    b: {cuda: '13'}\n"
        "bases: {b: scratch}\n"
        "image: {base: b}\n"
        "targets:\n"
        "  t: {params: {engine: b, cuda: '12'}}\n"
    )
    with pytest.raises(ManifestError, match=r"choice engine=b sets cuda=13, but target t \(m.yaml:10\) sets it to 12"):
        load_manifest(tmp_path / "m.yaml", target="t")


# -- plan shows --base overrides ----------------------------------------------------------------


def test_plan_shows_base_overrides(cache: Path) -> None:
    ref = "docker://registry.example.invalid/cuda:12.9.1-custom"
    shown = planned(cache, "vllm", "--base", f"runtime={ref}")
    assert shown["base_overrides"] == {
        "runtime": {"manifest": "docker://nvidia/cuda:12.9.1-base-ubuntu22.04", "ref": ref}
    }
    assert planned(cache, "vllm")["base_overrides"] == {}
    code, out, err = plan(cache, "vllm", "--base", f"runtime={ref}", json_out=False)
    assert code == 0, err
    assert f"    --base runtime={ref} replaces docker://nvidia/cuda:12.9.1-base-ubuntu22.04" in out.splitlines()


def test_set_and_set_unlocked_of_one_param_must_agree(cache: Path) -> None:
    # --set-unlocked used to win whatever the order, dropping the --set silently
    set_, unlocked = ("--set", "gpu=cuda"), ("--set-unlocked", "gpu=rocm")
    for args in ((*unlocked, *set_), (*set_, *unlocked)):
        err = refused(cache, "vllm", *args)
        assert "error: --set gpu=cuda and --set-unlocked gpu=rocm disagree" in err
    assert planned(cache, "vllm", "--set", "gpu=rocm", "--set-unlocked", "gpu=rocm")["params"]["gpu"] == "rocm"


def test_verl_default_target_fixes_the_pins_its_tag_names(cache: Path) -> None:
    # ngc-vllm's tag is ngc-th2.4.0-cu124-vllm0.6.3: a --set of those pins gave that tag to another build
    for kv in ("torch_version=2.5.1", "vllm_req=vllm==0.7.0"):
        err = refused(cache, "verl", "--set", kv)
        assert f"--set {kv} contradicts target ngc-vllm (the default_target)" in err
    ngc = planned(cache, "verl")
    assert (ngc["params"]["torch_version"], ngc["params"]["vllm_req"]) == ("2.4.0", "vllm==0.6.3.post1")


def test_vllm_deps_keeps_the_torch_of_the_torch_layer(cache: Path) -> None:
    # The released 0.11.1 wheel needs torch==2.9.0: with another torch_version, the vllm-deps
    # step replaced the torch layer's torch silently (two torches in the layers, the param ignored);
    # pinned, the resolver refuses the pair instead. (A torch_version other than the vllm_torch
    # the release requires is refused at plan now: tests/test_audit_vllm.py.)
    # (vllm_from=wheel: the release's venv is one locked set, torch included: tests/test_lock.py.)
    for sets in ({}, {"vllm_torch": "2.8.0"}):
        loaded = load_manifest(MANIFESTS / "vllm.yaml", sets=sets)
        (step,) = [x for x in loaded.manifest.image.layers if getattr(x, "name", None) == "vllm-deps"]
        assert f'"vllm==$V" "torch=={loaded.params["torch_version"]}"' in " ".join(step.run), step  # type: ignore[union-attr]


def test_vllm_wheel_mode_names_the_release_tag_as_its_tree(cache: Path) -> None:
    # The revision annotation (${sources.vllm.revision}) and the KV connectors' list came from
    # the source build's vllm_ref (main, ded8ada) while the image shipped the v0.11.1 wheel.
    # (Every target takes 0.12.0's hashes from a lock: loaded, not planned.)
    for version in ("0.11.1", "0.12.0"):
        for target in ("wheel", "openai"):
            sets = {"vllm_from": "wheel", "vllm_version": version}
            assert load_manifest(MANIFESTS / "vllm.yaml", sets=sets, target=target).params["vllm_ref"] == f"v{version}"
    err = refused(cache, "vllm", "--set", "vllm_from=wheel", "--set", "vllm_ref=main")
    assert "--set vllm_ref=main contradicts choice vllm_from=wheel, which sets vllm_ref=v0.11.1" in err
    # the source build builds the tag vllm_version names (v0.11.1), not main's ded8ada
    assert planned(cache, "vllm")["params"]["vllm_ref"] == "439368496db48d8f992ba8c606a0c0b1eebbfa69"


# -- a --set that changes nothing is legal, and said ------------------------------------------


@pytest.mark.integration  # tries flashinfer.ai index
def test_a_set_that_changes_nothing_is_a_warning(cache: Path) -> None:
    code, out, err = plan(cache, "verl", "--target", "megatron", "--set", "vllm_req=vllm==0.8.0")
    assert code == 0 and json.loads(out)["target"] == "megatron"
    assert (
        err == "warning: --set vllm_req=vllm==0.8.0 changes nothing in target megatron: nothing there uses vllm_req\n"
    )
    _, _, err = plan(cache, "vllm", "--set", "vllm_version=0.11.1")  # its value already: nothing to change
    assert "changes nothing" not in err, err
    _, _, err = plan(cache, "vllm", "--all-targets", "--set", "install_kv_connectors=true")
    said = "changes nothing in targets standin-wheels, vllm-base, wheel, rocm, rocm-openai: nothing there uses"
    assert said in err, err
    for args in (
        ("tgi", "--set", "flash_attn_version=2.6.2"),  # a step's pin
        ("vllm", "--set", "vllm_from=wheel"),  # a choice: the params it fixes differ
        ("vllm", "--target", "rocm", "--set", "max_jobs=4"),
        ("verl", "--target", "megatron", "--set-unlocked", "torch_version=2.5.0"),
    ):
        code, _, err = plan(cache, *args)
        # (a --set that moves a locked set makes the lock stale, which is said too, as is a set
        # only an index unreachable from here serves: flashinfer.ai's jit cache)
        assert code == 0 and "changes nothing" not in err, (args, err)
        assert all("is stale" in line or "jit-cache could not be locked" in line for line in err.splitlines()), (
            args,
            err,
        )


def test_matrix_and_output_template_params_are_used(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: m\nparams: {flavour: a, tag: t, spare: s, gate: 'off'}\nmatrix: {flavour: [a, b]}\n"
        "bases: {b: scratch}\n"
        "image: {base: b, layers: [{run: ['echo ${flavour}']}, {run: ['echo g'], when: {gate: ['on']}}]}\n"
    )

    def warnings(*args: str) -> str:
        out, captured = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(captured):
            code = main(["plan", str(tmp_path / "m.yaml"), "--cache", str(tmp_path / "c"), *args])
        assert code == 0, captured.getvalue()
        return captured.getvalue()

    assert warnings("--set", "flavour=b") == ""  # picks the matrix' variant
    assert warnings("--set", "tag=v2", "-o", f"oci:{tmp_path}/o:${{tag}}-${{variant}}") == ""
    assert warnings("--set", "gate=on") == ""  # a when: keeps a layer
    assert (
        warnings("--set", "spare=x")
        == "warning: --set spare=x changes nothing in this manifest: nothing there uses spare\n"
    )


# -- releases: what an installer can install, the pairs a release was made with (issue 49) ------


def test_tgi_python_3_12_is_refused_for_the_uv_that_cannot_download_it(cache: Path) -> None:
    """TGI installs its CPython with uv 0.5.31 (``uv python install 3.12.11``): that uv's
    download list (its sdist's download-metadata.json) stops at 3.12.9, and the build would
    fail in its first step."""
    err = refused(cache, "tgi", "--set", "python_version=3.12")
    assert (
        "uv 0.5.31 (uv_version) cannot install CPython 3.12.11 (python_full) for linux/amd64: its download "
        "list has 3.12.0 to 3.12.9 (assembler/manifest/facts/uv_pythons.json)" in err
    ), err
    planned(cache, "tgi", "--set", "python_version=3.12", "--set", "python_full=3.12.9")
    err = refused(cache, "tgi", "--set", "python_version=3.14")  # no build of that minor at all
    assert "cannot install CPython 3.14.11" in err and "its download list has none of it" in err, err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--set", "vllm_version=0.10.0"), "vllm 0.10.0 (vllm_version) is not what ai-dynamo[vllm]==0.8.0 requires"),
        (("--target", "sglang", "--set", "sglang_version=0.5.5"), "sglang 0.5.5 (sglang_version) is not what"),
        (
            ("--target", "trtllm", "--set", "trtllm_version=1.1.0"),
            "tensorrt-llm 1.1.0 (trtllm_version) is not what ai-dynamo[trtllm]==0.8.0 requires of it "
            "(tensorrt-llm==1.2.0rc6.post1",
        ),
    ],
)
def test_dynamo_with_a_framework_its_release_was_not_made_with_is_refused(
    cache: Path, args: tuple[str, ...], says: str
) -> None:
    err = refused(cache, "dynamo", *args)
    assert says in err and ": assembler/manifest/facts/extras.json)" in err, err
    assert "or dynamo_version to a release made with it" in err, err
