"""The CUDA toolkit from NVIDIA's pip wheels (layers/cuda-toolchain.yaml, manifests/cuda.yaml)
and the lock pinning a compile step's wheels by their sha256 (``require_hashes``).

- A python set with ``require_hashes: true`` reaches its step as a requirements file of the
  lock's pins with their sha256s (``$ASSEMBLE_PYTHON_REQUIREMENTS``): pip's
  ``--require-hashes`` installs what was locked, and refuses a wheel whose bytes changed
  under the same name and version (an index serving other bytes, with its page agreeing).
- manifests/cuda.yaml's devel and runtime images, built from the shipped lock (``--locked``):
  a CMake project using FindCUDAToolkit (CUDA::cudart, CUDA::cublas, CUDA::cuda_driver,
  CUDA::nvrtc) and enable_language(CUDA) builds on the devel image with nothing but the
  image's toolkit, and the dependency check of the program on the runtime image passes with
  libcuda.so.1 left to the host's driver. Slow the first time on a machine (about 650 MB of
  wheels downloaded and a 600 MiB layer written): the two images, and the project built on
  them, are then kept in the test cache for these inputs, as the demo's cold build is
  (tests/plugins/kept.py).
- Its devel-debian and runtime-debian targets, CUDA 12.4 from Debian 13's non-free section
  (issue 65): the same CMake project builds with nvcc 12.4.131 and g++-13 for sm_80 and
  sm_90, and loads on the trixie runtime with libcuda.so.1 alone left to the host; and
  devel-debian-bookworm and runtime-debian-bookworm, the same packages laid out as
  /usr/local/cuda on bookworm, where it builds with bookworm's g++ 12 for sm_90.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import OWN_STORAGE
from tests.helpers import ROOT, config_of, manifest_of, read_blob, run_cli, uncompressed
from tests.plugins.kept import inputs_key, kept
from tests.pyindex import wheel


def _publish(www: Path, wheel: Path) -> str:
    """The index's PEP 503 page for the wheel's project, naming its sha256 (as PyPI's do)."""
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    page = www / "simple" / wheel.name.split("-")[0]
    page.mkdir(parents=True, exist_ok=True)
    (page / "index.html").write_text(f'<html><body><a href="../../files/{wheel.name}#sha256={sha}">{wheel.name}</a>\n')
    return sha


def _site_files(layout: Path) -> dict[str, bytes]:
    """The files of the image's last layer (the step's artifact), by path."""
    desc = manifest_of(layout, "latest")["layers"][-1]
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, desc["digest"])))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_a_require_hashes_set_installs_the_locked_bytes_and_refuses_others(
    tmp_path: Path, http_folder: tuple[str, Path], demo_bases: dict[str, Path]
) -> None:
    url, www = http_folder
    (www / "files").mkdir()
    sha = _publish(www, wheel(www / "files", "hashpin", "1.0", module="WHO = 'the locked bytes'\n"))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: hashes
bases: {{devel: "oci:{demo_bases["devel"]}:latest"}}
compile:
  - name: app
    base: devel
    python_sets:
      - {{name: app, requirements: [hashpin==1.0], python: "3.11", index_url: "{url}/simple", require_hashes: true}}
    run:
      - cat "$ASSEMBLE_PYTHON_REQUIREMENTS" "$PIP_CONSTRAINT"
      - pip install --no-deps --require-hashes --index-url {url}/simple --target /out -r "$ASSEMBLE_PYTHON_REQUIREMENTS"
    artifacts: {{site: {{path: /out/hashpin, to: /opt/site/hashpin}}}}
image:
  base: devel
  layers: [{{artifact: app.site}}]
"""
    )
    assert run_cli(["lock", str(manifest)]).code == 0
    built = run_cli(
        [str(manifest), "--locked", "--cache", str(tmp_path / "c1"), "-o", f"oci:{tmp_path / 'out'}:latest"]
    )
    assert built.code == 0, built
    assert _site_files(tmp_path / "out")["opt/site/hashpin/__init__.py"] == b"WHO = 'the locked bytes'\n"
    log = "".join(p.read_text() for p in (tmp_path / "c1" / "logs").glob("app-*.log"))
    # The requirements file names the sha256; the constraints file the version alone.
    assert f"hashpin==1.0 --hash=sha256:{sha}\n" in log and "\nhashpin==1.0\n" in log, log

    # The index serves other bytes for the same file name, its page agreeing with them: only
    # the lock's sha256 stands between the build and them.
    _publish(www, wheel(www / "files", "hashpin", "1.0", module="WHO = 'someone else'\n"))
    other = run_cli([str(manifest), "--locked", "--cache", str(tmp_path / "c2"), "-o", f"oci:{tmp_path / 'o2'}:latest"])
    assert other.code != 0, other
    assert "DO NOT MATCH THE HASHES" in other.err, other
    assert not (tmp_path / "o2").exists()


# The CUDA devel and runtime images, and a CMake project built on them.

CMAKE_PROJECT = {
    "CMakeLists.txt": """cmake_minimum_required(VERSION 3.18)
