"""The facts' data files (``NAME.json`` next to this module), read once a process."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def read(name: str) -> Any:
    """The data file ``NAME.json`` of this package (read once a process)."""
    text = resources.files("assembler.manifest.facts").joinpath(f"{name}.json").read_text(encoding="utf-8")
    return json.loads(text)


def where(name: str) -> str:
    """How a refusal names a data file: ``assembler/manifest/facts/NAME.json``."""
    return f"assembler/manifest/facts/{name}.json"
