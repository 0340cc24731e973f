"""CUDA arch lists against the other vendor's names (``rocm.json``): an AMD GPU target
(``gfx90a``, ``gfx942:xnack+``) where nvcc, torch's cpp_extension or CMake takes CUDA archs
(8.0, 90a, sm_90) is no GPU they build for, and the compile stops hours in, or builds for
none. The ROCm side is :mod:`.archs` (a CUDA arch in PYTORCH_ROCM_ARCH).

A CUDA arch list is what a well-known variable holds (TORCH_CUDA_ARCH_LIST,
CMAKE_CUDA_ARCHITECTURES, CUDAARCHS, CUDA_ARCHITECTURES, CUDA_DOCKER_ARCH, CUDA_ARCHS) or what
nvcc's and clang's flags name (``-arch=``, ``--gpu-architecture=``, ``--cuda-gpu-arch=``,
``-gencode=arch=...,code=...``), wherever :mod:`.archlists` finds them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from assembler.manifest.facts.archlists import ArchList, lists
from assembler.manifest.facts.data import read, where
from assembler.manifest.facts.scope import describe, settable

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject

VARIABLES = (
    "TORCH_CUDA_ARCH_LIST",
    "CMAKE_CUDA_ARCHITECTURES",
    "CUDAARCHS",
    "CUDA_ARCHITECTURES",
    "CUDA_DOCKER_ARCH",
    "CUDA_ARCHS",
)
_FLAG = re.compile(
    r"(?:(?<![\w-])-arch|--gpu-architecture|--cuda-gpu-arch|(?<![\w-])-gencode)[=\s]+"
    r"((?:arch=)?[^\s'\";&|)]+)"
)
_AMD = re.compile(r"^(?:arch=|code=)?(gfx[0-9a-z-]+?)((?::(?:sramecc|xnack)[+-])*)$")


def check(loaded: Subject) -> None:
    """Every CUDA arch list's archs against AMD's GPU targets; ManifestError."""
    targets = read("rocm")["targets"]
    for said in lists(loaded, VARIABLES, _FLAG):
        tokens = [t for part in said.tokens for t in re.split(r"[=\[\]]+", part) if t]
        bad = [t for t in tokens if _AMD.match(t)]
        if bad:
            _refuse(loaded, said, bad, targets)


def _refuse(loaded: Subject, said: ArchList, bad: list[str], targets: dict[str, object]) -> None:
    names = list(said.params)
    known = [t for t in bad if (found := _AMD.match(t)) is not None and found.group(1) in targets]
    why = (
        f"{'an AMD GPU target' if len(bad) == 1 else 'AMD GPU targets'} "
        + (f"(ROCm's, {where('rocm')})" if known else "(gfx...)")
        + ", not CUDA archs: nvcc and torch's cpp_extension take compute capabilities (8.0, 9.0a; CMake's 80, 90a)"
    )
    raise loaded.error(
        said.path,
        f"{said.what}: {said.name}" + (f" ({describe(loaded, names)})" if names else "") + f": {', '.join(bad)}: {why}",
        hint=f"--set {' or '.join(settable(loaded, names)) or said.name} to NVIDIA GPU archs (8.0;9.0) "
        "without them, or build for ROCm (PYTORCH_ROCM_ARCH, AMDGPU_TARGETS) on a ROCm base",
    )
