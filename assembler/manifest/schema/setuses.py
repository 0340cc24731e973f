"""Where a manifest's Python sets are: each with where it is (``STEP:SET``,
``layers.NAME:SET``) and its key in a lock (the sha256 of its definition, which names the
environment it is resolved in: :mod:`assembler.manifest.lock.pyenvs`), and the compile steps the
image uses (only their sets are locked)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from assembler.manifest.schema import model as m
from assembler.manifest.schema.pinned import plain_pin as plain_pin
from assembler.manifest.schema.pysets import PythonSet


def set_key(definition: Mapping[str, object]) -> str:
    """The sha256 of a set's definition (canonical JSON)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class SetUse:
    """A set where a step or layer declares it: ``where`` is ``STEP:SET`` or ``layers.NAME:SET``;
    ``environment`` the key of the environment it is resolved in."""

    where: str
    pyset: PythonSet
    definition: Mapping[str, object]
    key: str
    environment: str = ""


def layer_name(layer: m.LayerSpec, index: int) -> str:
    """``layers.NAME`` of a layer with a name (``name:``), else ``layers.INDEX``."""
    return f"layers.{layer.label() or index}"


def used_steps(manifest: m.Manifest) -> set[str]:
    """The compile steps the image's layers take artifacts from or mount, and what they take theirs from."""
    wanted = [ref.split(".")[0] for layer in manifest.image.layers for ref, _, _ in layer.step_refs()]
    steps = {step.name: step for step in manifest.compile}
    used: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in steps and name not in used:
            used.add(name)
            wanted += [ref.split(".")[0] for ref in steps[name].inputs]
    return used
