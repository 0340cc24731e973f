"""Issue 18, items 1 and 5: manifests/verl.yaml and manifests/verl-rocm.yaml against upstream.

Each check reads what `assemble plan --json` says (the steps in order, the image config's
Env, the outputs, the refusal of a param) or, for what a runtime step runs and with which
env, the layer the manifest resolves to for that target (as tests/test_coverage.py reads
`step:NAME~TEXT`). Upstream is volcengine/verl's docker/ folder at b8bd5968 (2025-05-17),
the commit that holds seed 004's revision of each file.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.schema import model as m
from assembler.manifest.schema.coupling import RocmArchs
from tests.test_manifests import plan_in_process

VERL = Path(__file__).resolve().parent.parent / "manifests" / "verl.yaml"
ROCM = VERL.with_name("verl-rocm.yaml")
SHA = re.compile(r"^[0-9a-f]{40}$")
TORCH_INDEX = "https://download.pytorch.org/whl/cu124"

# Each Dockerfile's ENV lines (b8bd5968): Dockerfile.ngc.vllm0.8 and
# Dockerfile.vllm.sglang.megatron lines 6-11, Dockerfile.ngc.vllm0.8.sagemaker lines 10-14
# (and Dockfile.ngc.vllm0.8's 11-15), Dockerfile.sglang lines 6-8; the others set none.
ENV_0_8 = {
    "MAX_JOBS": "32",
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
    "DEBIAN_FRONTEND": "noninteractive",
    "NODE_OPTIONS": "",
    "PIP_ROOT_USER_ACTION": "ignore",
    "HF_HUB_ENABLE_HF_TRANSFER": "1",
}
ENV_0_8_1 = {k: v for k, v in ENV_0_8.items() if k != "PIP_ROOT_USER_ACTION"}
ENV_SGLANG = {k: ENV_0_8[k] for k in ("MAX_JOBS", "DEBIAN_FRONTEND", "NODE_OPTIONS")}
UPSTREAM_ENV = {
    "ngc-vllm": {},
    "ngc-vllm0.8.1": ENV_0_8_1,
    "ngc-vllm0.8": ENV_0_8,
    "ngc-vllm0.8-sagemaker": ENV_0_8_1,
    "sglang": ENV_SGLANG,
    "megatron": {},
    "vemlp-vllm-te": {},
    "vllm-sglang-megatron": ENV_0_8,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-verl-cache")


def plan(cache: Path, manifest: Path, *args: str) -> dict[str, Any]:
    ran = plan_in_process(manifest, *args, cache=cache)
    assert ran.code == 0, str(ran)
    return ran.json  # type: ignore[no-any-return]


def runtime_steps(planned: dict[str, Any]) -> list[str]:
    return [s["name"] for s in planned["steps"] if s["kind"] == "runtime"]


def env_of(planned: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in planned["config"].get("Env") or [])


def layers(target: str) -> dict[str, m.RunLayer]:
    """The run layers of ``target``, by name, as the manifest resolves them."""
    man = load_manifest(VERL, target=target).manifest
    return {x.name or "": x for x in man.image.layers if isinstance(x, m.RunLayer)}


def command(layer: m.RunLayer) -> str:
    return " && ".join(layer.run)


def pip_installs_of(layer: m.RunLayer) -> list[str]:
    """Every `pip install ...` of a layer's commands (split at &&, || and ;)."""
    out = []
    for part in re.split(r"&&|;|\|\|", command(layer)):
        if re.search(r"\bpip3? install\b", part):
            out.append(" ".join(part.split()))
    return out


def pip_installs(target: str) -> list[str]:
    return [p for layer in layers(target).values() for p in pip_installs_of(layer)]


# -- item 1: the NVIDIA targets -----------------------------------------------------------


