"""The project's manifests, planned offline: what each would build, how, and with what config.

`assemble plan --json` needs no container registry and no buildah, so every manifest in
manifests/ (and every target of it) is planned here, and for the manifests of the GPU
stacks (TGI, vLLM, DeepSpeed, NVIDIA Dynamo) the plan is compared with what the upstream
Dockerfiles build: the compile steps and their artifacts, the layers in order, the runtime
config (entrypoint, env, user, workdir...), the GPU labels; that a param change reaches only
the steps that depend on it; that moving vLLM between CUDA/Python/installer generations is
a change of params only; and that broken references fail at plan time with file:line.

Plans run in-process through the CLI's `main` (one run goes through a subprocess too, to show
it is the same thing); a fresh cache means every step reports `will-run` with the reason
"base not made yet".
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assembler.cli import main
from assembler.manifest.load.manifest import load_manifest
from tests import yaml_helper
from tests.helpers import ROOT, run_cli_here

MANIFESTS = ROOT / "manifests"
LAYERS = ROOT / "layers"
GPU = "io.assemble."


# -- planning --------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err}"


def plan_in_process(manifest: Path, *args: str, cache: Path, json_out: bool = True) -> Planned:
    """`assemble plan MANIFEST [--json] ARGS` through the CLI's main, output captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["plan", str(manifest), "--cache", str(cache), *(["--json"] if json_out else []), *args])
        except SystemExit as e:  # argparse errors
            code = int(e.code or 0)
    return Planned(code, out.getvalue(), err.getvalue())


PlanFn = Callable[..., dict[str, Any]]


@pytest.fixture(autouse=True)
def _no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSEMBLE_TRACEBACK", raising=False)


@pytest.fixture(scope="module")
def plan_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plan-cache")


@pytest.fixture(scope="module")
def plan(plan_cache: Path) -> Iterator[PlanFn]:
    """plan(NAME, *ARGS) -> the plan's JSON for manifests/NAME.yaml; each plan made once."""
    memo: dict[tuple[str, ...], dict[str, Any]] = {}

    def run(name: str, *args: str) -> dict[str, Any]:
        key = (name, *args)
        if key not in memo:
            ran = plan_in_process(MANIFESTS / f"{name}.yaml", *args, cache=plan_cache)
            assert ran.code == 0, str(ran)
            memo[key] = ran.json
        return memo[key]

    yield run


def targets_of(path: Path) -> list[str | None]:
    data = yaml_helper.load(path)
    return [None, *sorted(data.get("targets") or {})]


def structure(plan: dict[str, Any]) -> dict[str, Any]:
    """What a plan builds, without digests: compile steps -> their artifacts, the layers in
    order (artifact layers by STEP.ARTIFACT, run/packages layers by their runtime step's
    name), the outputs."""
    runtime = iter([s["name"] for s in plan["steps"] if s["kind"] == "runtime"])
    layers: list[tuple[str, str]] = []
    for layer in plan["layers"]:
        kind = layer["kind"]
        if kind == "artifact":
            layers.append((kind, layer["what"].removeprefix("artifact ")))
        elif kind in ("run", "packages"):
            layers.append((kind, next(runtime)))
        else:
            layers.append((kind, layer["what"]))
    assert next(runtime, None) is None, "a runtime step without a layer"
    return {
        "compile": {s["name"]: sorted(s["artifacts"]) for s in plan["steps"] if s["kind"] == "compile"},
        "layers": layers,
        "outputs": plan["outputs"],
    }


def packages(plan: dict[str, Any]) -> dict[str, list[str]]:
    """Runtime package steps -> the apt packages they install."""
    names = [s["name"] for s in plan["steps"] if s["kind"] == "runtime"]
    runtime = [layer for layer in plan["layers"] if layer["kind"] in ("run", "packages")]
    return {
        name: layer["what"].split()[1:]
        for name, layer in zip(names, runtime, strict=True)
        if layer["kind"] == "packages"
    }


def definitions(plan: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["definition"] for s in plan["steps"]}


def changed(before: dict[str, Any], after: dict[str, Any]) -> set[str]:
    a, b = definitions(before), definitions(after)
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return {name for name in a if a[name] != b[name]}


def env_of(config: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in config.get("Env") or [])


