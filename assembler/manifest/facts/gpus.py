"""A torch pin against the GPUs the manifest names (``gpu: {archs: [sm_120]}``), from the
archs each PyPI release of torch was compiled for (``torch_gpus.json``).

A build with a torch whose wheel carries no kernels for the GPU succeeds, and every CUDA
operation then fails on it ("no kernel image is available for execution on the device":
torch 2.6 on an RTX 5090). A GPU runs a kernel compiled for its own arch or an older one of
the same major (SASS: sm_86 code runs on an sm_89 GPU), or JIT-compiles PTX of an arch no
newer than its own (``compute_90``). Each ``torch==X`` a Python set or ``pip:`` layer pins
from PyPI, X a release the data knows, must cover every named arch; the refusal names
the first release that does, and its CUDA. torch from a PyTorch index (``.../whl/cu128``)
is another build, not checked here; a release newer than the data refuses nothing.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from assembler.manifest.facts.data import read, where
from assembler.manifest.facts.releases import Pinned, pypi_pins
from assembler.manifest.facts.scope import describe, params_at, settable

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject

_ARCH = re.compile(r"^(sm|compute)_([0-9]+)([0-9])[af]?$")


def _split(arch: str) -> tuple[str, int, int] | None:
    """(sm or compute, major, minor) of ``sm_120``, ``compute_90``, ``sm_90a``."""
    found = _ARCH.match(arch)
    return (found.group(1), int(found.group(2)), int(found.group(3))) if found else None


def covers(gpu: str, built: list[str]) -> bool:
    """Whether code built for the archs ``built`` runs on a GPU of arch ``gpu``: SASS of its
    major no newer than it, or PTX no newer than it."""
    want = _split(gpu)
    if want is None:
        return True
    for arch in built:
        have = _split(arch)
        if have is None:
            continue
        kind, major, minor = have
        if kind == "sm" and major == want[1] and minor <= want[2]:
            return True
        if kind == "compute" and (major, minor) <= (want[1], want[2]):
            return True
    return False


@cache
def releases() -> dict[Version, dict[str, object]]:
    """PyPI's torch releases the data knows: version -> cuda, cudnn, pythons, archs."""
    out = {}
    for text, facts in read("torch_gpus")["releases"].items():
        try:
            out[Version(text)] = facts
        except InvalidVersion:
            continue
    return out


def check(loaded: Subject) -> None:
    """Every torch pin from PyPI against ``gpu.archs``; ManifestError."""
    archs = loaded.manifest.gpu.archs
    if not archs:
        return
    for pin in pypi_pins(loaded):
        if pin.name == "torch" and pin.version in releases():
            for arch in archs:
                _check(loaded, pin, arch)


def _archs(facts: dict[str, object]) -> list[str]:
    found = facts.get("archs")
    return [str(a) for a in found] if isinstance(found, list) else []


def _check(loaded: Subject, pin: Pinned, arch: str) -> None:
    facts = releases()[pin.version]
    built = _archs(facts)
    if covers(arch, built):
        return
    running = [v for v in sorted(releases()) if covers(arch, _archs(releases()[v]))]
    later = [v for v in running if v > pin.version]
    # the first release after the pin that runs on it, else the last before (sm_70 left out from 2.11)
    other = later[0] if later else (running[-1] if running else None)
    said = f"{'first' if later else 'last'} release that runs on {arch}: torch {other}" if other else ""
    names = params_at(loaded, pin.path, str(pin.version))
    raise loaded.error(
        pin.path,
        f"{pin.place.what}: {pin.what}: torch=={pin.version}"
        + (f" ({describe(loaded, names)})" if names else "")
        + f" has no kernels for {arch} (gpu.archs): PyPI's wheel (CUDA {facts.get('cuda')}) was compiled for "
        f"{' '.join(built)} ({where('torch_gpus')})"
        + (f"; the {said} (CUDA {releases()[other].get('cuda')})" if other else "; no release the data knows of does"),
        hint=_hint(loaded, names, other),
    )


def _hint(loaded: Subject, names: list[str], other: Version | None) -> str:
    roots = settable(loaded, names)
    if other is not None:
        return f"--set {' or '.join(roots)} to {other}" if roots else f"pin torch=={other}"
    return "leave that GPU out of gpu.archs, or take torch from a PyTorch index that builds for it"
