"""A loaded manifest as a value (:class:`Loaded`): the models, where each part was written,
the params and what the lock did. Made by :func:`assembler.manifest.load.manifest.load_manifest`; read
by the checks that loading runs and by every floor above, so it sits below them all."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler.errors import ManifestError
from assembler.manifest.lock.apply import LockStatus
from assembler.manifest.schema import model as m
from assembler.manifest.text.yamlfile import Locations, PathKey


@dataclass
class Loaded:
    """A loaded manifest, ready for planning: the models plus where everything is."""

    manifest: m.Manifest
    path: Path
    locs: Locations
    params: dict[str, str]
    target: str | None
    recipes: dict[str, Path] = field(default_factory=dict)
    layer_paths: list[PathKey] = field(default_factory=list)
    # --base NAME=REF: what the manifest says the base is, and what replaces it.
    base_overrides: dict[str, BaseOverride] = field(default_factory=dict)
    # What the lock (MANIFEST.lock) did for this variant: None until one is applied.
    lock: LockStatus | None = None
    # The params each param's value is made of (params.param_inputs), the ones --set gave,
    # and the document as written: what a refusal names as the params to change.
    param_inputs: dict[str, frozenset[str]] = field(default_factory=dict)
    given: frozenset[str] = frozenset()
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def error(self, path: Sequence[str | int], message: str, *, hint: str | None = None) -> ManifestError:
        return self.locs.error(path, message, hint=hint)


@dataclass(frozen=True)
class BaseOverride:
    """A base replaced by ``--base NAME=REF``: the manifest's base (a reference, or
    ``bootstrap: SUITE``) and the reference that replaces it."""

    manifest: str
    ref: str
