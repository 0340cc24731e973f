"""Pydantic's validation errors as ManifestErrors: the first problem, with file:line: field.

An unknown key comes first, with the known key it is most like: pydantic reports a
mistyped key (``bootsrap:``) as the required key it stands for missing (``ref: required``,
the discriminator having picked another kind of base) before the key itself, and that
missing key is its consequence, not another problem.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from assembler.errors import ManifestError
from assembler.manifest.schema.fields import Strict
from assembler.manifest.text.suggest import closest
from assembler.manifest.text.yamlfile import Locations, PathKey, dotted

# A discriminated union whose discriminator found no known key (model.LayerSpec's).
_NO_KIND = "layer_kind"


@dataclass
class _Walk:
    """Where a pydantic ``loc`` points: the data path (union tags skipped), a key missing
    there, and the models the mapping there may be."""

    path: PathKey = ()
    missing: str | None = None
    kinds: list[Any] = field(default_factory=list)


def _walk(model: type[BaseModel], data: Any, loc: Sequence[str | int]) -> _Walk:
    path: list[str | int] = []
    node, kinds = data, [model]
    missing: str | None = None
    for part in loc:
        members = [m for tp in kinds for m in _members(tp)]
        tagged = [u for tag, u in members if tag is not None and tag == part]
        if tagged:
            # The member a discriminator picked, or (picked for want of its key: a base
            # without ``bootstrap:`` is a ``ref:``) every member: its key may be mistyped.
            written = set(node) if isinstance(node, dict) else set()
            kinds = tagged if written & _keys_of(tagged) else [u for _, u in members]
            continue
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part.rstrip("_") in node:
            path.append(part.rstrip("_"))  # aliased fields: from_ -> from, copy_ -> copy
            node = node[part.rstrip("_")]
        else:
            missing = str(part)
        # A part that matches no type is a union's label (``str``, ``function-after[...]``).
        kinds = [inner for tp in kinds for inner in _inside(tp, part)] or kinds
    return _Walk(tuple(path), missing, kinds)


def _at(data: Any, path: PathKey) -> Any:
    for part in path:
        data = data[part]
    return data


def _members(tp: Any) -> list[tuple[str | None, Any]]:
    """The types ``tp`` may be, each with its union tag (None: untagged)."""
    tag: str | None = None
    while get_origin(tp) is Annotated:
        tp, *meta = get_args(tp)
        tag = next((m.tag for m in meta if isinstance(m, Tag)), tag)
    if get_origin(tp) in (Union, types.UnionType):
        return [member for arg in get_args(tp) for member in _members(arg)]
    return [(tag, tp)]


def _inside(tp: Any, part: str | int) -> list[Any]:
    """The types ``part`` of a value of type ``tp`` may be."""
    found: list[Any] = []
    for _, u in _members(tp):
        if isinstance(u, type) and issubclass(u, BaseModel) and isinstance(part, str):
            found += [f.annotation for name, f in u.model_fields.items() if part in (name, f.alias)]
        elif get_origin(u) is dict:
            found.append(get_args(u)[1])
        elif get_origin(u) is list and isinstance(part, int):
            found.append(get_args(u)[0])
    return found


def _keys_of(kinds: Sequence[Any]) -> set[str]:
    """The keys (as a manifest writes them) of the models among ``kinds``."""
    keys: set[str] = set()
    for tp in kinds:
        for _, u in _members(tp):
            if isinstance(u, type) and issubclass(u, BaseModel):
                keys |= {f.alias or name for name, f in u.model_fields.items()}
    return keys


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg[0].lower() + msg[1:] if msg else msg


def _unknown_first(model: type[BaseModel], data: Any, errors: list[Any]) -> list[Any]:
    """``errors``, unknown keys first, without the required keys missing from a mapping
    that has an unknown key (the same key, mistyped)."""
    unknown = [e for e in errors if e.get("type") == "extra_forbidden"]
    mistyped_in = {_walk(model, data, e["loc"]).path[:-1] for e in unknown}
    rest = [
        e
        for e in errors
        if e.get("type") != "extra_forbidden"
        and not (e.get("type") == "missing" and _walk(model, data, e["loc"]).path in mistyped_in)
    ]
    return unknown + rest


def _hint(model: type[BaseModel], data: Any, err: Mapping[str, Any], path: PathKey) -> str | None:
    """For an unknown key, the known key it is most like (else the keys that mapping
    takes); for a layer of no known kind, the kind its key is most like."""
    if err.get("type") == "extra_forbidden":
        known = _keys_of(_walk(model, data, err["loc"][:-1]).kinds)
        guess = closest(str(path[-1]), known)
        if guess is None:
            return f"keys here: {', '.join(sorted(known))}" if known else None
        return f"did you mean {guess!r}?"
    node = _at(data, path)
    if err.get("type") == _NO_KIND and isinstance(node, dict):
        known = _keys_of(_walk(model, data, err["loc"]).kinds)
        guesses = [g for k in node if k not in known and (g := closest(str(k), known)) is not None]
        return f"did you mean {guesses[0]!r}?" if guesses else None
    return None


def validate_model(model: type[Strict], data: Any, locs: Locations, where: PathKey = ()) -> Any:
    """``model.model_validate(data)`` with the first error turned into a ManifestError (an
    unknown key before any other, with the known key it is most like as the hint)."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = _unknown_first(model, data, e.errors(include_url=False))
        err = errors[0]
        at = _walk(model, data, err["loc"])
        full = (*where, *at.path)
        fieldname = dotted(full)
        message = _message(err)
        if err.get("type") == "missing" and at.missing:
            fieldname = dotted((*full, at.missing))
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        hint = _hint(model, data, err, at.path)
        raise ManifestError(message + more, file=locs.file, line=locs.line(full), field=fieldname, hint=hint) from None
