"""Locked pins against what a known base image holds (``base_python.json``).

An image's Dockerfile may install a distribution over what its packages require (SGLang's
runtime image force-reinstalls NCCL 2.28.3 over torch 2.9.1's 2.27.5, for DeepEP). A set
installed into that image's Python whose lock pins the distribution at another version
makes pip replace the base's: the constraints downgrade it. Such a pin is refused unless
the set says what it does: ``provided`` (left to the base) or ``force`` (installed over it).
Only the system Python counts: a set installing into a venv of its own does not touch it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from assembler.manifest.facts.data import read, where
from assembler.manifest.schema import model as m
from assembler.manifest.schema.setuses import SetUse

_FILE = "base_python"


@dataclass(frozen=True)
class Held:
    """What a known image's Python holds: name -> version, and where that was read."""

    image: str
    python: Mapping[str, str]
    source: str


def held(ref: str | None) -> Held | None:
    """What ``ref`` (``docker://REPO:TAG``) holds, when the facts list it."""
    if ref is None or not ref.startswith("docker://"):
        return None
    name = ref.removeprefix("docker://").split("@")[0].lower()
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/"):
        name = name.removeprefix(prefix)
    entry = read(_FILE)["images"].get(name)
    return Held(name, entry["python"], entry["source"]) if entry else None


def base_of(manifest: m.Manifest, use: SetUse) -> tuple[str, str | None]:
    """The base a set installs on: (its name, its reference, None for a built or bootstrapped one)."""
    owner = use.where.split(":", 1)[0]
    name = manifest.image.base
    if not owner.startswith("layers."):
        step = next((s for s in manifest.compile if s.name == owner), None)
        name = step.base if step is not None and step.base else name
    spec = manifest.bases.get(name)
    ref = spec if isinstance(spec, str) else spec.ref if isinstance(spec, m.RefBase) else None
    return name, ref


def over_base(manifest: m.Manifest, use: SetUse, pins: Mapping[str, str]) -> str | None:
    """Why the set's locked ``pins`` (name -> ``name==version``) replace what its base holds,
    or None."""
    if use.pyset.environment is not None or use.pyset.force:
        return None
    name, ref = base_of(manifest, use)
    found = held(ref)
    if found is None:
        return None
    provided = {p.split("==", 1)[0].strip().lower() for p in use.pyset.provided}
    for dist, version in sorted(found.python.items()):
        pin = pins.get(dist)
        if pin is None or dist in provided or pin.split("==", 1)[1] == version:
            continue
        return (
            f"python set {use.where} pins {pin}, but base {name} ({found.image}) holds {dist}=={version} "
            f"({found.source}; {where(_FILE)}): pip would replace the base's"
        )
    return None
