"""Params: lowercase names used as ``${name}`` anywhere in a manifest or recipe.

``$${`` is a literal ``${``. Uppercase ``${VAR}`` is left alone for the shell (in ``run``)
or for Docker-style expansion against the image's environment (in ``config.env``).
Params may use other params; ``choices`` let one param's value set others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from assembler.spec.fields import scalar_to_str
from assembler.spec.yamlfile import Locations, PathKey

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
            new = _PLACEHOLDER.sub(
                lambda mt: params.get(mt.group(1) or "", mt.group(0)) if mt.group(1) else mt.group(0), value
            )
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


def choice_presets(
    choices: Any, declared: Mapping[str, Any], explicit: Mapping[str, str], locs: Locations
) -> dict[str, str]:
    """Param values that a choice selects: ``choices: {backend: {cpu: {devel: ...}}}`` means
    ``backend=cpu`` also sets ``devel`` (unless the user sets it too). Unknown values are
    errors that list the choices."""
    if choices is None:
        return {}
    if not isinstance(choices, dict):
        raise locs.error(("choices",), "expected a mapping: param -> value -> params it sets")
    presets: dict[str, str] = {}
    for name, options in choices.items():
        where: PathKey = ("choices", name)
        if name not in declared:
            raise locs.error(where, f"choices for an undeclared param {name!r}", hint="declare it under params:")
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise locs.error(where, "expected a mapping: value -> {param: value, ...}")
        value = explicit.get(name, scalar_to_str(declared[name]))
        if value not in options:
            known = ", ".join(sorted(options))
            raise locs.error(("params", name), f"{name}={value} is not one of the choices: {known}")
        for key, preset in options[value].items():
            if key not in declared:
                raise locs.error((*where, value, key), f"unknown param {key!r}", hint="declare it under params:")
            if key == name:
                raise locs.error((*where, value, key), "a choice cannot set its own param")
            presets[key] = scalar_to_str(preset)
    return presets