def test_vllm_sglang_megatron_installs_sglang_te_megatron_and_verl_without_their_deps(cache: Path) -> None:
    # Dockerfile.vllm.sglang.megatron lines 84, 102, 105, 114. With their dependencies:
    # vllm==0.8.5 and sglang[all]>=0.4.6.post4 cannot be resolved together (xgrammar 0.1.18
    # vs 0.1.19), sglang alone today brings torch 2.9.1 over the torch 2.6.0 layer, and
    # verl[vllm] 0.3.0.post1 wants vllm<=0.8.2.
    planned = plan(cache, VERL, "--target", "vllm-sglang-megatron")
    assert runtime_steps(planned) == [
        "system",
        "uninstall-nv",
        "cuda-12.4",
        "vllm",
        "flash-attn",
        "flashinfer",
        "fixes",
        "sglang",
        "cudnn",
        "apex",
        "transformer-engine",
        "megatron",
        "opencv-fix",
        "verl",
        "freeimage",
    ]
    run = layers("vllm-sglang-megatron")
    for name, wanted in (
        ("sglang", "'sglang[all]==0.4.6.post4'"),
        ("transformer-engine", "git+https://github.com/NVIDIA/TransformerEngine.git@v2.2"),
        ("megatron", "git+https://github.com/NVIDIA/Megatron-LM.git@core_v0.12.0rc3"),
        ("verl", "'verl[vllm]==0.3.0.post1'"),
    ):
        assert "--no-deps" in command(run[name]).split(), name
        assert wanted in command(run[name]), name
    assert "NVTE_FRAMEWORK=pytorch" in command(run["transformer-engine"])
    # the ones upstream installs with their dependencies keep them
    for name in ("vllm", "fixes", "flash-attn", "apex"):
        assert "--no-deps" not in command(run[name]), name


def test_vllm_sglang_megatron_pins_tensordict_and_fixes_the_packages(cache: Path) -> None:
    run = layers("vllm-sglang-megatron")
    vllm = command(run["vllm"])
    for req in (
        "'vllm==0.8.5'",
        "'torch==2.6.0'",
        "'torchvision==0.21.0'",
        "'torchaudio==2.6.0'",
        "'tensordict==0.6.2'",
        "'transformers[hf_xet]>=4.51.0'",
        "'numpy<2.0.0'",
        "'ray[default]'",
    ):
        assert req in vllm.split(), req  # line 63: one resolve, torch with vLLM
    # line 80: "Fix packages"
    fixes = command(run["fixes"])
    assert fixes.startswith("pip uninstall -y pynvml nvidia-ml-py && pip install --no-cache-dir --upgrade ")
    for req in (
        "'nvidia-ml-py>=12.560.30'",
        "'fastapi[standard]>=0.115.0'",
        "'optree>=0.13.0'",
        "'pydantic>=2.9'",
        "'grpcio>=1.62.1'",
    ):
        assert req in fixes.split(), req
    assert command(layers("ngc-vllm0.8")["fixes"]) == fixes  # Dockerfile.ngc.vllm0.8 line 67, the same step
    assert "'tensordict==0.6.2'" in command(layers("ngc-vllm0.8")["vllm"]).split()
    # the toolkit of lines 47-57, made /usr/local/cuda by update-alternatives; cuDNN from both places
    assert "update-alternatives --set cuda /usr/local/cuda-12.4" in command(run["cuda-12.4"])
    assert "apt-get -y install cudnn-cuda-12" in command(run["cudnn"])
    assert "pip install nvidia-cudnn-cu12==9.8.0.87" in command(run["cudnn"])


@pytest.mark.parametrize("target", sorted(UPSTREAM_ENV))
def test_each_target_has_its_dockerfiles_env_in_the_image_and_in_its_builds(cache: Path, target: str) -> None:
    planned = plan(cache, VERL, "--target", target)
    assert env_of(planned) == UPSTREAM_ENV[target]
    # Docker's ENV is seen by every later RUN too: MAX_JOBS=32 bounds the apex, TE and
    # flash-attn builds, VLLM_WORKER_MULTIPROC_METHOD reaches any import-time check.
    for name, layer in layers(target).items():
        if name == "uninstall-nv" and target in ("ngc-vllm0.8.1", "ngc-vllm0.8-sagemaker"):
            assert layer.env == {}  # upstream's first RUN, before its ENV lines
            continue
        for key, value in UPSTREAM_ENV[target].items():
            assert layer.env.get(key) == value, (name, key)


