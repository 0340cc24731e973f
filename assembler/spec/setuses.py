"""Where a manifest's Python sets are: the sets of the compile steps its image uses and of
its ``run:`` layers, and the wheels of ``locked: true`` ``pip:`` layers, each with where it is
(``STEP:SET``, ``layers.NAME:SET``) and its key in a lock (the sha256 of its definition)."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from assembler.errors import InputError
from assembler.spec import model as m
from assembler.spec.prebuilt import parse_requirement
from assembler.spec.pysets import PythonSet


def set_key(definition: Mapping[str, object]) -> str:
    """The sha256 of a set's definition (canonical JSON)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SetUse:
    """A set where a step or layer declares it: ``where`` is ``STEP:SET`` or ``layers.NAME:SET``."""

    where: str
    pyset: PythonSet
    definition: Mapping[str, object]
    key: str


def layer_name(layer: m.RunLayer | m.PipLayer, index: int) -> str:
    return f"layers.{layer.name or index}"


def set_uses(
    manifest: m.Manifest, platform: str, pins: Callable[[str], Mapping[str, str] | None] = lambda key: None
) -> Iterator[SetUse]:
    """Every Python set of the compile steps the image uses and of its layers, and the wheels
    of each ``pip:`` layer that takes its hashes from the lock (``locked: true``).

    A layer's sets are resolved against what the layers below installed (``provided``: pip
    keeps what is installed when it fits, and a pin of PyPI's newest over it would replace
    it): the pins ``pins(key)`` gives for their sets (the lock's), else their exact requirements (``torch==2.4.0``
    from another index, a ``pip:`` wheel). Lazy: ``assemble lock`` resolves each set before
    the next is made, so the next is resolved against it."""
    used = used_steps(manifest)
    for step in manifest.compile:
        if step.name in used:
            for pyset in step.python_sets:
                yield _use(f"{step.name}:{pyset.name}", pyset, platform)
    below: dict[str, str] = {}  # name -> name==version, installed by a layer below
    for i, layer in enumerate(manifest.image.layers):
        if isinstance(layer, m.RunLayer):
            made = []
            for pyset in layer.python_sets:
                own = {_name_of(r) for r in pyset.requirements}
                extra = [pin for name, pin in below.items() if name not in own]
                made.append(use := _use(f"{layer_name(layer, i)}:{pyset.name}", pyset, platform, extra))
                yield use
            for use in made:
                below.update(_installed(use, pins))
        elif isinstance(layer, m.PipLayer):
            if layer.locked:
                wheels = PythonSet(
                    name="wheels",
                    requirements=[plain_pin(t) for t in layer.pip],
                    python=layer.python,
                    index_url=layer.index,
                    no_deps=True,
                )
                yield _use(f"{layer_name(layer, i)}:wheels", wheels, platform)
            for text in layer.pip:
                req = parse_requirement(text, hashed=not layer.locked)
                if req.version:
                    below[req.name] = f"{req.name}=={req.version}"


def _installed(use: SetUse, pins: Callable[[str], Mapping[str, str] | None]) -> dict[str, str]:
    """name -> name==version of what a layer's set installs (its ``installs`` globs), as
    ``pins`` has it, else as its exact requirements say; nothing for a ``no_deps`` set."""
    if use.pyset.no_deps:
        return {}
    resolved = pins(use.key)
    if resolved is None:
        resolved = {n: f"{n}=={v}" for n, v in map(_exact, use.pyset.requirements) if n}
    globs = [_normal(g) for g in use.pyset.installs]
    return {n: p for n, p in resolved.items() if any(fnmatch.fnmatchcase(n, g) for g in globs)}


def used_steps(manifest: m.Manifest) -> set[str]:
    """The compile steps the image's layers take artifacts from or mount, and what they take theirs from."""
    wanted = [ref.split(".")[0] for layer in manifest.image.layers for ref in _step_refs(layer)]
    steps = {step.name: step for step in manifest.compile}
    used: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in steps and name not in used:
            used.add(name)
            wanted += [ref.split(".")[0] for ref in steps[name].inputs]
    return used


def _step_refs(layer: m.LayerSpec) -> list[str]:
    if isinstance(layer, m.ArtifactLayer):
        return [layer.artifact]
    if isinstance(layer, m.RunLayer):
        return list(layer.mounts)
    return []


_EXACT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([A-Za-z0-9.!_-]+)\s*$")


def _exact(requirement: str) -> tuple[str, str]:
    """(name, version) of ``name[extras]==version`` (no local label, no marker), else ("", "")."""
    match = _EXACT.match(requirement)
    return (_normal(match.group(1)), match.group(2)) if match else ("", "")


def _name_of(requirement: str) -> str:
    match = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return _normal(match.group(1)) if match else ""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def plain_pin(text: str) -> str:
    req = parse_requirement(text, hashed=False)
    return f"{req.name}=={req.version}"


def _use(where: str, pyset: PythonSet, platform: str, below: Sequence[str] = ()) -> SetUse:
    try:
        definition = pyset.definition(platform)
    except ValueError as e:
        raise InputError(f"python set {where}: {e}") from None
    if below and not pyset.no_deps:
        definition = {**definition, "provided": sorted({*pyset.provided, *below})}
    return SetUse(where, pyset, definition, set_key(definition))
