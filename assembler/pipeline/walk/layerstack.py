"""The image's layers stacked on a walk: :class:`LayerStack`, and :func:`finish`.

A plan and a build stack an image the same way: its base, then each layer, pulling in the
compile steps (and their bases, sources and inputs) a layer needs from the
:class:`~assembler.pipeline.walk.walk.Walk`, and deciding each runtime step (its key is the
image below it) as it comes. Each layer is placed by its kind (:mod:`assembler.pipeline.layers.kinds`),
fitted onto the folders and symlinks of the image below, converted for shipping and
appended; big layers are cut as the image ships once every step has run on them.
:func:`finish` puts the config, labels and annotations on top. What is not cached is the
walk's mode's to make (a build) or to note as still to come (a plan).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from assembler.archive.view import TreeView
from assembler.cache import StepResult, key_of
from assembler.compile.steps import Mounted, runtime_key
from assembler.manifest.schema import model as m
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline import graph
from assembler.pipeline.graph import LayerReport, RuntimeStep, StepReport
from assembler.pipeline.image import labels
from assembler.pipeline.image.bases import Base
from assembler.pipeline.image.config import config_changes, default_annotations, gpu_metadata
from assembler.pipeline.image.installed import check_installed
from assembler.pipeline.layers import kinds
from assembler.pipeline.layers.kinds import Stacking
from assembler.pipeline.layers.placed import Placed
from assembler.pipeline.options import Event
from assembler.pipeline.walk.modes import RuntimeJob
from assembler.pipeline.walk.walk import Walk


class LayerStack:
    """The layers of ``walk``'s image, stacked once (see the module's doc)."""

    def __init__(self, walk: Walk) -> None:
        self.walk = walk
        self.man = walk.man
        self.setup = walk.setup
        self.report = walk.report
        self._chain = ""  # definition of the image so far (base, then each layer)
        self._below: list[str] = []  # the steps whose layers are in the image so far
        self._stacked: list[tuple[int, Layer, bool]] = []  # each layer appended: its report, whether big

    def image(self) -> tuple[Image | None, Base | None, list[LayerReport]]:
        """The image with every layer (None where something is not made yet: a plan)."""
        walk = self.walk
        base = walk.obtained.base(self.man.image.base)
        reports: list[LayerReport] = []
        image: Image | None = None
        # The folders and symlinks of the image so far: copy and artifact layers are fitted onto it.
        view: TreeView | None = None
        bottom: Image | None = None  # the base as shipped
        if base is not None:
            image, shipped_base = self.setup.convert_image(base.image)
            bottom = image
            for i, (blob, diff_id) in enumerate(zip(shipped_base, base.image.diff_ids, strict=True)):
                digest, size = (blob.digest, blob.size) if blob is not None else (None, None)
                reports.append(LayerReport(i, "base", base.what, digest, size, diff_id, "base"))
            view = walk.mode.view_of(self.setup, image)
        else:
            reports.append(LayerReport(0, "base", self.man.image.base, None, None, None, "will-build"))
        self._chain = walk.defs.base(self.man.image.base)
        for i, (spec, path) in enumerate(zip(self.man.image.layers, walk.loaded.layer_paths, strict=True)):
            kind = kinds.of(spec)
            at = Stacking(
                path,
                i,
                image,
                view,
                walk.loaded,
                walk.ctx,
                walk.mode.maker,
                self.runtime,
                walk.artifacts_of,
                walk.step_state,
                walk.obtained.locked_debs,
                walk.kinds.of(m.layer_key(spec)),
            )
            if note := kind.warning(spec, at):
                self.report(Event("warning", {"text": note}))
            placed, what, origin = kind.place(spec, at)
            step = kind.step(spec, i)
            self._chain = key_of({"below": self._chain, "layer": kind.definition(spec, walk.defs)})
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
        walk = self.walk
        # A build fetches a registry step result's blob now it is needed; a plan fetches no
        # blob: one only in a registry step cache leaves the image unknown.
        here = walk.mode.here(walk.store, blob)
        placed: Layer | None = blob if here else None
        if placed is not None and kinds.of(spec).fitted:  # fitted onto the image below
            placed = self.setup.fit(blob, view) if view is not None else None
            if placed is not None:
                walk.origins.carry(placed.diff_id, blob.diff_id)  # what a step runs on: built on what blob is
        # A big layer is cut (and converted) as the image ships, once every step has run on it: see _cut.
        big = placed is not None and walk.cutter.over_budget(placed)
        shipped = self.setup.convert(placed) if placed is not None and not big else None
        digest, size = (shipped.digest, shipped.size) if shipped is not None else (None, None)
        placed_id = placed.diff_id if placed is not None else None
        reports.append(LayerReport(len(reports), m.layer_key(spec), item, digest, size, placed_id, origin, step))
        if placed is None or image is None or view is None:
            return None, None
        view.apply(self.setup.index(placed.descriptor, placed.diff_id))
        layer = shipped or placed  # a plan without the converted blob: the same diff_id
        comment = getattr(spec, "comment", None) or ""
        layer = layer.made_by(f"assemble: {item}", comment)
        image = mutate.append_layers(image, [layer], epoch=walk.ctx.epoch)
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
                self.walk.origins.carry(part.diff_id, layer.diff_id)
                out.append(
                    replace(report, index=len(out), what=what, digest=part.digest, size=part.size, diff_id=part.diff_id)
                )
                layers.append(part.made_by(f"{layer.origin} [{label}]" if label else layer.origin, layer.comment))
                if big:
                    self._report_layer(out[-1])
        if len(layers) < len(self._stacked):
            return None, out
        return mutate.append_layers(bottom, layers, epoch=self.walk.ctx.epoch), out

    def _parts(self, layer: Layer) -> list[tuple[Layer, str]] | None:
        """What ships of the big ``layer``: its parts, or itself converted (None: not made yet)."""
        parts = self.walk.cutter.cut(layer)
        if parts is None or parts != [(layer, "")]:
            return parts
        shipped = self.setup.convert(layer)
        return [(shipped, "")] if shipped is not None else None

    # -- runtime steps ----------------------------------------------------------------

    def runtime(self, rs: RuntimeStep, image: Image | None) -> Placed:
        """The layer of runtime step ``rs`` on ``image``: from the cache when its key
        matches, else made (a build) or still to come (a plan, or ``image`` not known)."""
        walk = self.walk
        mounted = {ref: walk.artifact(ref) for ref in rs.mounts}
        depends = (
            f"base:{self.man.image.base}",
            *dict.fromkeys([*self._below, *(f"step:{r.partition('.')[0]}" for r in rs.mounts)]),
        )
        report = partial(
            StepReport,
            rs.name,
            "runtime",
            seconds=0.0,
            definition=walk.defs.runtime(rs.definition, self._chain),
            depends_on=depends,
        )
        if image is None or any(b is None for b in mounted.values()):
            walk.record_step(report(state="will-run", key=None, reason="the image below is not built yet"))
            return Placed([], rs.what, "will-build")
        known = {r: b for r, b in mounted.items() if b is not None}
        mounts = {r: b.diff_id for r, b in known.items()}
        definition = {**rs.definition, "secrets": list(rs.secrets)}
        key = runtime_key(definition, parent=image, mounts=mounts, tool=walk.obtained.tool(), epoch=walk.ctx.epoch)
        hit = walk.step_result(key, rs.name)
        decision = walk.decide(rs.name, key, hit if hit is not None and hit.layer is not None else None, report)
        if decision.taken is not None and decision.taken.layer is not None:
            blob = decision.taken.layer
            self._check_installed(rs, blob)
            return Placed([(blob, rs.what)], rs.what, "cached")
        will_run = report(state="will-run", key=key, reason=decision.reason)
        mounted_at = [Mounted(r, b, graph.artifact_spec(self.man, r).to) for r, b in known.items()]
        made = walk.mode.make_runtime(RuntimeJob(rs, key, image, known, mounted_at))
        if made is None:
            walk.record_step(will_run)
            return Placed([], rs.what, "will-build")
        on = [*image.diff_ids, *(b.diff_id for b in known.values())]  # what it is built on
        walk.record_made(key, StepResult(rs.name, layer=made.made), on)
        walk.built(will_run, made.seconds)
        self._check_installed(rs, made.made)
        return Placed([(made.made, rs.what)], rs.what, "built")

    def _check_installed(self, rs: RuntimeStep, blob: Layer) -> None:
        """What the step installed into Python against its locked pins, where a lock is used."""
        status = self.walk.loaded.lock
        if status is None or rs.packages or (status.state in ("none", "missing") and not status.locked):
            return
        for line in check_installed(rs.name, rs.env, self.walk.cache, blob.diff_id, locked=status.locked):
            self.report(Event("warning", {"text": line}))


def finish(walk: Walk, image: Image, base: Base | None) -> Image:
    """Config, labels and annotations on top of the layers of ``walk``'s image (``base``
    None: not known yet)."""
    man, records = walk.man, walk.mode.records
    # A build brings a registry step result's blob in before it reads it; a plan reads only
    # what the cache holds, and writes nothing.
    code = labels.step_code(man, walk.artifacts, cache=walk.cache, ensure=walk.store.ensure if records else None)
    py = (  # a plan: nothing to read
        labels.python_facts(image, base, cache=walk.cache, blobs=walk.setup.blobs, shared=walk.services.facts)
        if records
        else None
    )
    for warning in labels.driver_warnings(walk.loaded, labels.image_code(man, code)):
        walk.report(Event("warning", {"text": warning}))
    gpu = gpu_metadata(walk.loaded, graph.needed_steps(man), code=code, base=base.image if base else None, stack=py)
    obtained = walk.obtained
    made = labels.facts_of(code, man, obtained.base, final=records)
    sources = labels.source_facts(man, obtained.sources, obtained.source, unknown=dict(walk.mode.unknown_facts))
    expand = partial(labels.expand, sources=sources, made=made)
    config = man.image.config.model_copy(update={"labels": expand(man.image.config.labels)})
    changes = config_changes(config, image.container_config.get("Env") or [], labels=gpu, keep_unknown=base is None)
    epoch = walk.ctx.epoch
    image = mutate.set_config(image, changes, epoch=epoch)
    defaults = (
        default_annotations(base.image, base.registry_name, man.name, epoch)
        if base is not None
        else {mt.ANNOTATION_CREATED: mutate.timestamp(epoch), mt.ANNOTATION_TITLE: man.name}
    )
    return mutate.set_annotations(image, {**defaults, **gpu, **expand(man.annotations)})


def stacked(walk: Walk) -> tuple[Image | None, Base | None, list[LayerReport]]:
    """``walk``'s image with every layer, its base and a report of each layer (see
    :meth:`LayerStack.image`)."""
    return LayerStack(walk).image()
