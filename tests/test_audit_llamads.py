"""Issue 18, item 6 and the DeepSpeed combinations, read from the plan (nothing is built).

llama.cpp: the seed's own CUDA 12.1.0 plans and builds without nvcc's ``-objtemp`` (an nvcc
12.4 option) while 12.4 and newer keep it; the server image carries llama-server and
llama-cli, reachable from /usr/local/bin as the seed has them, the entrypoint staying
upstream's /app/llama-server.

DeepSpeed: a devel CUDA that DeepSpeed's op builder refuses with the index's torch, a torch
the index does not carry, and a DS_BUILD_* value that setup.py cannot read as a number are
refused at plan (exit 2) naming the params, not hours into the build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from assembler.errors import ManifestError
from assembler.manifest.load.manifest import load_manifest
from tests.helpers import ROOT
from tests.test_manifests import plan_in_process

MANIFESTS = ROOT / "manifests"
LLAMA = MANIFESTS / "llamacpp.yaml"
DEEPSPEED = MANIFESTS / "deepspeed.yaml"


@pytest.fixture(autouse=True)
def _no_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASSEMBLE_TRACEBACK", raising=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plan-cache")


def plan(cache: Path, manifest: Path, *args: str) -> tuple[int, str, str]:
    """``assemble plan MANIFEST --json ARGS`` through the CLI's main."""
    ran = plan_in_process(manifest, *args, cache=cache)
    return ran.code, ran.out, ran.err


def planned(cache: Path, manifest: Path, *args: str) -> dict[str, Any]:
    code, out, err = plan(cache, manifest, *args)
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def refused(cache: Path, manifest: Path, *args: str) -> str:
    """The error (and hint) of a plan that must fail with exit 2, before anything is built."""
    code, out, err = plan(cache, manifest, *args)
    assert code == 2 and out == "", err
    assert "Traceback" not in err
    assert err.startswith("error: "), err
    return err


def sets_of(*args: str) -> dict[str, str]:
    pairs = [a.split("=", 1) for a in args]
    return {k: v for k, v in pairs}


def llama_step(*sets: str, target: str | None = None) -> str:
    """The llama compile step as the plan resolves it (run, env, packages...), as JSON text."""
    man = load_manifest(LLAMA, sets=sets_of(*sets), target=target).manifest
    step = next(s for s in man.compile if s.name == "llama")
    return json.dumps(step.model_dump(mode="json", by_alias=True))


# -- llama.cpp: -objtemp only where nvcc has it ---------------------------------------------------


def test_the_default_cuda_build_keeps_objtemp(cache: Path) -> None:
    default = planned(cache, LLAMA)
    assert (default["params"]["cuda_version"], default["params"]["nvcc_append_flags"]) == ("12.8.1", "-objtemp")
    man = load_manifest(LLAMA).manifest
    assert man.compile[0].env["NVCC_APPEND_FLAGS"] == "-objtemp"


def test_the_seeds_cuda_12_1_plans_without_objtemp(cache: Path) -> None:
    # the seed's nvidia/cuda:12.1.0-devel-ubuntu22.04 (000:220): no 12.1.0 image was made for 24.04
    seed = planned(cache, LLAMA, "--set", "cuda_version=12.1.0", "--set", "ubuntu_version=22.04")
    assert seed["params"]["nvcc_append_flags"] == ""
    assert seed["params"]["devel_image"] == "docker://nvidia/cuda:12.1.0-devel-ubuntu22.04"
    assert seed["params"]["runtime_image"] == "docker://nvidia/cuda:12.1.0-runtime-ubuntu22.04"
    assert [s["state"] for s in seed["steps"]] == ["will-run"] * len(seed["steps"])
    step = load_manifest(LLAMA, sets={"cuda_version": "12.1.0", "ubuntu_version": "22.04"}).manifest.compile[0]
    assert step.env["NVCC_APPEND_FLAGS"] == ""
    assert "objtemp" not in llama_step(
        "cuda_version=12.1.0", "ubuntu_version=22.04"
    )  # neither in its commands nor its env
    assert "-DGGML_CUDA=ON" in step.run[0]  # still the CUDA build
    # the two plans differ in that step
    assert seed["steps"][1]["definition"] != planned(cache, LLAMA)["steps"][1]["definition"]


