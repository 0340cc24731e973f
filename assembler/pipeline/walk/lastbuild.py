"""What a compile step was last built from, so that a plan says which input made it stale.

A step's key is one digest of everything it reads: a miss says only "not built with these
inputs", and the user who added a model is left to guess why pip runs again (issue 67).
Each build of a step records its inputs' digests apart (the base, each source, each input
artifact, each top-level field of its definition, the tool), as one small memo per manifest
(with its target and platform) and step name; a later miss compares against it and names what differs. Nothing is read
but that memo and digests the walk already has, so a plan stays as cheap as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from assembler.cache import Cache, key_of

STALE = "not built with these inputs"


@dataclass(frozen=True)
class Inputs:
    """The digests a compile step's key is made of, kept apart: what a build records and a
    plan compares."""

    base: str
    sources: Mapping[str, str]
    inputs: Mapping[str, str]
    definition: Mapping[str, str]  # each top-level field of the step, by digest
    tool: str

    def as_memo(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "sources": dict(self.sources),
            "inputs": dict(self.inputs),
            "definition": dict(self.definition),
            "tool": self.tool,
        }


def definition_digests(dumped: Mapping[str, Any]) -> dict[str, str]:
    """Each field of a step's definition (its model dump) by digest: a changed field can be
    named (``run``: a command edited) without keeping the values."""
    return {field: key_of({"v": value}) for field, value in dumped.items()}


def memo_key(manifest: str, step: str) -> str:
    """One memo per manifest (its file, target and platform: the walk's name for it) and
    step name: the last build of *this* project's step, never another project's step of
    the same name sharing the cache."""
    return "step-last-build-" + key_of({"manifest": manifest, "step": step})


def record(cache: Cache, manifest: str, step: str, made_from: Inputs) -> None:
    """``step`` of ``manifest`` was just built from ``made_from``."""
    cache.put_memo(memo_key(manifest, step), made_from.as_memo())


def _changed(kind: str, was: Mapping[str, Any], now: Mapping[str, str]) -> list[str]:
    return [f"{kind} {name}" for name in sorted({*was, *now}) if was.get(name) != now.get(name)]


def reason(cache: Cache, manifest: str, step: str, now: Inputs) -> str:
    """Why ``step`` is not cached: the inputs that differ from its last build's, named
    (``not built with these inputs: source requirements changed``); the bare reason when
    it was never built here, or nothing recorded differs."""
    was = cache.memo(memo_key(manifest, step))
    if was is None:
        return STALE
    differ = [
        *(["base"] if was.get("base") != now.base else []),
        *_changed("source", was.get("sources") or {}, now.sources),
        *_changed("input", was.get("inputs") or {}, now.inputs),
        *_changed("field", was.get("definition") or {}, now.definition),
        *(["the build tool"] if was.get("tool") != now.tool else []),
    ]
    if not differ:
        return STALE
    return f"{STALE}: {', '.join(differ)} changed since its last build"
