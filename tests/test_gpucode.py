"""The GPU architectures of device code, read from the bytes (assembler.deps.gpucode), on
files compiled here by the real compilers: nvcc from NVIDIA's pip wheels (checked against
cuobjdump) and Debian's hipcc (checked against roc-obj-ls)."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import zstandard

from assembler.deps.archs import file_code
from assembler.deps.elf import find_sections
from assembler.deps.gpucode import (
    BUNDLE_MAGIC,
    CUDA_SECTIONS,
    HIP_SECTIONS,
    GpuCode,
    Region,
    bundle_archs,
    canonical,
    code_of,
)
from tests.helpers import sh, spools_made

# Module fixtures that run outside programs (tests/conftest.py: tier): nvcc, hipcc.
OUTSIDE_FIXTURES = frozenset({"nvcc", "hip_binary"})

SAXPY = Path(__file__).parent.parent / "examples/cuda-kernels/saxpy.cu"
KERNEL = """\
#include <hip/hip_runtime.h>
__global__ void add_one(float* a) { a[threadIdx.x] += 1.0f; }
int main() { return 0; }
"""


def _cu13() -> Path:
    spec = importlib.util.find_spec("nvidia")
    assert spec is not None and spec.submodule_search_locations, "the nvidia-cuda-* wheels (test extra) are missing"
    return next(Path(p) / "cu13" for p in spec.submodule_search_locations if (Path(p) / "cu13/bin/nvcc").exists())


def _code(path: Path) -> GpuCode:
    with path.open("rb") as f:
        return code_of(f, find_sections(f, (*CUDA_SECTIONS, *HIP_SECTIONS)))


def _cuobjdump(path: Path) -> set[str]:
    tool = str(_cu13() / "bin/cuobjdump")
    elf = sh([tool, "--list-elf", str(path)]).stdout
    ptx = sh([tool, "--list-ptx", str(path)]).stdout
    # "ELF file 1: x.1.sm_80.cubin", "PTX file 1: x.1.sm_90.ptx" (PTX named after its virtual arch)
    return {f"sm_{line.rsplit('.', 2)[-2][3:]}" for line in elf.splitlines() if ".cubin" in line} | {
        f"compute_{line.rsplit('.', 2)[-2][3:]}" for line in ptx.splitlines() if ".ptx" in line
    }


@pytest.fixture(scope="module")
def nvcc() -> Path:
    return _cu13() / "bin/nvcc"


@pytest.mark.parametrize(
    ("gencode", "compile_only", "expected"),
    [
        # the demo's: SASS for 80 and 90, PTX for 90, linked (two fat binaries: object and device link)
        (
            ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=[sm_90,compute_90]"],
            False,
            "sm_80;sm_90;compute_90",
        ),
        # arch-specific and family variants, PTX only for 120
        (
            [
                "-gencode",
                "arch=compute_90a,code=sm_90a",
                "-gencode",
                "arch=compute_100f,code=sm_100f",
                "-gencode",
                "arch=compute_120,code=compute_120",
                "-gencode",
                "arch=compute_75,code=sm_75",
            ],
            True,
            "sm_75;sm_90a;sm_100f;compute_120",
        ),
        # compressed entries (their headers are not)
        (
            [
                "-Xfatbin",
                "-compress-all",
                "-gencode",
                "arch=compute_80,code=[sm_80,compute_80]",
                "-gencode",
                "arch=compute_86,code=sm_86",
            ],
            True,
            "sm_80;sm_86;compute_80",
        ),
        # relocatable device code: the __nv_relfatbin section
        (["-rdc=true", "-gencode", "arch=compute_89,code=sm_89"], True, "sm_89"),
    ],
)
def test_fatbin_archs_match_cuobjdump(
    nvcc: Path, tmp_path: Path, gencode: list[str], compile_only: bool, expected: str
) -> None:
    out = tmp_path / ("k.o" if compile_only else "k")
    sh([str(nvcc), "-O2", *gencode, *(["-c"] if compile_only else []), "-o", str(out), str(SAXPY)])
    code = _code(out)
    assert canonical(code.cuda) == expected and not code.rocm
    # cuobjdump 13.2 prints a family cubin (sm_100f) without its f: compare without it.
    assert {a.removesuffix("f") if a.startswith("sm_") else a for a in code.cuda} == _cuobjdump(out)


def test_ptx_isa_and_the_cubins_release_match_cuobjdump_and_nvcc(nvcc: Path, tmp_path: Path) -> None:
    """What the driver needs is read from the code: each PTX's ISA version (its entry
    header, as ``.version`` in the PTX cuobjdump prints) and the CUDA release that compiled
    the cubins (their ``.note.nv.cuinfo``, as ``nvcc --version`` says)."""
    out = tmp_path / "k"
    gencode = ["-gencode", "arch=compute_80,code=[sm_80,compute_80]", "-gencode", "arch=compute_90,code=sm_90"]
    sh([str(nvcc), "-O2", *gencode, "-o", str(out), str(SAXPY)])
    code = _code(out)
    ptx = sh([str(_cu13() / "bin/cuobjdump"), "-ptx", str(out)]).stdout
    versions = {line.split()[1] for line in ptx.splitlines() if line.startswith(".version")}
    assert versions and code.ptx == {f"compute_80={v}" for v in versions}
    release = re.search(r"release (\d+\.\d+)", sh([str(nvcc), "--version"]).stdout)
    assert release and code.toolkits == {release.group(1)}


@pytest.fixture(scope="module")
def hip_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hip")
    (folder / "k.hip").write_text(KERNEL)
    archs = ["--offload-arch=gfx90a", "--offload-arch=gfx908"]
    (folder / "tmp").mkdir()  # clang's HIP driver leaves k-XXXXXX folders in its TMPDIR
    env = {**os.environ, "TMPDIR": str(folder / "tmp")}
    sh(["hipcc", *archs, "-O2", "-o", str(folder / "k"), str(folder / "k.hip")], env=env)
    return folder / "k"


def test_offload_bundle_archs_match_roc_obj(hip_binary: Path) -> None:
    code = _code(hip_binary)
    assert canonical(code.rocm, rocm=True) == "gfx908;gfx90a" and not code.cuda
    listed = sh(["roc-obj-ls", str(hip_binary)]).stdout
    ids = {line.split()[1] for line in listed.splitlines() if line.strip()}
    assert {i.rpartition("--")[2] for i in ids if "amdgcn" in i} == code.rocm


def _bundle(path: Path) -> bytes:
    with path.open("rb") as f:
        ((_, offset, size),) = find_sections(f, HIP_SECTIONS)
        f.seek(offset)
        data = f.read(size)
    return data[data.index(BUNDLE_MAGIC) :]


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("method", [0, 1])
def test_compressed_offload_bundles_are_read(hip_binary: Path, version: int, method: int) -> None:
    # hipcc 5.2 cannot compress: wrap its real bundle as clang-offload-bundler -compress
    # does (CCOB header, then the zlib or zstd stream of the bundle).
    bundle = _bundle(hip_binary)
    body = zlib.compress(bundle) if method == 0 else zstandard.ZstdCompressor().compress(bundle)
    sizes = {
        1: struct.pack("<I", len(bundle)),
        2: struct.pack("<II", 0, len(bundle)),
        3: struct.pack("<QQ", 0, len(bundle)),
    }[version]
    section = b"\0" * 64 + b"CCOB" + struct.pack("<HH", version, method) + sizes + b"\0" * 8 + body
    assert bundle_archs(Region.of(section)) == {"gfx908", "gfx90a"}


def test_damaged_sections_give_no_archs_and_no_error(hip_binary: Path) -> None:
    bundle = _bundle(hip_binary)
    for damaged in (bundle[:40], bundle[:24] + struct.pack("<Q", 1 << 40), b"CCOB\x02\x00\x00\x00" + b"\xff" * 40):
        assert bundle_archs(Region.of(damaged)) == set()
    assert file_code(io.BytesIO(b"\x7fELF" + b"\0" * 100), "x.so", hip_binary.parent) == GpuCode()


def test_a_wheel_holding_device_code_is_read(hip_binary: Path, tmp_path: Path) -> None:
    import zipfile

    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(hip_binary, "demo/_kernels.so")
        zf.writestr("demo/__init__.py", "")
    with wheel.open("rb") as f:
        assert file_code(f, wheel.name, tmp_path).rocm == {"gfx908", "gfx90a"}


def test_canonical_order() -> None:
    assert canonical(["compute_90", "sm_90", "sm_100a", "sm_80", "sm_90a"]) == "sm_80;sm_90;sm_90a;sm_100a;compute_90"
    assert canonical(["gfx1100", "gfx90a:xnack+", "gfx942", "gfx90a", "gfx908"], rocm=True) == (
        "gfx908;gfx90a;gfx90a:xnack+;gfx942;gfx1100"
    )


def test_device_code_is_read_as_a_layer_is_written(
    hip_binary: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device code of a layer's ELF files is read as the layer is written (a host file
    through its own descriptor, a file from elsewhere through its spool) and recorded as a
    read of the whole blob records it, so the labels do not read the layer back. A layer
    holding a wheel is left to the reader of the blob, which looks into the wheel."""
    import shutil
    import zipfile

    from assembler.archive import headers as headers_module
    from assembler.archive.headers import LayerHeaders
    from assembler.archive.layer import Member, write_layer
    from assembler.archive.tar import TarEntry
    from assembler.archive.tree import iter_host_members
    from assembler.cache import Cache
    from assembler.cache.memos import remember_headers
    from assembler.deps.archs import CodeAsWritten, layer_code

    monkeypatch.setattr(headers_module, "RACY_NS", 0)  # the host file was just copied: read it again all the same
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(hip_binary, tree / "k")
    (tree / "README").write_text("not an ELF file\n")
    kernel = hip_binary.read_bytes()
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo/_kernels.so", kernel)

    def layer(cache: Cache, extra: list[Member]) -> tuple[str, str, dict[str, Any] | None]:
        members = [*iter_host_members(tree, "opt/"), *extra]
        code = CodeAsWritten(cache)
        headers = LayerHeaders(observers=[code])
        with cache.blob_writer() as w:
            blob = write_layer(members, w, compression="zstd", epoch=0, headers=headers)
        remember_headers(cache, headers, digest=blob.digest, diff_id=blob.diff_id)
        return blob.digest, blob.diff_id, headers.found(code)

    def read_back(cache: Cache, digest: str, diff_id: str) -> GpuCode:
        def opener():  # type: ignore[no-untyped-def]
            return cache.open_blob(digest)

        return layer_code(diff_id, opener, what="layer", cache=cache, workdir=cache.tmp)

    spooled: Member = (TarEntry("usr/lib/k-copy.so", "file", size=len(kernel)), lambda: io.BytesIO(kernel))
    spools = spools_made(monkeypatch)
    cache = Cache(tmp_path / "cache")
    digest, diff_id, found = layer(cache, [spooled])
    assert len(spools) == 1  # the copy's: the host file is read again through its descriptor
    assert found == {
        "opt/k": {"cuda": [], "rocm": ["gfx908", "gfx90a"], "ptx": [], "toolkits": []},
        "usr/lib/k-copy.so": {"cuda": [], "rocm": ["gfx908", "gfx90a"], "ptx": [], "toolkits": []},
    }
    opened: list[str] = []
    monkeypatch.setattr(Cache, "open_blob", lambda self, d: opened.append(d))
    assert read_back(cache, digest, diff_id) == GpuCode(rocm=frozenset({"gfx908", "gfx90a"}))
    assert opened == []  # the memo recorded as it was written
    monkeypatch.undo()
    monkeypatch.setattr(headers_module, "RACY_NS", 0)
    fresh = Cache(tmp_path / "fresh")
    shutil.copytree(cache.root / "blobs", fresh.root / "blobs", dirs_exist_ok=True)
    assert read_back(fresh, digest, diff_id) == read_back(cache, digest, diff_id)  # as reading the blob gives

    whl: Member = (
        TarEntry("wheels/demo-1.0-py3-none-any.whl", "file", size=len(wheel.getvalue())),
        lambda: io.BytesIO(wheel.getvalue()),
    )
    digest, diff_id, found = layer(cache, [whl])
    assert found is None
    assert cache.memo("gpucode-v2-" + diff_id.split(":")[1]) is None
    assert read_back(cache, digest, diff_id).rocm == {"gfx908", "gfx90a"}  # what only the reader of the blob sees
