"""YAML for the tests (ruamel, as the product uses)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML


def load(path: Path) -> Any:
    # pure: libyaml (YAML 1.1) refuses `{git: https://...}`, which YAML 1.2 and the product read
    return YAML(typ="safe", pure=True).load(path.read_text())


def dump(data: Any) -> str:
    buf = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, buf)
    return buf.getvalue()
