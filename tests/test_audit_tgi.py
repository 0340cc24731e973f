"""manifests/tgi.yaml against TGI v3.3.4's own files (issue 18, item 2), read from the plan.

Upstream at v3.3.4 (Dockerfile, server/Makefile-*, server/pyproject.toml, server/uv.lock):
the server runs uv.lock's torch 2.7.0+cu128, and every kernel is compiled against one torch;
Punica's kernels come from the Hub (`kernels download`, since v3.3.1 dropped the
lorax-punica stage); FlashInfer is compiled from git (`FLASHINFER_ENABLE_AOT=1`) against
the venv's torch, not taken as a prebuilt wheel built for another torch. Seed 000:186 has
libcuda.so pointed at the host's driver. A CUDA the torch index does not serve, and a torch
other than the tag's, are refused at plan (exit 2) naming the params.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assembler.errors import ManifestError
from assembler.manifest.load.constraints import index_cudas
from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.schema import model as m
from tests.helpers import ROOT, run_cli_here
from tests.test_manifests import PlanFn, plan_in_process

TGI = ROOT / "manifests" / "tgi.yaml"
SERVER_TORCH = "2.7.0+cu128"  # server/uv.lock:2836-2838 at v3.3.4
KERNEL_STEPS = {
    "flash-attn-v1",
    "flash-attn-v2",
    "exllama",
    "exllamav2",
    "awq",
    "custom-kernels",
    "causal-conv1d",
    "mamba",
    "flashinfer",
}


@pytest.fixture(autouse=True)
def _no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSEMBLE_TRACEBACK", raising=False)


@pytest.fixture(scope="module")
def plan_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plan-cache")


@pytest.fixture(scope="module")
def plan(plan_cache: Path) -> Iterator[PlanFn]:
    def run(*args: str) -> dict[str, Any]:
        ran = plan_in_process(TGI, *args, cache=plan_cache)
        assert ran.code == 0, str(ran)
        result: dict[str, Any] = ran.json
        return result

    yield run


def steps(*sets: str) -> dict[str, m.CompileStep]:
    values = dict(s.split("=", 1) for s in sets)
    return {s.name: s for s in load_manifest(TGI, sets=values).manifest.compile}


def torch_checks(step: m.CompileStep) -> list[str]:
    """The commands of a step that compare the interpreter's torch with a pinned version."""
    return [c for c in step.run if "torch.__version__" in c]


# -- one torch: the server's ----------------------------------------------------------------


def test_the_kernel_venv_holds_the_servers_torch(plan: PlanFn) -> None:
    params = plan()["params"]
    assert params["torch_pin"] == SERVER_TORCH
    torch = steps()["torch"]
    install = next(c for c in torch.run if c.startswith("uv pip install"))
    assert f"torch=={SERVER_TORCH}" in install.split()
    assert "torchvision==0.22.0+cu128" in install.split()  # uv.lock:2946-2948
    assert "--extra-index-url https://download.pytorch.org/whl/cu128" in install  # pyproject.toml:41-52
    assert "torch==2.6.0" not in install


def test_every_kernel_step_checks_the_torch_it_builds_against() -> None:
    compiled = steps()
    built_on_venv = {name for name, s in compiled.items() if "torch.venv" in s.inputs}
    assert built_on_venv == KERNEL_STEPS
    for name in KERNEL_STEPS:
        checks = torch_checks(compiled[name])
        assert len(checks) == 1 and f"'{SERVER_TORCH}'" in checks[0], name
        assert compiled[name].run.index(checks[0]) == 0, f"{name}: the check runs before the build"
    # and the server's venv (uv sync --frozen from uv.lock) is checked against the same pin,
    # after its last install
    server = compiled["server"]
    assert torch_checks(server) == [server.run[-1]] and f"'{SERVER_TORCH}'" in server.run[-1]
    assert any("uv sync --frozen" in c for c in server.run[:-1])


def _fake_torch(root: Path, version: str) -> dict[str, str]:
    """A venv-like folder whose bin/python imports a torch reporting ``version``."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").symlink_to(sys.executable)
    (root / "fake" / "torch").mkdir(parents=True)
    (root / "fake" / "torch" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    return {**os.environ, "PYTHONPATH": str(root / "fake")}


@pytest.mark.parametrize("name", ["flashinfer", "flash-attn-v1", "exllamav2", "flash-attn-v2", "server"])
def test_the_torch_check_stops_a_build_on_another_torch(tmp_path: Path, name: str) -> None:
    """The check commands as the plan resolves them, run against a venv holding another
    torch (the kernel venv before this fix: 2.6.0) and against the server's."""
    for version, ok in (("2.6.0+cu124", False), ("2.7.0+cu126", False), (SERVER_TORCH, True)):
        venv = tmp_path / version
        env = _fake_torch(venv, version)
        (check,) = torch_checks(steps(f"venv={venv}")[name])
        ran = subprocess.run(["bash", "-c", check], env=env, capture_output=True, text=True, check=False)
        assert (ran.returncode == 0) == ok, (version, ran.stderr)
        if not ok:
            assert f"torch {version} in {venv}" in ran.stderr and f"not {SERVER_TORCH}" in ran.stderr