project(toolkit_user LANGUAGES CXX CUDA)
find_package(CUDAToolkit REQUIRED)
add_executable(toolkit-user main.cu)
target_link_libraries(toolkit-user PRIVATE CUDA::cudart CUDA::cublas CUDA::cuda_driver CUDA::nvrtc)
""",
    "main.cu": """#include <cstdio>
#include <cublas_v2.h>
#include <cuda.h>
#include <nvrtc.h>
#include <cub/cub.cuh>
__global__ void scale(float *x, float a) { x[threadIdx.x] *= a; }
int main() {
    int major = 0, minor = 0;
    nvrtcVersion(&major, &minor);
    cublasHandle_t handle;
    std::printf("nvrtc %d.%d cuInit %d cublasCreate %d\\n", major, minor, (int)cuInit(0), (int)cublasCreate(&handle));
    scale<<<1, 32>>>(nullptr, 2.0f);
    return 0;
}
""",
}


def _make_bases(folder: Path, targets: tuple[str, ...] = ("devel", "runtime")) -> None:
    """cuda.yaml's ``targets`` from the shipped lock, built into ``folder/bases``. The builds
    keep buildah's storage in their own cache (not the worker's shared one, which lives to the
    session's end), and the cache goes once the layout is written: the toolkit is GiBs
    unpacked, and CI's disk is small."""
    for target in targets:
        argv = [str(ROOT / "manifests/cuda.yaml"), "--target", target, "--locked", "--cache", str(folder / "cache")]
        ran = run_cli([*argv, "-o", f"oci:{folder / 'bases'}:{target}"], env=OWN_STORAGE, timeout=3600)
        assert ran.code == 0, str(ran)
    shutil.rmtree(folder / "cache")
    subprocess.run(["chmod", "-R", "a+rX,go-w", str(folder)], check=True)


CUDA_INPUTS = ("assembler", "manifests/cuda.yaml", "manifests/cuda.lock", "layers")


@pytest.fixture(scope="session")
def cuda_bases() -> Path:
    """manifests/cuda.yaml's devel and runtime targets, from the shipped lock, in one layout:
    built once per machine and inputs (assemble's code, the manifest, its lock, the recipes;
    tests/plugins/kept.py), as the demo is. The tests read it and write nothing into it."""
    return kept("cudabases", inputs_key(CUDA_INPUTS), _make_bases, done="bases/index.json") / "bases"


