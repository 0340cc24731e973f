"""``--set`` values that change nothing: a param no part of the chosen target uses (verl's
``--target megatron --set torch_version=...``: Megatron's image pins its own torch). Such
a ``--set`` is legal (a script may pass the same ``--set``s to every target) but is
reported, so a typo'd intent does not pass silently. A ``--set`` of the value the param
has already is not: the image is what was asked for, and there is nothing to change (the
demo's script passes ``--set registry=127.0.0.1:$port`` whatever the port).

It is found by what the param does, not by reading references: each variant is loaded
again without that ``--set`` and the two resolved manifests compared (everything but the
params themselves and the unchosen targets). Params some code reads by name (the version
labels' fallbacks) and those ``-o`` templates name always count as used.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from assembler.errors import ManifestError
from assembler.manifest.load.manifest import Loaded, load_manifest
from assembler.pipeline.image.labels import PYTHON_STACK, VERSIONS
from assembler.pipeline.variants import Variant

# Not what the image is made of: the params as given, the targets not chosen (the chosen
# one is applied to image/outputs already), the choices' tables, and checks that passed.
_NOT_THE_BUILD = {"params", "targets", "choices", "constraints", "description"}


def idle_sets(
    path: Path,
    variants: Sequence[Variant],
    *,
    sets: Mapping[str, str],
    unlocked: Collection[str],
    bases: Mapping[str, str],
    sources: Mapping[str, str],
    outputs: Sequence[str] | None,
) -> list[str]:
    """One line for each ``--set`` that changes nothing in some variant, naming those."""
    read_by_code = set(VERSIONS) | set(PYTHON_STACK)
    lines = []
    for name, value in sets.items():
        if name in read_by_code or any(f"${{{name}}}" in text for text in outputs or ()):
            continue
        idle: list[Variant] = []
        for v in variants:
            if name in v.values:
                continue  # a matrix param: the --set picked the variant
            other = _without(path, v.loaded, name, sets, unlocked, bases, sources)
            if other is not None and other.params.get(name) != value and _build_of(other) == _build_of(v.loaded):
                idle.append(v)
        if idle:
            lines.append(f"--set {name}={value} changes nothing in {_where(idle)}: nothing there uses {name}")
    return lines


def _where(idle: Sequence[Variant]) -> str:
    targets = list(dict.fromkeys(v.target for v in idle if v.target))
    if not targets:
        return "this manifest"
    return ("target " if len(targets) == 1 else "targets ") + ", ".join(targets)


def _without(
    path: Path,
    loaded: Loaded,
    name: str,
    sets: Mapping[str, str],
    unlocked: Collection[str],
    bases: Mapping[str, str],
    sources: Mapping[str, str],
) -> Loaded | None:
    """The variant loaded without ``--set name``; None when that does not load (the
    ``--set`` was needed to satisfy a check: it does something)."""
    rest = {k: v for k, v in sets.items() if k != name}
    try:
        return load_manifest(
            path, sets=rest, target=loaded.target, bases=bases, sources=sources, unlocked=frozenset(unlocked) - {name}
        )
    except ManifestError:
        return None


def _build_of(loaded: Loaded) -> dict[str, Any]:
    """What the image is made of: the resolved manifest's fields (models compare by value)."""
    man = loaded.manifest
    fields = {k: getattr(man, k) for k in type(man).model_fields if k not in _NOT_THE_BUILD}
    return {**fields, "layer_paths": loaded.layer_paths}
