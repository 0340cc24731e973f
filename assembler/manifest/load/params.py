"""Params: lowercase names used as ``${name}`` anywhere in a manifest or recipe.

``$${`` is a literal ``${``. Uppercase ``${VAR}`` is left alone for the shell (in ``run``)
or for Docker-style expansion against the image's environment (in ``config.env``).
Params may use other params; ``choices`` let one param's value set others. What a target
or a chosen choice sets is fixed: a ``--set`` contradicting it is an error naming both,
unless unlocked (``--set-unlocked``).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from assembler.manifest.schema.fields import scalar_to_str
from assembler.manifest.text.yamlfile import Locations, PathKey

_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def substitute(value: Any, params: Mapping[str, str], locs: Locations, path: PathKey) -> Any:
    """``value`` with ``${param}`` replaced everywhere; unknown lowercase names are errors."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if name in params:
                return params[name]
            if _PARAM_NAME.match(name):
                known = ", ".join(sorted(params)) or "none"
                raise locs.error(
                    path,
                    f"unknown param ${{{name}}}",
                    hint=f"declare it under params: (known: {known}); write $${{{name}}} for a literal",
                )
            return match.group(0)

        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute(v, params, locs, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params, locs, (*path, i)) for i, v in enumerate(value)]
    return value


def resolve_params(
    declared: Mapping[str, Any], overrides: Mapping[str, str], locs: Locations, where: PathKey, *, origin: str
) -> dict[str, str]:
    """Declared params with overrides applied, then params referring to params resolved."""
    params: dict[str, str] = {}
    for name, value in declared.items():
        if not _PARAM_NAME.match(name):
            raise locs.error((*where, name), "param names are lowercase: letters, digits and _ (used as ${name})")
        if isinstance(value, dict | list) or value is None:
            raise locs.error((*where, name), "a param value is a string, number or boolean")
        params[name] = scalar_to_str(value)
    for name, value in overrides.items():
        if name not in params:
            known = ", ".join(sorted(params)) or "none"
            raise locs.error(where, f"unknown param {name!r} in {origin}", hint=f"params this file declares: {known}")
        params[name] = value
    # Params may use other params (cuda_tag: "${cuda_version}-devel"): resolve in rounds.
    for _ in range(len(params) + 1):
        changed = False
        for name, value in params.items():
            new = _expand(value, params)
            if new != value:
                params[name] = new
                changed = True
        if not changed:
            break
    else:
        raise locs.error(where, "params refer to each other in a cycle")
    for name, value in params.items():
        # What still names a param after the rounds can only be a param naming itself.
        left = [mt.group(1) for mt in _PLACEHOLDER.finditer(value) if mt.group(1) in params]
        if left:
            raise locs.error((*where, name), f"params refer to each other in a cycle (through ${{{left[0]}}})")
    return params


@dataclass(frozen=True)
class Fixed:
    """A param value that a target or a chosen choice sets: ``--set`` may not contradict it
    (unless unlocked). ``value`` is as written (it may name other params)."""

    value: str
    by: str  # "target rocm", "choice engine=vllm"
    path: PathKey  # where the value is written
    choice: str = ""  # the param whose choice sets it ("engine"), "" for a target


def fixed_params(
    choices: Any, declared: Mapping[str, Any], target: Mapping[str, Fixed], sets: Mapping[str, str], locs: Locations
) -> dict[str, Fixed]:
    """The params the target fixes, plus those the chosen choices fix:
    ``choices: {backend: {cpu: {devel: ...}}}`` means ``backend=cpu`` fixes ``devel``.
    A value no option names is matched against the options written as version bounds
    (``cuda_version: {"<12.4": ..., ">=12.4": ...}``): the first that holds it is chosen.

    A choice may set another choice's param (``engine: trtllm`` sets ``cuda_version``,
    whose own choice picks the images): choices are chosen again until nothing changes.
    Unknown choice values, and two fixers disagreeing on a param, are errors."""
    if choices is None:
        return dict(target)
    if not isinstance(choices, dict):
        raise locs.error(("choices",), "expected a mapping: param -> value -> params it sets")
    fixed = dict(target)
    for _ in range(len(choices) + 1):
        new, clashes = _choose(choices, declared, target, fixed, sets, locs)
        if new == fixed:
            break
        fixed = new
    else:
        raise locs.error(("choices",), "choices select each other in a cycle")
    if clashes:
        first, second = clashes[0]
        raise locs.error(
            second.path,
            f"{second.by} sets {_name(second)}={second.value}, but {first.by} ({_where(first, locs)}) "
            f"sets it to {first.value}",
            hint="a param is fixed by one target or choice at a time: remove one of them",
        )
    return fixed


def _name(fix: Fixed) -> str:
    return str(fix.path[-1])


def _where(fix: Fixed, locs: Locations) -> str:
    line = locs.line(fix.path)
    return f"{locs.file.name}:{line}" if line is not None else locs.file.name