def _prefix_files(layout: Path, tag: str) -> dict[str, tarfile.TarInfo]:
    """The members under usr/local/cuda of the image's layers, by path."""
    found: dict[str, tarfile.TarInfo] = {}
    for desc in manifest_of(layout, tag)["layers"]:
        with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, desc["digest"])))) as tar:
            found.update({m.name: m for m in tar.getmembers() if m.name.startswith("usr/local/cuda")})
    return found


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_devel_image_has_the_toolkits_layout(cuda_bases: Path) -> None:
    files = _prefix_files(cuda_bases, "devel")
    links = {name: m.linkname for name, m in files.items() if m.issym()}
    # Where FindCUDAToolkit, PyTorch's extensions (CUDA_HOME/lib64) and nvcc's profile look.
    assert links["usr/local/cuda/lib64"] == "lib"
    for lib in ("cudart", "cublas", "cublasLt", "nvrtc", "nvJitLink"):
        assert links[f"usr/local/cuda/lib/lib{lib}.so"] == f"lib{lib}.so.13", lib
        assert files[f"usr/local/cuda/lib/lib{lib}.so.13"].isfile(), lib
    assert links["usr/local/cuda/nvvm/lib64/libnvvm.so"] == "../../lib/libnvvm.so"
    for path in (
        "bin/nvcc",
        "bin/ptxas",
        "nvvm/bin/cicc",
        "include/cuda_runtime.h",
        "include/cublas_v2.h",
        "include/cccl/cub/cub.cuh",
        "include/nvtx3/nvToolsExt.h",
        "lib/stubs/libcuda.so",
    ):
        assert files[f"usr/local/cuda/{path}"].isfile(), path
    env = dict(e.split("=", 1) for e in config_of(cuda_bases, "devel")["config"]["Env"])
    assert env["PATH"].startswith("/usr/local/cuda/bin:") and env["CUDA_VERSION"] == "13.0.2"
    # The runtime image has the shared libraries alone: no compiler, no headers, no stub.
    runtime = _prefix_files(cuda_bases, "runtime")
    assert "usr/local/cuda/lib/libcublasLt.so.13" in runtime and "usr/local/cuda/lib/libcudart.so.13" in runtime
    assert not [p for p in runtime if "/bin/" in p or "/include/" in p or "/stubs/" in p]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_the_runtime_images_sbom_names_each_cuda_component_of_its_library_layer(
    cuda_bases: Path, tmp_path: Path
) -> None:
    """Issue 50, item 6: the layer of NVIDIA's libraries (hundreds of MiB) had no name,
    version or licence in the SBOM. The wheels' METADATA under share/dist-info names each
    component; the layer's artifact CONTAINS them."""
    from tests.test_sbom import referrers, saved

    listing = referrers(f"oci:{cuda_bases}:runtime", "--save", str(tmp_path), cwd=tmp_path)
    doc = json.loads(saved(listing, "application/spdx+json").read_text())
    packages = {p["name"]: p for p in doc["packages"]}
    assert packages["cuda-toolkit"]["versionInfo"] == "13.0.2"
    for name in ("nvidia-cublas", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-nvjitlink"):
        found = packages[name]
        assert found["versionInfo"].startswith("13."), found
        assert found["licenseDeclared"] not in ("NOASSERTION", "NONE"), found
        assert "pkg:pypi/" + name in found["externalRefs"][0]["referenceLocator"], found
    runtime = next(p["SPDXID"] for p in doc["packages"] if p["name"] == "cuda.runtime")
    contained = {r["relatedSpdxElement"] for r in doc["relationships"] if r["spdxElementId"] == runtime}
    assert packages["nvidia-cublas"]["SPDXID"] in contained


def _cmake_project_on(tmp_path: Path, devel: str, runtime: str, archs: str) -> str:
    """CMAKE_PROJECT compiled on the image ``devel`` (an oci: reference) for ``archs``
    (CMAKE_CUDA_ARCHITECTURES), its program put on ``runtime``: the compile step's log, once
    the dependency check of the image found every library the program needs in the runtime
    image (through its ld.so.cache) but the driver's, left to the host."""
    app = tmp_path / "app"
    app.mkdir(parents=True)
    for name, text in CMAKE_PROJECT.items():
        (app / name).write_text(text)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: toolkit-user
bases:
  devel: {devel}
  runtime: {runtime}
sources: {{app: {{path: app}}}}
compile:
  - name: app
    base: devel
    sources: [app]
    packages: [cmake, make]
    run:
      - cmake -S /src/app -B /build -DCMAKE_CUDA_ARCHITECTURES="{archs}" -DCMAKE_BUILD_TYPE=Release
      - cmake --build /build
      - if command -v cuobjdump >/dev/null; then cuobjdump --list-elf /build/toolkit-user; fi  # not in the wheels
    artifacts: {{bin: {{path: /build/toolkit-user, to: /usr/local/bin/toolkit-user}}}}
image:
  base: runtime
  layers: [{{artifact: app.bin}}]
"""
    )
    out = f"oci:{tmp_path / 'out'}:latest"
    built = run_cli([str(manifest), "--cache", str(tmp_path / "cache"), "-o", out], env=OWN_STORAGE, timeout=3600)
    assert built.code == 0, built
    deps = run_cli(["deps", "--json", out])
    assert deps.code == 0, deps
    assert deps.json["ok"] and deps.json["files"] >= 1 and not deps.json["misses"], deps.out
    assert deps.json["host"] == ["libcuda.so.1"], deps.out
    return "".join(p.read_text() for p in (tmp_path / "cache" / "logs").glob("app-*.log"))


@pytest.fixture(scope="session")
def cuda_cmake(cuda_bases: Path) -> Path:
    """The CMake project compiled on cuda_bases (about 80 s): kept per machine for the bases'
    inputs and this file, its step's log in ``cmake.log``."""
    key = inputs_key((*CUDA_INPUTS, "tests/test_cuda_toolkit.py"))

    def make(folder: Path) -> None:
        devel, runtime = f"oci:{cuda_bases}:devel", f"oci:{cuda_bases}:runtime"
        log = _cmake_project_on(folder / "project", devel, runtime, "90")
        shutil.rmtree(folder / "project")
        (folder / "cmake.log").write_text(log)

    return kept("cudacmake", key, make, done="cmake.log")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_cmake_cuda_project_builds_on_devel_and_loads_on_runtime(cuda_cmake: Path) -> None:
    """nvcc 13 compiled the project for sm_90 on devel, and the program's every library but
    the driver's is in runtime (:func:`_cmake_project_on` checked it with ``assemble deps``)."""
    log = (cuda_cmake / "cmake.log").read_text()
    assert 'Found CUDAToolkit: /usr/local/cuda/include (found version "13.0.88")' in log, log[-3000:]
    assert "The CUDA compiler identification is NVIDIA 13.0.88" in log, log[-3000:]


# CUDA 12.4 from Debian 13's non-free section (devel-debian, runtime-debian).


def _make_debian_cuda(folder: Path) -> None:
    """The Debian CUDA 12 targets (1.2 GB of .debs, a 2.2 GiB devel image) and the CMake
    project compiled on them (importing that image into buildah's storage is most of a
    minute and a half): the step's log kept beside the bases as ``cmake.log``."""
    _make_bases(folder, ("devel-debian", "runtime-debian", "devel-debian-bookworm", "runtime-debian-bookworm"))
    bases = folder / "bases"
    devel, runtime = f"oci:{bases}:devel-debian-bookworm", f"oci:{bases}:runtime-debian-bookworm"
    log = _cmake_project_on(folder / "project", devel, runtime, "90")
    shutil.rmtree(folder / "project")
    (folder / "cmake-bookworm.log").write_text(log)
    devel, runtime = f"oci:{bases}:devel-debian", f"oci:{bases}:runtime-debian"
    log = _cmake_project_on(folder / "project", devel, runtime, "80;90")
    shutil.rmtree(folder / "project")
    (folder / "cmake.log").write_text(log)


@pytest.fixture(scope="session")
def debian_cuda() -> Path:
    """The four images and the projects built on them, kept per machine for the manifest, its
    lock and the bookworm layout's recipe: 640 s the first time on a machine, and not again for each change of assemble
    (what they exercise, bootstrap, packages layers, a compile step and the dependency
    check, every other build test exercises with this checkout's code)."""
    key = inputs_key(
        ("manifests/cuda.yaml", "manifests/cuda.lock", "layers/cuda-debian.yaml", "tests/test_cuda_toolkit.py")
    )
    return kept("debiancuda", key, _make_debian_cuda, done="cmake.log")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_debians_cuda_12_builds_a_cmake_project_that_loads_on_its_runtime(debian_cuda: Path) -> None:
    """nvcc 12.4.131 with g++-13 under it compiled the project for sm_80 and sm_90 on
    devel-debian, and the program's every library but the driver's is in runtime-debian
    (:func:`_cmake_project_on` checked it with ``assemble deps``); the devel image's own
    tests (nvcc, a cuBLAS and driver-API program) passed when it was built."""
    log = (debian_cuda / "cmake.log").read_text()
    assert 'Found CUDAToolkit: /usr/include (found version "12.4.131")' in log, log[-3000:]
    assert "The CUDA compiler identification is NVIDIA 12.4.131 with host compiler GNU 13.3.0" in log, log[-3000:]
    assert "The CXX compiler identification is GNU 13.3.0" in log, log[-3000:]  # the image's CXX
    assert ".sm_80.cubin" in log and ".sm_90.cubin" in log, log[-3000:]
    env = dict(e.split("=", 1) for e in config_of(debian_cuda / "bases", "devel-debian")["config"]["Env"])
    assert env["CUDA_VERSION"] == "12.4.1" and env["CXX"] == "g++-13"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_debians_cuda_12_on_bookworm_builds_with_its_gcc_12_and_loads_on_its_runtime(debian_cuda: Path) -> None:
    """The same packages laid out as /usr/local/cuda by a step on trixie (layers/cuda-debian.yaml)
    and put on bookworm: nvcc 12.4.131 took bookworm's g++ 12 as its host compiler, CMake found
    the toolkit in the prefix, the sm_90 program's libraries but the driver's are in
    runtime-debian-bookworm (``assemble deps`` in :func:`_cmake_project_on`); the devel image's
    own tests (nvcc, a cuBLAS, Thrust and driver-API program for sm_80 and sm_90) passed when
    it was built."""
    log = (debian_cuda / "cmake-bookworm.log").read_text()
    assert 'Found CUDAToolkit: /usr/local/cuda/include (found version "12.4.131")' in log, log[-3000:]
    assert "The CUDA compiler identification is NVIDIA 12.4.131" in log, log[-3000:]
    assert "The CXX compiler identification is GNU 12.2.0" in log, log[-3000:]  # bookworm's, nvcc's host compiler
    assert ".sm_90.cubin" in log, log[-3000:]
    env = dict(e.split("=", 1) for e in config_of(debian_cuda / "bases", "devel-debian-bookworm")["config"]["Env"])
    assert env["CUDA_VERSION"] == "12.4.1" and env["CUDA_HOME"] == "/usr/local/cuda"