def test_verl_is_installed_only_where_upstream_installs_it(cache: Path) -> None:
    # Dockerfile.ngc.vllm, Dockfile.ngc.vllm0.8, Dockerfile.sglang, Dockerfile.megatron and
    # Dockerfile.vemlp.vllm.te install no verl; Dockerfile.ngc.vllm0.8 (line 71),
    # .sagemaker (line 42) and Dockerfile.vllm.sglang.megatron (line 114) do.
    verl = "'verl[vllm]==0.3.0.post1'"
    installs = {
        "ngc-vllm0.8": f"pip install --no-deps --no-cache-dir {verl}",
        # line 42 `pip install verl[vllm] -U`, by uv with vLLM 0.8.2's xgrammar override (a
        # deliberate difference: pip walks vLLM's xgrammar==0.1.16, which PyPI no longer serves)
        "ngc-vllm0.8-sagemaker": f"uv pip install --system --no-cache --override /tmp/xgrammar.txt --upgrade {verl}",
        "vllm-sglang-megatron": f"pip install --no-deps --no-cache-dir {verl} -U",
    }
    for target in UPSTREAM_ENV:
        planned = plan(cache, VERL, "--target", target)
        found = [p for p in pip_installs(target) if re.search(r"'verl\b", p)]
        if target in installs:
            assert "verl" in runtime_steps(planned), target
            assert found == [installs[target]], target
        else:
            assert "verl" not in runtime_steps(planned) and found == [], target
    assert plan(cache, VERL)["target"] == "ngc-vllm"  # the default installs none either


def test_ngc_vllm08_keeps_its_vllm_083_under_verl(cache: Path) -> None:
    # verl 0.3.0.post1's METADATA: `vllm<=0.8.2; extra == "vllm"`: with its dependencies, pip
    # would replace the target's vLLM 0.8.3 by 0.8.2. The other pins of Dockerfile.ngc.vllm0.8.
    planned = plan(cache, VERL, "--target", "ngc-vllm0.8")
    assert runtime_steps(planned) == ["system", "uninstall-nv", "vllm", "flash-attn", "flashinfer", "fixes", "verl"]
    run = layers("ngc-vllm0.8")
    assert "'vllm==0.8.3'" in command(run["vllm"]).split()
    assert command(run["flashinfer"]).endswith(
        "/v0.2.2.post1/flashinfer_python-0.2.2.post1+cu124torch2.6-cp38-abi3-linux_x86_64.whl"
    )
    wheel = "flash_attn-2.7.4.post1+cu12torch2.6cxx11abiFALSE-cp310-cp310-linux_x86_64.whl"
    assert command(run["flash-attn"]).endswith(f"/v2.7.4.post1/{wheel}")
    assert command(run["uninstall-nv"]).split()[-1] == "grpcio"  # line 44 removes NGC's grpcio too


def test_floating_requirements_are_pinned(cache: Path) -> None:
    # `verl[vllm] -U`, `sglang[all]>=0.4.6.post4`, `torch-memory-saver`: each to what it
    # resolved to on the date of the commit read; apex, TE and Megatron git refs to commits or tags.
    for target in UPSTREAM_ENV:
        for install in pip_installs(target):
            for name in ("verl", "sglang", "torch-memory-saver"):
                for req in re.findall(rf"'?{name}(?:\[[^\]]*\])?[^\s']*'?", install):
                    if req.strip("'").startswith(name) and "/" not in req:
                        assert "==" in req, (target, install)
    assert "pip install torch-memory-saver==0.0.6 --no-cache-dir" in pip_installs("sglang")
    params = {t: plan(cache, VERL, "--target", t)["params"] for t in ("ngc-vllm", "megatron", "vllm-sglang-megatron")}
    assert SHA.match(params["ngc-vllm"]["apex_ref"]) and SHA.match(params["vllm-sglang-megatron"]["apex_ref"])
    assert SHA.match(params["megatron"]["te_ref"]) and SHA.match(params["megatron"]["megatron_ref"])
    assert "git checkout 05b5b7d6e2057ea143bfdfd1ba01ab68292a9f55" in command(layers("megatron")["megatron"])
    assert "git+https://github.com/NVIDIA/apex@e74a67bba3ee679f778670e17edc21639008ae0a" in command(
        layers("ngc-vllm")["apex"]
    )


