"""What a check from facts reads of a loaded manifest (:class:`Subject`).

The checks of this room run while a manifest loads, so they cannot import the loader's
:class:`~assembler.manifest.load.loaded.Loaded` (the room above them): they name this
narrower view of it, which ``Loaded`` satisfies as it is."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from assembler.errors import ManifestError
from assembler.manifest.schema import model as m
from assembler.manifest.text.yamlfile import PathKey


class Subject(Protocol):
    """A loaded manifest as the fact checks read it: the models, the params and where each
    part was written (for the errors)."""

    @property
    def manifest(self) -> m.Manifest: ...

    @property
    def params(self) -> Mapping[str, str]: ...

    @property
    def target(self) -> str | None: ...

    @property
    def layer_paths(self) -> Sequence[PathKey]: ...

    @property
    def raw(self) -> Mapping[str, Any]: ...

    @property
    def param_inputs(self) -> Mapping[str, frozenset[str]]: ...

    @property
    def given(self) -> frozenset[str]: ...

    def error(self, path: Sequence[str | int], message: str, *, hint: str | None = None) -> ManifestError: ...
