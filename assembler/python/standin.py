"""Stand-ins for package indexes this machine cannot reach (``assemble lock``).

A set that needs an unreachable index (PyTorch's download.pytorch.org, FlashInfer's,
NVIDIA's) is resolved against PyPI's build of the same release instead: its metadata
catches what clashes with the rest of the environment (vLLM 0.11.1's NVSHMEM beside torch
2.9.0). Pins found so are marked as a stand-in's in the lock; a machine that reaches the
index records the real files. A requirement PyPI does not serve at all has no stand-in:
the set is recorded as unresolved.

The CUDA flavours of one PyTorch release (cu126, cu128, cu129) differ in the versions of
the CUDA toolkit's own libraries they require (cuBLAS 12.8.4.1 in cu128, 12.9.x in cu129),
which follow the toolkit release. Since 2.8 they share cuDNN, cuSPARSELt, NCCL and NVSHMEM
within a CUDA major (PyTorch's .github/scripts/generate_binary_build_matrix.py,
PYTORCH_EXTRA_INSTALL_REQUIREMENTS); before, each flavour took its own cuDNN too; across
CUDA majors every nvidia-* name differs (-cu12, -cu13). PyPI's build tells its flavour by
the nvidia-cuda-runtime it requires: where it is not the flavour the index serves, the
requirements that differ are unknown, left unpinned (the build gets the index's), and
everything else still catches clashes.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from packaging.version import InvalidVersion, Version

PYPI = "https://pypi.org/simple"

# The CUDA toolkit's libraries as wheels: their versions follow the toolkit release.
_TOOLKIT = (
    "cuda-nvrtc|cuda-runtime|cuda-cupti|cuda-nvcc|cuda-cccl|cuda-nvml-dev|cuda-sanitizer-api|cublas|cufft|curand"
    "|cusolver|cusparse|nvjitlink|nvtx|cufile|npp|nvjpeg|nvfatbin|cuda-crt"
)
_TOOLKIT_NAME = re.compile(rf"^nvidia-(?:{_TOOLKIT})(?:-cu[0-9]+)?$")
_SHARED_NAME = re.compile(r"^nvidia-(?:cudnn|cusparselt|nccl|nvshmem)-cu[0-9]+$")
_RUNTIME = re.compile(r"^nvidia-cuda-runtime(?:-cu[0-9]+)?$")
_FLAVOUR = re.compile(r"/(cu[0-9]{3})(?:/|$)")


def index_flavour(index: str) -> str | None:
    """The CUDA flavour an index serves, from its URL (``.../whl/cu129`` -> ``cu129``)."""
    found = _FLAVOUR.search(index.rstrip("/") + "/")
    return found.group(1) if found else None


def pins_flavour(pins: Mapping[str, str]) -> str | None:
    """The CUDA flavour of a resolution (name -> version): its nvidia-cuda-runtime's major.minor."""
    for name, version in pins.items():
        if _RUNTIME.match(name):
            parts = version.split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                return f"cu{parts[0]}{parts[1]}"
    return None


def unknown_between(wanted: str, found: str, pins: Mapping[str, str], required: Collection[str]) -> list[str]:
    """The names of ``pins`` (a resolution with PyPI's ``found`` flavour standing in for the
    ``wanted`` one) whose versions differ between the two flavours; none a member requires by name."""
    if wanted == found:
        return []
    older = _before_2_8(pins.get("torch"))
    across = wanted[:4] != found[:4]  # cu12x and cu13x: every nvidia-* name differs
    out = []
    for name in pins:
        if name in required:
            continue
        if _TOOLKIT_NAME.match(name) or (older and _SHARED_NAME.match(name)) or (across and name.startswith("nvidia-")):
            out.append(name)
    return sorted(out)


def _before_2_8(version: str | None) -> bool:
    if version is None:
        return True
    try:
        return Version(version) < Version("2.8")
    except InvalidVersion:
        return True
