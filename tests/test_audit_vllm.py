"""vLLM's manifest against v0.11.1, the release it is stamped with (issue 18, item 4 and the
vLLM parts of the "new user" list). Everything here reads the plan (`plan --json`, and the
resolved steps and layers as `plan` loads them); nothing is built.

- the source build is the v0.11.1 tag's commit, with that tag's FlashInfer (0.5.2);
- the ROCm wheel is built for rocm/vllm-dev:base's nine archs, with the base's sccache
  purged as Dockerfile.rocm does, on the base Dockerfile.rocm names (a param);
- no step reads the base's $CUDA_VERSION: the CUDA suffixes come from `cuda_version`;
- `python_setup` adds the deadsnakes PPA on Ubuntu only (Debian has no PPAs);
- combinations that would fail hours into a build are refused at plan (exit 2).
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from assembler.errors import ManifestError
from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.schema.model import PipLayer, RunLayer
from assembler.manifest.schema.setuses import used_steps
from tests.helpers import ROOT, run_cli_here

MANIFEST = ROOT / "manifests" / "vllm.yaml"
V0111 = "439368496db48d8f992ba8c606a0c0b1eebbfa69"  # the v0.11.1 tag (vllm/_version.py: g439368496)
ROCM_BASE_ARCHS = "gfx90a;gfx942;gfx950;gfx1100;gfx1101;gfx1200;gfx1201;gfx1150;gfx1151"


def plan(cache: Path, *args: str) -> dict[str, Any]:
    ran = run_cli_here(["plan", str(MANIFEST), "--cache", str(cache), "--json", *args])
    assert ran.code == 0, str(ran)
    result: dict[str, Any] = ran.json
    return result


def refused(cache: Path, *args: str) -> str:
    ran = run_cli_here(["plan", str(MANIFEST), "--cache", str(cache), *args])
    assert ran.code == 2, str(ran)
    return ran.err


def texts(target: str | None = None, **sets: str) -> dict[str, str]:
    """Step and named layer -> its resolved definition (run, env, packages...) as JSON text."""
    man = load_manifest(MANIFEST, target=target, sets=sets).manifest
    out = {s.name: json.dumps(s.model_dump(mode="json", by_alias=True)) for s in man.compile}
    for i, layer in enumerate(man.image.layers):
        out[getattr(layer, "name", None) or f"layer-{i}"] = json.dumps(layer.model_dump(mode="json", by_alias=True))
    return out


def runs(target: str | None = None, **sets: str) -> dict[str, list[str]]:
    """Step and named layer -> its commands, as `plan` resolves them."""
    man = load_manifest(MANIFEST, target=target, sets=sets).manifest
    out = {s.name: list(s.run) for s in man.compile}
    out.update({x.name: list(x.run) for x in man.image.layers if isinstance(x, RunLayer) and x.name})
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plan-cache")


# -- v0.11.1, the tag the version names ------------------------------------------------------


def test_the_source_build_is_the_v0_11_1_tag(cache: Path) -> None:
    planned = plan(cache)
    assert (planned["params"]["vllm_ref"], planned["params"]["vllm_version"]) == (V0111, "0.11.1")
    man = load_manifest(MANIFEST).manifest
    assert man.sources["vllm"].ref == V0111  # type: ignore[union-attr]
    # the wheel step stamps the version of the tree it builds
    assert '"SETUPTOOLS_SCM_PRETEND_VERSION": "0.11.1"' in texts()["wheel"]


def test_flashinfer_is_v0_11_1s_0_5_2_in_both_modes() -> None:
    # v0.11.1 requirements/cuda.txt:14 flashinfer-python==0.5.2; docker/Dockerfile:363-365
    # flashinfer-cubin and flashinfer-jit-cache of that version (0.4.1 was main's before the tag)
    run = runs(vllm_from="source")
    # vllm pinned: a FlashInfer vllm does not take fails, not replaces vllm's
    assert '"vllm==$V" "torch==2.9.0" "torchvision==0.24.0" "flashinfer-python==0.5.2"' in " ".join(run["vllm-deps"])
    assert "flashinfer-cubin==0.5.2" in " ".join(run["flashinfer"])
    jit = " ".join(run["flashinfer-jit-cache"])
    assert "flashinfer-jit-cache==0.5.2 --extra-index-url https://flashinfer.ai/whl/cu129" in jit
    assert not any("0.4.1" in " ".join(r) for r in run.values())
    # The released wheel: what `pip install vllm==0.11.1` takes, pinned by the committed lock
    # from the release's metadata (no version written in the commands).
    wheel = runs(vllm_from="wheel")
    assert " ".join(wheel["vllm-deps"]).endswith(" vllm==0.11.1")
    assert 'version("flashinfer-python")' in " ".join(wheel["flashinfer"]) and '"flashinfer-cubin==$V"' in " ".join(
        wheel["flashinfer"]
    )
    from assembler.manifest.lock.file import read_lock

    lock = read_lock(MANIFEST.with_suffix(".lock"))
    venv = lock.sets[lock.variants["openai vllm_from=wheel"]["layers.nvidia:venv"]].constraints()
    assert venv["flashinfer-python"] == "flashinfer-python==0.5.2" and venv["torch"] == "torch==2.9.0"


def test_the_flashinfer_jit_cache_from_flashinfer_ai_is_a_switch(cache: Path) -> None:
    names = [x["step"] for x in plan(cache, "--set", "flashinfer_jit_cache=false")["layers"] if x.get("step")]
    assert "flashinfer" in names and "flashinfer-jit-cache" not in names
    assert {"flashinfer", "flashinfer-jit-cache"} <= {x["step"] for x in plan(cache)["layers"] if x.get("step")}
    names = [x["step"] for x in plan(cache, "--set", "flashinfer_cubin=false")["layers"] if x.get("step")]
    assert "flashinfer" not in names and "flashinfer-jit-cache" in names


# -- ROCm: upstream's arch list, its sccache purge, its base ---------------------------------


def test_rocm_builds_for_the_nine_archs_of_rocm_vllm_dev_base() -> None:
    man = load_manifest(MANIFEST, target="rocm").manifest
    (step,) = [s for s in man.compile if s.name == "wheel-rocm"]
    assert step.env["PYTORCH_ROCM_ARCH"] == ROCM_BASE_ARCHS  # Dockerfile.rocm_base:18
    archs = step.env["PYTORCH_ROCM_ARCH"].split(";")
    assert {"gfx950", "gfx1100"} <= set(archs)  # MI350, and seed 003's Radeon


def test_rocm_purges_the_bases_sccache_before_compiling_and_in_the_image() -> None:
    # Dockerfile.rocm:17 (its `base` stage, below build_vllm and final): setup.py would
    # otherwise take sccache as its compiler launcher
    run = runs("rocm")
    build = run["wheel-rocm"]
    purge = next(i for i, cmd in enumerate(build) if "apt-get purge -y sccache" in cmd)
    wheel = next(i for i, cmd in enumerate(build) if "setup.py bdist_wheel" in cmd)
    assert purge < wheel and 'rm -f "$(which sccache)"' in build[purge]
    assert any("apt-get purge -y sccache" in cmd for cmd in run["rocm-setup"])
    # Dockerfile.rocm:12-14's packages, in the build and in the image
    for name in ("wheel-rocm", "rocm-system"):
        assert all(p in texts("rocm")[name] for p in ('"libsqlite3-dev"', '"libfmt-dev"', '"libsuitesparse-dev"'))


def test_rocm_base_is_the_param_dockerfile_rocm_names(cache: Path) -> None:
    rocm = load_manifest(MANIFEST, target="rocm")
    assert rocm.params["rocm_base_image"] == "rocm/vllm-dev:base"  # v0.11.1 Dockerfile.rocm:4
    assert rocm.manifest.bases["devel"] == rocm.manifest.bases["runtime"] == "docker://rocm/vllm-dev:base"
    moved = load_manifest(MANIFEST, target="rocm", sets={"rocm_base_image": "rocm/vllm-dev:base_rocm7.1"})
    assert moved.manifest.bases["devel"] == moved.manifest.bases["runtime"] == "docker://rocm/vllm-dev:base_rocm7.1"


# -- params, never the base's environment ----------------------------------------------------

VARIANTS = [
    (None, {}),
    (None, {"vllm_from": "wheel"}),
    ("vllm-base", {}),
    ("openai-nonroot", {}),
    ("wheel", {}),
    ("rocm", {}),
    ("rocm-openai", {}),
    (None, {"cuda_version": "12.8.1"}),
    (None, {"install_kv_connectors": "true"}),
]


@pytest.mark.parametrize(("target", "sets"), VARIANTS)
def test_no_step_reads_the_bases_cuda_version(target: str | None, sets: dict[str, str]) -> None:
    for name, text in texts(target, **sets).items():
        assert "CUDA_VERSION" not in text, name


@pytest.mark.parametrize(("cuda", "tag", "pkg"), [("12.9.1", "cu129", "12-9"), ("12.8.1", "cu128", "12-8")])
def test_cuda_suffixes_follow_cuda_version(cuda: str, tag: str, pkg: str) -> None:
    for sets in ({"cuda_version": cuda}, {"cuda_version": cuda, "vllm_from": "wheel"}):
        run = {k: " ".join(v) for k, v in runs(**sets).items()}
        assert f"cuda-nvcc-{pkg} cuda-cudart-dev-{pkg} cuda-nvrtc-dev-{pkg}" in run["cuda-jit"]
        assert f"https://flashinfer.ai/whl/{tag}" in run["flashinfer-jit-cache"]
    # the source build's torch from the PyTorch index of the CUDA version (the released wheel's
    # is PyPI's, the torch it was built against, pinned by the lock)
    assert f"--extra-index-url https://download.pytorch.org/whl/{tag} torch==2.9.0" in " ".join(
        runs(cuda_version=cuda)["torch"]
    )
    build = " ".join(runs(cuda_version=cuda)["build-deepgemm"])
    assert f"printf '%s\\n' 12.8 \"{cuda}\"" in build  # DeepGEMM's CUDA 12.8 gate, on the param


def test_a_cuda_version_without_known_suffixes_is_refused(cache: Path) -> None:
    err = refused(cache, "--set", "cuda_version=12.7.0")
    assert "cuda_version=12.7.0 is not one of the choices" in err


# -- python_setup: the deadsnakes PPA on Ubuntu, the distribution's Python elsewhere ----------


def _fake_root(tmp: Path, os_id: str, packaged: bool) -> tuple[Path, dict[str, str]]:
    """Stub apt tools and python on PATH that log their calls; an os-release of ``os_id``."""
    bin_dir, log = tmp / "bin", tmp / "calls.log"
    bin_dir.mkdir()
    stubs = {
        "add-apt-repository": "",
        "apt-get": "",
        "apt-cache": "" if packaged else "exit 100",
        "venv-python": "",  # what `python3.12 -m venv DIR` puts at DIR/bin/python
        "python3.12": f'mkdir -p "$3/bin" && cp {bin_dir / "venv-python"} "$3/bin/python"',
    }
    for name, body in stubs.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho {name} "$@" >> {log}\n{body}\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    (tmp / "os-release").write_text(f'ID={os_id}\nPRETTY_NAME="{os_id} test"\n')
    (tmp / "lists").mkdir()
    return log, {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def _python_setup(tmp: Path) -> str:
    cmd = load_manifest(MANIFEST).params["python_setup"]
    # the real command, with its absolute paths moved into the test's folder
    for real, fake in (
        ("/etc/os-release", tmp / "os-release"),
        ("/opt/venv", tmp / "venv"),
        ("/var/lib/apt/lists", tmp / "lists"),
    ):
        assert real in cmd
        cmd = cmd.replace(real, str(fake))
    return cmd


@pytest.mark.parametrize("os_id", ["ubuntu", "debian"])
def test_python_setup_adds_the_ppa_on_ubuntu_only(tmp_path: Path, os_id: str) -> None:
    log, env = _fake_root(tmp_path, os_id, packaged=True)
    done = subprocess.run(["sh", "-c", _python_setup(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert ("add-apt-repository -y ppa:deadsnakes/ppa" in calls) == (os_id == "ubuntu"), calls
    assert any(c.startswith("apt-get install") and "python3.12-venv" in c for c in calls), calls
    assert any(c.startswith("venv-python -m pip install --quiet --upgrade uv==") for c in calls), calls


def test_python_setup_names_the_param_when_the_distribution_lacks_that_python(tmp_path: Path) -> None:
    log, env = _fake_root(tmp_path, "debian", packaged=False)
    done = subprocess.run(["sh", "-c", _python_setup(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert "python3.12 is not packaged for debian test: --set python_version=" in done.stderr
    assert not any(c.startswith("apt-get install") for c in log.read_text().splitlines())


# -- cuda-jit: NVIDIA's apt repository where the base has none -------------------------------


@pytest.mark.parametrize(
    ("has_repo", "machine", "url"),
    [
        (True, "x86_64", None),  # a CUDA image: its own repository, nothing fetched
        (False, "x86_64", "https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/"),
        (False, "aarch64", "https://developer.download.nvidia.com/compute/cuda/repos/debian12/sbsa/"),
    ],
)
def test_cuda_jit_adds_nvidias_repository_on_a_base_without_it(
    tmp_path: Path, has_repo: bool, machine: str, url: str | None
) -> None:
    run = runs()["cuda-jit"]
    (cmd,) = run
    for real, fake in (
        ("/etc/os-release", tmp_path / "os-release"),
        ("/tmp/cuda-keyring.deb", tmp_path / "k.deb"),
        ("/var/lib/apt/lists", tmp_path / "lists"),
    ):
        assert real in cmd
        cmd = cmd.replace(real, str(fake))
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (tmp_path / "lists").mkdir()
    (tmp_path / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    stubs = {
        "apt-get": "",
        "apt-cache": "" if has_repo else "exit 100",
        "dpkg": "",
        "uname": f"echo {machine}",
        "curl": "",
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f'#!/bin/sh\necho {name} "$@" >> {log}\n{body}\n')
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["sh", "-c", cmd], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    fetched = [c for c in calls if c.startswith("curl ")]
    if url is None:
        assert not fetched and not any(c.startswith("dpkg") for c in calls), calls
    else:
        assert len(fetched) == 1 and f"{url}cuda-keyring_1.1-1_all.deb" in fetched[0], calls
        assert f"dpkg -i {tmp_path / 'k.deb'}" in calls
    install = [c for c in calls if c.startswith("apt-get install")]
    assert len(install) == 1 and "cuda-nvcc-12-9" in install[0] and "libcublas-dev-12-9" in install[0]


# -- combinations refused at plan ------------------------------------------------------------


def test_a_torch_other_than_the_one_vllm_requires_is_refused(cache: Path) -> None:
    err = refused(cache, "--set", "torch_version=2.6.0")
    assert "torch_version 2.6.0 and vllm_torch 2.9.0 differ" in err
    assert "torch==vllm_torch" in err
    refused(cache, "--set", "vllm_from=wheel", "--set", "torch_version=2.9.1")  # exact, not major.minor
    # another vLLM's requirement moves both
    assert plan(cache, "--set", "vllm_torch=2.8.0")["params"]["torch_version"] == "2.8.0"


def test_the_pypi_wheel_of_a_release_whose_hashes_are_not_pinned_is_refused(cache: Path) -> None:
    # every image of the released wheel takes its sha256s from the lock (the wheel target's too:
    # it had hashes of its own, vllm_wheel_hashes, which a --set vllm_version left behind): a
    # release the lock lacks is refused, with the command that writes them
    for target in ("openai", "wheel"):
        err = refused(cache, "--target", target, "--set", "vllm_from=wheel", "--set", "vllm_version=0.11.0")
        assert "takes its hashes from the lock" in err and "vllm==0.11.0" in err and "assemble lock" in err
    # the wheel target ships the locked file itself, in /wheels, nothing compiled; built from
    # source, the compiled one
    wheel = load_manifest(MANIFEST, target="wheel", sets={"vllm_from": "wheel"}).manifest
    (layer,) = wheel.image.layers
    assert (layer.pip, layer.files_to, layer.locked) == (["vllm==0.11.1"], "/wheels", True)  # type: ignore[union-attr]
    assert used_steps(wheel) == set()
    source = plan(cache, "--target", "wheel")
    assert [x["what"] for x in source["layers"]] == ["artifact wheel.wheel"]
    # a source build of another version needs no hashes
    plan(cache, "--set", "vllm_version=0.11.2", "--set", "vllm_ref=v0.11.2")


@pytest.mark.parametrize("archs", ["sm_90", "gfx942;9.0", "gfx90a gfx942 native"])
def test_a_cuda_arch_as_a_rocm_arch_is_refused(cache: Path, archs: str) -> None:
    err = refused(cache, "--target", "rocm", "--set", f"pytorch_rocm_arch={archs}")
    assert "pytorch_rocm_arch:" in err and "not a ROCm GPU target" in err


@pytest.mark.parametrize("archs", ["gfx942", "gfx90a;gfx942", "gfx90a:xnack-;gfx942:sramecc+:xnack+"])
def test_amd_targets_are_accepted(archs: str) -> None:
    loaded = load_manifest(MANIFEST, target="rocm", sets={"pytorch_rocm_arch": archs})
    assert loaded.params["pytorch_rocm_arch"] == archs


# -- the constraint kinds this relies on (assembler/manifest/schema/coupling.py) -------------------------

SMALL = """\
name: small
params: {a: "2.9.0", b: "2.9.0", archs: "gfx942"}
constraints:
  - {same_version: ["${a}", "${b}"], exact: true, because: b pins a}
  - {same_version: ["${a}", "${b}"], because: same minor}
  - {rocm_archs: "${archs}"}