def test_targets_follow_their_files_run_by_run(cache: Path) -> None:
    steps = {t: runtime_steps(plan(cache, VERL, "--target", t)) for t in UPSTREAM_ENV}
    assert steps["ngc-vllm"] == [
        "uninstall-nv",
        "torch",
        "apex",
        "vllm",
        "dev-deps",
        "flash-attn",
        "transformer-engine",
    ]
    assert steps["ngc-vllm0.8.1"] == ["uninstall-nv", "system", "vllm", "flash-attn", "fixes"]
    assert steps["ngc-vllm0.8-sagemaker"] == ["uninstall-nv", "system", "vllm", "flash-attn", "fixes", "verl"]
    # Dockerfile.sglang removes none of NGC's packages and installs SGLang with its dependencies
    assert steps["sglang"] == ["system", "sglang", "deps", "flash-attn", "fixes"]
    sglang = command(layers("sglang")["sglang"])
    assert "pip install 'sglang[all]==0.4.6.post1'" in sglang and "--no-deps" not in sglang
    assert steps["megatron"] == ["transformer-engine", "megatron"]
    assert steps["vemlp-vllm-te"] == [
        "pip-config",
        "deps",
        "flash-attn-2.7",
        "vllm",
        "apex",
        "flash-attn",
        "transformer-engine",
    ]
    assert "ray==2.10" in command(layers("vemlp-vllm-te")["vllm"]).split()
    # torch, torchvision and torchaudio pinned together (an unpinned torchvision drags another torch)
    assert (
        "pip3 install torch==2.4.0 torchvision==0.19.0 torchaudio==2.4.0 --index-url "
        "https://download.pytorch.org/whl/cu124"
    ) in pip_installs("ngc-vllm")


# -- item 5: verl-rocm ------------------------------------------------------------------------

SGLANG_ENV = {
    "PYTORCH_ROCM_ARCH": "gfx90a;gfx942",
    "HIPCC_COMPILE_FLAGS_APPEND": "--amdgpu-target=gfx90a;gfx942 -D__HIP_PLATFORM_AMD__",
    "CFLAGS": "-D__HIP_PLATFORM_AMD__",
    "CXXFLAGS": "-D__HIP_PLATFORM_AMD__",
}


def test_rocm_default_is_the_seeds_sglang_apptainerfile_and_its_sif_has_its_environment(cache: Path) -> None:
    planned = plan(cache, ROCM)
    assert planned["target"] == "apptainer-sglang"
    assert planned["bases"]["runtime"] == planned["bases"]["devel"]
    man = load_manifest(ROCM).manifest
    assert man.bases["runtime"] == "docker://lmsysorg/sglang:v0.4.5-rocm630"  # Apptainerfile.rocm line 6
    # %environment (lines 9-13) is the SIF's environment: the image config's Env it is made from
    assert env_of(planned) == SGLANG_ENV
    assert [o.split(":", 1)[0] for o in planned["outputs"]] == ["oci", "sif"]
    assert planned["outputs"][1].endswith("/out/verl-rocm.sif")
    # Dockerfile.rocm (lines 15-19) the same, on its own SGLang base
    docker = plan(cache, ROCM, "--target", "docker-sglang")
    assert env_of(docker) == SGLANG_ENV
    assert load_manifest(ROCM, target="docker-sglang").manifest.bases["runtime"] == (
        "docker://lmsysorg/sglang:v0.4.6.post1-rocm630"
    )
    # the rocm6.2 revision stays a target, with only what it set
    assert env_of(plan(cache, ROCM, "--target", "train")) == {"PYTORCH_ROCM_ARCH": "gfx90a;gfx942"}


def test_rocm_vllm_build_gets_the_hip_platform_flags() -> None:
    for target in (None, "docker-sglang"):
        (vllm,) = [s for s in load_manifest(ROCM, target=target).manifest.compile if s.name == "vllm"]
        assert {k: vllm.env[k] for k in SGLANG_ENV} == SGLANG_ENV, target
        assert "setup.py bdist_wheel" in vllm.run[0]


def test_rocm_torch_memory_saver_is_a_commit_of_its_master(cache: Path) -> None:
    man = load_manifest(ROCM).manifest
    source = man.sources["torch-memory-saver"]
    assert isinstance(source, m.GitSource)
    # ExtremeViscent/torch_memory_saver has no `main`: its master on b8bd5968's date
    assert (source.git, source.ref) == (
        "https://github.com/ExtremeViscent/torch_memory_saver.git",
        "105303670b7af52ac5aa18caee872155863a6b93",
    )
    steps = runtime_steps(plan(cache, ROCM))
    assert "install-torch-memory-saver" in steps


def test_rocm_docker_target_is_dockerfile_rocms(cache: Path) -> None:
    man = load_manifest(ROCM, target="docker-sglang").manifest
    (deps,) = [x for x in man.image.layers if isinstance(x, m.RunLayer) and x.name == "python-deps"]
    assert '"ray[data,train,tune,serve]>=2.45.0"' in deps.run[1].split()  # Dockerfile.rocm line 46
    source = man.sources["verl"]
    assert isinstance(source, m.GitSource) and SHA.match(source.ref)  # line 31 `COPY . .`: its own tree
    assert "ray" not in runtime_steps(plan(cache, ROCM, "--target", "docker-sglang"))


