"""What the resolver keeps of what a base's Python holds (see
:mod:`assembler.pipeline.lock.heldpython`): uv's preferences, the base's versions first."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from packaging.utils import canonicalize_name

from assembler.manifest.facts.basepython import Held
from assembler.manifest.schema.setuses import SetUse
from assembler.python.slices import requirement_names


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 normalises it."""
    return canonicalize_name(name)


def preferences(found: Held | None, uses: Sequence[SetUse]) -> dict[str, str]:
    """What the resolver keeps where it can (canonical name -> version): what the base
    holds, less what a set installs with ``-U`` or ``--force-reinstall`` by name."""
    if found is None:
        return {}
    moving: set[str] = set()
    for use in uses:
        if use.pyset.upgrade or use.pyset.force:
            moving |= set(requirement_names(use.pyset.requirements))
    return {canonical(k): v for k, v in found.python.items() if canonical(k) not in moving}


def preferred_text(kept: Mapping[str, str], previous: str | None) -> str | None:
    """uv's preferences: what the base holds, then what the lock had for the other names."""
    lines = [f"{name}=={version}\n" for name, version in sorted(kept.items())]
    for line in (previous or "").splitlines():
        name = canonical(re.split(r"[=<>!~ @;\[]", line.strip(), maxsplit=1)[0]) if line.strip() else ""
        if name and name not in kept:
            lines.append(line + "\n")
    return "".join(lines) or None
