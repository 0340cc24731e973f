"""Cross-compiling: a compile step whose container is one platform's (its base names it:
``{bootstrap:, platform: linux/amd64}``) while the image is built for another (``--platform
linux/arm64``) runs natively and builds for the target, as Debian's cross toolchains
(``crossbuild-essential-arm64``) and multiarch libraries (``libcurl4-openssl-dev:arm64``)
let it: nothing runs under qemu-user, where an emulated compile is several times slower.

The step is told the target (:func:`target_env`): BuildKit's platform variables (a
Dockerfile's ``$TARGETARCH`` branches read the same), the target's GNU triplet (the cross
compilers' prefix, the multiarch folder of its libraries), Rust's target and the linker
cargo uses for it, and ``CMAKE_TOOLCHAIN_FILE`` (read by CMake 3.21 and newer from the
environment): a toolchain file mounted read-only under /run (:func:`volumes`) that names the
target's system, processor, compilers and multiarch folders, so an unchanged ``cmake -S -B``
configures for the target. The variables are part of the step's definition, so its key
differs per target; the toolchain file is named after its content, so a changed file is a
changed key too. A step of the target's own platform is told nothing (its key unchanged).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping

from assembler.cache import Cache
from assembler.compile.buildah import Volume
from assembler.errors import InputError
from assembler.oci.descriptor import Platform

TOOLCHAIN_DIR = "/run/assemble-cross"
TRIPLE_ENV = "TARGET_TRIPLE"
# OCI architecture -> (GNU triplet: the cross compilers' prefix and Debian's multiarch folder,
# CMake's CMAKE_SYSTEM_PROCESSOR, Rust's target).
TARGETS = {
    "amd64": ("x86_64-linux-gnu", "x86_64", "x86_64-unknown-linux-gnu"),
    "arm64": ("aarch64-linux-gnu", "aarch64", "aarch64-unknown-linux-gnu"),
    "ppc64le": ("powerpc64le-linux-gnu", "ppc64le", "powerpc64le-unknown-linux-gnu"),
    "s390x": ("s390x-linux-gnu", "s390x", "s390x-unknown-linux-gnu"),
    "riscv64": ("riscv64-linux-gnu", "riscv64", "riscv64gc-unknown-linux-gnu"),
    "386": ("i686-linux-gnu", "i686", "i686-unknown-linux-gnu"),
}


def target_env(build: Platform, target: Platform) -> dict[str, str]:
    """What a step running on ``build`` is told to build for ``target`` (nothing when they are
    the same platform). InputError for a target no cross toolchain is known for."""
    if build.matches(target):
        return {}
    if target.os != "linux" or target.architecture not in TARGETS:
        raise InputError(
            f"no cross toolchain is known for {target} (a compile step on a {build} base)",
            hint=f"cross-compiling targets: {', '.join('linux/' + a for a in TARGETS)}",
        )
    triple, _, rust = TARGETS[target.architecture]
    return {
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
        TRIPLE_ENV: triple,
        "RUST_TARGET": rust,
        f"CARGO_TARGET_{rust.upper().replace('-', '_')}_LINKER": f"{triple}-gcc",
        "CMAKE_TOOLCHAIN_FILE": f"{TOOLCHAIN_DIR}/{_name(triple)}",
    }


def toolchain(triple: str) -> str:
    """A CMake toolchain file for Debian's cross compilers of ``triple`` and the multiarch
    packages of its architecture (no sysroot: their headers and libraries are under /usr)."""
    processor = next((p for t, p, _ in TARGETS.values() if t == triple), triple.split("-")[0])
    return "\n".join(
        [
            f"# the target of a cross-compiling step: {triple} (written by assemble)",
            "set(CMAKE_SYSTEM_NAME Linux)",
            f"set(CMAKE_SYSTEM_PROCESSOR {processor})",
            f"set(CMAKE_C_COMPILER {triple}-gcc)",
            f"set(CMAKE_CXX_COMPILER {triple}-g++)",
            f"set(CMAKE_LIBRARY_ARCHITECTURE {triple})",
            # the target's libraries and headers: /usr/lib/TRIPLE, /usr/include/TRIPLE (multiarch)
            f"set(CMAKE_FIND_ROOT_PATH /usr/{triple})",
            "set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)",
            f'set(ENV{{PKG_CONFIG_LIBDIR}} "/usr/lib/{triple}/pkgconfig:/usr/share/pkgconfig")',
            # try_run cannot run the target's programs here: the cross emulator is left unset
            "",
        ]
    )


def _name(triple: str) -> str:
    digest = hashlib.sha256(toolchain(triple).encode()).hexdigest()[:12]
    return f"{triple}-{digest}.cmake"


def volumes(cache: Cache, env: Mapping[str, str]) -> list[Volume]:
    """The toolchain folder a cross-compiling step's ``env`` names, mounted read-only (none
    for a step that is not one). Kept in the cache, written once per content."""
    triple = env.get(TRIPLE_ENV)
    if not triple or not env.get("CMAKE_TOOLCHAIN_FILE", "").startswith(TOOLCHAIN_DIR + "/"):
        return []
    folder = cache.path("cross-toolchains")
    data = toolchain(triple).encode()
    path = folder / _name(triple)
    if not path.is_file() or path.read_bytes() != data:
        tmp = folder / f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"
        tmp.write_bytes(data)
        tmp.replace(path)
    return [Volume(folder, TOOLCHAIN_DIR)]