# -- the kernel set of v3.3.4 -----------------------------------------------------------------


def test_punica_ships_once_from_the_hub(plan: PlanFn) -> None:
    """v3.3.1 (e3252879) removed the lorax-punica stage: Punica is kernels-community/punica-sgmv
    in server/kernels.lock, which the server step's `kernels download` fetches."""
    planned = plan()
    assert not [s["name"] for s in planned["steps"] if "punica" in s["name"] or "lorax" in s["name"]]
    assert not [layer["what"] for layer in planned["layers"] if "punica" in layer["what"]]
    manifest = load_manifest(TGI).manifest
    assert not [name for name, src in manifest.sources.items() if "lorax" in str(src.model_dump())]
    server = steps()["server"]
    assert any(re.search(r"/kernels download \.$", c) for c in server.run)
    assert server.env["HF_KERNELS_CACHE"] == "/kernels" and server.artifacts["kernels"].path == "/kernels"
    assert [layer["what"] for layer in planned["layers"]].count("artifact server.kernels") == 1


def test_kernel_sources_are_the_v3_3_4_makefiles_pins() -> None:
    sources = load_manifest(TGI).manifest.sources
    pins = {name: (str(getattr(src, "git", "")), str(getattr(src, "ref", ""))) for name, src in sources.items()}
    assert pins["tgi"][1] == "v3.3.4"  # the tag the version names
    flash_v1 = ("https://github.com/Narsil/flash-attention.git", "ceee0de88c037ee6eda5e75c813a8648e4bcb1c9")
    assert pins["flash-attention-v1"] == flash_v1  # Makefile-flash-att:1
    assert pins["exllamav2"] == ("https://github.com/turboderp/exllamav2.git", "v0.1.8")  # Makefile-exllamav2:1
    assert pins["flashinfer"] == ("https://github.com/flashinfer-ai/flashinfer.git", "v0.2.0.post2")
    assert pins["mamba"][1] == "2a3704fd47ba817b415627b06fd796b971fdc137"
    assert pins["causal-conv1d"][1] == "v1.1.1"


def test_flashinfer_is_compiled_from_git_against_the_venvs_torch(plan: PlanFn) -> None:
    """Makefile-flashinfer:6 `FLASHINFER_ENABLE_AOT=1 pip install git+...@v0.2.0.post2
    --no-build-isolation`, TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0+PTX"."""
    step = steps()["flashinfer"]
    assert step.sources == ["flashinfer"] and {"torch.venv", "torch.python"} <= set(step.inputs)
    assert load_manifest(TGI).manifest.sources["flashinfer"].submodules  # type: ignore[union-attr]
    assert step.env["FLASHINFER_ENABLE_AOT"] == "1"
    assert step.env["TORCH_CUDA_ARCH_LIST"] == "7.5;8.0;8.6;8.9;9.0+PTX"
    (build,) = [c for c in step.run if "pip install" in c]
    # built in the source against the venv's interpreter and torch: no isolated build env,
    # no index to take a prebuilt wheel from
    assert "cd /src/flashinfer" in build and "/usr/src/.venv/bin/python -m pip install" in build
    assert "--no-build-isolation" in build.split() and "index-url" not in build
    assert not [
        k
        for k in plan()["params"]
        if k.startswith("flashinfer_") and k != "flashinfer_arch_list" and k != "flashinfer_version"
    ]
    assert step.artifacts["lib"].to == "/usr/src/.venv/lib/python3.11/site-packages/flashinfer"


# -- seed 000:186: libcuda.so pointed at the host's driver ------------------------------------


def test_libcuda_so_points_at_the_drivers_library(plan: PlanFn) -> None:
    planned = plan()
    whats = [layer["what"] for layer in planned["layers"]]
    link = "run ln -s libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so"
    assert link in whats
    # on the runtime base, before the venv whose triton links with -lcuda at run time
    assert whats.index(link) < whats.index("artifact server.venv")
    (layer,) = [la for la in load_manifest(TGI).manifest.image.layers if getattr(la, "name", None) == "libcuda-link"]
    assert isinstance(layer, m.RunLayer)
    (command,) = layer.run
    _, _, target, path = command.split()
    # relative: the libcuda.so.1 the container toolkit mounts next to it, never a stub
    assert target == "libcuda.so.1" and os.path.dirname(path) == "/usr/lib/x86_64-linux-gnu"
    env = dict(e.split("=", 1) for e in planned["config"]["Env"])
    assert "stubs" not in env["LD_LIBRARY_PATH"]  # a stub on the path would shadow the driver


