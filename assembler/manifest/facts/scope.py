"""What the fact checks look at, and how a refusal names the params to change.

The checks look at the image's layers and at the compile steps the image uses (a step of
another target is not built, and its params may be another target's). A value is named by
the params it is made of: those its text names as written in the manifest (``python:
"${python_version}"``), else those whose value it is; each followed back through what
made it (``torch_index_url`` is made of ``cuda_tag``, which the ``cuda_version`` choice
sets) to the params a user sets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assembler.manifest.schema import model as m
from assembler.manifest.schema.setuses import used_steps
from assembler.manifest.text.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject

_PLACEHOLDER = re.compile(r"\$\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Place:
    """A compile step the image uses, or a layer of the image: where it is written, what
    it is called in a message, and the name of the base it runs on."""

    what: str  # "compile step wheel", "layer nvidia"
    path: PathKey
    base: str
    step: m.CompileStep | None = None
    layer: m.LayerSpec | None = None

    @property
    def env(self) -> dict[str, str]:
        owner = self.step if self.step is not None else self.layer
        return {k: str(v) for k, v in (getattr(owner, "env", None) or {}).items()}

    @property
    def commands(self) -> list[str]:
        owner = self.step if self.step is not None else self.layer
        run = getattr(owner, "run", None)
        return [str(c) for c in run] if isinstance(run, list) else []

    @property
    def python_sets(self) -> list[Any]:
        owner = self.step if self.step is not None else self.layer
        return list(getattr(owner, "python_sets", None) or [])


def places(loaded: Subject) -> Iterator[Place]:
    """The compile steps the image uses (in the manifest's order), then the image's layers."""
    man = loaded.manifest
    used = used_steps(man)
    for i, step in enumerate(man.compile):
        if step.name in used and step.base is not None:
            yield Place(f"compile step {step.name}", ("compile", i), step.base, step=step)
    for j, (layer, path) in enumerate(zip(man.image.layers, loaded.layer_paths, strict=True)):
        name = layer.label() or str(j)
        yield Place(f"layer {name}", path, man.image.base, layer=layer)


def base_ref(loaded: Subject, name: str) -> str | None:
    """The reference base ``name`` is (``docker://nvidia/cuda:12.9.1-base-ubuntu22.04``), or None."""
    spec = loaded.manifest.bases.get(name)
    if isinstance(spec, str):
        return spec
    return spec.ref if isinstance(spec, m.RefBase) else None


def _raw(loaded: Subject, path: Sequence[str | int]) -> Any:
    node: Any = loaded.raw
    for key in path:
        in_map = isinstance(node, dict) and isinstance(key, str) and key in node
        in_list = isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
        if not (in_map or in_list):
            return None
        node = node[key]
    return node


def raw_text(loaded: Subject, path: Sequence[str | int]) -> str | None:
    """The text at ``path`` as the manifest writes it (placeholders unexpanded), or None."""
    raw = _raw(loaded, path)
    return raw if isinstance(raw, str) else None


def params_at(loaded: Subject, path: Sequence[str | int], value: str) -> list[str]:
    """The params the value at ``path`` is made of (see the module's docstring)."""
    raw = _raw(loaded, path)
    names = [mt.group(1) for mt in _PLACEHOLDER.finditer(raw)] if isinstance(raw, str) else []
    names = [n for n in dict.fromkeys(names) if n in loaded.params]
    if not names and value.strip():
        names = [n for n, v in loaded.params.items() if v == value.strip()][:2]
    return names


def params_of(loaded: Subject, value: str) -> list[str]:
    """The params whose value is ``value`` (two at most: more would only mislead)."""
    return [n for n, v in loaded.params.items() if v == value.strip() and v][:2]


def origins(loaded: Subject, name: str) -> list[str]:
    """The params ``name``'s value is made of, followed back to those made of nothing
    (a value as written, or a ``--set``): ``cuda_version`` for ``torch_index_url``."""
    seen: set[str] = set()
    roots: list[str] = []
    todo = [name]
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.add(current)
        inputs = sorted(loaded.param_inputs.get(current, frozenset()))
        if not inputs or current in loaded.given:
            roots.append(current)
        todo += inputs
    return roots


def describe(loaded: Subject, names: Sequence[str]) -> str:
    """``torch_index_url (from cuda_version=11.8.0)``, ``python_version=3.8``: each param
    with the params a user sets that make it; "" for none."""
    parts = []
    for name in names:
        roots = [r for r in origins(loaded, name) if r != name]
        own = name if roots else f"{name}={loaded.params.get(name, '')}"
        made = ", ".join(f"{r}={loaded.params.get(r, '')}" for r in roots)
        parts.append(f"{own} (from {made})" if made else own)
    return ", ".join(parts)


def settable(loaded: Subject, names: Sequence[str]) -> list[str]:
    """The params a user would ``--set`` to change ``names``: their origins, in order."""
    out: list[str] = []
    for name in names:
        out += [r for r in origins(loaded, name) if r not in out]
    return out