@pytest.mark.parametrize(
    ("cuda", "flags"),
    [
        ("11.8.0", ""),
        ("12.3.2", ""),
        ("12.4.0", "-objtemp"),
        ("12.4.1", "-objtemp"),
        ("12.9.1", "-objtemp"),
        ("13.0.1", "-objtemp"),
    ],
)
def test_objtemp_from_cuda_12_4_on(cache: Path, cuda: str, flags: str) -> None:
    # on Ubuntu 22.04: nvidia/cuda has no image of a CUDA before 12.5 for 24.04
    sets = (f"cuda_version={cuda}", "cuda_docker_arch=80;90", "ubuntu_version=22.04")
    args = [a for kv in sets for a in ("--set", kv)]
    assert planned(cache, LLAMA, *args)["params"]["nvcc_append_flags"] == flags
    assert ("objtemp" in llama_step(*sets)) == bool(flags)


@pytest.mark.parametrize("backend", ["cpu", "rocm"])
def test_no_nvcc_flag_without_cuda(cache: Path, backend: str) -> None:
    assert planned(cache, LLAMA, "--set", f"backend={backend}")["params"]["nvcc_append_flags"] == ""
    assert "objtemp" not in llama_step(f"backend={backend}")


def test_a_cuda_version_that_is_no_version_is_refused(cache: Path) -> None:
    err = refused(cache, LLAMA, "--set", "cuda_version=latest")
    assert "cuda_version=latest is not one of the choices" in err


def test_choice_options_as_version_bounds(tmp_path: Path) -> None:
    """The first option whose bounds hold the value is chosen, each bound compared to as many
    numbers as it has; a named option wins over bounds; a value no option holds is refused."""
    (tmp_path / "m.yaml").write_text(
        "name: m\n"
        "params: {cuda: '12.8.1', flag: ''}\n"
        "choices:\n"
        "  cuda:\n"
        "    '12.2.2': {flag: exact}\n"
        "    '>=11.0,<12.4': {flag: old}\n"
        "    '>=12.4': {flag: new}\n"
        "bases: {devel: 'docker://example.invalid/x:1'}\n"
        "image: {base: devel, config: {env: {FLAG: '${flag}'}}}\n"
    )
    flag = {
        v: load_manifest(tmp_path / "m.yaml", sets={"cuda": v}).params["flag"]
        for v in ("11.0", "12.3.9", "12.4", "12.4.0", "12.10.1", "13", "12.2.2", "12.2.1")
    }
    assert flag == {
        "11.0": "old",
        "12.3.9": "old",
        "12.4": "new",
        "12.4.0": "new",
        "12.10.1": "new",
        "13": "new",
        "12.2.2": "exact",
        "12.2.1": "old",
    }
    for value in ("10.2", "x12.4", ""):
        with pytest.raises(ManifestError, match=f"cuda={value} is not one of the choices"):
            load_manifest(tmp_path / "m.yaml", sets={"cuda": value})


# -- llama.cpp: the seed's binaries -----------------------------------------------------------------


