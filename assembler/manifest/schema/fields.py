"""The field types manifests and recipes share: strings from YAML scalars, one-or-many
lists, names, durations, octal modes, owners, and the strict base model.

Validators raise ValueError: that is how pydantic learns a value is wrong (it becomes a
ManifestError with file and line in :mod:`assembler.manifest.load.validation`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DURATION_RE = re.compile(r"^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")


def scalar_to_str(value: Any) -> Any:
    """YAML numbers and booleans as the text a user wrote (``true``, ``2``); others unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _one_or_many(value: Any) -> Any:
    # Empty items are dropped: a param set to "" (a choice that needs no extra source,
    # package or command) leaves no item behind.
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [v for v in value if v != ""]
    return value


Scalar = Annotated[str, BeforeValidator(scalar_to_str, json_schema_input_type=str | int | float | bool)]
"""A string; YAML numbers and booleans are accepted and written as text (``MAX_JOBS: 2``)."""

StrList = Annotated[list[str], BeforeValidator(_one_or_many, json_schema_input_type=str | list[str])]
"""A list of strings; a single string is a one-item list."""


def _name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError("names use letters, digits, '_', '.', '-' and start with a letter or digit")
    return value


Name = Annotated[
    str,
    BeforeValidator(lambda v: _name(v) if isinstance(v, str) else v),
    WithJsonSchema({"type": "string", "pattern": _NAME_RE.pattern}),
]


def parse_duration(value: Any) -> int:
    """Nanoseconds of ``30s``, ``1m30s``, ``500ms``, ``2h`` or an integer of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s")
    if isinstance(value, int):
        return value * 1_000_000_000
    if not isinstance(value, str) or not value or not (m := _DURATION_RE.match(value.strip())):
        raise ValueError(f"expected a duration like 30s, 1m30s or 500ms, got {value!r}")
    h, mi, s, ms = (int(g) if g else 0 for g in m.groups())
    return ((h * 3600 + mi * 60 + s) * 1000 + ms) * 1_000_000


Duration = Annotated[int, BeforeValidator(parse_duration, json_schema_input_type=str | int)]


def parse_mode(value: Any) -> int:
    """Permission bits from ``"0755"``/``"755"`` (octal text) or an int written in octal."""
    if isinstance(value, bool):
        raise ValueError('expected an octal mode like "0755"')
    if isinstance(value, int):
        # YAML 1.2 reads 0755 as decimal 755; take the digits as octal, as the user meant.
        value = str(value)
    if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3,4}", value.strip()):
        raise ValueError(f'expected an octal mode like "0755", got {value!r}')
    return int(value.strip(), 8)


Mode = Annotated[int, BeforeValidator(parse_mode, json_schema_input_type=str | int)]


# The highest uid or gid a file may have: uid_t is 32 bits, (uid_t)-1 is chown's "unchanged"
# (the same bound as a layer read from a tar: assembler.archive.tar.MAX_OWNER).
_MAX_OWNER = 2**32 - 2


def _owner(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value}:{value}"
    if isinstance(value, str) and not re.fullmatch(r"\d+(:\d+)?", value):
        raise ValueError(f"owner must be numeric uid[:gid], got {value!r}")
    if isinstance(value, str) and any(int(part) > _MAX_OWNER for part in value.split(":")):
        raise ValueError(f"owner {value!r}: a uid or gid is 0 to {_MAX_OWNER}")
    return value


Owner = Annotated[str, BeforeValidator(_owner, json_schema_input_type=str | int)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)
