"""Compile steps for another architecture by cross-compiling (issue 69, item 3): a step on a
devel base of this machine's platform (``{bootstrap:, platform: linux/amd64}``, Debian's
cross compilers and multiarch ``:arm64`` libraries in it) while an arm64 image is built runs
natively, is told the target (BuildKit's TARGET* variables, the GNU triplet, a CMake
toolchain file), and nothing of it runs under qemu-user."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from assembler.cache import Cache
from assembler.compile import cross
from assembler.debian import aptlock
from assembler.debian.bootstrap import BootstrapSpec, mmdebstrap_argv
from assembler.errors import InputError
from assembler.manifest.lock.debpins import Deb
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Platform
from assembler.pipeline.runs.emulation import step_platform
from tests.conftest import BASES_CACHE
from tests.helpers import manifest_of, read_blob, run_cli, uncompressed

AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")
EM_AARCH64 = 183  # ELF e_machine


def test_a_step_is_told_the_target_only_when_it_cross_compiles(tmp_path: Path) -> None:
    assert cross.target_env(AMD64, AMD64) == {}
    env = cross.target_env(AMD64, ARM64)
    assert {k: env[k] for k in ("BUILDPLATFORM", "TARGETPLATFORM", "TARGETARCH", "TARGET_TRIPLE", "RUST_TARGET")} == {
        "BUILDPLATFORM": "linux/amd64",
        "TARGETPLATFORM": "linux/arm64",
        "TARGETARCH": "arm64",
        "TARGET_TRIPLE": "aarch64-linux-gnu",
        "RUST_TARGET": "aarch64-unknown-linux-gnu",
    }
    assert env["CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"] == "aarch64-linux-gnu-gcc"
    with pytest.raises(InputError, match="no cross toolchain is known for linux/mips64le"):
        cross.target_env(AMD64, Platform.parse("linux/mips64le"))
    # the toolchain file the env names is mounted, named by its content (a new file: a new key)
    (volume,) = cross.volumes(Cache(tmp_path / "c"), env)
    toolchain = Path(volume.host) / env["CMAKE_TOOLCHAIN_FILE"].rsplit("/", 1)[1]
    text = toolchain.read_text()
    assert volume.readonly and env["CMAKE_TOOLCHAIN_FILE"].startswith(volume.container + "/aarch64-linux-gnu-")
    for line in ("set(CMAKE_SYSTEM_PROCESSOR aarch64)", "set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)"):
        assert line in text
    assert cross.volumes(Cache(tmp_path / "c"), {"CMAKE_TOOLCHAIN_FILE": "/elsewhere.cmake"}) == []


def test_a_multiarch_base_is_bootstrapped_and_locked_per_architecture(tmp_path: Path) -> None:
    spec = BootstrapSpec("bookworm", packages=("libc6:arm64",), architectures=("arm64",))
    argv = mmdebstrap_argv(spec, arch="amd64", mirror="http://m", output=tmp_path / "o")
    assert "--architectures=amd64,arm64" in argv
    # a binNMU's manuals differ per architecture, and dpkg refuses the second (trixie's libpsl-dev)
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    assert not any(
        "path-exclude" in a
        for a in mmdebstrap_argv(BootstrapSpec("bookworm"), arch="amd64", mirror="m", output=tmp_path)
    )
    # the index lists the same version of a package once per architecture, each its own file
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "m_dists_bookworm_main_binary-amd64_Packages").write_text(
        "Package: libc6\nArchitecture: amd64\nVersion: 2.36\nSHA256: " + "a" * 64 + "\n"
    )
    (lists / "m_dists_bookworm_main_binary-arm64_Packages").write_text(
        "Package: libc6\nArchitecture: arm64\nVersion: 2.36\nSHA256: " + "b" * 64 + "\n"
    )
    index = aptlock.MirrorIndex(lists)
    debs = aptlock.locked_debs([("libc6", "2.36", "amd64"), ("libc6", "2.36", "arm64")], index)
    assert [(d.arch, d.sha256[0]) for d in debs] == [("amd64", "a"), ("arm64", "b")]
    assert aptlock.check_served(debs, index) == []
    assert aptlock.check_served([Deb("libc6", "arm64", "2.36", "a" * 64)], index) == [
        f"libc6:arm64=2.36: the mirror's file changed (sha256 {'b' * 64}, locked {'a' * 64})"
    ]


_CROSS = """name: cross
bases:
  dev:
    platform: linux/amd64
    bootstrap:
      packages: [gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, cmake, make]
  run: scratch