def test_server_image_has_llama_cli_and_the_seeds_usr_local_bin(cache: Path) -> None:
    for backend in ("cuda", "cpu"):
        server = planned(cache, LLAMA, "--set", f"backend={backend}")
        whats = [x["what"] for x in server["layers"]]
        assert whats[3:5] == ["artifact llama.server", "artifact llama.cli"]
        assert server["config"]["Entrypoint"] == ["/app/llama-server"]  # upstream's server stage
        assert ("bin-links", "runtime") in [(s["name"], s["kind"]) for s in server["steps"]]
    man = load_manifest(LLAMA).manifest
    step = next(s for s in man.compile if s.name == "llama")
    assert (step.artifacts["server"].to, step.artifacts["cli"].to) == ("/app/llama-server", "/app/llama-cli")
    links = next(x for x in man.image.layers if getattr(x, "name", None) == "bin-links")
    assert links.run == ["ln -s /app/llama-server /app/llama-cli /usr/local/bin/"]  # type: ignore[union-attr]
    # the light image stays upstream's: llama-cli alone, no links
    light = planned(cache, LLAMA, "--target", "light")
    assert [x["what"] for x in light["layers"]][3:] == ["artifact llama.cli"]
    assert light["config"]["Entrypoint"] == ["/app/llama-cli"]


@pytest.mark.parametrize(
    "target,toolkit,major", [("standin-cuda12", "cuda12", "12"), ("standin-cuda13", "cuda13", "13")]
)
def test_cuda_standins_mount_their_toolkit_and_plan_locked(cache: Path, target: str, toolkit: str, major: str) -> None:
    # upstream's CUDA build on bookworm with a toolkit from the mirrors (Debian's 12.4, NVIDIA's
    # 13.0 wheels), pinned in the shipped lock: the CPU build's step and the ubuntu bases unused
    got = planned(cache, LLAMA, "--target", target, "--locked")
    steps = {s["name"]: s for s in got["steps"]}
    assert {toolkit, "llama-cuda"} <= steps.keys() and "llama" not in steps
    assert f"step:{toolkit}" in steps["llama-cuda"]["depends_on"]
    params = got["params"]
    assert (params["ggml_cuda"], params["cuda_archs"], params["nvcc_append_flags"]) == ("ON", "90", "-objtemp")
    whats = [x["what"] for x in got["layers"]]
    assert [w for w in whats if w.startswith("artifact")] == [
        "artifact llama-cuda.libs",
        f"artifact {toolkit}.runtime",
        "artifact llama-cuda.server",
        "artifact llama-cuda.cli",
    ]
    env = dict(e.split("=", 1) for e in got["config"]["Env"])
    assert env["CUDA_VERSION"].startswith(major + ".") and env["NVIDIA_VISIBLE_DEVICES"] == "all"
    (test,) = [t for t in load_manifest(LLAMA, target=target).manifest.tests if t.name == "cuda-libraries"]
    assert test.output[0].startswith(f"libcudart\\.so\\.{major} ")


# -- DeepSpeed: refused at plan, not hours into the build ------------------------------------------


def test_deepspeed_default_plans_with_the_cu121_index(cache: Path) -> None:
    ds = planned(cache, DEEPSPEED)
    params = ds["params"]
    assert (params["cuda_version"], params["torch_cuda"], params["torch_version"]) == ("12.2.2", "12.1", "2.4.1")
    assert params["torch_index"] == "https://download.pytorch.org/whl/cu121"
    man = load_manifest(DEEPSPEED).manifest
    torch = next(x for x in man.image.layers if getattr(x, "name", None) == "torch")
    assert "torch==2.4.1 --index-url https://download.pytorch.org/whl/cu121" in torch.run[1]  # type: ignore[union-attr]
    assert "torch==2.4.1 --index-url https://download.pytorch.org/whl/cu121" in man.compile[0].run[1]


def test_deepspeed_cuda_11_8_with_cu121_torch_is_refused(cache: Path) -> None:
    err = refused(cache, DEEPSPEED, "--set", "cuda_version=11.8.0")
    assert "cuda_version 11.8.0 is older than 12.0" in err
    assert "built for CUDA 12.1 (torch_cuda)" in err and "assert_no_cuda_mismatch" in err
    # with the index of its CUDA it plans: the build step and the runtime layer both take cu118
    ok = planned(cache, DEEPSPEED, "--set", "cuda_version=11.8.0", "--set", "torch_cuda=11.8")
    assert ok["params"]["torch_index"] == "https://download.pytorch.org/whl/cu118"
    man = load_manifest(DEEPSPEED, sets={"cuda_version": "11.8.0", "torch_cuda": "11.8"}).manifest
    assert "--index-url https://download.pytorch.org/whl/cu118" in man.compile[0].run[1]
    assert man.bases["devel"] == "docker://nvidia/cuda:11.8.0-devel-ubuntu22.04"
    # torch built for 11.8 with a CUDA 12 nvcc is refused the same way
    assert "cuda_version 12.2.2 is newer than 11.8" in refused(cache, DEEPSPEED, "--set", "torch_cuda=11.8")


