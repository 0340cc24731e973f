"""What ``pip:`` and ``url:`` layers share: :class:`Prebuilt`, which makes (a build's
``maker``) or looks up (a plan's) their layers, records them in the registry step cache
and writes them. The kinds themselves are :mod:`assembler.pipeline.layers.kinds.pip` and
:mod:`assembler.pipeline.layers.kinds.url` (:mod:`assembler.manifest.schema.prebuilt`: their models).

No container runs: a wheel is installed by pypa/installer into layer members
(:mod:`assembler.archive.wheel`) and a file is placed (or its tar unpacked) by our own
tar writer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from assembler.archive.layer import Member, Opener, with_parents
from assembler.cache.entries import StepResult
from assembler.cache.memos import write_remembered
from assembler.errors import CorruptBlob
from assembler.oci.layer import Layer
from assembler.pipeline.layers.maker import Maker
from assembler.pipeline.layers.placed import Placed
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.store.prebuilt_checks import Check
from assembler.pipeline.store.stepstore import StepStore, note_taken
from assembler.transports import Context

if TYPE_CHECKING:
    from assembler.pipeline.layers.kinds.base import Starting

_FORMAT = 1  # bump when the way a layer is made changes: every pip/url layer is made again


def file_opener(path: Path) -> Opener:
    return lambda: cast(AbstractContextManager[BinaryIO], open(path, "rb"))  # the writer closes it


class Prebuilt:
    """Makes (a build's ``maker``) or looks up (a plan's) ``pip:`` and ``url:`` layers: what
    the two kinds share."""

    def __init__(self, ctx: Context, *, maker: Maker, steps: StepStore, origins: Origins, checks: bool) -> None:
        self.ctx = ctx
        self.cache = ctx.cache
        self.maker = maker
        self.made = False  # whether the last place() made a layer (else all were cached)
        # Where layers are recorded and shared (a layer is a step cache entry too), and where
        # each entry used came from (for the provenance, and what is built on it).
        self.steps = steps
        self.origins = origins
        # Whether a layer from a registry step cache is checked against its pins (a build's);
        # a plan takes its record alone.
        self.checks = checks

    def place(self, what: str, make: Callable[[], list[tuple[Layer, str]] | None]) -> Placed:
        """The layers ``make`` gives (a ``pip:`` or ``url:`` layer's:
        :func:`~assembler.pipeline.layers.kinds.pip.pip_layers`,
        :func:`~assembler.pipeline.layers.kinds.url.url_layer`) with what each is, ``what`` the
        layer is, and their origin (cached, built, or will-build: a plan, and they are not
        made yet)."""
        self.made = False
        layers = make()
        if layers is None:
            return Placed([], what, "will-build")
        return Placed(layers, what, "built" if self.made else "cached")

    def made_one(self) -> None:
        """Note that the layer being placed was made here (not found cached)."""
        self.made = True

    def settings(self) -> dict[str, object]:
        return {"epoch": self.ctx.epoch, "compression": self.ctx.compression, "format": _FORMAT}

    def shared(self, key: str, what: str, check: Check) -> Layer | None:
        """The layer recorded under ``key`` here, else in the registry step cache: a build's
        is checked against the pins there (``check``), a plan's is its record alone."""
        hit = self.steps.fetch(key, what, check=check if self.checks else None)
        if hit is not None:
            note_taken(self.steps, self.origins, key, what, [b.diff_id for b in hit.layers()])
        return hit.layer if hit is not None else None

    def share(self, key: str, layer: Layer, what: str) -> None:
        """``layer`` recorded under ``key`` here and in the registry step cache (a build's)."""
        self.maker.keep(lambda: self._record_shared(key, layer, what))

    def _record_shared(self, key: str, layer: Layer, what: str) -> None:
        if self.cache.step_result(key) is None:
            self.cache.put_step_result(key, StepResult(what, layer=layer))
        self.steps.export(key, StepResult(what, layer=layer))

    def verified(self, sha: str) -> Path:
        """The cached file ``sha256:sha``, its bytes checked first (a zip is read out of order)."""
        path = self.cache.blob_path("sha256:" + sha)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != sha:
            self.cache.drop_blob("sha256:" + sha)
            raise CorruptBlob(f"cached file {path}", expected="sha256:" + sha, actual="sha256:" + h.hexdigest())
        return path

    def write(self, members: list[Member]) -> Layer:
        """The layer of ``members`` (and their parents) in the cache, its headers remembered."""
        return write_remembered(
            self.cache,
            with_parents(members, epoch=self.ctx.epoch),
            compression=self.ctx.compression,
            epoch=self.ctx.epoch,
            observers=self.ctx.observers,
            progress=self.ctx.progress,
        )


def prebuilt_of(starting: Starting) -> Prebuilt:
    """The state ``pip:`` and ``url:`` layers share in one walk."""
    return Prebuilt(
        starting.ctx, maker=starting.maker, steps=starting.steps, origins=starting.origins, checks=starting.records
    )
