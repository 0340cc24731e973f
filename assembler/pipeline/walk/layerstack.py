"""The image's layers stacked on a walk: :class:`LayerStack`, and :func:`finish`.

A plan and a build stack an image the same way: its base, then each layer, pulling in the
compile steps (and their bases, sources and inputs) a layer needs from the
:class:`~assembler.pipeline.walk.walk.Walk`, and deciding each runtime step (its key is the
image below it: :mod:`assembler.pipeline.walk.runtimesteps`) as it comes. The stack is given
narrow values (:class:`Placing`, :class:`Shipping`, :class:`RuntimeSteps`), which
:func:`stacked` takes from a walk. Each layer is placed by its kind (:mod:`assembler.pipeline.layers.kinds`),
fitted onto the folders and symlinks of the image below, converted for shipping and
appended; big layers are cut as the image ships once every step has run on them.
:func:`finish` puts the config, labels and annotations on top (:class:`Finishing`, given its
values as the stack is). What is not cached is the
walk's mode's to make (a build) or to note as still to come (a plan).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial

from assembler.archive.view import TreeView
from assembler.cache import Cache, key_of
from assembler.cache.memos import SharedFacts
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.lock.debpins import DebLocked
from assembler.manifest.schema import model as m
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline import graph
from assembler.pipeline.graph import LayerReport, RuntimeStep
from assembler.pipeline.image import labels
from assembler.pipeline.image.bases import Base
from assembler.pipeline.image.config import config_changes, default_annotations, gpu_metadata
from assembler.pipeline.layers import kinds
from assembler.pipeline.layers.cutlayers import LayerCutter
from assembler.pipeline.layers.kinds import Stacking
from assembler.pipeline.layers.maker import Maker
from assembler.pipeline.layers.placed import Placed
from assembler.pipeline.layers.setup import ImageSetup
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.walk.obtain import Obtained
from assembler.pipeline.walk.runtimesteps import RuntimeSteps
from assembler.pipeline.walk.walk import Walk
from assembler.transports import Context
from assembler.transports.common import BlobReader


@dataclass(frozen=True)
class Placing:
    """What every layer of the image is placed with, from the walk: :class:`Stacking` adds
    each layer's own place, the image below it and its kind's state."""

    loaded: Loaded
    ctx: Context
    maker: Maker
    compile: Callable[[str], Mapping[str, Layer] | None]  # a compile step's artifacts (None: it will run)
    step_state: Callable[[str], str]  # what the walk decided of a compile step
    locked_debs: Callable[[str], DebLocked | None]  # what the lock installs at a place
    state_of: Callable[[str], object]  # each kind's state for this walk, by its layer key


@dataclass(frozen=True)
class Shipping:
    """How a placed layer joins the image as it ships: fitted onto the folders and symlinks
    below, converted, a big one cut once every step has run on it."""

    setup: ImageSetup
    cutter: LayerCutter
    origins: Origins  # a fitted or cut layer is built on what its blob is
    here: Callable[[Layer], bool]  # a step result's blob is at hand (a plan fetches none)
    view_of: Callable[[Image], TreeView | None]  # the folders and symlinks of an image (None: not known)
    epoch: int


class LayerStack:
    """The layers of one image, stacked once (see the module's doc): on ``base`` (None: not
    known yet) defined by ``chain``, each layer placed by its kind with ``placing``, shipped
    as ``shipping`` says, its runtime steps decided by ``runtime``."""

    def __init__(
        self,
        man: m.Manifest,
        base: Base | None,
        chain: str,
        placing: Placing,
        shipping: Shipping,
        runtime: RuntimeSteps,
        report: Reporter,
    ) -> None:
        self.man = man
        self.base = base
        self.placing = placing
        self.shipping = shipping
        self.runtime = runtime
        self.report = report
        self._chain = chain  # definition of the image so far (base, then each layer)
        self._below: list[str] = []  # the steps whose layers are in the image so far
        self._stacked: list[tuple[int, Layer, bool]] = []  # each layer appended: its report, whether big

    def image(self) -> tuple[Image | None, Base | None, list[LayerReport]]:
        """The image with every layer (None where something is not made yet: a plan)."""
        base, placing, setup = self.base, self.placing, self.shipping.setup
        reports: list[LayerReport] = []
        image: Image | None = None
        # The folders and symlinks of the image so far: copy and artifact layers are fitted onto it.
        view: TreeView | None = None
        bottom: Image | None = None  # the base as shipped
        if base is not None:
            image, shipped_base = setup.convert_image(base.image)
            bottom = image
            for i, (blob, diff_id) in enumerate(zip(shipped_base, base.image.diff_ids, strict=True)):
                digest, size = (blob.digest, blob.size) if blob is not None else (None, None)
                reports.append(LayerReport(i, "base", base.what, digest, size, diff_id, "base"))
            view = self.shipping.view_of(image)
        else:
            reports.append(LayerReport(0, "base", self.man.image.base, None, None, None, "will-build"))
        for i, (spec, path) in enumerate(zip(self.man.image.layers, placing.loaded.layer_paths, strict=True)):
            kind = kinds.of(spec)
            at = Stacking(
                path,
                i,
                image,
                view,
                placing.loaded,
                placing.ctx,
                placing.maker,
                self._runtime,
                placing.compile,
                placing.step_state,
                placing.locked_debs,
                placing.state_of(m.layer_key(spec)),
            )
            if note := kind.warning(spec, at):
                self.report(Event("warning", {"text": note}))
            placed, what, origin = kind.place(spec, at)
            step = kind.step(spec, i)
            self._chain = key_of({"below": self._chain, "layer": kind.definition(spec, self.runtime.defs)})
            if step is not None:
                self._below.append(f"step:{step}")
            if not placed:
                reports.append(LayerReport(len(reports), m.layer_key(spec), what, None, None, None, origin, step))
                image = view = None
                continue
            for blob, item in placed:
                image, view = self._stack(spec, blob, item, origin, step, image, view, reports)
        if image is not None and bottom is not None:  # steps ran on the layers as made; the image ships them cut
            image, reports = self._cut(image, bottom, reports)
        return image, base, reports

    def _runtime(self, rs: RuntimeStep, image: Image | None) -> Placed:
        """The layer of runtime step ``rs`` on ``image``, the image stacked so far."""
        return self.runtime.layer(rs, image, chain=self._chain, below=self._below)

    def _stack(
        self,
        spec: m.LayerSpec,
        blob: Layer,
        item: str,
        origin: str,
        step: str | None,
        image: Image | None,
        view: TreeView | None,
        reports: list[LayerReport],
    ) -> tuple[Image | None, TreeView | None]:
        """``blob`` fitted, converted and appended onto ``image`` (None: not known yet)."""
        ship = self.shipping
        # A build fetches a registry step result's blob now it is needed; a plan fetches no
        # blob: one only in a registry step cache leaves the image unknown.
        placed: Layer | None = blob if ship.here(blob) else None
        if placed is not None and kinds.of(spec).fitted:  # fitted onto the image below
            placed = ship.setup.fit(blob, view) if view is not None else None
            if placed is not None:
                ship.origins.carry(placed.diff_id, blob.diff_id)  # what a step runs on: built on what blob is
        # A big layer is cut (and converted) as the image ships, once every step has run on it: see _cut.
        big = placed is not None and ship.cutter.over_budget(placed)
        shipped = ship.setup.convert(placed) if placed is not None and not big else None
        digest, size = (shipped.digest, shipped.size) if shipped is not None else (None, None)
        placed_id = placed.diff_id if placed is not None else None
        reports.append(LayerReport(len(reports), m.layer_key(spec), item, digest, size, placed_id, origin, step))
        if placed is None or image is None or view is None:
            return None, None
        view.apply(ship.setup.index(placed.descriptor, placed.diff_id))
        layer = shipped or placed  # a plan without the converted blob: the same diff_id
        comment = getattr(spec, "comment", None) or ""
        layer = layer.made_by(f"assemble: {item}", comment)
        image = mutate.append_layers(image, [layer], epoch=ship.epoch)
        self._stacked.append((len(reports) - 1, layer, big))
        if shipped is not None:
            self._report_layer(reports[-1])
        return image, view

    def _report_layer(self, report: LayerReport) -> None:
        fields = {"index": report.index, "what": report.what, "digest": report.digest, "size": report.size}
        self.report(Event("layer", {**fields, "origin": report.origin}))

    def _cut(self, image: Image, bottom: Image, reports: list[LayerReport]) -> tuple[Image | None, list[LayerReport]]:
        """The image as it ships: each big layer of packages in its parts
        (:mod:`assembler.pipeline.layers.cutlayers`), converted as the image wants; ``image`` itself
        when no layer is big. None: a plan, a cut not made yet."""
        if not any(big for _, _, big in self._stacked):
            return image, reports
        out = reports[: self._stacked[0][0]]
        layers: list[Layer] = []
        for index, layer, big in self._stacked:
            report = reports[index]
            parts = self._parts(layer) if big else [(layer, "")]
            if parts is None:
                out.append(replace(report, index=len(out), digest=None, size=None, diff_id=None, origin="will-build"))
                continue
            for part, label in parts:
                what = f"{report.what} [{label}]" if label else report.what
                self.shipping.origins.carry(part.diff_id, layer.diff_id)
                out.append(
                    replace(report, index=len(out), what=what, digest=part.digest, size=part.size, diff_id=part.diff_id)
                )
                layers.append(part.made_by(f"{layer.origin} [{label}]" if label else layer.origin, layer.comment))
                if big:
                    self._report_layer(out[-1])
        if len(layers) < len(self._stacked):
            return None, out
        return mutate.append_layers(bottom, layers, epoch=self.shipping.epoch), out

    def _parts(self, layer: Layer) -> list[tuple[Layer, str]] | None:
        """What ships of the big ``layer``: its parts, or itself converted (None: not made yet)."""
        parts = self.shipping.cutter.cut(layer)
        if parts is None or parts != [(layer, "")]:
            return parts
        shipped = self.shipping.setup.convert(layer)
        return [(shipped, "")] if shipped is not None else None


@dataclass(frozen=True)
class Finishing:
    """What the config, labels and annotations on top of the layers are made from, taken from
    a walk once its steps are decided (:func:`finish`): the manifest, the steps' artifacts,
    the bases and sources it obtained, and how facts are read (``final``: a build's, which
    records what it reads and brings a registry step result's blob in before reading it; a
    plan reads only what the cache holds, and writes nothing)."""

    loaded: Loaded
    artifacts: Mapping[str, Mapping[str, Layer]]
    obtained: Obtained
    cache: Cache
    ensure: Callable[[Layer], None]  # brings a step result's blob in (a build's)
    blobs: BlobReader  # reads the layers of a base
    facts: SharedFacts | None  # facts read from layers, shared beyond the cache
    unknown_facts: Mapping[str, str]  # what a plan cannot know yet, and why
    final: bool
    report: Reporter
    epoch: int

    def image(self, image: Image, base: Base | None) -> Image:
        """``image`` with the config, labels and annotations on top (``base`` None: not known yet)."""
        man, final = self.loaded.manifest, self.final
        code = labels.step_code(man, self.artifacts, cache=self.cache, ensure=self.ensure if final else None)
        py = (  # a plan: nothing to read
            labels.python_facts(image, base, cache=self.cache, blobs=self.blobs, shared=self.facts) if final else None
        )
        for warning in labels.driver_warnings(self.loaded, labels.image_code(man, code)):
            self.report(Event("warning", {"text": warning}))
        gpu = gpu_metadata(self.loaded, graph.needed_steps(man), code=code, base=base.image if base else None, stack=py)
        obtained = self.obtained
        made = labels.facts_of(code, man, obtained.base, final=final)
        sources = labels.source_facts(man, obtained.sources, obtained.source, unknown=dict(self.unknown_facts))
        expand = partial(labels.expand, sources=sources, made=made)
        config = man.image.config.model_copy(update={"labels": expand(man.image.config.labels)})
        changes = config_changes(config, image.container_config.get("Env") or [], labels=gpu, keep_unknown=base is None)
        image = mutate.set_config(image, changes, epoch=self.epoch)
        defaults = (
            default_annotations(base.image, base.registry_name, man.name, self.epoch)
            if base is not None
            else {mt.ANNOTATION_CREATED: mutate.timestamp(self.epoch), mt.ANNOTATION_TITLE: man.name}
        )
        return mutate.set_annotations(image, {**defaults, **gpu, **expand(man.annotations)})


def finish(walk: Walk, image: Image, base: Base | None) -> Image:
    """Config, labels and annotations on top of the layers of ``walk``'s image (``base``
    None: not known yet): the one place :class:`Finishing`'s values are taken from a walk."""
    mode = walk.mode
    finishing = Finishing(
        walk.loaded,
        walk.artifacts,
        walk.obtained,
        walk.cache,
        walk.store.ensure,
        walk.setup.blobs,
        walk.services.facts,
        mode.unknown_facts,
        mode.records,
        walk.report,
        walk.ctx.epoch,
    )
    return finishing.image(image, base)


def stacked(walk: Walk) -> tuple[Image | None, Base | None, list[LayerReport]]:
    """``walk``'s image with every layer, its base and a report of each layer (see
    :meth:`LayerStack.image`): the one place the stack's narrow values are taken from a walk."""
    mode, obtained, ctx = walk.mode, walk.obtained, walk.ctx
    placing = Placing(
        walk.loaded, ctx, mode.maker, walk.artifacts_of, walk.step_state, obtained.locked_debs, walk.kinds.of
    )
    here, view_of = partial(mode.here, walk.store), partial(mode.view_of, walk.setup)
    shipping = Shipping(walk.setup, walk.cutter, walk.origins, here, view_of, ctx.epoch)
    runtime = RuntimeSteps(
        walk,
        walk.man,
        walk.defs,
        tool=obtained.tool,
        make=mode.make_runtime,
        lock=walk.loaded.lock,
        cache=walk.cache,
        report=walk.report,
        epoch=ctx.epoch,
    )
    base = obtained.base(walk.man.image.base)
    stack = LayerStack(walk.man, base, walk.defs.base(walk.man.image.base), placing, shipping, runtime, walk.report)
    return stack.image()