# -- combinations refused at plan -------------------------------------------------------------


def refused(*args: str) -> str:
    ran = run_cli_here(["plan", str(TGI), *args])
    assert ran.code == 2 and ran.out == "", str(ran)
    assert "Traceback" not in ran.err
    return ran.err


def test_a_cuda_the_torch_index_does_not_serve_is_refused() -> None:
    # CUDA 12.8 with the cu124 index (FlashInfer's, before this fix): the combination
    err = refused(
        "--set",
        "cuda_version=12.8.1",
        "--set",
        "runtime_cuda_version=12.8.1",
        "--set",
        "torch_index=https://flashinfer.ai/whl/cu124/torch2.6",
    )
    assert (
        "constraints.4: cuda_version 12.8.1 is newer than the CUDA 12.4 of torch_index "
        "(https://flashinfer.ai/whl/cu124/torch2.6)" in err
    )
    assert "hint: --set cuda_version=12.4 or an older 12.x, or --set torch_index=... whose cuXYZ is cu128" in err
    # a newer nvcc than the cu128 torch's CUDA, and another major (cpp_extension refuses it)
    err = refused("--set", "cuda_version=12.9.1", "--set", "runtime_cuda_version=12.9.1")
    assert "cuda_version 12.9.1 is newer than the CUDA 12.8 of torch_index" in err
    err = refused("--set", "cuda_version=13.0.1", "--set", "runtime_cuda_version=13.0.1")
    assert "cuda_version 13.0.1 does not match the CUDA 12.8 of torch_index" in err
    # torch_variant is fixed by the tag; unlocked, the index follows it and is checked
    err = refused(
        "--set-unlocked", "torch_variant=cu126", "--set", "cuda_version=12.8.1", "--set", "runtime_cuda_version=12.8.1"
    )
    assert "is newer than the CUDA 12.6 of torch_index (https://download.pytorch.org/whl/cu126)" in err


def test_cudas_the_index_serves_plan(plan: PlanFn) -> None:
    assert plan()["params"]["cuda_version"] == "12.4.1"  # upstream's: an older 12.x than cu128
    for cuda in ("12.8.1", "12.6.3"):
        assert plan("--set", f"cuda_version={cuda}", "--set", f"runtime_cuda_version={cuda}")


def test_a_torch_other_than_the_tags_is_refused() -> None:
    err = refused("--set", "torch_version=2.6.0")
    assert "--set torch_version=2.6.0 contradicts choice tgi_version=3.3.4, which sets torch_version=2.7.0" in err
    err = refused("--set", "torch_variant=cu124")
    assert "contradicts choice tgi_version=3.3.4, which sets torch_variant=cu128" in err
    # a release whose uv.lock the manifest has not read
    err = refused("--set", "tgi_version=3.3.5")
    assert "tgi_version=3.3.5 is not one of the choices: 3.3.4" in err


def test_flashinfers_arch_list_is_checked() -> None:
    err = refused("--set", "flashinfer_arch_list=75;80")
    assert "constraints.3: flashinfer_arch_list: '75', '80' are not torch's arch syntax" in err


# -- the constraint kind (assembler/manifest/schema/coupling.py: IndexCuda) ------------------------------


def test_index_urls_name_their_cuda() -> None:
    assert index_cudas("https://download.pytorch.org/whl/cu128") == [(12, 8)]
    assert index_cudas("https://flashinfer.ai/whl/cu124/torch2.6") == [(12, 4)]
    assert index_cudas("https://download.pytorch.org/whl/cu92") == [(9, 2)]
    assert index_cudas("https://download.pytorch.org/whl/cu130/") == [(13, 0)]
    assert index_cudas("https://pypi.org/simple") == []
    assert index_cudas("https://cuda.example/whl/cpu") == []


def _manifest(tmp_path: Path, constraint: str, **params: str) -> Path:
    path = tmp_path / "m.yaml"
    values = ", ".join(f"{k}: '{v}'" for k, v in params.items())
    path.write_text(
        f"name: m\nparams: {{{values}}}\nconstraints:\n  - {constraint}\n"
        "bases: {b: scratch}\nimage: {base: b, layers: [{run: ['echo ${cuda} ${index}']}]}\n"
    )
    return path