def _choose(
    choices: Mapping[str, Any],
    declared: Mapping[str, Any],
    target: Mapping[str, Fixed],
    previous: Mapping[str, Fixed],
    sets: Mapping[str, str],
    locs: Locations,
) -> tuple[dict[str, Fixed], list[tuple[Fixed, Fixed]]]:
    """One round: the fixes of the choices selected by ``--set``, else by ``previous``
    fixes, else by the declared values; and the pairs of fixers that disagree."""
    fixed = dict(target)
    clashes: list[tuple[Fixed, Fixed]] = []
    for name, options in choices.items():
        where: PathKey = ("choices", name)
        if name not in declared:
            raise locs.error(where, f"choices for an undeclared param {name!r}", hint="declare it under params:")
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise locs.error(where, "expected a mapping: value -> {param: value, ...}")
        by = previous.get(name)
        value = sets[name] if name in sets else by.value if by is not None else scalar_to_str(declared[name])
        option = value if value in options else _in_range(options, value)
        if option is None:
            known = ", ".join(option or '""' for option in sorted(options))
            at = by.path if by is not None and name not in sets else ("params", name)
            raise locs.error(at, f"{name}={value} is not one of the choices: {known}")
        for key, preset in options[option].items():
            if key not in declared:
                raise locs.error((*where, option, key), f"unknown param {key!r}", hint="declare it under params:")
            if key == name:
                raise locs.error((*where, option, key), "a choice cannot set its own param")
            fix = Fixed(scalar_to_str(preset), f"choice {name}={value}", (*where, option, key), name)
            other = fixed.setdefault(key, fix)
            if other.value != fix.value:
                clashes.append((other, fix))
    return fixed, clashes


_BOUND = re.compile(r"^(>=|<)(\d+(?:\.\d+)*)$")
_VERSION = re.compile(r"^(\d+(?:\.\d+)*)")


def _in_range(options: Mapping[str, Any], value: str) -> str | None:
    """The first option written as version bounds (``<12.4``, ``>=12.4``, ``>=11.0,<12.4``)
    that holds ``value``, each bound compared to as many of the version's numbers as it
    has (``12.4.1`` is ``>=12.4`` and not ``<12.4``); None when none does."""
    found = _VERSION.match(value.strip())
    if found is None:
        return None
    version = tuple(int(n) for n in found.group(1).split("."))
    for option in options:
        bounds = [_BOUND.match(part.strip()) for part in option.split(",")]
        if bounds and all(b is not None and _holds(version, b) for b in bounds):
            return option
    return None


def _holds(version: tuple[int, ...], bound: re.Match[str]) -> bool:
    limit = tuple(int(n) for n in bound.group(2).split("."))
    head = version[: len(limit)]
    return head >= limit if bound.group(1) == ">=" else head < limit


def check_sets(
    fixed: Mapping[str, Fixed],
    sets: Mapping[str, str],
    unlocked: Collection[str],
    params: Mapping[str, str],
    locs: Locations,
    *,
    targets: Mapping[str, Any],
) -> None:
    """A ``--set`` that contradicts a value a target or choice fixed is an error naming
    both, unless the param is unlocked (``--set-unlocked``). Values are compared as
    resolved: ``--set`` of what the fixer says anyway is no contradiction. ``targets``
    (the raw ones) name a target that sets the value, for the hint."""
    for name, value in sets.items():
        fix = fixed.get(name)
        if fix is None or name in unlocked:
            continue
        wanted = _expand(fix.value, params)
        if wanted == params[name]:
            continue
        hint = f"--set-unlocked {name}={value} overrides it anyway"
        other = [t for t, spec in targets.items() if _target_sets(spec, name) == value]
        if other:
            hint = f"--target {other[0]} sets {name}={value}; or {hint}"
        said = wanted or '""'
        raise locs.error(fix.path, f"--set {name}={value} contradicts {fix.by}, which sets {name}={said}", hint=hint)


def param_inputs(
    declared: Mapping[str, Any], fixed: Mapping[str, Fixed], sets: Collection[str]
) -> dict[str, frozenset[str]]:
    """The params each param's value is made of: those its value (as written, or as its
    target or choice sets it) names, and the param whose choice sets it. A ``--set`` one
    is made of none: the user gave it."""
    inputs: dict[str, frozenset[str]] = {}
    for name, value in declared.items():
        fix = fixed.get(name)
        if name in sets:
            inputs[name] = frozenset()
            continue
        text = fix.value if fix is not None else scalar_to_str(value) if value is not None else ""
        named = {mt.group(1) for mt in _PLACEHOLDER.finditer(text) if mt.group(1) in declared}
        inputs[name] = frozenset(named | ({fix.choice} if fix is not None and fix.choice else set()))
    return inputs


def _target_sets(spec: Any, name: str) -> str | None:
    tparams = spec.get("params") if isinstance(spec, dict) else None
    return scalar_to_str(tparams[name]) if isinstance(tparams, dict) and name in tparams else None


def _expand(value: str, params: Mapping[str, str]) -> str:
    """``value`` with ``${param}`` of ``params`` replaced once (others, and ``$${``, left)."""

    def repl(mt: re.Match[str]) -> str:
        return params.get(mt.group(1), mt.group(0)) if mt.group(1) else mt.group(0)

    return _PLACEHOLDER.sub(repl, value)