sources:
  hello: {path: hello}
compile:
  - name: hello
    base: dev
    sources: [hello]
    # an unchanged configure: CMake reads CMAKE_TOOLCHAIN_FILE from the environment
    run: ["cmake -S /src/hello -B /build && cmake --build /build && echo $TARGETARCH > /build/target"]
    artifacts: {bin: {path: /build/hello, to: /hello}, target: {path: /build/target, to: /target}}
image:
  base: run
  layers: [{artifact: hello.bin}, {artifact: hello.target}]
  config: {entrypoint: [/hello]}
tests:
  - {name: hello, command: [/hello], output: ['^hello from aarch64 \\(cmake: aarch64\\)$'], emulate: true}
"""
_CMAKE = """cmake_minimum_required(VERSION 3.21)
project(hello C)
add_executable(hello hello.c)
target_compile_definitions(hello PRIVATE PROCESSOR="${CMAKE_SYSTEM_PROCESSOR}")
target_link_options(hello PRIVATE -static)
"""
_C = """#include <stdio.h>
int main(void) {
#if defined(__aarch64__)
  printf("hello from aarch64 (cmake: %s)\\n", PROCESSOR);
#else
  printf("hello from elsewhere (cmake: %s)\\n", PROCESSOR);
#endif
  return 0;
}
"""


def test_a_step_on_a_bootstrap_base_of_its_own_platform_is_native_for_an_arm64_image(tmp_path: Path) -> None:
    man = m.Manifest.model_validate(
        {
            "name": "x",
            "bases": {"dev": {"bootstrap": {"suite": "bookworm"}, "platform": "linux/amd64"}, "b": "scratch"},
            "compile": [{"name": "c", "base": "dev", "run": ["true"], "artifacts": {"o": {"path": "/o", "to": "/o"}}}],
            "image": {"base": "b", "layers": [{"artifact": "c.o"}]},
        }
    )
    assert step_platform(man, man.compile[0], ARM64) == AMD64
    # the plan of an arm64 image with a cross-compiling step: nothing refused, nothing emulated
    (tmp_path / "hello").mkdir()
    (tmp_path / "m.yaml").write_text(_CROSS)
    ran = run_cli(["plan", "m.yaml", "--platform", "linux/arm64", "--json", *BASES_CACHE], cwd=tmp_path)
    assert ran.code == 0, ran
    assert json.loads(ran.out)["emulated"] == []


@pytest.mark.slow  # the cross devel base: bootstrapped once per machine (a minute), then a cache hit
@pytest.mark.integration
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="an arm64 program cross-compiled on an x86 host")
def test_an_arm64_program_is_cross_compiled_with_cmake_and_answers_under_qemu(tmp_path: Path) -> None:
    src = tmp_path / "hello"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(_CMAKE)
    (src / "hello.c").write_text(_C)
    (tmp_path / "m.yaml").write_text(_CROSS)
    out = f"oci:{tmp_path / 'out'}:x"
    built = run_cli(["m.yaml", "--platform", "linux/arm64", *BASES_CACHE, "-o", out, "--json"], cwd=tmp_path)
    assert built.code == 0, str(built)
    layers = manifest_of(tmp_path / "out", "x")["layers"]
    files = {}
    for layer in layers:
        with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(tmp_path / "out", layer["digest"])))) as tar:
            files |= {t.name: f.read() for t in tar if t.isfile() and (f := tar.extractfile(t)) is not None}
    head = files["hello"]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == EM_AARCH64
    assert files["target"] == b"arm64\n"
    # run on the image under qemu-user: emulated, never a pass on the target
    ran = run_cli(["test", "--json", *BASES_CACHE[:2], out, "m.yaml", "--emulate"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    (test,) = json.loads(ran.out)["tests"]
    assert test["status"] == "emulated", test