@pytest.mark.parametrize(
    ("older", "cuda", "index", "ok"),
    [
        (False, "12.4.1", "https://flashinfer.ai/whl/cu124/torch2.6", True),
        (False, "12.8.1", "https://flashinfer.ai/whl/cu124/torch2.6", False),
        (False, "12.4.1", "https://download.pytorch.org/whl/cu128", False),
        (True, "12.4.1", "https://download.pytorch.org/whl/cu128", True),
        (True, "12.8.0", "https://download.pytorch.org/whl/cu128", True),
        (True, "12.9.1", "https://download.pytorch.org/whl/cu128", False),
        (True, "11.8.0", "https://download.pytorch.org/whl/cu128", False),
        (False, "11.8.0", "https://pypi.org/simple", True),  # no cuXYZ: nothing to check
        (False, "", "https://download.pytorch.org/whl/cu128", True),  # no CUDA (a CPU build)
    ],
)
def test_index_cuda_constraint(tmp_path: Path, older: bool, cuda: str, index: str, ok: bool) -> None:
    constraint = "{index_url: '${index}', cuda_version: '${cuda}', because: it must" + (
        ", older: true}" if older else "}"
    )
    path = _manifest(tmp_path, constraint, cuda=cuda, index=index)
    if ok:
        load_manifest(path)
        return
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert f"cuda {cuda}" in str(caught.value) and f"of index ({index}): it must" in str(caught.value)


def test_index_cuda_constraint_refuses_a_bad_version(tmp_path: Path) -> None:
    path = _manifest(
        tmp_path,
        "{index_url: '${index}', cuda_version: '${cuda}', because: b}",
        cuda="twelve",
        index="https://download.pytorch.org/whl/cu128",
    )
    with pytest.raises(ManifestError, match="not a CUDA version: 'twelve'"):
        load_manifest(path)


# -- python_sets: what the steps' pip/uv commands install, as data for `assemble lock` ------


def _installed(command: str, options: tuple[str, ...]) -> list[str]:
    """The requirements of a ``uv pip install``/``pip install`` command, its options left out."""
    words = command.split()[command.split().index("install") + 1 :]
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in options:
            skip = True
        elif not word.startswith("-"):
            out.append(word)
    return out


def test_python_sets_mirror_what_the_steps_install() -> None:
    compiled = steps()
    torch = compiled["torch"]
    sets = {s.name: s for s in torch.python_sets}
    install = next(c for c in torch.run if c.startswith("uv pip install"))
    opts = ("--python", "--extra-index-url", "--index-strategy")
    assert sets["venv"].requirements == _installed(install, opts)
    assert sets["venv"].extra_index_urls == ["https://download.pytorch.org/whl/cu128"]
    assert f"--extra-index-url {sets['venv'].extra_index_urls[0]}" in install
    assert (sets["venv"].python, sets["venv"].no_deps) == ("3.11", False)
    bootstrap = next(c for c in torch.run if "pip install --quiet uv==" in c)
    assert sets["uv"].requirements == _installed(bootstrap, ())
    server = compiled["server"]
    by_name = {s.name: s for s in server.python_sets}
    nccl = next(c for c in server.run if "nvidia-nccl-cu12==" in c)
    assert by_name["nccl"].requirements == ["nvidia-nccl-cu12==2.25.1"]
    assert "uv pip install --python /usr/src/.venv/bin/python nvidia-nccl-cu12==2.25.1" in nccl
    assert by_name["uv"].requirements == ["uv==0.5.31"] and "pip install --quiet uv==0.5.31" in server.run[0]
    (sdist,) = compiled["flash-attn-v2"].python_sets
    download = next(c for c in compiled["flash-attn-v2"].run if "pip download" in c)
    assert sdist.no_deps and "--no-deps" in download and f" {sdist.requirements[0]} " in download
    # local trees are no set members: FlashInfer's `pip install .`, the flash-attn wheel
    assert not compiled["flashinfer"].python_sets


# -- upstream settings kept (issue 33, Why 8), read from the plan ------------------------------------


def test_the_image_has_uv_uvx_and_the_editable_server(plan: PlanFn) -> None:
    layers = [x["what"] for x in plan()["layers"]]
    # Dockerfile:163 (uv and uvx of ghcr.io/astral-sh/uv:0.5.31 in /bin, which is /usr/bin)
    assert {"artifact server.uv", "artifact server.uvx"} <= set(layers)
    server = steps()["server"]
    assert (server.artifacts["uv"].to, server.artifacts["uvx"].to) == ("/usr/bin/uv", "/usr/bin/uvx")
    # Dockerfile:184-185: `uv sync` installs the server editable, from /usr/src/server, which the
    # image keeps where the venv's .pth names it (with proto/, Dockerfile:175)
    (sync,) = [c for c in server.run if "--no-install-project" not in c and "uv sync" in c]
    assert "--no-editable" not in sync and "--python=3.11.11" in sync
    assert (server.artifacts["server-src"].path, server.artifacts["server-src"].to) == ("/usr/src/server",) * 2
    assert server.artifacts["proto"].to == "/usr/src/proto"
    assert layers.index("artifact server.venv") < layers.index("artifact server.server-src")