@pytest.mark.parametrize("arch", ["sm_90", "9.0", "90a", "gfx90a;sm_80", "gfx942,compute_90", "mi300"])
def test_a_cuda_arch_as_a_rocm_arch_is_refused_at_plan(cache: Path, arch: str) -> None:
    for target in ("apptainer-sglang", "docker-sglang", "train", "smoke"):
        ran = plan_in_process(ROCM, "--target", target, "--set", f"pytorch_rocm_arch={arch}", cache=cache)
        assert ran.code == 2, (target, str(ran))
        assert "pytorch_rocm_arch:" in ran.err and "not a ROCm GPU target" in ran.err, ran.err
        assert "hint: --set pytorch_rocm_arch=gfx90a;gfx942" in ran.err


@pytest.mark.parametrize(
    "arch",
    [
        "gfx942",
        "gfx90a;gfx942",
        "gfx90a:xnack+;gfx942:sramecc+",
        "gfx1030;gfx1100",
        "gfx908 gfx90a gfx942",  # ROCm 6.3's: gfx950 needs 7.0 (tests/test_facts.py)
    ],
)
def test_rocm_arch_lists_amd_names_are_planned(cache: Path, arch: str) -> None:
    planned = plan(cache, ROCM, "--set", f"pytorch_rocm_arch={arch}")
    assert env_of(planned)["PYTORCH_ROCM_ARCH"] == arch


@pytest.mark.parametrize(
    ("arch", "left_out"),
    [("gfx1100,gfx1201", "gfx1201"), ("gfx11-generic", "gfx11-generic"), ("gfx10-3-generic", "gfx10-3-generic")],
)
def test_rocm_targets_vllms_build_leaves_out_are_refused_as_such(cache: Path, arch: str, left_out: str) -> None:
    # AMD names ROCm 6.3 knows, but not in vLLM 0.6.3's HIP_SUPPORTED_ARCHS: its CMake keeps
    # only the listed ones (none: it stops; some: the rest get no kernels, without a word)
    ran = plan_in_process(ROCM, "--set", f"pytorch_rocm_arch={arch}", cache=cache)
    assert ran.code == 2, str(ran)
    assert f"{left_out}: vllm 0.6.3 does not compile for it" in ran.err, ran.err
    assert "not a ROCm GPU target" not in ran.err


def test_rocm_archs_constraint_kind(tmp_path: Path) -> None:
    # additive in coupling.py: a manifest says {rocm_archs: "${param}"}; an empty list is the
    # build's default and passes; a CUDA name is said to be one.
    assert RocmArchs(rocm_archs="gfx942").rocm_archs == "gfx942"
    (tmp_path / "m.yaml").write_text(
        "name: m\nparams: {archs: 'gfx90a;gfx942', other: x}\nconstraints: [{rocm_archs: '${archs}'}]\n"
        "bases: {b: scratch}\nimage: {base: b, layers: [{run: ['echo ${archs} ${other}']}]}\n"
    )
    assert plan_in_process(tmp_path / "m.yaml", "--set", "archs=", cache=tmp_path / "c").code == 0
    ran = plan_in_process(tmp_path / "m.yaml", "--set", "archs=sm_90;sm_100 gfx942", cache=tmp_path / "c")
    assert ran.code == 2
    assert "archs: 'sm_90' (a CUDA arch), 'sm_100' (a CUDA arch) are not ROCm GPU targets (gfx...)" in ran.err


# -- python_sets: each pip install of the layers, as data for `assemble lock` ------------------

_VALUED = {"--index-url", "-i", "--extra-index-url", "--find-links", "-f", "--config-settings", "--override"}


def requirements_of(install: str) -> tuple[list[str], bool]:
    """The requirements one `pip install ...` names (options and their values left out), and
    whether it runs with --no-deps."""
    tokens = shlex.split(install)
    out, skip = [], False
    for token in tokens[tokens.index("install") + 1 :]:
        if skip or token in _VALUED:
            skip = not skip
            continue
        if not token.startswith("-"):
            out.append(token.replace(" ", ""))
    return out, "--no-deps" in tokens


