"""manifests/verl-rocm.yaml: verl's Dockerfile.rocm + Apptainerfile.rocm as one manifest.

The smoke target is built for real, offline, to both outputs the manifest names (an OCI
layout and a SIF): the project's HIP example compiled by Debian's hipcc for gfx90a and
gfx942 (each code object read back from the binary's offload bundle), on Debian stand-ins
for AMD's vLLM image. Debian's hipcc drives clang-15, which rejects gfx942; the devel
stand-in therefore carries layers/hip-clang-debian (bookworm's clang-19 behind the same
hipcc). The older rocm/vllm target (train) is planned offline: upstream's bases, env, the
vLLM from-source step, the layers and both outputs (tests/test_audit_verl.py plans the
default, SGLang-based, targets).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assembler.manifest.load.manifest import load_manifest
from assembler.transports.hpc.apptainer import runscript
from assembler.transports.hpc.sif import read_sif_header
from tests import yaml_helper
from tests.conftest import BASES_CACHE, TEST_BASES, TEST_CACHE, reclaim_at_teardown
from tests.helpers import ROOT, Buildah, Ran, config_of, layout_digest, read_blob, run_cli, sh, uncompressed

# Module fixtures that run outside programs (tests/conftest.py: tier): the ROCm bases and the smoke build.
OUTSIDE_FIXTURES = frozenset({"rocm_bases", "smoke"})

MANIFEST = ROOT / "manifests" / "verl-rocm.yaml"
ARCHS = "gfx90a;gfx942"
# e_flags & EF_AMDGPU_MACH of an AMDGPU code object (LLVM's ELF.h).
EF_AMDGPU_MACH = {0x3F: "gfx90a", 0x40: "gfx940", 0x4B: "gfx941", 0x4C: "gfx942"}
ELFABIVERSION_AMDGPU_HSA_V4 = 2  # code object v4: what Debian's ROCm 5.2 runtime loads
# Apptainerfile.rocm's %environment, and Dockerfile.rocm's ENV, while they built on rocm/vllm.
UPSTREAM_ENV = ["PYTORCH_ROCM_ARCH=gfx90a;gfx942"]

# Debian stand-ins for rocm/vllm: a HIP toolchain (devel) and the HIP runtime (runtime).
HIP_TOOLCHAIN = [
    "hipcc",
    "clang-19",
    "lld-19",
    "clang-tools-19",
    "libclang-rt-19-dev",
    "llvm-19",
    "rocm-device-libs",
    "libamdhip64-dev",
]
ROCM_DEVEL: dict[str, Any] = {
    "name": "rocm-devel-debian",
    "bases": {"b": {"bootstrap": {"suite": "bookworm", "variant": "minbase", "packages": HIP_TOOLCHAIN}}},
    "compile": [{"name": "hip-clang", "use": "hip-clang-debian", "base": "b"}],
    "image": {
        "base": "b",
        "layers": [{"artifact": "hip-clang.prefix"}],
        "config": {
            "env": {
                "HIP_PLATFORM": "amd",
                "HIP_CLANG_PATH": "/opt/hip-clang19/bin",
                "DEVICE_LIB_PATH": "/opt/hip-clang19/amdgcn/bitcode",
                "HIPCC_COMPILE_FLAGS_APPEND": "-mcode-object-version=4",
            }
        },
    },
}
ROCM_RUNTIME: dict[str, Any] = {
    "name": "rocm-runtime-debian",
    "bases": {"b": {"bootstrap": {"suite": "bookworm", "variant": "minbase", "packages": ["libamdhip64-5"]}}},
    "image": {"base": "b"},
}


def _assembled_base(spec: dict[str, Any], extra: list[Path]) -> Path:
    """``spec`` built once by assemble into an OCI layout under TEST_CACHE, named by a digest
    of the spec and of the files it uses (a changed recipe makes a new base)."""
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode() + b"".join(p.read_bytes() for p in extra))
    layout = TEST_BASES / f"{spec['name']}-{key.hexdigest()[:12]}"
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (layout / "index.json").exists():
            work = TEST_CACHE / f"base-{spec['name']}"
            work.mkdir(parents=True, exist_ok=True)
            (work / "base.yaml").write_text(yaml_helper.dump(spec))
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "assembler",
                    "base.yaml",
                    *BASES_CACHE,
                    "-o",
                    f"oci:{layout}:latest",
                ],
                cwd=work,
                capture_output=True,
                text=True,
                env={**os.environ, "ASSEMBLE_RECIPES": str(ROOT / "layers")},
            )
            if proc.returncode != 0:
                raise RuntimeError(f"making the {spec['name']} base failed:\n{proc.stderr}")
            subprocess.run(["chmod", "-R", "a+rX", str(layout)], check=True)
    return layout


@pytest.fixture(scope="session")
def rocm_bases() -> dict[str, Path]:
    return {
        "devel": _assembled_base(ROCM_DEVEL, [ROOT / "layers/hip-clang-debian.yaml"]),
        "runtime": _assembled_base(ROCM_RUNTIME, []),
    }


@dataclass
class Smoke:
    project: Path
    ran: Ran

    @property
    def oci(self) -> Path:
        return self.project / "out/verl-rocm"

    @property
    def sif(self) -> Path:
        return self.project / "out/verl-rocm-smoke.sif"

    def layer(self, what: str) -> dict[str, tarfile.TarInfo | bytes]:
        desc = next(x for x in self.ran.json["layers"] if x["what"] == what)
        out: dict[str, tarfile.TarInfo | bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(self.oci, desc["digest"])))) as tf:
            for m in tf.getmembers():
                f = tf.extractfile(m) if m.isfile() else None
                out[m.name] = f.read() if f is not None else m
        return out


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory, rocm_bases: dict[str, Path], request: pytest.FixtureRequest
) -> Iterator[Smoke]:
    project = tmp_path_factory.mktemp("verl")
    reclaim_at_teardown(request, project)
    for part in ("manifests", "layers"):
        shutil.copytree(ROOT / part, project / part)
    # gzip level 1 for its SIF, not gzip 9's 45 s of CPU for the ROCm runtime: the SIF's format
    # is the point here, the compression test_sif's
    manifest = project / "manifests/verl-rocm.yaml"
    manifest.write_text(manifest.read_text() + "sif: {level: 1}\n")
    shutil.copytree(ROOT / "examples/hip-vector-add", project / "examples/hip-vector-add")
    # No -o: the outputs are the manifest's own (an OCI layout and a SIF).
    ran = run_cli(
        [
            str(project / "manifests/verl-rocm.yaml"),
            "--target",
            "smoke",
            "--json",
            "--base",
            f"devel=oci:{rocm_bases['devel']}:latest",
            "--base",
            f"runtime=oci:{rocm_bases['runtime']}:latest",
            "--source",
            f"hip-vector-add={project / 'examples/hip-vector-add'}",
            "--cache",
            str(project / "cache"),
        ],
        cwd=project,
    )
    assert ran.code == 0, str(ran)
    yield Smoke(project, ran)


def offload_bundle(binary: bytes) -> dict[str, bytes]:
    """The code objects of a HIP fat binary: ``__CLANG_OFFLOAD_BUNDLE__``, u64 count, then per
    entry u64 offset, u64 size, u64 id length, id (offsets from the bundle's start)."""
    start = binary.find(b"__CLANG_OFFLOAD_BUNDLE__")
    assert start >= 0, "no offload bundle in the binary"
    (count,) = struct.unpack_from("<Q", binary, start + 24)
    at = start + 32
    entries = {}
    for _ in range(count):
        offset, size, id_len = struct.unpack_from("<QQQ", binary, at)
        ident = binary[at + 24 : at + 24 + id_len].decode()
        at += 24 + id_len
        entries[ident] = binary[start + offset : start + offset + size]
    assert binary.find(b"__CLANG_OFFLOAD_BUNDLE__", at) < 0, "one bundle expected (one source file)"
    return entries


def test_smoke_target_builds_offline_to_an_oci_image_and_a_sif(smoke: Smoke) -> None:
    assert {s["name"]: s["state"] for s in smoke.ran.json["steps"]} == {"vector-add": "built"}
    assert [x["what"] for x in smoke.ran.json["layers"][1:]] == ["artifact vector-add.bin"]
    refs = [o["ref"] for o in smoke.ran.json["outputs"]]
    assert refs == [f"oci:{smoke.oci}:smoke", f"sif:{smoke.sif}"]
    assert layout_digest(smoke.oci, "smoke") == smoke.ran.json["digest"]
    assert run_cli(["validate", f"oci:{smoke.oci}:smoke"]).code == 0
    listing = sh(["siftool", "list", str(smoke.sif)]).stdout
    assert "FS (Squashfs/*System/amd64)" in listing and "JSON.Generic" in listing
    assert "Primary Architecture: amd64" in sh(["siftool", "header", str(smoke.sif)]).stdout
    cfg = config_of(smoke.oci, "smoke")["config"]
    assert cfg["Entrypoint"] == ["/usr/local/bin/hip-vector-add"]
    assert [e for e in cfg["Env"] if not e.startswith("PATH=")] == UPSTREAM_ENV
    # Read from hip-vector-add's code objects; the Debian base says no ROCm version: none claimed.
    assert cfg["Labels"]["io.assemble.gpu.rocm.archs"] == ARCHS
    assert cfg["Labels"]["io.assemble.step.vector-add.rocm.archs"] == ARCHS
    assert "io.assemble.gpu.rocm.version" not in cfg["Labels"]


def test_hip_binary_carries_gfx90a_and_gfx942_code_objects(smoke: Smoke, tmp_path: Path) -> None:
    members = smoke.layer("artifact vector-add.bin")
    binary = members["usr/local/bin/hip-vector-add"]
    assert isinstance(binary, bytes)
    bundle = offload_bundle(binary)
    assert set(bundle) == {
        "host-x86_64-unknown-linux--",
        "hipv4-amdgcn-amd-amdhsa--gfx90a",
        "hipv4-amdgcn-amd-amdhsa--gfx942",
    }
    machs = {}
    for ident, obj in bundle.items():
        if ident.startswith("host-"):
            continue
        assert obj[:4] == b"\x7fELF" and obj[7] == 64, ident  # ELFOSABI_AMDGPU_HSA
        assert obj[8] == ELFABIVERSION_AMDGPU_HSA_V4, ident
        (e_flags,) = struct.unpack_from("<I", obj, 48)
        machs[ident.rsplit("--", 1)[1]] = EF_AMDGPU_MACH.get(e_flags & 0xFF, hex(e_flags & 0xFF))
    assert machs == {"gfx90a": "gfx90a", "gfx942": "gfx942"}  # each object is really for its GPU
    # ROCm's own reader agrees.
    (tmp_path / "hip-vector-add").write_bytes(binary)
    listed = sh(["roc-obj-ls", str(tmp_path / "hip-vector-add")]).stdout
    print(f"\n{listed}")
    assert sorted(line.split()[1] for line in listed.splitlines() if "amdgcn" in line) == [
        "hipv4-amdgcn-amd-amdhsa--gfx90a",
        "hipv4-amdgcn-amd-amdhsa--gfx942",
    ]


@pytest.mark.integration  # hipcc
def test_debian_hipcc_alone_rejects_gfx942(tmp_path: Path) -> None:
    """Why the devel stand-in needs layers/hip-clang-debian: Debian's hipcc with its own
    clang-15 knows gfx90a and gfx940 but not gfx942. (If this starts passing, bookworm's
    hipcc learned gfx942 and the recipe can go.)"""
    (tmp_path / "k.hip").write_text("#include <hip/hip_runtime.h>\n__global__ void k(float *x) { x[0] = 1.0f; }\n")
    (tmp_path / "tmp").mkdir()  # clang's HIP driver leaves k-XXXXXX folders in its TMPDIR
    env = {"PATH": "/usr/bin:/bin", "HIP_PLATFORM": "amd", "TMPDIR": str(tmp_path / "tmp")}
    for arch, ok in (("gfx90a", True), ("gfx940", True), ("gfx942", False)):
        proc = subprocess.run(
            ["hipcc", f"--offload-arch={arch}", "-c", "k.hip", "-o", f"{arch}.o"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert (proc.returncode == 0) is ok, f"{arch}: {proc.stderr}"
        if not ok:
            assert f"invalid target ID '{arch}'" in proc.stderr


def test_image_runs_and_the_sif_runscript_is_its_entrypoint(smoke: Smoke, tmp_path: Path) -> None:
    cfg = config_of(smoke.oci, "smoke")["config"]
    out = Buildah(tmp_path / "b").run_image(f"oci:{smoke.oci}:smoke", cfg["Entrypoint"])
    print(f"\n{out}")
    assert out.splitlines() == [
        "hip-vector-add: code objects for gfx90a,gfx942",
        "hip-vector-add: no AMD GPU visible (hipErrorNoDevice)",
    ]
    # The SIF's root filesystem: the runscript runs ENTRYPOINT + CMD as `docker run` would.
    part = read_sif_header(smoke.sif).primary_partition()
    sqfs = tmp_path / "root.sqfs"
    with open(sqfs, "wb") as f:
        subprocess.run(["siftool", "dump", str(part.id), str(smoke.sif)], stdout=f, check=True)
    root = tmp_path / "root"
    sh(["unsquashfs", "-no-progress", "-d", str(root), str(sqfs)])
    assert (root / ".singularity.d/runscript").read_text() == runscript(cfg["Entrypoint"], cfg.get("Cmd") or [])
    assert (root / "usr/local/bin/hip-vector-add").read_bytes() == smoke.layer("artifact vector-add.bin")[
        "usr/local/bin/hip-vector-add"
    ]
    env_script = (root / ".singularity.d/env/10-docker2singularity.sh").read_text()
    assert "PYTORCH_ROCM_ARCH='gfx90a;gfx942'" in env_script  # Apptainerfile.rocm's %environment
    # What `apptainer run verl-rocm-smoke.sif` does, in a chroot: env scripts, then the runscript.
    boot = 'for s in /.singularity.d/env/*.sh; do . "$s"; done; exec /.singularity.d/runscript "$@"'
    ran = sh(["env", "-i", shutil.which("chroot") or "/usr/sbin/chroot", str(root), "/bin/sh", "-c", boot, "run"])
    assert ran.stdout == out


# -- the train target (the upstream image), planned offline ------------------------------------


@pytest.mark.integration  # seconds
def test_plan_of_the_train_target(tmp_path: Path) -> None:
    ran = run_cli(
        ["plan", str(MANIFEST), "--json", "--target", "train", "--cache", str(tmp_path / "cache")], cwd=tmp_path
    )
    assert ran.code == 0, str(ran)
    plan = ran.json
    assert plan["target"] == "train"
    assert [(s["name"], s["kind"]) for s in plan["steps"]] == [
        ("vllm", "compile"),
        ("install-vllm", "runtime"),
        ("python-deps", "runtime"),
        ("verl", "compile"),
        ("install-verl", "runtime"),
        ("torch-memory-saver", "compile"),
        ("install-torch-memory-saver", "runtime"),
        ("vector-add", "compile"),
    ]
    assert [x["what"] for x in plan["layers"]] == [
        "runtime",
        "run pip uninstall -y vllm && pip install --no-deps /opt/wheels/vllm-*.whl",
        'run pip install "tensordict<0.6" --no-deps && pip install accelerate codetiming datasets dill hydra-core '
        "liger-kernel nu",
        "artifact verl.src",
        "run pip install -e /opt/verl --no-deps",
        "run pip install --no-deps /wheels/torch_memory_saver-*.whl",  # Apptainerfile.rocm's torch_memory_saver
        "artifact vector-add.bin",
    ]
    assert plan["outputs"] == [f"oci:{tmp_path}/out/verl-rocm:rocm6.2", f"sif:{tmp_path}/out/verl-rocm-rocm6.2.sif"]
    cfg = plan["config"]
    assert cfg["Env"] == UPSTREAM_ENV
    assert "Entrypoint" not in cfg and "Cmd" not in cfg  # upstream keeps the base's
    labels = cfg["Labels"]
    # Two steps build GPU code: each its own list, read from what it built (a plan shows where from).
    assert labels["io.assemble.step.vllm.rocm.archs"] == "${steps.vllm.rocm_archs}"
    assert labels["io.assemble.step.vector-add.rocm.archs"] == "${steps.vector-add.rocm_archs}"
    assert labels["io.assemble.python.version"] == "${image.python_version}"  # read from the built image
    assert labels["io.assemble.gpu.rocm.version"] == "6.2"  # the base's tag names it
    assert labels["org.opencontainers.image.version"] == "v0.3.0.post0"
    # Another base: its tag does not say 6.2, so the version is the base's own to tell (with
    # the Python that base runs: train's 3.9 on it is refused, issue 65).
    other = run_cli(
        [
            "plan",
            str(MANIFEST),
            "--json",
            "--target",
            "train",
            "--cache",
            str(tmp_path / "cache"),
            "--set-unlocked",
            "base_image=docker://rocm/vllm-dev:base",
            "--set-unlocked",
            "python_version=3.12",
        ],
        cwd=tmp_path,
    )
    assert other.code == 0, str(other)
    assert other.json["config"]["Labels"]["io.assemble.gpu.rocm.version"] == "${bases.runtime.env.ROCM_VERSION}"


def test_manifest_says_what_upstream_does() -> None:
    man = load_manifest(MANIFEST, target="train").manifest
    base = "docker://rocm/vllm:rocm6.2_mi300_ubuntu20.04_py3.9_vllm_0.6.4"
    assert {k: man.bases[k] for k in ("devel", "runtime")} == {"devel": base, "runtime": base}
    # the others are the standin target's, bootstrapped from Debian's mirror
    assert all(getattr(b, "bootstrap", None) for k, b in man.bases.items() if k not in ("devel", "runtime"))
    vllm = next(s for s in man.compile if s.name == "vllm")
    assert vllm.env["PYTORCH_ROCM_ARCH"] == ARCHS
    # the SGLang bases' flags (Dockerfile.rocm's ENV), not this revision's
    assert [vllm.env[k] for k in ("HIPCC_COMPILE_FLAGS_APPEND", "CFLAGS", "CXXFLAGS")] == ["", "", ""]
    assert "MAX_JOBS=$(nproc) python3 setup.py" in vllm.run[0]
    assert (man.sources["vllm"].git, man.sources["vllm"].ref) == (  # type: ignore[union-attr]
        "https://github.com/vllm-project/vllm.git",
        "v0.6.3",
    )
    assert man.sources["verl"].git == "https://github.com/volcengine/verl.git"  # type: ignore[union-attr]
    deps = next(x for x in man.image.layers if getattr(x, "name", None) == "python-deps")
    assert deps.run[0] == 'pip install "tensordict<0.6" --no-deps'  # type: ignore[union-attr]
    for pkg in ("accelerate", '"pyarrow>=15.0.0"', '"ray[data,train,tune,serve]"', "transformers", "pybind11"):
        assert pkg in deps.run[1].split()  # type: ignore[union-attr]
    # Another arch list is one --set away, for the build and the image alike.
    other = load_manifest(MANIFEST, target="train", sets={"pytorch_rocm_arch": "gfx942"}).manifest
    assert {s.env.get("PYTORCH_ROCM_ARCH") for s in other.compile} == {"gfx942", None}
    assert other.image.config.env["PYTORCH_ROCM_ARCH"] == "gfx942"
