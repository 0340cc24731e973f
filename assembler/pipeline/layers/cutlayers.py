"""Big layers of packages (Python's, Debian's) cut for transfer as the image is shipped (:mod:`assembler.archive.cut`).

The steps run on the layers as they were made: their keys, and what the cache holds for
them, are those of the image uncut, so ``--layer-budget`` changes no step and a build with
another budget runs nothing again. The image written holds each big layer's parts in its
place (:meth:`assembler.pipeline.walk.layerstack.LayerStack.image`). A cut is one read of the layer and one
write of its parts, cached by the layer's digest, the budget, the epoch and the
compression: a rebuild reads nothing, a plan finds it without reading, and a layer that
the budget leaves whole (small, or no package database in it) is not read at all when its
size, or the list of its paths remembered as it was written, says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from assembler.archive.compress import decompressed
from assembler.archive.cut import Part, is_listing, listings, plan_cut
from assembler.archive.layer import Member
from assembler.archive.tarread import data_of, opener, reading
from assembler.cache import StepResult, key_of
from assembler.cache.memos import entries_key, write_remembered
from assembler.oci.layer import Layer
from assembler.pipeline.layers.maker import Maker
from assembler.transports import Context

_FORMAT = 2  # bump when the way a layer is cut changes: every cut is made again (2: dpkg's lists)
_RECORD_MAX = 64 << 20  # a RECORD (torch's: 2 MB) or dpkg list read into memory at most


class LayerCutter:
    """Cuts (a build's ``maker``) or looks up the cut of (a plan's) the layers of an image."""

    def __init__(self, ctx: Context, *, maker: Maker, budget: int) -> None:
        self.ctx = ctx
        self.maker = maker
        self.budget = budget  # 0: nothing is cut

    def over_budget(self, layer: Layer) -> bool:
        """Whether ``layer`` may be cut: its tar (or, not known, its blob) is over the budget."""
        return self.budget > 0 and max(layer.uncompressed_size, layer.size) > self.budget

    def cut(self, layer: Layer) -> list[tuple[Layer, str]] | None:
        """The layers that ship in place of ``layer``, each with a label (``""``: ``layer``
        itself, uncut), or None (a plan: not cut yet). Raises InvalidArchive for a damaged
        layer."""
        if not self.over_budget(layer):
            return [(layer, "")]  # its files take less than its tar does: within the budget
        key = "cut-" + key_of(
            {
                "layer": layer.digest,
                "budget": self.budget,
                "epoch": self.ctx.epoch,
                "compression": self.ctx.compression,
                "format": _FORMAT,
            }
        )
        hit = self.ctx.cache.step_result(key)
        if hit is not None:
            return _parts_of(hit, layer)
        if self._lists_no_package(layer):
            return [(layer, "")]
        return self.maker.missing(lambda: self._cut(layer, key))

    def _lists_no_package(self, layer: Layer) -> bool:
        """Whether the paths remembered of ``layer`` as it was written (its entries memo)
        hold no package listing: then it is not cut, and not read. A layer of model weights
        over the budget cost a read of all of it (1 GiB: a second) to find none."""
        # The entries as the dependency check reads them; a memo it cannot read is dropped: read the layer.
        entries = self.ctx.cache.memo_as(
            entries_key(layer.diff_id), lambda d: [(str(p), str(k)) for p, k, _ in d["entries"]]
        )
        if entries is None:
            return False
        return not any(kind == "file" and is_listing(path) for path, kind in entries)

    def _cut(self, layer: Layer, key: str) -> list[tuple[Layer, str]]:
        """``layer`` read once (its tar to a work file: parts take its members out of order)
        and its parts written, recorded under ``key``."""
        with self.ctx.cache.workdir("cut-") as work:
            plain = work / "layer.tar"
            # The walk's layers are here (a registry step cache's were fetched when stacked).
            with (
                self.ctx.cache.open_blob(layer.digest) as raw,
                decompressed(raw, layer.compression) as data,
                open(plain, "wb") as out,
            ):
                shutil.copyfileobj(data, out, 1 << 20)
            made = self._parts(plain, f"layer {layer.digest}")
        result = StepResult(f"cut of {layer.digest}", made or {"000 ": layer})
        self.ctx.cache.put_step_result(key, result)
        return _parts_of(result, layer)

    def _parts(self, plain: Path, what: str) -> dict[str, Layer]:
        """The parts of the tar ``plain`` written, by ``NNN label`` (none: not cut)."""
        with open(plain, "rb") as f, reading(f, what=what, stream=False) as (tf, members):
            listed = [(entry, info) for entry, info in members if entry.path]
            by_path = {e.path: (e, i) for e, i in listed}
            entries = [e for e, _ in listed]
            texts = {}
            for path in listings(entries):
                with data_of(tf, by_path[path][1], what=what) as record:
                    texts[path] = record.read(_RECORD_MAX).decode("utf-8", errors="replace")
            made: dict[str, Layer] = {}
            for index, part in enumerate(plan_cut(entries, texts, budget=self.budget)):
                members_of: list[Member] = [
                    (e, opener(tf, i, what=what) if e.kind == "file" else None)
                    for e, i in (by_path[p] for p in part.paths)
                ]
                made[f"{index:03d} {_label(part)}"] = self._write(members_of)
        return made

    def _write(self, members: list[Member]) -> Layer:
        """The layer of ``members`` (in the layer's order) in the cache, its headers remembered."""
        return write_remembered(
            self.ctx.cache,
            members,
            compression=self.ctx.compression,
            epoch=self.ctx.epoch,
            observers=self.ctx.observers,
            progress=self.ctx.progress,
        )


def _label(part: Part) -> str:
    if part.label.startswith("bucket"):
        return f"{part.label}: {len(part.names)} package{'' if len(part.names) == 1 else 's'}"
    return part.label


def _parts_of(result: StepResult, layer: Layer) -> list[tuple[Layer, str]]:
    """The parts a cut recorded, in order (one part, ``layer`` itself: not cut)."""
    parts = [(blob, name.split(" ", 1)[1]) for name, blob in sorted(result.artifacts.items())]
    if len(parts) == 1 and parts[0][0].digest == layer.digest:
        return [(layer, "")]
    return parts
