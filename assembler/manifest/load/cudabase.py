"""``nvidia_cuda:`` bases chosen from the torch the manifest pins.

A base written ``{nvidia_cuda: cudnn-devel}`` becomes ``docker://docker.io/nvidia/cuda:TAG``
when the manifest is loaded, TAG the newest tag ``tags.json`` lists for the CUDA (major and
minor) of PyPI's torch wheel of the pinned release (``torch_gpus.json``, read from the
wheels themselves), in the flavor asked for (``cudnn-devel``: the tag with cuDNN, which the
wheel's cuDNN major must match), on the distribution asked for or else the newest Ubuntu.
The torch release is the one torch pin from PyPI the image or its steps write, else the
one the lock pinned (a set that pins only vLLM takes the torch its resolution brought).
Every refusal names the base and says why: no torch pin, two different ones, a release the
data does not know, a CUDA newer than the releases ``tags.json`` lists (its ``through``: the
data, not the registry, stops there), no tag of that CUDA.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.version import InvalidVersion, Version

from assembler.errors import InputError
from assembler.manifest.facts.data import read, where
from assembler.manifest.schema import model as m

if TYPE_CHECKING:
    from assembler.manifest.load.loaded import Loaded

_TAG = re.compile(r"^(\d+)\.(\d+)\.(\d+)-(base|runtime|devel|cudnn(\d*)-runtime|cudnn(\d*)-devel)-([a-z]+)([0-9.]+)$")


def choose(loaded: Loaded) -> None:
    """Replace each ``nvidia_cuda:`` base of ``loaded`` by the reference chosen for it."""
    wanted = {n: s for n, s in loaded.manifest.bases.items() if isinstance(s, m.CudaBase)}
    if not wanted:
        return
    chosen = dict(loaded.manifest.bases)
    for name, spec in wanted.items():
        version, said = _torch(loaded, name)
        chosen[name] = f"docker://{spec.repository}:{tag_for(loaded, name, spec, version, said)}"
    loaded.manifest = loaded.manifest.model_copy(update={"bases": chosen})


def _torch(loaded: Loaded, base: str) -> tuple[Version, str]:
    """The torch release the manifest pins from PyPI (else its lock does), and where it says so."""
    from assembler.manifest.facts.releases import pypi_pins  # the facts: only for a manifest that asks

    found = {pin.version for pin in pypi_pins(loaded) if pin.name == "torch"}
    where_ = "pinned by the manifest"
    if not found:
        found, where_ = _locked_torch(loaded.path), "pinned by the lock"
    if len(found) != 1:
        say = "no torch==X from PyPI" if not found else f"torch {', '.join(str(v) for v in sorted(found))}"
        raise loaded.error(
            ("bases", base, "nvidia_cuda"),
            f"nvidia_cuda: chooses the CUDA of the one torch the image installs; the manifest and its lock pin {say}",
            hint="pin torch==X from PyPI in a python set (or lock a set that brings it), or name the base's tag",
        )
    return found.pop(), where_


def _locked_torch(manifest: Path) -> set[Version]:
    from assembler.manifest.lock.file import _pin_line, default_lock_path, read_lock

    path = default_lock_path(manifest)
    if not path.is_file():
        return set()
    try:
        lock = read_lock(path)
    except InputError:
        return set()  # a stale or foreign lock: a build says so where it reads it
    out = set()
    for entry in lock.sets.values():
        for line in (entry.pins or "").splitlines():
            pin = _pin_line(line)
            if pin is not None and pin[0] == "torch" and pin[1] == "==":
                try:
                    out.add(Version(pin[2].split("+")[0]))
                except InvalidVersion:
                    continue
    return out


def tag_for(loaded: Loaded, base: str, spec: m.CudaBase, version: Version, said: str) -> str:
    """The nvidia/cuda tag of torch ``version``'s CUDA in ``spec``'s flavor and distribution."""
    from assembler.manifest.facts.gpus import releases

    at = ("bases", base, "nvidia_cuda")
    facts = releases().get(version)
    if facts is None:
        newest = max(releases())
        raise loaded.error(
            at,
            f"torch {version} ({said}) is not in {where('torch_gpus')} (newest: {newest}): its CUDA is not known",
            hint="regenerate it (scripts/regen-facts torch-gpus), or name the base's tag",
        )
    cuda = [int(p) for p in str(facts.get("cuda", "")).split(".")[:2] if p.isdigit()]
    cudnn = str(facts.get("cudnn", "")).split(".")[0]
    known = read("tags")["repositories"]["nvidia/cuda"]
    best: tuple[tuple[int, ...], str] | None = None
    for tag in known["tags"]:
        found = _TAG.match(tag)
        if found is None or [int(found[1]), int(found[2])] != cuda:
            continue
        flavor = re.sub(r"cudnn\d*", "cudnn", found[4])
        if flavor != spec.nvidia_cuda or (found[5] or found[6] or cudnn) != cudnn:
            continue
        os_name = found[7] + found[8]
        if spec.os is not None and os_name != spec.os:
            continue
        if spec.os is None and found[7] != "ubuntu":
            continue
        rank = (int(found[3]), *(int(p) for p in found[8].split(".")))
        if best is None or rank > best[0]:
            best = (rank, tag)
    through = str(known["through"])
    if best is None and cuda and tuple(cuda) > tuple(int(n) for n in re.findall(r"\d+", through)[:2]):
        raise loaded.error(
            at,
            f"torch {version} ({said}) is built with CUDA {'.'.join(map(str, cuda))}, newer than the releases "
            f"{where('tags')} lists nvidia/cuda's tags for (through CUDA {through}): the data does not reach it",
            hint="regenerate it (scripts/regen-facts cuda-tags DIR), or name the base's tag",
        )
    if best is None:
        on = spec.os or "Ubuntu"
        raise loaded.error(
            at,
            f"nvidia/cuda publishes no {spec.nvidia_cuda} tag on {on} for CUDA {'.'.join(map(str, cuda))} "
            f"(torch {version}, {said}, cuDNN {cudnn}) ({where('tags')})",
            hint="name another os:, or the base's tag",
        )
    return best[1]