@pytest.mark.parametrize("cuda", ["12.0.1", "12.1.0", "12.6.3", "12.8.1"])
def test_deepspeed_accepts_the_cuda_12_minors_its_builder_does(cache: Path, cuda: str) -> None:
    planned(cache, DEEPSPEED, "--set", f"cuda_version={cuda}")


def test_deepspeed_cuda_its_builder_does_not_list_is_refused(cache: Path) -> None:
    err = refused(cache, DEEPSPEED, "--set", "cuda_version=12.9.1")
    assert "cuda_version 12.9.1 is newer than 12.8" in err and "torch_cuda" in err


def test_deepspeed_torch_the_index_lacks_is_refused(cache: Path) -> None:
    # from facts (torch_builds.json, pypi.json), not from bounds the manifest writes
    err = refused(cache, DEEPSPEED, "--set", "torch_version=2.9.0")
    assert "torch==2.9.0 (torch_version=2.9.0) has no cu121 build" in err
    assert (
        "https://download.pytorch.org/whl/cu121 (torch_index (from torch_cuda=12.1)) carries torch 2.1.0 to 2.5.1"
        in err
    )
    assert "or a torch from 2.1.0 to 2.5.1" in err
    assert "torch==2.0.1 (torch_version=2.0.1) has no cu121 build" in refused(
        cache, DEEPSPEED, "--set", "torch_version=2.0.1"
    )
    assert "torch==2.5.2 (torch_version=2.5.2) was never released" in refused(
        cache, DEEPSPEED, "--set", "torch_version=2.5.2"
    )
    for edge in ("2.1.0", "2.5.1"):
        planned(cache, DEEPSPEED, "--set", f"torch_version={edge}")
    # the index that carries it: torch 2.6.0 from cu124 (not 2.9.0: cu124 ends at 2.6.0)
    ok = planned(
        cache, DEEPSPEED, "--set", "torch_cuda=12.4", "--set", "torch_version=2.6.0", "--set", "cuda_version=12.4.1"
    )
    assert ok["params"]["torch_index"] == "https://download.pytorch.org/whl/cu124"
    assert "carries torch 2.4.0 to 2.6.0 only" in refused(
        cache, DEEPSPEED, "--set", "torch_cuda=12.4", "--set", "torch_version=2.9.0"
    )
    assert "torch==latest: 'latest' (torch_version=latest) is not a version" in refused(
        cache, DEEPSPEED, "--set", "torch_version=latest"
    )


def test_deepspeed_an_index_it_does_not_know_is_refused(cache: Path) -> None:
    err = refused(cache, DEEPSPEED, "--set", "torch_cuda=12.6")
    assert "torch_cuda=12.6 is not one of the choices: 11.8, 12.1, 12.4" in err


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("ds_build_ops", "yes"),
        ("ds_build_ops", ""),
        ("ds_build_ops", "true"),
        ("ds_build_cpu_adam", "on"),
        ("ds_build_aio", "yes"),
    ],
)
def test_deepspeed_build_switches_take_0_or_1(cache: Path, param: str, value: str) -> None:
    err = refused(cache, DEEPSPEED, "--set", f"{param}={value}")
    assert f"params.{param}: {param}={value} is not one of the choices" in err