def runtime_config(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of an image config a Dockerfile's ENTRYPOINT/CMD/ENV/USER/WORKDIR/
    HEALTHCHECK/EXPOSE/LABEL set (None: not set), GPU labels left for their own test."""
    return {
        "Entrypoint": config.get("Entrypoint"),
        "Cmd": config.get("Cmd"),
        "Env": env_of(config),
        "User": config.get("User"),
        "WorkingDir": config.get("WorkingDir"),
        "Healthcheck": config.get("Healthcheck"),
        "ExposedPorts": config.get("ExposedPorts"),
        "Labels": {k: v for k, v in (config.get("Labels") or {}).items() if not k.startswith(GPU)},
    }


# -- every manifest, every target ------------------------------------------------------

EVERY = [(p, t) for p in sorted(MANIFESTS.glob("*.yaml")) for t in targets_of(p)]


@pytest.mark.parametrize(("path", "target"), EVERY, ids=[f"{p.stem}-{t or 'default'}" for p, t in EVERY])
def test_every_manifest_and_target_plans_offline(plan_cache: Path, path: Path, target: str | None) -> None:
    # --locked: the committed lock (MANIFEST.lock) holds every Python set of every target;
    # FlashInfer's AOT kernels only flashinfer.ai's index serves (PyPI has no stand-in for it)
    allowed = [
        "--allow-unresolved",
        "layers.flashinfer-jit-cache:jit-cache",
        "--allow-unresolved",
        "framework-vllm:venv",
    ]
    ran = plan_in_process(path, "--locked", *allowed, *(["--target", target] if target else []), cache=plan_cache)
    assert ran.code == 0, str(ran)
    data = ran.json
    assert data["lock"]["state"] in ("fresh", "none"), data["lock"]
    assert data["name"] == yaml_helper.load(path)["name"]
    assert data["target"] == (target or yaml_helper.load(path).get("default_target"))
    assert data["layers"]
    # the first layer is the base's, unless the base is `scratch` (vLLM's wheel-only target)
    assert data["layers"][0]["kind"] == "base" or (data["target"], data["layers"][0]["kind"]) == ("wheel", "artifact")
    compiled = {s["name"] for s in data["steps"] if s["kind"] == "compile"}
    for step in data["steps"]:
        assert step["state"] == "will-run", step  # a fresh cache: nothing is built yet
        assert re.fullmatch(r"[0-9a-f]{64}", step["definition"]), step
    for layer in data["layers"]:
        assert layer["kind"] in ("base", "artifact", "run", "packages", "copy", "pip"), layer
        if layer["kind"] == "artifact":
            assert layer["what"].removeprefix("artifact ").split(".")[0] in compiled, layer
    assert all(isinstance(o, str) and ":" in o for o in data["outputs"])
    assert isinstance(data["config"], dict) and isinstance(data["annotations"], dict)


SHIPPED = sorted(MANIFESTS.glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_manifest_s_default_target_has_tests_that_plan_lists(plan: PlanFn, path: Path) -> None:
    """Each image is proven before it is written: its default target names tests (the
    version, an import, its entrypoint answering), GPU ones marked, and a plan lists them."""
    tests = plan(path.stem)["tests"]
    assert len(tests) >= 2, f"{path.name}: its default target ships {len(tests)} test(s)"
    for test in tests:
        assert test["argv"] and test["on"] == "local" and test["timeout"] > 0, test
        assert test["output"] or test["not_output"], f"{path.name}: test {test['name']} checks no output"
    assert any(not t["gpu"] for t in tests), f"{path.name}: nothing a machine without a GPU can check"


def test_plan_lists_the_tests_for_people_too(plan_cache: Path) -> None:
    ran = plan_in_process(MANIFESTS / "demo.yaml", cache=plan_cache, json_out=False)
    assert ran.code == 0, str(ran)
    listed = ran.out.split("\ntests:\n", 1)[1].splitlines()
    assert listed[0].split() == ["version", "local", "/usr/local/bin/demo-launcher", "--version"]
    assert any(line.split()[:2] == ["saxpy-gpu", "local"] and line.endswith("[gpu]") for line in listed), listed


@pytest.mark.integration  # seconds
def test_the_cli_in_a_subprocess_plans_the_same(plan: PlanFn, plan_cache: Path) -> None:
    ran = run_cli_here(["plan", str(MANIFESTS / "vllm.yaml"), "--cache", str(plan_cache), "--json"])
    assert ran.code == 0, str(ran)
    assert ran.json == plan("vllm")


# -- what each manifest builds -------------------------------------------------------------

TGI_KERNELS = {
    "flash-attn-v1": ["layer-norm", "lib", "rotary"],  # flash-attention + csrc/rotary + csrc/layer_norm
    "flash-attn-v2": ["site", "so", "wheel"],  # TGI takes only flash_attn_2_cuda*.so
    "custom-kernels": ["lib"],
    "exllama": ["lib"],
    "exllamav2": ["lib"],
    "awq": ["lib"],
    "mamba": ["lib"],  # Punica: a Hub kernel since v3.3.1 (server.kernels), not a compile step
    "causal-conv1d": ["lib"],
    "flashinfer": ["lib"],
}
DYNAMO_COMMON = {
    "cuda-jit": ["toolchain"],
    "nats-etcd": ["etcd", "nats"],
    "cuda": ["toolkit"],
    "gdrcopy": ["prefix"],
    "ucx": ["prefix"],
    "libfabric": ["prefix"],
    "nixl": ["prefix", "wheel"],
    "aws-sdk": ["prefix"],
    "ffmpeg": ["prefix"],
    "dynamo-runtime": ["wheel"],
    "dynamo-py": ["wheel"],
    "kvbm": ["wheel"],  # the kvbm wheel (--enable-kvbm), mounted where the wheels are installed
    # benchmarks/ of the tree, installed after Dynamo; lib/, the vLLM runtime's; dev takes it all
    "workspace": ["benchmarks", "lib", "tree"],
    "workspace-files": ["files"],  # ATTRIBUTION*, LICENSE, tests, examples, deploy, recipes, components
}
DYNAMO_PREFIXES = [
    ("artifact", "ucx.prefix"),
    ("artifact", "libfabric.prefix"),
    ("artifact", "aws-sdk.prefix"),
    ("artifact", "ffmpeg.prefix"),
    ("artifact", "nixl.prefix"),
]
# the vLLM venv as four layers: nvidia/* and torch (rarely change), the rest, vllm (every bump);
# then NVSHMEM, where the EP kernels built into the venv link it
DYNAMO_VENV = [
    ("artifact", "framework-vllm.venv-nvidia"),
    ("artifact", "framework-vllm.venv-torch"),
    ("artifact", "framework-vllm.venv"),
    ("artifact", "framework-vllm.venv-vllm"),
    ("artifact", "framework-vllm.nvshmem"),
]
DYNAMO_WHEELS = [("artifact", "dynamo-runtime.wheel"), ("artifact", "dynamo-py.wheel"), ("artifact", "nixl.wheel")]
# installed as dynamo, then the benchmarks package (benchmarks/ of the tree, as every runtime stage
# installs it), the rest of what each runtime stage copies into /workspace (at 7436e3bc:
# Dockerfile.sglang:747-756, Dockerfile.trtllm:742 and 780-784), then /opt/dynamo and /workspace
# given back to it (artifact layers write parent folders as root's)
DYNAMO_INSTALL = [
    ("run", "dynamo"),
    ("artifact", "workspace.benchmarks"),
    ("run", "benchmarks"),
    ("artifact", "workspace-files"),
    ("run", "permissions"),
]
# SGLang's: DeepEP's NCCL, cuDNN and cutlass-dsl reinstalled over what the install put back
DYNAMO_SGLANG_INSTALL = [DYNAMO_INSTALL[0], ("run", "deepep-pins"), *DYNAMO_INSTALL[1:]]
# the vLLM runtime copies lib/ too (Dockerfile.vllm:700-705 at 7436e3bc)
DYNAMO_VLLM_INSTALL = [*DYNAMO_INSTALL[:-1], ("artifact", "workspace.lib"), DYNAMO_INSTALL[-1]]
NATS_ETCD = [("artifact", "nats-etcd.nats"), ("artifact", "nats-etcd.etcd")]
VLLM_BASE_LAYERS = [  # the vllm-base stage
    ("base", "runtime"),
    ("packages", "system"),
    ("run", "python"),
    ("run", "cuda-compat"),  # ldconfig of the CUDA compat libraries (v0.11.1 docker/Dockerfile:338)
    ("run", "cuda-jit"),
    # the venv in four layers, as Dynamo's: a vLLM bump re-pushes only the last two
    ("run", "nvidia"),  # the nvidia-* libraries torch pins
    ("run", "torch"),
    ("run", "vllm"),  # mounts the wheel: installs it alone without copying it into a layer
    ("run", "vllm-deps"),  # what it needs besides torch
    ("run", "flashinfer"),  # flashinfer-cubin, from PyPI (flashinfer_cubin=false: none)
    ("run", "flashinfer-jit-cache"),  # from flashinfer.ai's index (flashinfer_jit_cache=false: none)
    ("artifact", "gdrcopy.prefix"),
    ("run", "gdrcopy-ld"),
    ("run", "deepgemm"),  # mounts DeepGEMM's wheel
    ("run", "ep-kernels"),  # mounts the pplx-kernels and DeepEP wheels; NVSHMEM into /opt/nvshmem
    ("artifact", "workspace"),  # examples, benchmarks, collect_env.py (Dockerfile:368-370)
]
VLLM_CUDA_LAYERS = [*VLLM_BASE_LAYERS, ("run", "openai-extras")]  # vllm-openai (KV connectors: off by default)
# Dockerfile.rocm's `base` stage (its packages, pip upgraded, sccache purged, uv), then `final`
VLLM_ROCM_LAYERS = [
    ("base", "runtime"),
    ("packages", "rocm-system"),
    ("run", "rocm-setup"),
    ("run", "uv"),  # Dockerfile.rocm:19-20
    ("run", "hub"),
    ("run", "vllm"),
    ("artifact", "app-files"),  # benchmarks, examples, Dockerfile.rocm under /app/vllm (:119-122)
]
VLLM_ROCM_COMPILE = {"wheel-rocm": ["wheel"], "app-files": ["benchmarks", "dockerfile", "examples"]}
VLLM_COMPILE = {
    "wheel": ["wheel"],
    "workspace": ["benchmarks", "collect-env", "examples"],  # read from the tree into /vllm-workspace
    "gdrcopy": ["prefix"],
    "build-deepgemm": ["wheel"],
    "build-ep-kernels": ["wheels"],
}
REGISTRY = "docker://127.0.0.1:5000"

STRUCTURES: dict[tuple[str, str | None], dict[str, Any]] = {
    ("tgi", None): {
        "compile": {
            "router": ["bin", "entrypoint"],
            "torch": ["python", "venv"],
            # the editable server's tree and proto (Dockerfile:175-177), uv and uvx (:163)
            "server": ["kernels", "proto", "python", "server-src", "uv", "uvx", "venv"],
            **TGI_KERNELS,
        },
        "layers": [
            ("base", "runtime"),
            ("packages", "system"),
            ("artifact", "server.uv"),  # Dockerfile:163 (COPY uv:0.5.31's /uv /uvx /bin/)
            ("artifact", "server.uvx"),
            ("run", "libcuda-link"),  # libcuda.so -> the driver's libcuda.so.1 (seed 000:186)
            ("artifact", "server.python"),
            ("artifact", "server.venv"),
            ("artifact", "server.proto"),
            ("artifact", "server.server-src"),  # the editable install's tree: the venv's .pth names it
            ("artifact", "server.kernels"),
            ("artifact", "flash-attn-v1.lib"),
            ("artifact", "flash-attn-v1.layer-norm"),
            ("artifact", "flash-attn-v1.rotary"),
            ("artifact", "flash-attn-v2.so"),
            ("artifact", "custom-kernels.lib"),
            ("artifact", "exllama.lib"),
            ("artifact", "exllamav2.lib"),
            ("artifact", "awq.lib"),
            ("artifact", "mamba.lib"),
            ("artifact", "causal-conv1d.lib"),
            ("artifact", "flashinfer.lib"),
            ("packages", "compilers"),  # "deps before the binaries"
            ("artifact", "router.bin"),
            ("artifact", "router.entrypoint"),
        ],
        "outputs": [f"{REGISTRY}/huggingface/text-generation-inference:3.3.4"],
    },
    ("vllm", "openai"): {
        "compile": VLLM_COMPILE,
        "layers": VLLM_CUDA_LAYERS,
        "outputs": [f"{REGISTRY}/vllm/vllm-openai:v0.11.1"],
    },
    ("vllm", "openai-nonroot"): {
        "compile": VLLM_COMPILE,
        "layers": [*VLLM_CUDA_LAYERS, ("run", "user")],
        "outputs": [f"{REGISTRY}/vllm/vllm-openai:v0.11.1-nonroot"],
    },
    ("vllm", "vllm-base"): {
        "compile": VLLM_COMPILE,
        "layers": VLLM_BASE_LAYERS,
        "outputs": [f"{REGISTRY}/vllm/vllm-base:v0.11.1"],
    },
    ("vllm", "wheel"): {  # the `export` stage: the wheel alone, on scratch
        "compile": {"wheel": ["wheel"]},
        "layers": [("artifact", "wheel.wheel")],
        "outputs": [f"oci:{ROOT}/out/vllm-wheel:v0.11.1"],
    },
    ("vllm", "rocm"): {  # Dockerfile.rocm, stage final
        "compile": VLLM_ROCM_COMPILE,
        "layers": VLLM_ROCM_LAYERS,
        "outputs": [f"{REGISTRY}/rocm/vllm-dev:v0.11.1"],
    },
    ("vllm", "rocm-openai"): {  # Dockerfile.rocm, stage vllm-openai
        "compile": VLLM_ROCM_COMPILE,
        "layers": VLLM_ROCM_LAYERS,
        "outputs": [f"{REGISTRY}/rocm/vllm:v0.11.1"],
    },
    ("deepspeed", None): {
        "compile": {"wheel": ["wheel"], "ops": ["ops"]},
        # ssh-user: sshd on SSH_PORT and the deepspeed user with sudo (docker/Dockerfile at v0.16.4);
        # the compiled ops a layer of their own, out of the wheel's step
        "layers": [
            ("base", "runtime"),
            ("packages", "system"),
            ("run", "ssh-user"),
            ("run", "torch"),
            ("run", "deepspeed"),
            ("artifact", "ops.ops"),
        ],
        "outputs": [f"{REGISTRY}/deepspeed:0.16.4"],
    },
    ("dynamo", "vllm"): {
        "compile": {**DYNAMO_COMMON, "framework-vllm": ["nvshmem", "venv", "venv-nvidia", "venv-torch", "venv-vllm"]},
        "layers": [
            ("base", "runtime"),
            ("run", "user"),
            ("packages", "system"),
            ("run", "cuda-tools"),
            ("artifact", "cuda-jit.toolchain"),
            ("run", "cublas-links"),
            *NATS_ETCD,
            *DYNAMO_VENV,
            *DYNAMO_PREFIXES,
            *DYNAMO_WHEELS,
            *DYNAMO_VLLM_INSTALL,
        ],
        "outputs": [f"{REGISTRY}/dynamo:0.8.0-vllm-runtime"],
    },
    ("dynamo", "dev"): {  # the runtime, then dev tools, the Rust toolchain, the source
        "compile": {
            **DYNAMO_COMMON,
            "framework-vllm": ["nvshmem", "venv", "venv-nvidia", "venv-torch", "venv-vllm"],
            "rust": ["cargo", "rustup"],
        },
        "layers": [
            ("base", "runtime"),
            ("run", "user"),
            ("packages", "system"),
            ("run", "cuda-tools"),
            ("artifact", "cuda-jit.toolchain"),
            ("run", "cublas-links"),
            *NATS_ETCD,
            *DYNAMO_VENV,
            *DYNAMO_PREFIXES,
            *DYNAMO_WHEELS,
            *DYNAMO_VLLM_INSTALL,
            ("packages", "dev-tools"),
            ("artifact", "rust.rustup"),
            ("artifact", "rust.cargo"),
            ("artifact", "workspace.tree"),
            ("run", "dev-install"),
        ],
        "outputs": [f"{REGISTRY}/dynamo:0.8.0-vllm-dev"],
    },
    ("dynamo", "efa"): {  # build.sh --make-efa on the vLLM runtime: Dockerfile.aws runs the EFA installer
        "compile": {**DYNAMO_COMMON, "framework-vllm": ["nvshmem", "venv", "venv-nvidia", "venv-torch", "venv-vllm"]},
        "layers": [
            ("base", "runtime"),
            ("run", "user"),
            ("packages", "system"),
            ("run", "cuda-tools"),
            ("artifact", "cuda-jit.toolchain"),
            ("run", "cublas-links"),
            *NATS_ETCD,
            *DYNAMO_VENV,
            *DYNAMO_PREFIXES,
            *DYNAMO_WHEELS,
            *DYNAMO_VLLM_INSTALL,
            ("run", "efa-installer"),
        ],
        "outputs": [f"{REGISTRY}/dynamo:0.8.0-vllm-runtime-aws"],
    },
    ("dynamo", "sglang"): {
        "compile": {k: v for k, v in DYNAMO_COMMON.items() if k != "cuda-jit"},
        "layers": [
            ("base", "runtime"),
            ("run", "cleanup"),
            ("run", "user"),
            ("packages", "system"),
            *NATS_ETCD,
            *DYNAMO_PREFIXES,
            *DYNAMO_WHEELS,
            *DYNAMO_SGLANG_INSTALL,
        ],
        "outputs": [f"{REGISTRY}/dynamo:0.8.0-sglang-runtime"],
    },
    ("dynamo", "trtllm"): {
        "compile": {**DYNAMO_COMMON, "framework-trtllm": ["hpcx", "venv"]},
        "layers": [
            ("base", "runtime"),
            ("run", "user"),
            ("packages", "system"),
            ("run", "cuda-libs"),
            ("artifact", "cuda-jit.toolchain"),
            ("artifact", "framework-trtllm.hpcx"),
            *NATS_ETCD,
            ("artifact", "framework-trtllm.venv"),
            *DYNAMO_PREFIXES,
            *DYNAMO_WHEELS,
            *DYNAMO_INSTALL,
        ],
        "outputs": [f"{REGISTRY}/dynamo:0.8.0-trtllm-runtime"],
    },
}
CASES = list(STRUCTURES)
IDS = [f"{m}-{t or 'default'}" for m, t in CASES]


def _args(target: str | None) -> tuple[str, ...]:
    return ("--target", target) if target else ()


@pytest.mark.parametrize(("manifest", "target"), CASES, ids=IDS)
def test_steps_layers_and_outputs(plan: PlanFn, manifest: str, target: str | None) -> None:
    assert structure(plan(manifest, *_args(target))) == STRUCTURES[manifest, target]


def test_the_default_targets(plan: PlanFn) -> None:
    assert plan("vllm") == plan("vllm", "--target", "openai")
    assert plan("dynamo") == plan("dynamo", "--target", "vllm")


def test_runtime_packages(plan: PlanFn) -> None:
    # DeepSpeed's runtime: CUDA runtime + pdsh, ssh and sudo (the launcher reaches other nodes
    # with them: docker/Dockerfile at v0.16.4) + libaio1 (ZeRO-Offload's async I/O) +
    # openmpi-bin, the last two from the wheel step's runtime_packages (`from-steps`).
    assert packages(plan("deepspeed")) == {
        "system": [
            *("python3", "python3-venv", "libopenblas0"),
            *("pdsh", "openssh-client", "openssh-server", "sudo"),
            *("libaio1", "openmpi-bin"),
        ]
    }
    assert packages(plan("tgi")) == {
        "system": ["libssl-dev", "ca-certificates", "make", "curl", "git"],
        "compilers": ["build-essential", "g++"],
    }
    vllm = packages(plan("vllm"))["system"]
    assert {"libibverbs-dev", "ffmpeg", "libgl1", "software-properties-common"} <= set(vllm)
    # What UCX and libfabric link against at run time comes with them (`from-steps`).
    rdma = {"libibverbs1", "librdmacm1", "libnuma1", "ibverbs-providers", "rdma-core", "libhwloc15"}
    for engine, own in (
        ("vllm", {"ninja-build", "python3.12-dev", "git-lfs"}),
        ("sglang", {"gnupg2"}),
        ("trtllm", {"openssh-server", "libzmq3-dev", "python3.12-dev"}),
    ):
        assert rdma | own <= set(packages(plan("dynamo", "--target", engine))["system"]), engine


def test_build_steps_say_what_upstream_builds_with() -> None:
    """The compile steps' env, caches and commands carry the upstream build flags."""
    tgi = {s.name: s for s in load_manifest(MANIFESTS / "tgi.yaml").manifest.compile}
    for name in ("flash-attn-v1", "flash-attn-v2", "exllama", "awq", "custom-kernels", "mamba", "causal-conv1d"):
        assert tgi[name].env["TORCH_CUDA_ARCH_LIST"] == "8.0;8.6;9.0+PTX", name
        assert int(tgi[name].env["MAX_JOBS"]) <= 8, name  # flash-attn runs out of memory unbounded
        assert {"torch.venv", "torch.python"} <= set(tgi[name].inputs), name
    assert tgi["exllamav2"].env["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0a"  # as TGI's Makefile-exllamav2
    assert tgi["flash-attn-v2"].env["FLASH_ATTENTION_FORCE_BUILD"] == "TRUE"
    assert "--profile release-opt" in " ".join(tgi["router"].run)
    assert tgi["router"].artifacts["bin"].to == "/usr/local/bin/"
    assert tgi["router"].artifacts["entrypoint"].to == "/tgi-entrypoint.sh"

    vllm = load_manifest(MANIFESTS / "vllm.yaml").manifest.compile[0]
    assert vllm.name == "wheel"
    assert vllm.env["TORCH_CUDA_ARCH_LIST"] == "7.0 7.5 8.0 8.9 9.0 10.0 12.0"
    assert (vllm.env["MAX_JOBS"], vllm.env["NVCC_THREADS"]) == ("2", "8")
    assert "/root/.cache/ccache" in vllm.shared_cache and vllm.env["CCACHE_DIR"] == "/root/.cache/ccache"
    assert "setup.py bdist_wheel" in vllm.run[-1] and "uv venv" not in vllm.run[0]
    assert "uv==0.9.5" in vllm.run[0]  # the installer goes into the venv
    assert vllm.env["VLLM_INSTALL_PUNICA_KERNELS"] == "1"  # seed 000's builder
    rocm = next(
        s for s in load_manifest(MANIFESTS / "vllm.yaml", target="rocm").manifest.compile if s.name == "wheel-rocm"
    )
    assert (rocm.name, rocm.env["PYTORCH_ROCM_ARCH"], rocm.env["VLLM_TARGET_DEVICE"]) == (
        "wheel-rocm",
        "gfx90a;gfx942;gfx950;gfx1100;gfx1101;gfx1200;gfx1201;gfx1150;gfx1151",
        "rocm",
    )

    ds = load_manifest(MANIFESTS / "deepspeed.yaml").manifest.compile[0]
    assert ds.env["DS_BUILD_OPS"] == "1" and ds.env["TORCH_CUDA_ARCH_LIST"]
    assert "libaio-dev" in ds.packages
    assert any("-m build --wheel --no-isolation" in c for c in ds.run)

    dyn = {s.name: s for s in load_manifest(MANIFESTS / "dynamo.yaml").manifest.compile}
    configure = " ".join(dyn["ucx"].run)
    for flag in ("--with-cuda=/usr/local/cuda", "--with-verbs", "--with-gdrcopy=/usr/local/gdrcopy", "--enable-mt"):
        assert flag in configure, flag
    assert dyn["ucx"].artifacts["prefix"].to == "/usr/local/ucx"
    assert dyn["libfabric"].artifacts["prefix"].to == "/usr/local/libfabric"
    assert dyn["nixl"].artifacts["prefix"].to == "/opt/nvidia/nvda_nixl"
    assert {"ucx.prefix", "libfabric.prefix", "cuda.toolkit"} <= set(dyn["nixl"].inputs)  # built against UCX
    assert "meson setup" in " ".join(dyn["nixl"].run) and "-Ducx_path=/usr/local/ucx" in " ".join(dyn["nixl"].run)
    assert {"cuda.toolkit", "gdrcopy.prefix"} <= set(dyn["ucx"].inputs)
    for name in ("gdrcopy", "ucx", "libfabric", "nixl", "dynamo-py", "dynamo-runtime"):
        assert dyn[name].base == "wheel-builder", name  # manylinux_2_28, as Dynamo's wheel_builder


# -- the runtime config, against the upstream images ---------------------------------------

VENV_PATH = {"VIRTUAL_ENV": "/opt/venv", "PATH": "/opt/venv/bin:${PATH}"}
TGI_SITE = "/usr/src/.venv/lib/python3.11/site-packages"
DYNAMO_ENV = {  # Dockerfile.<engine>, runtime stage; NIXL as built on manylinux (lib64)
    "HOME": "/home/dynamo",
    "NIXL_PREFIX": "/opt/nvidia/nvda_nixl",
    "NIXL_LIB_DIR": "/opt/nvidia/nvda_nixl/lib64",
    "NIXL_PLUGIN_DIR": "/opt/nvidia/nvda_nixl/lib64/plugins",
    "LD_LIBRARY_PATH": "/opt/nvidia/nvda_nixl/lib64:/opt/nvidia/nvda_nixl/lib64/plugins:/usr/local/ucx/lib:"
    "/usr/local/ucx/lib/ucx:/usr/local/libfabric/lib:/usr/local/aws-sdk-cpp/lib64:"
    "/usr/local/ffmpeg/lib:${LD_LIBRARY_PATH}",
}
DRIVER_CAPS = {"NVIDIA_DRIVER_CAPABILITIES": "video,compute,utility"}  # Dockerfile.<engine>'s runtime stage
DYNAMO = {  # USER dynamo, WORKDIR /workspace, ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh"], CMD []
    "Entrypoint": ["/opt/nvidia/nvidia_entrypoint.sh"],
    "Cmd": None,
    "User": "dynamo",
    "WorkingDir": "/workspace",
    "Healthcheck": None,
    "ExposedPorts": None,
    "Labels": {},
}
NONE = {"Cmd": None, "User": None, "Healthcheck": None, "ExposedPorts": None, "Labels": {}}
# v0.11.1 docker/Dockerfile:407-411 (vllm-base): the host driver's /usr/local/nvidia/lib64
# first; and uv's settings, vllm-base's ENV (:329-332, read from the sdist on PyPI)
VLLM_CUDA_ENV = {
    **VENV_PATH,
    "LD_LIBRARY_PATH": "/usr/local/nvidia/lib64:${LD_LIBRARY_PATH}",
    "UV_HTTP_TIMEOUT": "500",
    "UV_INDEX_STRATEGY": "unsafe-best-match",
    "UV_LINK_MODE": "copy",
}

# vLLM v0.11.1 docker/Dockerfile.rocm:124-132 (read from the sdist on PyPI), with the base
# stage's PYTORCH_ROCM_ARCH (:8-9, the arch list built: Dockerfile.rocm_base:18's by default)
# and uv's settings (:24-27)
ROCM_ENV = {
    "RAY_EXPERIMENTAL_NOSET_ROCR_VISIBLE_DEVICES": "1",
    "RAY_EXPERIMENTAL_NOSET_HIP_VISIBLE_DEVICES": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "SAFETENSORS_FAST_GPU": "1",
    "HIP_FORCE_DEV_KERNARG": "1",
    "PYTORCH_ROCM_ARCH": "gfx90a;gfx942;gfx950;gfx1100;gfx1101;gfx1200;gfx1201;gfx1150;gfx1151",
    "UV_HTTP_TIMEOUT": "500",
    "UV_INDEX_STRATEGY": "unsafe-best-match",
    "UV_LINK_MODE": "copy",
}
CONFIGS: dict[tuple[str, str | None], dict[str, Any]] = {
    ("tgi", None): {  # TGI's Dockerfile, final stage; seed 000's CMD (commented out upstream)
        **NONE,
        "Entrypoint": ["/tgi-entrypoint.sh"],  # which runs `text-generation-launcher "$@"`
        "Cmd": ["--json-output"],
        "WorkingDir": "/usr/src",
        "Env": {
            "HF_HOME": "/data",
            "HF_HUB_ENABLE_HF_TRANSFER": "1",
            "PORT": "80",
            "PYTHON_VERSION": "3.11",
            "VIRTUAL_ENV": "/usr/src/.venv/",
            "PATH": "${PATH}:/usr/src/.venv/bin/",
            "HF_KERNELS_CACHE": "/kernels",
            "EXLLAMA_NO_FLASH_ATTN": "1",
            # upstream's libpython dir of the uv CPython, then the nvidia pip wheels' libraries
            "LD_LIBRARY_PATH": "${LD_LIBRARY_PATH}:/root/.local/share/uv/python/cpython-3.11.11-linux-x86_64-gnu/lib/:"
            f"{TGI_SITE}/nvidia/nccl/lib:{TGI_SITE}/nvidia/cudnn/lib:{TGI_SITE}/nvidia/cublas/lib:"
            f"{TGI_SITE}/nvidia/nvjitlink/lib",
        },
    },
    ("vllm", "openai"): {  # vllm-openai: ENTRYPOINT ["vllm", "serve"], root, the server's port
        **NONE,
        "Entrypoint": ["vllm", "serve"],
        "WorkingDir": "/vllm-workspace",
        "Env": {**VLLM_CUDA_ENV, "VLLM_USAGE_SOURCE": "production-docker-image"},
        "ExposedPorts": {"8000/tcp": {}},
    },
    ("vllm", "openai-nonroot"): {  # vllm-openai-nonroot: USER vllm, WORKDIR /home/vllm
        **NONE,
        "Entrypoint": ["vllm", "serve"],
        "User": "vllm",
        "WorkingDir": "/home/vllm",
        "Env": {**VLLM_CUDA_ENV, "VLLM_USAGE_SOURCE": "production-docker-image"},
        "ExposedPorts": {"8000/tcp": {}},
    },
    ("vllm", "vllm-base"): {  # no entrypoint of its own: the CUDA base's
        **NONE,
        "Entrypoint": None,
        "WorkingDir": "/vllm-workspace",
        "Env": VLLM_CUDA_ENV,
    },
    ("vllm", "wheel"): {**NONE, "Entrypoint": None, "WorkingDir": "/wheels", "Env": {}},
    # Dockerfile.rocm, stage final: CMD ["/bin/bash"] and no entrypoint, so that seed 003's
    # `docker run ... IMAGE bash` gets a shell, not `vllm serve bash`
    ("vllm", "rocm"): {
        **NONE,
        "Entrypoint": None,
        "Cmd": ["/bin/bash"],
        "WorkingDir": "/app",
        "Env": ROCM_ENV,
        "ExposedPorts": {"8000/tcp": {}},
    },
    ("vllm", "rocm-openai"): {  # final with ENTRYPOINT ["vllm", "serve"], which resets the inherited CMD
        **NONE,
        "Entrypoint": ["vllm", "serve"],
        "WorkingDir": "/app",
        "Env": ROCM_ENV,
        "ExposedPorts": {"8000/tcp": {}},
    },
    ("deepspeed", None): {  # with nvjitlink of the pip wheels first on the library path (seed 000)
        **NONE,
        "Entrypoint": ["deepspeed"],
        "User": "deepspeed",  # docker/Dockerfile (v0.16.4): USER deepspeed
        "WorkingDir": None,
        "Env": {
            **VENV_PATH,
            "LD_LIBRARY_PATH": "/opt/venv/lib/python3.10/site-packages/nvidia/nvjitlink/lib:${LD_LIBRARY_PATH}",
            "SSH_PORT": "2222",  # docker/Dockerfile (v0.16.4): sshd's port, not the host's 22
        },
    },
    ("dynamo", "vllm"): {
        **DYNAMO,
        "Env": {
            **DYNAMO_ENV,
            "DYNAMO_HOME": "/opt/dynamo",
            "VIRTUAL_ENV": "/opt/dynamo/venv",
            "PATH": "/opt/dynamo/venv/bin:/usr/local/ucx/bin:/usr/local/bin/etcd/:/usr/local/cuda/nvvm/bin:${PATH}",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CPATH": "/usr/local/cuda/include",
            **DRIVER_CAPS,  # Dockerfile.vllm:662 at 7436e3bc (Dockerfile.aws's runtime-aws is FROM it)
        },
    },
    ("dynamo", "dev"): {  # root, with cargo on PATH and its target folder in the workspace
        **DYNAMO,
        "User": "root",
        "Env": {
            **DYNAMO_ENV,
            # Dockerfile.vllm:780-781 at 7436e3bc: the dev stage's DYNAMO_HOME is WORKSPACE_DIR
            "DYNAMO_HOME": "/workspace",
            "WORKSPACE_DIR": "/workspace",
            "VIRTUAL_ENV": "/opt/dynamo/venv",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CPATH": "/usr/local/cuda/include",
            **DRIVER_CAPS,  # the runtime stage's, which dev is FROM
            "RUSTUP_HOME": "/usr/local/rustup",
            "CARGO_HOME": "/usr/local/cargo",
            "CARGO_TARGET_DIR": "/workspace/target",
            "PATH": "/usr/local/cargo/bin:/opt/dynamo/venv/bin:/usr/local/ucx/bin:/usr/local/bin/etcd/:"
            "/usr/local/cuda/nvvm/bin:${PATH}",
        },
    },
    ("dynamo", "efa"): {  # Dockerfile.aws, stage runtime-aws: the runtime's user, env and entrypoint
        **DYNAMO,
        "Env": {
            **DYNAMO_ENV,
            "DYNAMO_HOME": "/opt/dynamo",
            "VIRTUAL_ENV": "/opt/dynamo/venv",
            "PATH": "/opt/dynamo/venv/bin:/usr/local/ucx/bin:/usr/local/bin/etcd/:/usr/local/cuda/nvvm/bin:${PATH}",
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CPATH": "/usr/local/cuda/include",
            **DRIVER_CAPS,  # Dockerfile.vllm:662 at 7436e3bc (Dockerfile.aws's runtime-aws is FROM it)
        },
    },
    ("dynamo", "sglang"): {
        **DYNAMO,
        "Env": {
            **DYNAMO_ENV,
            "PATH": "/usr/local/bin/etcd:${PATH}",
            "SGLANG_VERSION": "v0.5.6.post2",
            "SGLANG_FORCE_SHUTDOWN": "1",
            **DRIVER_CAPS,  # Dockerfile.sglang:705 at 7436e3bc
        },
    },
    ("dynamo", "trtllm"): {
        **DYNAMO,
        "Env": {
            **DYNAMO_ENV,
            "DYNAMO_HOME": "/workspace",
            "ENV": "/etc/shinit_v2",
            "VIRTUAL_ENV": "/opt/dynamo/venv",
            "OMPI_MCA_coll_ucc_enable": "0",
            "CUDA_HOME": "/usr/local/cuda",
            "TRITON_PTXAS_PATH": "/usr/local/cuda/bin/ptxas",
            **DRIVER_CAPS,
            "OPAL_PREFIX": "/opt/hpcx/ompi",
            "PATH": "/usr/local/ucx/bin:/opt/dynamo/venv/bin:/opt/hpcx/ompi/bin:/usr/local/bin/etcd/:"
            "/usr/local/cuda/bin:/usr/local/cuda/nvvm/bin:${PATH}",
            "LD_LIBRARY_PATH": "/opt/nvidia/nvda_nixl/lib64:/opt/nvidia/nvda_nixl/lib64/plugins:/usr/local/ucx/lib:"
            "/usr/local/ucx/lib/ucx:/usr/local/libfabric/lib:/usr/local/aws-sdk-cpp/lib64:"
            "/usr/local/ffmpeg/lib:/opt/hpcx/ompi/lib:/opt/hpcx/ucc/lib:"
            "/opt/dynamo/venv/lib/python3.12/site-packages/torch/lib:"
            "/opt/dynamo/venv/lib/python3.12/site-packages/torch_tensorrt/lib:/usr/local/cuda/lib64:"
            "${LD_LIBRARY_PATH}",
        },
    },
}


@pytest.mark.parametrize(("manifest", "target"), CASES, ids=IDS)
def test_runtime_config_matches_upstream(plan: PlanFn, manifest: str, target: str | None) -> None:
    assert runtime_config(plan(manifest, *_args(target))["config"]) == CONFIGS[manifest, target]


def test_annotations_name_the_upstream_source_and_revision(plan: PlanFn) -> None:
    for manifest, target, source, revision, version in [
        ("tgi", None, "https://github.com/huggingface/text-generation-inference", "tgi", "3.3.4"),
        ("vllm", "rocm", "https://github.com/vllm-project/vllm", "vllm", "0.11.1"),
        ("deepspeed", None, "https://github.com/deepspeedai/DeepSpeed", "deepspeed", "0.16.4"),
        ("dynamo", "trtllm", "https://github.com/ai-dynamo/dynamo", "dynamo", "0.8.0"),
    ]:
        notes = plan(manifest, *_args(target))["annotations"]
        assert notes["org.opencontainers.image.source"] == source
        # The commit built, known once the source is fetched (a plan fetches nothing).
        assert notes["org.opencontainers.image.revision"] == f"${{sources.{revision}.revision}}"
        assert notes["org.opencontainers.image.version"] == version
        assert notes["org.opencontainers.image.title"] == manifest


# -- GPU metadata ----------------------------------------------------------------------------


def gpu_labels(plan: dict[str, Any]) -> dict[str, str]:
    labels = {k[len(GPU) :]: v for k, v in (plan["config"].get("Labels") or {}).items() if k.startswith(GPU)}
    notes = {k[len(GPU) :]: v for k, v in plan["annotations"].items() if k.startswith(GPU)}
    assert labels == notes, "labels (skopeo inspect) and manifest annotations say the same"
    return labels


def test_gpu_labels_show_versions_and_architectures(plan: PlanFn) -> None:
    cuda = gpu_labels(plan("vllm"))
    assert cuda["gpu.cuda.version"] == "12.9.1"
    # Arch lists are read from what each kernel step built: a plan shows where they will come
    # from; the image-wide list appears only when the built steps agree (wheel, DeepGEMM, EP differ).
    assert cuda["step.wheel.cuda.archs"] == "${steps.wheel.cuda_archs}"
    assert cuda["step.build-deepgemm.cuda.archs"] == "${steps.build-deepgemm.cuda_archs}"
    assert cuda["step.build-ep-kernels.cuda.archs"] == "${steps.build-ep-kernels.cuda_archs}"
    assert "gpu.cuda.archs" not in cuda
    assert cuda["build.wheel"] == "MAX_JOBS=2 NVCC_THREADS=8"
    # torch's and Python's versions are read from the built image: a plan shows where from
    assert (cuda["torch.version"], cuda["python.version"]) == ("${image.torch_version}", "${image.python_version}")
    assert cuda["target"] == "openai"
    assert cuda.get("gpu.rocm.version", "") == "" and "gpu.rocm.archs" not in cuda

    rocm = gpu_labels(plan("vllm", "--target", "rocm"))
    # rocm/vllm-dev:base is a floating tag: its ROCm version is the base's to say, not the param's.
    assert rocm["gpu.rocm.version"] == "${bases.runtime.env.ROCM_VERSION}"
    assert rocm["gpu.rocm.archs"] == "${steps.wheel-rocm.rocm_archs}"
    assert rocm.get("gpu.cuda.version", "") == "" and "gpu.cuda.archs" not in rocm
    assert rocm["build.wheel-rocm"] == "MAX_JOBS=2"
    # the wheel alone, on scratch: no base will ever say a CUDA version
    assert "gpu.cuda.version" not in gpu_labels(plan("vllm", "--target", "wheel"))

    narrowed = gpu_labels(plan("vllm", "--set", "torch_cuda_arch_list=9.0 10.0+PTX", "--set", "cuda_version=12.8.1"))
    assert narrowed["gpu.cuda.version"] == "12.8.1"  # the runtime base's tag names it

    tgi = gpu_labels(plan("tgi"))
    # TGI's runtime base is 12.4.0 (its devel image 12.4.1): the base's own CUDA_VERSION says which.
    assert tgi["gpu.cuda.version"] == "${bases.runtime.env.CUDA_VERSION}"
    assert (tgi["python.version"], tgi["torch.version"]) == ("${image.python_version}", "${image.torch_version}")
    # Kernels built for different lists: one label per step, no merged image-wide list.
    assert "gpu.cuda.archs" not in tgi
    assert tgi["step.exllamav2.cuda.archs"] == "${steps.exllamav2.cuda_archs}"
    assert tgi["build.flash-attn-v2"] == "MAX_JOBS=8 NVCC_THREADS=2"

    ds = gpu_labels(plan("deepspeed"))
    assert (ds["gpu.cuda.version"], ds["gpu.cuda.archs"]) == ("12.2.2", "${steps.wheel.cuda_archs}")
    assert ds["build.wheel"] == "DS_BUILD_OPS=1 MAX_JOBS=4"

    # SGLang's runtime image's tag does not name its CUDA: the base's own CUDA_VERSION will.
    from_base = "${bases.runtime.env.CUDA_VERSION}"
    for engine, version in (("vllm", "12.9"), ("sglang", from_base), ("trtllm", "13.0")):
        labels = gpu_labels(plan("dynamo", "--target", engine))
        assert (labels["gpu.cuda.version"], labels["target"]) == (version, engine)


# -- a param change reaches only what depends on it ---------------------------------------


def test_vllm_arch_list_rebuilds_the_wheel_and_nothing_below(plan: PlanFn) -> None:
    base = plan("vllm")
    diff = changed(base, plan("vllm", "--set", "torch_cuda_arch_list=9.0 10.0+PTX"))
    assert "wheel" in diff
    # runtime steps below the wheel's install, and any other target's work, stay as they are
    assert not diff & {"system", "python", "cuda-jit"}, diff
    assert diff <= {
        "wheel",
        "vllm",
        "vllm-deps",
        "flashinfer",
        "flashinfer-jit-cache",
        "gdrcopy-ld",
        "deepgemm",
        "ep-kernels",
        "kv-connectors",
        "openai-extras",
    }, diff
    # DeepGEMM and the EP kernels are built for their own arch lists: not rebuilt
    assert not diff & {"build-deepgemm", "build-ep-kernels", "gdrcopy"}, diff
    rocm = plan("vllm", "--target", "rocm")
    assert changed(rocm, plan("vllm", "--target", "rocm", "--set", "torch_cuda_arch_list=9.0")) == set()
    assert changed(base, plan("vllm", "--set", "pytorch_rocm_arch=gfx942")) == set()
    assert changed(rocm, plan("vllm", "--target", "rocm", "--set", "pytorch_rocm_arch=gfx942")) >= {"wheel-rocm"}


def test_vllm_arch_list_reaches_the_steps_that_install_the_wheel(plan: PlanFn) -> None:
    diff = changed(plan("vllm"), plan("vllm", "--set", "torch_cuda_arch_list=9.0 10.0+PTX"))
    assert diff == {
        "wheel",
        "vllm",
        "vllm-deps",
        "flashinfer",
        "flashinfer-jit-cache",
        "gdrcopy-ld",
        "deepgemm",
        "ep-kernels",
        "openai-extras",
    }


@pytest.mark.parametrize("vllm_from", ["source"])
def test_a_vllm_bump_leaves_the_nvidia_and_torch_layers_as_they_are(plan: PlanFn, vllm_from: str) -> None:
    # The venv is four layers (nvidia, torch, vllm, vllm-deps), as Dynamo's: another vLLM
    # re-runs (and re-pushes) vllm and what is stacked on it, never the nvidia libraries or torch.
    # (vllm_from=wheel locks the release's venv as one set: its layers follow the lock, and a
    # bump is a lock first: tests/test_lock.py.)
    before = plan("vllm", "--set", f"vllm_from={vllm_from}")
    bump = ["--set", "vllm_ref=v0.11.2", "--set", "vllm_version=0.11.2"]
    diff = changed(before, plan("vllm", "--set", f"vllm_from={vllm_from}", *bump))
    assert "vllm-deps" in diff and not diff & {"system", "python", "cuda-jit", "nvidia", "torch"}, diff
    # a torch bump (a vLLM requiring another torch: torch_version follows vllm_torch) re-runs
    # torch and what is above it; the nvidia layer's pins come from torch's
    diff = changed(before, plan("vllm", "--set", f"vllm_from={vllm_from}", "--set", "vllm_torch=2.9.1"))
    assert {"nvidia", "torch", "vllm-deps"} <= diff and not diff & {"system", "python", "cuda-jit"}, diff


def test_vllm_cuda_version_reaches_every_cuda_step(plan: PlanFn) -> None:
    base = plan("vllm")
    newer = plan("vllm", "--set", "cuda_version=12.8.1")
    assert changed(base, newer) == set(definitions(base))  # both bases are CUDA images
    # (the rocm target fixes cuda_version to "": a --set of it is refused, tests/test_params_coupled.py)


def test_tgi_arch_list_rebuilds_the_kernels_only(plan: PlanFn) -> None:
    base = plan("tgi")
    diff = changed(base, plan("tgi", "--set", "torch_cuda_arch_list=9.0+PTX"))
    # the kernels built for the arch list, and the runtime step stacked on their layers;
    # not the Rust binaries (CPU only), the venvs, or the kernels whose arch lists TGI pins
    # (exllamav2, FlashInfer)
    assert diff == {
        "flash-attn-v1",
        "flash-attn-v2",
        "exllama",
        "awq",
        "custom-kernels",
        "causal-conv1d",
        "mamba",
        "compilers",
    }
    # a newer CUDA for both the devel and the runtime base (constraints: they must agree):
    # everything but the Rust binaries (built on the cargo image)
    diff = changed(base, plan("tgi", "--set", "cuda_version=12.6.3", "--set", "runtime_cuda_version=12.6.3"))
    assert set(definitions(base)) - diff == {"router"}


def test_dynamo_engines_share_the_cpu_only_builds(plan: PlanFn) -> None:
    vllm, sglang, trtllm = (plan("dynamo", "--target", e) for e in ("vllm", "sglang", "trtllm"))
    common = set(DYNAMO_COMMON) - {"cuda-jit"}

    def compiled(p: dict[str, Any]) -> dict[str, str]:
        return {k: v for k, v in definitions(p).items() if k in common}

    a, b, c = compiled(vllm), compiled(sglang), compiled(trtllm)
    # same devel image: SGLang reuses every build of the vLLM image but the kvbm wheel (build.sh
    # forces KVBM for vLLM and TRT-LLM only: empty for SGLang)
    assert {k for k in a if a[k] != b[k]} == {"kvbm"}
    # CUDA 13 for TensorRT-LLM: the CUDA builds differ (kvbm and the bindings link NIXL), the CPU-only
    # wheel-builder ones do not
    assert {k for k in a if a[k] != c[k]} == {"cuda", "nats-etcd", "ucx", "libfabric", "nixl", "kvbm", "dynamo-runtime"}
    # a new NIXL rebuilds NIXL, the kvbm wheel and the bindings built against it, and what is
    # stacked on its layers
    diff = changed(vllm, plan("dynamo", "--target", "vllm", "--set", "nixl_ref=0.10.0"))
    assert diff == {"nixl", "kvbm", "dynamo-runtime", "dynamo", "benchmarks", "permissions"}, diff


# -- seed 002: the old vLLM image to the current one is a change of params ------------------

OLD_VLLM = {  # seed 002's "current version": CUDA 12.1.1 (cudnn8 devel image), Python 3.10, pip
    "cuda_version": "12.1.1",
    "python_version": "3.10",
    "installer": "pip",
    "vllm_torch": "2.6.0",  # vLLM 0.8.5 requires torch==2.6.0 (torch_version follows it)
    "vllm_torchvision": "0.21.0",  # ... and torchvision==0.21.0
    "vllm_ref": "v0.8.5",
    "vllm_version": "0.8.5",
    "flashinfer_version": "0.2.1.post2",
    "flashinfer_cubin": "false",  # FlashInfer 0.2 has no flashinfer-cubin on PyPI
    "flashinfer_jit_cache": "false",  # ... nor a jit-cache on flashinfer.ai
    "devel_image": "nvidia/cuda:12.1.1-cudnn8-devel-ubuntu22.04",
    "torch_cuda_arch_list": "7.0 7.5 8.0 8.6 8.9 9.0+PTX",  # CUDA 12.1's nvcc has no 10.0, 12.0
    "deepgemm_arch_list": "9.0a",  # ... nor 10.0a (DeepGEMM skips itself below CUDA 12.8 anyway)
    "ep_arch_list": "9.0a",
    # PyPI's torch 2.6.0 (a CUDA 12.4 build), as the seed's image took it: PyTorch's cu121 index
    # stops at 2.5.1, and plan refuses it for 2.6.0 (tests/test_facts.py)
    "torch_index_url": "https://pypi.org/simple",
}


def test_old_to_new_vllm_is_a_change_of_params_only(plan: PlanFn) -> None:
    new = plan("vllm")
    old = plan("vllm", *[a for k, v in OLD_VLLM.items() for a in ("--set", f"{k}={v}")])
    s_new, s_old = structure(new), structure(old)
    # the same steps, but for FlashInfer's prebuilt kernels, which FlashInfer 0.2 does not have (switches)
    prebuilt = {"flashinfer", "flashinfer-jit-cache"}
    assert s_old["compile"] == s_new["compile"]
    assert s_old["layers"] == [x for x in s_new["layers"] if x[1] not in prebuilt]
    assert [s["kind"] for s in old["steps"]] == [s["kind"] for s in new["steps"] if s["name"] not in prebuilt]
    assert s_old["outputs"] == [f"{REGISTRY}/vllm/vllm-openai:v0.8.5"]
    # every step's definition differs: other bases, interpreter, installer, versions
    d_old, d_new = definitions(old), definitions(new)
    assert d_old.keys() == d_new.keys() - prebuilt and all(d_old[k] != d_new[k] for k in d_old)
    # the params that differ: the ones set, and those derived from them (images, installer commands)
    derived = {
        "runtime_image",
        "installer_pkgs",
        "pip_install",
        "python_setup",
        "torch_version",
        "cuda_tag",
        "cuda_pkg",
        "torch_index",
        "torch_index_url",
        "resolve_as_of",  # vllm==VERSION: the release's day
    }
    assert {k for k in new["params"] if new["params"][k] != old["params"][k]} == set(OLD_VLLM) | derived
    assert old["params"]["runtime_image"] == "nvidia/cuda:12.1.1-base-ubuntu22.04"
    assert "python3.10 -m venv /opt/venv" in old["params"]["python_setup"]
    assert old["params"]["pip_install"] == "/opt/venv/bin/python -m pip install"
    assert new["params"]["pip_install"].endswith("/opt/venv/bin/uv pip install --python /opt/venv/bin/python")
    # the image is configured the same; only the CUDA version label says what changed (the
    # base's tag names it; torch's and Python's are read from the built image, in a plan alike)
    assert runtime_config(old["config"]) == runtime_config(new["config"])
    l_old, l_new = gpu_labels(old), gpu_labels(new)
    assert {k for k in l_new if l_new[k] != l_old.get(k)} == {"gpu.cuda.version"}


# -- broken references fail at plan time with file:line ---------------------------------------

SMALL = """\
name: small
params: {cuda_version: "12.9.1"}
bases:
  devel: docker://nvidia/cuda:${cuda_version}-devel-ubuntu22.04
  runtime: docker://nvidia/cuda:${cuda_version}-base-ubuntu22.04
sources:
  app: {git: https://example.invalid/app.git, ref: v1}
compile:
  - name: wheel
    use: python-wheel
    base: devel
    with: {source: app}
image:
  base: runtime
  layers:
    - run: ["python3 -m pip install /wheels/*.whl"]
      mounts: [wheel.wheel]
targets:
  slim: {config: {entrypoint: [app]}}
"""


@dataclass(frozen=True)
class Broken:
    name: str
    file: str  # "small" (SMALL) or a manifest of manifests/ copied with one edit
    edit: tuple[str, str]
    field: str
    message: str
    args: tuple[str, ...] = ()


BROKEN = [
    Broken(
        "unknown recipe",
        "small",
        ("use: python-wheel", "use: no-such-recipe"),
        "compile.0.use",
        "unknown recipe 'no-such-recipe'",
    ),
    Broken(
        "unknown with: param",
        "small",
        ("with: {source: app}", "with: {source: app, sauce: x}"),
        "compile.0.with.sauce",
        "unknown param 'sauce' for recipe 'python-wheel'",
    ),
    Broken(
        "unknown param",
        "small",
        ("${cuda_version}-base", "${cuda_versoin}-base"),
        "bases.runtime",
        "unknown param ${cuda_versoin}",
    ),
    Broken(
        "unknown artifact",
        "small",
        ("mounts: [wheel.wheel]", "mounts: [wheel.whl]"),
        "image.layers.0.mounts.0",
        "step 'wheel' declares no artifact 'whl'",
    ),
    Broken(
        "unknown step",
        "small",
        ("mounts: [wheel.wheel]", "mounts: [nothing.wheel]"),
        "image.layers.0.mounts.0",
        "no compile step 'nothing'",
    ),
    Broken(
        "vllm: unknown artifact",
        "vllm",
        ('mounts: ["${wheel_step}.wheel"]', 'mounts: ["${wheel_step}.wheels"]'),
        "image.layers.8.mounts.0",
        "step 'wheel' declares no artifact 'wheels'",
    ),
    Broken(
        "vllm: rocm target's artifact",
        "vllm",
        ("mounts: [wheel-rocm.wheel]", "mounts: [wheel-rocm.whl]"),
        "targets.rocm.layers.4.mounts.0",
        "step 'wheel-rocm' declares no artifact 'whl'",
        ("--target", "rocm"),
    ),
    Broken(
        "tgi: unknown artifact",
        "tgi",
        ("artifact: router.bin", "artifact: router.binary"),
        "image.layers.21.artifact",
        "step 'router' declares no artifact 'binary'",
    ),
    Broken(
        "tgi: unknown with: param",
        "tgi",
        ("profile: release-opt", "profiel: release-opt"),
        "compile.0.with.profiel",
        "unknown param 'profiel' for recipe 'rust-binaries'",
    ),
    Broken("dynamo: unknown recipe", "dynamo", ("use: ucx\n", "use: ucxx\n"), "compile.4.use", "unknown recipe 'ucxx'"),
    Broken(
        "dynamo: unknown input",
        "dynamo",
        ("inputs: [cuda.toolkit, ucx.prefix,", "inputs: [cuda.toolkit, ucx.lib,"),
        "compile.8.inputs.1",
        "step 'ucx' declares no artifact 'lib'",
    ),
    Broken(
        "deepspeed: unknown with: param",
        "deepspeed",
        ("build_ops: ${ds_build_ops}", "build_op: ${ds_build_ops}"),
        "compile.0.with.build_op",
        "unknown param 'build_op' for recipe 'deepspeed-wheel'",
    ),
]


def line_of(text: str, needle: str) -> int:
    assert text.count(needle) == 1, needle
    return text[: text.index(needle)].count("\n") + 1


@pytest.fixture()
def recipes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifests written under tmp_path use the project's recipes."""
    monkeypatch.setenv("ASSEMBLE_RECIPES", str(LAYERS))


def assert_one_error(ran: Planned, path: Path, line: int | None, field: str, message: str) -> None:
    assert ran.code == 2, str(ran)
    assert ran.out == "", str(ran)
    assert len(ran.errors) == 1, str(ran)
    where = f"{path}:{line}" if line is not None else f"{path}"
    assert ran.errors[0].startswith(f"error: {where}: {field}: "), ran.errors[0]
    assert message in ran.errors[0], ran.errors[0]


@pytest.mark.usefixtures("recipes")
@pytest.mark.parametrize("case", BROKEN, ids=[b.name for b in BROKEN])
def test_broken_references_fail_at_plan_time_with_file_and_line(tmp_path: Path, case: Broken) -> None:
    original = SMALL if case.file == "small" else (MANIFESTS / f"{case.file}.yaml").read_text()
    text = original.replace(*case.edit)
    assert text != original and text.count(case.edit[1]) == 1, case
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / f"{case.file}.yaml").write_text(original)
    unedited = plan_in_process(tmp_path / "ok" / f"{case.file}.yaml", *case.args, cache=tmp_path / "cache")
    assert unedited.code == 0, str(unedited)
    path = tmp_path / f"{case.file}.yaml"
    path.write_text(text)
    ran = plan_in_process(path, *case.args, cache=tmp_path / "cache")
    assert_one_error(ran, path, line_of(text, case.edit[1]), case.field, case.message)


@pytest.mark.usefixtures("recipes")
def test_a_broken_reference_in_another_target_fails_too(tmp_path: Path) -> None:
    text = (MANIFESTS / "vllm.yaml").read_text().replace("mounts: [wheel-rocm.wheel]", "mounts: [wheel-rocm.whl]")
    path = tmp_path / "vllm.yaml"
    path.write_text(text)
    ran = plan_in_process(path, cache=tmp_path / "cache")  # the default target, openai
    assert_one_error(
        ran,
        path,
        line_of(text, "mounts: [wheel-rocm.whl]"),
        "targets.rocm.layers.4.mounts.0",
        "step 'wheel-rocm' declares no artifact 'whl'",
    )


@pytest.mark.usefixtures("recipes")
def test_a_missing_target_fails_with_file_and_line(tmp_path: Path) -> None:
    for path in (MANIFESTS / "vllm.yaml", MANIFESTS / "dynamo.yaml"):
        ran = plan_in_process(path, "--target", "nope", cache=tmp_path)
        assert_one_error(ran, path, line_of(path.read_text(), "\ntargets:") + 1, "targets", "unknown target 'nope'")
    small = tmp_path / "small.yaml"
    small.write_text(SMALL)
    ran = plan_in_process(small, "--target", "fat", cache=tmp_path)
    assert_one_error(ran, small, line_of(SMALL, "\ntargets:") + 1, "targets", "unknown target 'fat'")
    assert "hint: targets in this manifest: slim" in ran.err


def test_an_unknown_param_from_set_fails_naming_the_file(tmp_path: Path) -> None:
    ran = plan_in_process(MANIFESTS / "tgi.yaml", "--set", "cuda_verison=12.6.3", cache=tmp_path)
    assert ran.code == 2 and len(ran.errors) == 1, str(ran)
    assert ran.errors[0].startswith(f"error: {MANIFESTS / 'tgi.yaml'}"), ran.errors[0]
    assert "params: unknown param 'cuda_verison' (from --set)" in ran.errors[0]
    assert "cuda_version" in ran.err  # the hint lists the params


def test_an_unknown_param_from_set_names_the_params_line(tmp_path: Path) -> None:
    path = MANIFESTS / "tgi.yaml"
    ran = plan_in_process(path, "--set", "cuda_verison=12.6.3", cache=tmp_path)
    assert_one_error(ran, path, line_of(path.read_text(), "\nparams:") + 1, "params", "unknown param 'cuda_verison'")