@pytest.mark.parametrize("target", sorted(UPSTREAM_ENV))
def test_python_sets_mirror_the_pip_installs(target: str) -> None:
    python = "3.11" if target in ("megatron", "vemlp-vllm-te") else "3.10"
    for name, layer in layers(target).items():
        installs = [requirements_of(p) for p in pip_installs_of(layer)]
        # direct references (a release-wheel URL, a git URL, a local tree) are pinned by the command itself
        wanted = [
            ([r for r in reqs if "://" not in r and not r.startswith(".")], no_deps) for reqs, no_deps in installs
        ]
        wanted = [(reqs, no_deps) for reqs, no_deps in wanted if reqs]
        # uv installed for one install and removed after is no part of the image; what its
        # --override file holds is a set of its own (force: installed over the others' pins)
        if "pip uninstall -y uv" in command(layer):
            wanted = [(reqs, no_deps) for reqs, no_deps in wanted if not reqs[0].startswith("uv==")]
        for pin, _ in re.findall(r"echo (\S+) > (\S+)", command(layer)):
            wanted.append(([pin], False))
            assert any(s.force and s.requirements == [pin] for s in layer.python_sets), (target, name, pin)
        got = [([r.replace(" ", "") for r in s.requirements], s.no_deps) for s in layer.python_sets]
        assert sorted(got) == sorted(wanted), (target, name)
        assert {s.python for s in layer.python_sets} <= {python}, (target, name)
        index = [s.index_url for s in layer.python_sets]
        assert index == [TORCH_INDEX if name == "torch" else None for _ in index], (target, name)
    # at least the layers the issue names declare theirs
    sets = {name: layer.python_sets for name, layer in layers(target).items()}
    for name in {"verl", "sglang", "vllm", "fixes"} & set(sets):
        assert sets[name], (target, name)


def test_rocm_python_sets() -> None:
    for target in ("apptainer-sglang", "docker-sglang", "train"):
        man = load_manifest(ROCM, target=target).manifest
        (deps,) = [x for x in man.image.layers if isinstance(x, m.RunLayer) and x.name == "python-deps"]
        sets = {s.name: s for s in deps.python_sets}
        assert sets["tensordict"].requirements == ["tensordict<0.6"] and sets["tensordict"].no_deps
        ray = "ray[data,train,tune,serve]>=2.45.0" if target == "docker-sglang" else "ray[data,train,tune,serve]"
        assert ray in sets["deps"].requirements and not sets["deps"].no_deps
        assert sets["deps"].python == ("3.9" if target == "train" else "3.12")


def test_the_lock_holds_each_targets_era() -> None:
    """Issue 33: the default target locked as of upstream's date (b8bd5968, 2025-05-17):
    vLLM 0.6.3 beside transformers 4.51.x, not 2026's 5.x (whose CLIP lacks the
    CLIPSdpaAttention vLLM 0.6.3 imports); vLLM 0.8.1 and 0.8.2 with xgrammar 0.1.17, the
    nearest release to the 0.1.16 PyPI no longer serves; the cuDNN layer's 9.8 over torch's own."""
    from assembler.manifest.lock.file import read_lock

    lock = read_lock(VERL.with_suffix(".lock"))

    def pins(variant: str, where: str) -> dict[str, str]:
        entry = lock.sets[lock.variants[variant][where]]
        return {k: v.split("==")[1] for k, v in entry.constraints().items()}

    default = pins("ngc-vllm", "layers.vllm:vllm")
    assert default["vllm"] == "0.6.3.post1" and default["transformers"].startswith("4.51."), default
    assert pins("ngc-vllm", "layers.torch:torch")["torch"] == "2.4.0"
    for target in ("ngc-vllm0.8.1", "ngc-vllm0.8-sagemaker"):
        assert pins(target, "layers.vllm:vllm")["xgrammar"] == "0.1.17", target
    megatron = "vllm-sglang-megatron"
    assert pins(megatron, "layers.cudnn:cudnn")["nvidia-cudnn-cu12"] == "9.8.0.87"
    below = pins(megatron, "layers.vllm:vllm")  # torch 2.6.0 installs its own cuDNN at its turn
    assert "nvidia-cudnn-cu12" not in below and below["nvidia-cublas-cu12"] == "12.4.5.8", below
    envs = {e.resolved_as_of for e in lock.environments.values()}
    assert envs == {"2025-05-17T23:59:59Z", "2025-03-21T23:59:59Z"}, envs
