"""YAML for the tests (ruamel, as the product uses)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML


def load(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def dump(data: Any) -> str:
    buf = io.StringIO()
    YAML(typ="safe").dump(data, buf)
    return buf.getvalue()