def test_deepspeed_build_switches_0_and_1_reach_the_step(cache: Path) -> None:
    planned(cache, DEEPSPEED, "--set", "ds_build_ops=0", "--set", "ds_build_cpu_adam=1")
    step = load_manifest(DEEPSPEED, sets={"ds_build_ops": "0", "ds_build_cpu_adam": "1"}).manifest.compile[0]
    assert (step.env["DS_BUILD_OPS"], step.env["DS_BUILD_CPU_ADAM"], step.env["DS_BUILD_AIO"]) == ("0", "1", "")


def test_deepspeed_ops_are_built_for_cuda_on_a_builder_without_gpu() -> None:
    """DeepSpeed 0.16.4 takes the CPU accelerator (and its CPU op builders) where it sees no
    GPU, as in a build container: the step names the CUDA one."""
    step = load_manifest(DEEPSPEED).manifest.compile[0]
    assert step.env["DS_ACCELERATOR"] == "cuda" and step.env["DS_BUILD_OPS"] == "1"


def test_deepspeed_python_sets_follow_the_index(cache: Path) -> None:
    """What the pip commands install is declared as data, with the index torch_cuda picks."""
    for sets, index in (({}, "cu121"), ({"torch_cuda": "11.8", "cuda_version": "11.8.0"}, "cu118")):
        man = load_manifest(DEEPSPEED, sets=sets).manifest
        url = f"https://download.pytorch.org/whl/{index}"
        step = man.compile[0]
        assert f"--index-url {url}" in step.run[1]
        by_name = {s.name: s for s in step.python_sets}
        assert (by_name["torch"].requirements, by_name["torch"].index_url) == (["torch==2.4.1"], url)
        assert by_name["torch"].python == "3.10" and "numpy" in by_name["build-deps"].requirements
        torch = next(x for x in man.image.layers if getattr(x, "name", None) == "torch")
        assert [(s.requirements, s.index_url) for s in torch.python_sets] == [(["torch==2.4.1"], url)]  # type: ignore[union-attr]
        deepspeed = next(x for x in man.image.layers if getattr(x, "name", None) == "deepspeed")
        (deps,) = deepspeed.python_sets  # type: ignore[union-attr]
        assert "torch==2.4.1" in deps.requirements and not [r for r in deps.requirements if "/" in r]


def test_llama_full_image_declares_its_setuptools_for_the_bases_python(cache: Path) -> None:
    for ubuntu, python in (("24.04", "3.12"), ("22.04", "3.10")):
        man = load_manifest(LLAMA, sets={"ubuntu_version": ubuntu}, target="full").manifest
        layer = next(x for x in man.image.layers if getattr(x, "name", None) == "python-requirements")
        assert [(s.requirements, s.python) for s in layer.python_sets] == [(["setuptools"], python)]  # type: ignore[union-attr]


# -- DeepSpeed: what multi-node launch needs, as upstream's image has it (issue 33, Why 8) ----------


def test_deepspeed_has_pdsh_ssh_and_its_user(cache: Path) -> None:
    ds = planned(cache, DEEPSPEED)
    # docker/Dockerfile (v0.16.4): pdsh and ssh for the launcher, sshd on SSH_PORT, USER deepspeed
    assert ds["config"]["User"] == "deepspeed"
    assert "SSH_PORT=2222" in ds["config"]["Env"]
    man = load_manifest(DEEPSPEED).manifest
    system = next(x for x in man.image.layers if getattr(x, "name", None) == "system")
    assert {"pdsh", "openssh-client", "openssh-server", "sudo"} <= set(system.packages)  # type: ignore[union-attr]
    user = next(x for x in man.image.layers if getattr(x, "name", None) == "ssh-user")
    text = " ".join(user.run)  # type: ignore[union-attr]
    assert 'echo "ClientAliveInterval 30" >> /etc/ssh/sshd_config' in text and "Port 2222/" in text
    assert "useradd --create-home --uid 1000 --shell /bin/bash deepspeed" in text
    assert 'echo "deepspeed ALL=(ALL) NOPASSWD: ALL" >> /etc/sudoers' in text
    assert [getattr(x, "name", None) for x in man.image.layers][:2] == ["system", "ssh-user"]
