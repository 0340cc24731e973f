"""The components the seed documents describe that cannot be built here (no GPU, no CUDA
image offline): the steps the manifests generate for them, checked as data and, where a
step's logic is shell, by running that logic with the build command replaced by `echo`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.schema import model as m
from tests.helpers import ROOT

MANIFESTS = ROOT / "manifests"


def _compile(name: str, step: str, **sets: str) -> m.CompileStep:
    man = load_manifest(MANIFESTS / f"{name}.yaml", sets=sets).manifest
    return next(s for s in man.compile if s.name == step)


def _layer(name: str, layer: str, target: str | None = None, **sets: str) -> m.RunLayer:
    man = load_manifest(MANIFESTS / f"{name}.yaml", sets=sets, target=target).manifest
    found = next(x for x in man.image.layers if getattr(x, "name", None) == layer)
    assert isinstance(found, m.RunLayer)
    return found


def _sh(command: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True, env=env).stdout.strip()


# -- vLLM ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("cuda", "builds"), [("12.9.1", True), ("12.8.0", True), ("12.6.3", False)])
def test_vllm_deepgemm_is_skipped_below_cuda_12_8_as_upstream(cuda: str, builds: bool, tmp_path: Path) -> None:
    # the gate reads the cuda_version param, never the base's $CUDA_VERSION
    archs = {} if builds else {"torch_cuda_arch_list": "8.0 9.0", "deepgemm_arch_list": "9.0a", "ep_arch_list": "9.0a"}
    step = _compile("vllm", "build-deepgemm", cuda_version=cuda, **archs)
    assert step.env["TORCH_CUDA_ARCH_LIST"] == ("9.0a 10.0a" if builds else "9.0a") and step.sources == ["deepgemm"]
    gate = step.run[-1].replace("mkdir -p /build/dist", f"mkdir -p {tmp_path}/dist")
    gate = gate.replace("cd /src/deepgemm && /opt/venv/bin/python setup.py bdist_wheel", "echo bdist_wheel")
    out = _sh(gate, env={"CUDA_VERSION": "13.0", "PATH": "/usr/bin:/bin"})
    assert (out == "bdist_wheel --dist-dir=/build/dist") is builds, out
    assert step.artifacts["wheel"].to == "/wheels/deepgemm"
    # the runtime layer installs the wheel when there is one, and nothing when the step built none
    guard = _layer("vllm", "deepgemm").run[0].replace("/wheels/deepgemm", str(tmp_path / "dist")).split(";")[0]
    assert _sh(f"{guard}; echo install") == ""
    (tmp_path / "dist" / "deep_gemm-2.1.0-cp312-cp312-linux_x86_64.whl").write_bytes(b"")
    assert _sh(f"{guard}; echo install") == "install"


def test_vllm_ep_kernels_build_pplx_and_deepep_against_nvshmem() -> None:
    step = _compile("vllm", "build-ep-kernels")
    assert step.sources == ["pplx-kernels", "deepep"]
    # NVSHMEM in a folder of its own, out of the venv (torch 2.9.0's 3.3.20 stays there)
    assert step.env["NVSHMEM_DIR"] == "/opt/nvshmem/nvidia/nvshmem"
    assert "--target /opt/nvshmem nvidia-nvshmem-cu12==3.3.9" in step.run[2]
    assert "nvshmem" not in step.run[1]
    assert step.run[3].count("pip wheel --no-build-isolation --no-deps -w /build/dist .") == 2
    layer = _layer("vllm", "ep-kernels").run[0]
    assert "--target /opt/nvshmem nvidia-nvshmem-cu12==3.3.9" in layer and "/wheels/ep/*.whl" in layer
    assert "/opt/nvshmem/nvidia/nvshmem/lib > /etc/ld.so.conf.d/nvshmem.conf" in layer
    # GDRCopy's libgdrapi, which NVSHMEM and DeepEP dlopen, is on the loader's path
    assert "/usr/local/gdrcopy/lib" in _layer("vllm", "gdrcopy-ld").run[0]


@pytest.mark.parametrize(("value", "installs"), [("false", False), ("true", True)])
def test_vllm_kv_connectors_follow_their_switch(value: str, installs: bool) -> None:
    man = load_manifest(MANIFESTS / "vllm.yaml", sets={"install_kv_connectors": value}, target="openai").manifest
    found = [x for x in man.image.layers if getattr(x, "name", None) == "kv-connectors"]
    assert bool(found) is installs
    if installs:
        layer = found[0]
        assert isinstance(layer, m.RunLayer) and layer.mounts == ["kv-list.kv-requirements"]
        assert layer.run[0].endswith("-r /wheels/kv_connectors.txt")
        kv = _compile("vllm", "kv-list")
        assert kv.sources == ["vllm"] and kv.artifacts["kv-requirements"].path.endswith("kv_connectors.txt")


def test_vllm_punica_switch_reaches_the_wheel_build() -> None:
    assert _compile("vllm", "wheel", install_punica_kernels="0").env["VLLM_INSTALL_PUNICA_KERNELS"] == "0"


# -- Dynamo ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kvbm", "nixl", "ffmpeg", "flag"),
    [  # as the wheel_builder stage passes them; KVBM is a wheel of its own (lib/bindings/kvbm)
        ("true", "false", "false", ""),
        ("false", "false", "false", ""),
        ("true", "true", "true", "--features dynamo-llm/media-nixl,media-ffmpeg"),
        ("false", "false", "true", "--features media-ffmpeg"),
    ],
)
def test_dynamo_feature_switches_become_cargo_features(kvbm: str, nixl: str, ffmpeg: str, flag: str) -> None:
    step = _compile("dynamo", "dynamo-runtime", enable_kvbm=kvbm, enable_media_nixl=nixl, enable_media_ffmpeg=ffmpeg)
    command = step.run[-1]
    command = command.replace("cd /src/dynamo/lib/bindings/python && ", "").replace(
        "maturin build", "echo maturin build"
    )
    out = _sh(command)
    assert out == " ".join(["maturin build --release", *([flag] if flag else []), "--out /build/dist"]), out
    # the kvbm wheel is built (against NIXL) only with the switch on
    kvbm_step = _compile("dynamo", "kvbm", enable_kvbm=kvbm)
    assert kvbm_step.inputs == ["nixl.prefix"]
    built = _sh(kvbm_step.run[-1].split(" || ")[0] + " || echo build")
    assert (built == "build") is (kvbm == "true")


@pytest.mark.parametrize(("value", "builds"), [("false", False), ("true", True)])
def test_dynamo_ffmpeg_is_built_only_with_the_media_switch(value: str, builds: bool) -> None:
    step = _compile("dynamo", "ffmpeg", enable_media_ffmpeg=value)
    guard = step.run[-1].split(" || ")[0] + " || echo build"
    assert (_sh(guard) == "build") is builds
    assert "--enable-shared" in step.run[-1] and step.artifacts["prefix"].to == "/usr/local/ffmpeg"


def test_dynamo_venv_layers_split_it_without_overlap_or_loss() -> None:
    step = _compile("dynamo", "framework-vllm")
    arts = step.artifacts
    site = "/opt/dynamo/venv/lib/python3.12/site-packages"
    parts = {name: arts[name].path for name in ("venv-nvidia", "venv-torch", "venv-vllm")}
    assert parts == {"venv-nvidia": f"{site}/nvidia", "venv-torch": f"{site}/torch", "venv-vllm": f"{site}/vllm"}
    assert all(arts[name].to == path for name, path in parts.items())
    # the rest of the venv leaves out exactly those folders (literal paths: everything below them too)
    rest = arts["venv"]
    assert sorted(f"{rest.path}/{e}" for e in rest.exclude) == sorted(parts.values())
    assert {a.owner for a in arts.values()} == {"1000:0"}


def test_dynamo_nixl_finds_the_aws_sdk_and_efa_runs_the_efa_installer() -> None:
    nixl = _compile("dynamo", "nixl")
    assert "aws-sdk.prefix" in nixl.inputs and nixl.env["CMAKE_PREFIX_PATH"] == "/usr/local/aws-sdk-cpp"
    assert _compile("dynamo", "aws-sdk").artifacts["prefix"].to == "/usr/local/aws-sdk-cpp"
    # Dockerfile.aws: the AWS EFA installer brings libfabric and aws-ofi-nccl (build.sh's EFA_VERSION)
    efa = _layer("dynamo", "efa-installer", target="efa").run[0]
    assert "aws-efa-installer-1.45.1.tar.gz" in efa
    assert "./efa_installer.sh -y --skip-kmod --skip-limit-conf --no-verify" in efa


# -- DeepSpeed -------------------------------------------------------------------------------


def test_deepspeed_ops_are_switched_one_by_one() -> None:
    step = _compile("deepspeed", "wheel", ds_build_ops="0", ds_build_cpu_adam="1", ds_build_env="DS_BUILD_AIO=1")
    assert (step.env["DS_BUILD_OPS"], step.env["DS_BUILD_CPU_ADAM"], step.env["DS_BUILD_FUSED_ADAM"]) == ("0", "1", "")
    build = step.run[-1]
    assert "env DS_BUILD_AIO=1 /opt/venv/bin/python -m build --wheel --no-isolation" in build
    # `env` with no assignment (the default) runs the command unchanged
    default = _compile("deepspeed", "wheel").run[-1]
    assert "env  /opt/venv/bin/python" in default
    assert _sh("env  echo ok") == "ok"