bases: {runtime: scratch}
image: {base: runtime, layers: [{run: ["true"], name: x}]}
"""


@pytest.mark.parametrize(
    ("sets", "error"),
    [
        ({"b": "2.9"}, None),  # 2.9 and 2.9.0 are one version
        ({"b": "2.9.0+cu129"}, None),  # a local build of it
        ({"b": ""}, None),  # empty: skipped
        ({"b": "2.9.1"}, "constraints.0: a 2.9.0 and b 2.9.1 differ: b pins a"),
        ({"b": "2.8.0"}, "constraints.0: a 2.9.0 and b 2.8.0 differ: b pins a"),
        ({"archs": "gfx1100;gfx950"}, None),
        ({"archs": ""}, None),
        ({"archs": "sm_90"}, "constraints.2: archs: 'sm_90' (a CUDA arch) is not a ROCm GPU target"),
        ({"archs": "gfx942;mi300"}, "constraints.2: archs: 'mi300' is not a ROCm GPU target"),
    ],
)
def test_exact_same_version_and_rocm_archs(tmp_path: Path, sets: dict[str, str], error: str | None) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    if error is None:
        load_manifest(path, sets=sets)
        return
    with pytest.raises(ManifestError) as e:
        load_manifest(path, sets=sets)
    assert error in str(e.value), str(e.value)


def test_same_version_without_exact_still_compares_major_minor(tmp_path: Path) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL.replace('  - {same_version: ["${a}", "${b}"], exact: true, because: b pins a}\n', ""))
    load_manifest(path, sets={"b": "2.9.1"})  # 2.9 both
    with pytest.raises(ManifestError, match="differ: same minor"):
        load_manifest(path, sets={"b": "2.8.0"})


# -- python_sets: each pip/uv install, as data for `assemble lock` ----------------------------

_WITH_ARG = {"--python", "--extra-index-url", "--index-url", "--index-strategy", "-r", "-c", "--report"}


def installed(commands: list[str], vllm_version: str) -> list[str]:
    """The requirements the ``pip install``/``uv pip install`` runs of ``commands`` name;
    options, local files (/wheels/...) and dry runs left out, ``$V`` as the vllm installed."""
    out = []
    for command in commands:
        for part in command.replace(";", "&&").split("&&"):
            words = part.split()
            if "install" not in words or "pip" not in words[: words.index("install")] or "--dry-run" in words:
                continue
            skip = False
            for word in words[words.index("install") + 1 :]:
                if skip:
                    skip = False
                elif word in _WITH_ARG:
                    skip = True
                elif not word.startswith(("-", "/")):
                    out.append(word.strip("'\"").replace("$V", vllm_version))
    return out


@pytest.mark.parametrize(
    ("target", "sets"),
    [
        (None, {}),
        ("openai-nonroot", {"install_kv_connectors": "true"}),
        (None, {"installer": "pip", "cuda_version": "12.8.1"}),
    ],
)
def test_python_sets_mirror_what_the_layers_and_steps_install(target: str | None, sets: dict[str, str]) -> None:
    loaded = load_manifest(MANIFEST, target=target, sets=sets)
    man, params = loaded.manifest, loaded.params
    parts = [(s.name, list(s.run), s.python_sets) for s in man.compile if s.name not in ("wheel", "wheel-precompiled")]
    parts += [(x.name, list(x.run), x.python_sets) for x in man.image.layers if isinstance(x, RunLayer) and x.name]
    checked = set()
    for name, run, pysets in parts:
        if name in ("nvidia", "kv-connectors", "wheel-rocm", "kv-list", "gdrcopy-ld", "cuda-jit", "deepgemm"):
            continue  # below and in the ROCm test: torch's nvidia part, -r files; the others install no set
        declared = sorted(r for s in pysets for r in s.requirements)
        assert declared == sorted(installed(run, params["vllm_version"])), name
        for s in pysets:
            assert s.python == params["python_version"], name
            # NVSHMEM into a folder of its own (--no-deps --target), as upstream: not the venv,
            # where torch 2.9.0 has its nvidia-nvshmem-cu12==3.3.20
            assert not s.no_deps or (s.name == "nvshmem" and s.environment == "/opt/nvshmem"), name
            for url in s.extra_index_urls:
                assert f"--extra-index-url {url}" in " ".join(run), (name, url)
        checked.add(name)
    assert {"python", "torch", "vllm-deps", "openai-extras", "build-deepgemm", "build-ep-kernels"} <= checked
    layers = {x.name: x for x in man.image.layers if isinstance(x, RunLayer) and x.name}
    # the nvidia layer installs the nvidia-* part of torch's resolution: torch's set
    assert layers["nvidia"].python_sets == layers["torch"].python_sets
    torch_url = f"https://download.pytorch.org/whl/{params['cuda_tag']}"
    assert layers["torch"].python_sets[0].extra_index_urls == [torch_url]
    if "kv-connectors" in layers:  # requirements/kv_connectors.txt at v0.11.1
        assert layers["kv-connectors"].python_sets[0].requirements == ["lmcache", "nixl>=0.6.0"]
    (wheel,) = [s for s in man.compile if s.name == "wheel"]
    build = {s.name: s for s in wheel.python_sets}["build"]
    assert f"torch=={params['torch_version']}" in build.requirements and build.extra_index_urls == [torch_url]
    assert f"torch=={params['torch_version']}" in " ".join(wheel.run)
    # the standin-source target's wheel: the same build set, and the release wheel its
    # extensions come from, downloaded with the lock's sha256
    (pre,) = [s for s in man.compile if s.name == "wheel-precompiled"]
    pre_sets = {s.name: s for s in pre.python_sets}
    assert pre_sets["build"].requirements == build.requirements
    assert pre_sets["precompiled"].requirements == [f"vllm=={params['vllm_version']}"]
    assert pre_sets["precompiled"].require_hashes and pre_sets["precompiled"].no_deps
    assert "--require-hashes" in " ".join(pre.run) and "VLLM_USE_PRECOMPILED=1" in " ".join(pre.run)


def test_the_released_wheels_venv_is_one_set_its_layers_install_parts_of() -> None:
    """vllm_from=wheel: every layer of the venv locks against what `pip install vllm==V` takes
    from PyPI (the release's metadata): the nvidia libraries, then torch, then the rest."""
    man = load_manifest(MANIFEST, sets={"vllm_from": "wheel"}).manifest
    layers = {x.name: x for x in man.image.layers if isinstance(x, RunLayer) and x.name}
    for name in ("nvidia", "torch", "vllm-deps"):
        (venv,) = layers[name].python_sets
        assert venv.requirements == ["vllm==0.11.1"] and not venv.extra_index_urls and venv.index_url is None, name
    assert layers["nvidia"].python_sets[0].installs == ["nvidia-*"]
    assert "torch" in layers["torch"].python_sets[0].installs
    assert layers["vllm-deps"].python_sets[0].installs == ["*"]  # the rest of the venv, whole
    # The server extras above are locked against that venv: timm may not move torchvision or
    # torch (it did, to PyPI's newest, when vllm-deps said it installed the nvidia part only).
    from assembler.manifest.lock.file import read_lock

    lock = read_lock(MANIFEST.with_suffix(".lock"))
    extras = lock.sets[lock.variants["openai vllm_from=wheel"]["layers.openai-extras:extras"]].constraints()
    assert (
        extras["torch"] == "torch==2.9.0" and extras["torchvision"] == "torchvision==0.24.0"
    )  # one venv, resolved whole
    assert installed(layers["torch"].run, "0.11.1") == ["torch"]
    assert installed(layers["vllm-deps"].run, "0.11.1") == ["vllm==0.11.1"]
    (pip,) = [x for x in man.image.layers if isinstance(x, PipLayer)]
    assert pip.pip == ["vllm==0.11.1"] and pip.locked


def test_rocm_python_sets_leave_the_bases_torch_alone() -> None:
    man = load_manifest(MANIFEST, target="rocm").manifest
    layers = {x.name: x for x in man.image.layers if isinstance(x, RunLayer) and x.name}
    (build,) = [s for s in man.compile if s.name == "wheel-rocm"]
    by_name = {s.name: s for s in build.python_sets}
    # -r requirements/rocm.txt in the build, the wheel's Requires-Dist (rocm.txt) in the image: one set
    assert by_name["rocm"] == {s.name: s for s in layers["vllm"].python_sets}["rocm"]
    assert "-r requirements/rocm.txt" in " ".join(build.run)
    rocm = by_name["rocm"]
    assert {"compressed-tensors==0.12.2", "numba==0.61.2", "timm>=1.0.17", "conch-triton-kernels==1.2.1"} <= set(
        rocm.requirements
    )
    # the base's ROCm torch, torchvision and triton: resolved against, never pinned over
    assert {r.split("==")[0] for r in rocm.provided} == {"torch", "torchvision", "triton"}
    assert [s.requirements for s in layers["hub"].python_sets] == [["huggingface-hub[cli]"]]
    assert [s.requirements for s in layers["rocm-setup"].python_sets] == [["pip"]]
    every = [r for x in layers.values() for s in x.python_sets for r in s.requirements]
    every += [r for s in build.python_sets for r in s.requirements]
    assert not [r for r in every if r.split("=")[0].split(">")[0].split("<")[0] in ("torch", "torchvision", "triton")]
    assert all(
        s.python == "3.12" for s in [*build.python_sets, *layers["vllm"].python_sets, *layers["hub"].python_sets]
    )


# -- upstream settings kept (issue 33, Why 8), read from the plan ------------------------------------


def _env(planned: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in planned["config"]["Env"])


@pytest.mark.parametrize("target", ["openai", "openai-nonroot", "vllm-base"])
def test_the_cuda_images_keep_dockerfiles_driver_path_compat_and_workspace(cache: Path, target: str) -> None:
    planned = plan(cache, "--target", target)
    # v0.11.1 docker/Dockerfile:411: the host driver in /usr/local/nvidia first
    assert _env(planned)["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64:${LD_LIBRARY_PATH}"
    assert planned["config"]["WorkingDir"] == ("/home/vllm" if target == "openai-nonroot" else "/vllm-workspace")
    man = load_manifest(MANIFEST, target=target).manifest
    names = [getattr(x, "name", None) or getattr(x, "artifact", None) for x in man.image.layers]
    # :338's ldconfig of the compat folder, after Python and before the venv's packages
    assert names.index("python") < names.index("cuda-compat") < names.index("nvidia") < names.index("workspace")
    (compat,) = [x for x in man.image.layers if getattr(x, "name", None) == "cuda-compat"]
    assert "cuda-$(echo 12.9.1 | cut -d. -f1,2)/compat" in compat.run[0] and "ldconfig $D/" in compat.run[0]  # type: ignore[union-attr]
    # :368-370: examples, benchmarks and collect_env.py of the tree built, in /vllm-workspace
    (workspace,) = [s for s in man.compile if s.name == "workspace"]
    assert {(a.path, a.to) for a in workspace.artifacts.values()} == {
        ("/src/vllm/examples", "/vllm-workspace/examples"),
        ("/src/vllm/benchmarks", "/vllm-workspace/benchmarks"),
        ("/src/vllm/vllm/collect_env.py", "/vllm-workspace/collect_env.py"),
    }
    assert workspace.sources == ["vllm"] and "workspace" in [s["name"] for s in planned["steps"]]


def test_the_compat_ldconfig_runs_for_the_cuda_version_param(tmp_path: Path) -> None:
    (layer,) = [
        x
        for x in load_manifest(MANIFEST, sets={"cuda_version": "12.8.1"}).manifest.image.layers
        if getattr(x, "name", None) == "cuda-compat"
    ]
    log = tmp_path / "log"
    (tmp_path / "ldconfig").write_text(f'#!/bin/sh\necho "ldconfig $*" >> {log}\n')
    (tmp_path / "ldconfig").chmod(0o755)
    command = layer.run[0].replace("/usr/local/cuda-", f"{tmp_path}/cuda-")  # type: ignore[union-attr]
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    assert subprocess.run(["sh", "-c", command], env=env).returncode == 0 and not log.exists()  # no folder: left alone
    (tmp_path / "cuda-12.8" / "compat").mkdir(parents=True)
    assert subprocess.run(["sh", "-c", command], env=env).returncode == 0
    assert log.read_text() == f"ldconfig {tmp_path}/cuda-12.8/compat/\n"


def test_rocm_image_keeps_uv_app_vllm_and_the_arch_it_was_built_for(cache: Path) -> None:
    planned = plan(cache, "--target", "rocm", "--set", "pytorch_rocm_arch=gfx90a;gfx942")
    env = _env(planned)
    # Dockerfile.rocm:8-9: the narrowed list, not rocm/vllm-dev:base's nine archs
    assert env["PYTORCH_ROCM_ARCH"] == "gfx90a;gfx942"
    assert (env["UV_HTTP_TIMEOUT"], env["UV_INDEX_STRATEGY"], env["UV_LINK_MODE"]) == (
        "500",
        "unsafe-best-match",
        "copy",
    )
    run = runs("rocm")
    assert run["uv"] == ["python3 -m pip install uv==0.9.5"]  # :19-20, in /usr/local/bin
    assert (
        run["hub"][0].startswith("uv pip install --system --upgrade")
        and "uv pip install --system /wheels/vllm-" in run["vllm"][0]
    )
    man = load_manifest(MANIFEST, target="rocm").manifest
    (files,) = [s for s in man.compile if s.name == "app-files"]
    assert {a.to for a in files.artifacts.values()} == {
        "/app/vllm/benchmarks",
        "/app/vllm/examples",
        "/app/vllm/docker/Dockerfile.rocm",
    }
    assert [getattr(x, "artifact", None) for x in man.image.layers][-1] == "app-files"
    assert _env(plan(cache, "--target", "rocm-openai"))["PYTORCH_ROCM_ARCH"].startswith("gfx90a;gfx942;gfx950")


def test_nvshmem_stays_out_of_the_venv_and_the_lock_says_so() -> None:
    """Issue 33, item 1: torch 2.9.0 requires nvidia-nvshmem-cu12==3.3.20 in the venv; the EP
    kernels' NVSHMEM 3.3.9 goes into a folder of its own, as upstream keeps it (v0.11.1
    tools/ep_kernels/install_python_libraries.sh: $WORKSPACE/nvshmem_install), and every
    environment of the default target resolves."""
    from assembler.manifest.lock.file import read_lock

    lock = read_lock(MANIFEST.with_suffix(".lock"))
    places = lock.variants["openai"]
    assert not [e.error for e in lock.environments.values() if e.error]
    torch = lock.sets[places["layers.torch:torch"]]
    assert torch.constraints()["nvidia-nvshmem-cu12"] == "nvidia-nvshmem-cu12==3.3.20" and "torch" in torch.stand_in
    for where in ("layers.ep-kernels:nvshmem", "build-ep-kernels:nvshmem"):
        entry = lock.sets[places[where]]
        assert entry.constraints() == {"nvidia-nvshmem-cu12": "nvidia-nvshmem-cu12==3.3.9"}, where
        assert entry.definition["no_deps"] is True
    (build,) = [s for s in load_manifest(MANIFEST).manifest.compile if s.name == "build-ep-kernels"]
    assert build.env["NVSHMEM_DIR"] == "/opt/nvshmem/nvidia/nvshmem"
    assert "--target /opt/nvshmem nvidia-nvshmem-cu12==3.3.9" in " ".join(build.run)
