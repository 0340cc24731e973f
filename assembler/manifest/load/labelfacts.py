"""``${steps.NAME.FIELD}`` and ``${bases.NAME.env|labels.KEY}`` in labels and annotations.

A label that says which GPUs an image runs on, or which CUDA it ships, must come from what
was built and what the base is, not from the params that asked for them: a param can say
``default`` (llama.cpp's ``CUDA_DOCKER_ARCH``), merge several steps' lists, or name a
version a floating base tag does not hold. These placeholders are left alone when params
are substituted and filled in once the step has run or the base is resolved:

- ``${steps.NAME.cuda_archs}``, ``${steps.NAME.rocm_archs}``: the architectures of the
  device code in the artifacts of compile step NAME the image holds, read from the files
  (:mod:`assembler.deps.gpucode`): ``sm_80;sm_90;compute_90``, ``gfx90a;gfx942``;
- ``${bases.NAME.env.KEY}``, ``${bases.NAME.labels.KEY}``: the value of an environment
  variable or label of base NAME's config (``${bases.runtime.env.CUDA_VERSION}``).

A plan shows a placeholder it cannot fill yet as written (the step will run, the base is
not resolved). A label or annotation whose value ends up empty is left out: what is not
known is not claimed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

STEP_FIELDS = ("cuda_archs", "rocm_archs")
BASE_FIELDS = ("env", "labels")
_REF = re.compile(r"\$\{(steps|bases)\.([^}]*)\}")


@dataclass(frozen=True)
class Ref:
    kind: str  # steps | bases
    name: str
    field: str
    key: str = ""  # a base's env or label name


@dataclass(frozen=True)
class Facts:
    """What is known so far: step -> field -> value, base -> env|labels -> key -> value.
    A step or base missing here is not known yet (its placeholders stay)."""

    steps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    bases: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    final: bool = False  # a build's: a step or base missing is never known, its placeholders go empty


def _parse(kind: str, body: str) -> Ref:
    if kind == "steps":
        name, _, what = body.rpartition(".")
        if not name or what not in STEP_FIELDS:
            raise ValueError(
                f"${{steps.{body}}}: expected ${{steps.NAME.FIELD}} with FIELD one of {', '.join(STEP_FIELDS)}"
            )
        return Ref(kind, name, what)
    match = re.fullmatch(r"([^.]+)\.(env|labels)\.(.+)", body)
    if match is None:
        raise ValueError(f"${{bases.{body}}}: expected ${{bases.NAME.env.KEY}} or ${{bases.NAME.labels.KEY}}")
    return Ref(kind, match.group(1), match.group(2), match.group(3))


def references(value: str) -> list[Ref]:
    """Each placeholder of ``value``; ValueError for a malformed one."""
    return [_parse(m.group(1), m.group(2)) for m in _REF.finditer(value)]


def expand(value: str, facts: Facts) -> str:
    """``value`` with each placeholder whose step or base is in ``facts`` filled in."""

    def repl(match: re.Match[str]) -> str:
        ref = _parse(match.group(1), match.group(2))
        if ref.kind == "steps":
            step = facts.steps.get(ref.name)
            if step is not None:
                return step.get(ref.field, "")
            return "" if facts.final else match.group(0)
        base = facts.bases.get(ref.name)
        if base is not None:
            return base.get(ref.field, {}).get(ref.key, "")
        return "" if facts.final else match.group(0)

    return _REF.sub(repl, value)


def expand_each(values: Mapping[str, str], expand_one: Callable[[str], str]) -> dict[str, str]:
    """Each value expanded by ``expand_one``; entries that were placeholders and came out
    empty are dropped."""
    out = {}
    for key, value in values.items():
        new = expand_one(value)
        if new or not value:
            out[key] = new
    return out


def expand_all(values: Mapping[str, str], facts: Facts) -> dict[str, str]:
    """Each value expanded with ``facts`` (see :func:`expand_each`)."""
    return expand_each(values, lambda value: expand(value, facts))
