"""Pydantic's validation errors as ManifestErrors: the first problem, with file:line: field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from assembler.errors import ManifestError
from assembler.spec.fields import Strict
from assembler.spec.yamlfile import Locations, PathKey, dotted


def _locate(data: Any, loc: Sequence[str | int]) -> tuple[PathKey, str | None]:
    """The data path a pydantic ``loc`` points at (union tags skipped) and a missing key."""
    path: list[str | int] = []
    node = data
    missing: str | None = None
    for part in loc:
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
    return tuple(path), missing


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


def validate_model(model: type[Strict], data: Any, locs: Locations, where: PathKey = ()) -> Any:
    """``model.model_validate(data)`` with the first error turned into a ManifestError."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        err = errors[0]
        path, missing = _locate(data, err["loc"])
        full = (*where, *path)
        fieldname = dotted(full)
        message = _message(err)
        if err.get("type") == "missing" and missing:
            fieldname = dotted((*full, missing))
        elif err.get("type") == "extra_forbidden":
            message = "unknown key"
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ManifestError(message + more, file=locs.file, line=locs.line(full), field=fieldname) from None
