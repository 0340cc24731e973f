"""The decisions a plan and a build share, made once in one place.

:class:`Walk` goes through a manifest as a build does: the image's base, then each layer,
pulling in the compile steps (and their bases, sources and inputs) a layer needs. For each
step it computes the key and looks it up (:class:`assembler.pipeline.stepwalk.StepWalk`).
What happens when something is *not* cached is the subclass's:
:class:`assembler.pipeline.resolve.Resolver` notes it will run (and reads nothing it would
have to write); :class:`assembler.pipeline.builder.Builder` makes it. Layers made without a
container and bootstrapped bases go through the walk's :class:`~assembler.pipeline.maker.Maker`
(looked up only, or made). Here each layer is
placed, fitted onto the folders and symlinks of the image below, converted for shipping
and appended; :meth:`Walk.finish` puts the config, labels and annotations on top.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from functools import partial

from assembler.archive.view import TreeView
from assembler.cache import key_of
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline import graph, labels
from assembler.pipeline.config import config_changes, default_annotations, gpu_metadata
from assembler.pipeline.graph import LayerReport
from assembler.pipeline.options import Event
from assembler.pipeline.prebuilt_layers import below
from assembler.pipeline.stepwalk import Base, Placed, StepWalk
from assembler.spec import model as m


class Walk(StepWalk):
    """One walk through a loaded manifest; subclasses obtain what is not cached."""

    # -- image layers -----------------------------------------------------------------

    def image(self) -> tuple[Image | None, Base | None, list[LayerReport]]:
        """The image with every layer (None where something is not made yet: a plan)."""
        base = self.base(self.man.image.base)
        reports: list[LayerReport] = []
        image: Image | None = None
        # The folders and symlinks of the image so far: copy and artifact layers are fitted onto it.
        view: TreeView | None = None
        self._stacked: list[tuple[int, Layer, bool]] = []  # each layer appended: its report, whether big
        bottom: Image | None = None  # the base as shipped
        if base is not None:
            image, shipped_base = self.setup.convert_image(base.image)
            bottom = image
            for i, (blob, diff_id) in enumerate(zip(shipped_base, base.image.diff_ids, strict=True)):
                digest, size = (blob.digest, blob.size) if blob is not None else (None, None)
                reports.append(LayerReport(i, "base", base.what, digest, size, diff_id, "base"))
            view = self.view_of(image)
        else:
            reports.append(LayerReport(0, "base", self.man.image.base, None, None, None, "will-build"))
        self._chain = self.defs.base(self.man.image.base)
        for i, (spec, path) in enumerate(zip(self.man.image.layers, self.loaded.layer_paths, strict=True)):
            where = functools.partial(self.loaded.error, (*path, "to"))
            if isinstance(spec, m.PipLayer | m.UrlLayer) and view is not None and (note := below(spec, view, where)):
                self.report(Event("warning", {"text": note}))
            if isinstance(spec, m.CopyLayer) and (note := self.setup.copy_leaves_out(spec.copy_)):
                self.report(Event("warning", {"text": note}))
            placed, what, origin = self._layer(spec, path, image, view, i)
            step = self._step_name(spec, i)
            self._chain = key_of({"below": self._chain, "layer": self.defs.layer(spec)})
            if step is not None:
                self._below.append(f"step:{step}")
            if not placed:
                reports.append(LayerReport(len(reports), graph.kind_of(spec), what, None, None, None, origin, step))
                image = view = None
                continue
            for blob, item in placed:
                image, view = self._stack(spec, blob, item, origin, step, image, view, reports)
        if image is not None and bottom is not None:  # steps ran on the layers as made; the image ships them cut
            image, reports = self._cut(image, bottom, reports)
        return image, base, reports

    def _step_name(self, spec: m.LayerSpec, index: int) -> str | None:
        if isinstance(spec, m.ArtifactLayer):
            return spec.artifact.partition(".")[0]
        if isinstance(spec, m.RunLayer | m.PackagesLayer):
            return spec.name or f"{'run' if isinstance(spec, m.RunLayer) else 'packages'}-{index + 1}"
        return None

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
        if self.remote is not None and self.records:
            self.remote.ensure(blob)  # a step result from a registry: its blob is fetched now it is needed
        # A plan fetches no blob: one only in a registry step cache leaves the image unknown.
        here = self.records or self.remote is None or self.cache.has_blob(blob.digest, blob.size)
        placed: Layer | None = blob if here else None
        if placed is not None and not isinstance(spec, m.RunLayer | m.PackagesLayer):  # fitted onto the image below
            placed = self.setup.fit(blob, view) if view is not None else None
            if placed is not None:
                self.origins.carry(placed.diff_id, blob.diff_id)  # what a step runs on: built on what blob is
        # A big layer is cut (and converted) as the image ships, once every step has run on it: see _cut.
        big = placed is not None and self.cutter.over_budget(placed)
        shipped = self.setup.convert(placed) if placed is not None and not big else None
        digest, size = (shipped.digest, shipped.size) if shipped is not None else (None, None)
        placed_id = placed.diff_id if placed is not None else None
        reports.append(LayerReport(len(reports), graph.kind_of(spec), item, digest, size, placed_id, origin, step))
        if placed is None or image is None or view is None:
            return None, None
        view.apply(self.setup.index(placed.descriptor, placed.diff_id))
        layer = shipped or placed  # a plan without the converted blob: the same diff_id
        comment = getattr(spec, "comment", None) or ""
        layer = layer.made_by(f"assemble: {item}", comment)
        image = mutate.append_layers(image, [layer], epoch=self.ctx.epoch)
        self._stacked.append((len(reports) - 1, layer, big))
        if shipped is not None:
            self._report_layer(reports[-1])
        return image, view

    def _report_layer(self, report: LayerReport) -> None:
        fields = {"index": report.index, "what": report.what, "digest": report.digest, "size": report.size}
        self.report(Event("layer", {**fields, "origin": report.origin}))

    def _cut(self, image: Image, bottom: Image, reports: list[LayerReport]) -> tuple[Image | None, list[LayerReport]]:
        """The image as it ships: each big layer of Python packages in its parts
        (:mod:`assembler.pipeline.cutlayers`), converted as the image wants; ``image`` itself
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
                self.origins.carry(part.diff_id, layer.diff_id)
                out.append(
                    replace(report, index=len(out), what=what, digest=part.digest, size=part.size, diff_id=part.diff_id)
                )
                layers.append(part.made_by(f"{layer.origin} [{label}]" if label else layer.origin, layer.comment))
                if big:
                    self._report_layer(out[-1])
        if len(layers) < len(self._stacked):
            return None, out
        return mutate.append_layers(bottom, layers, epoch=self.ctx.epoch), out

    def _parts(self, layer: Layer) -> list[tuple[Layer, str]] | None:
        """What ships of the big ``layer``: its parts, or itself converted (None: not made yet)."""
        parts = self.cutter.cut(layer)
        if parts is None or parts != [(layer, "")]:
            return parts
        shipped = self.setup.convert(layer)
        return [(shipped, "")] if shipped is not None else None

    def _layer(
        self, spec: m.LayerSpec, path: tuple[str | int, ...], image: Image | None, view: TreeView | None, index: int
    ) -> Placed:
        if isinstance(spec, m.CopyLayer):
            c = spec.copy_
            what = f"copy {c.from_} {c.to}"
            blob = self.setup.copy_layer(c, path, view)
            if blob is None:
                return [], what, "will-build"
            return [(blob, what)], what, "cached" if blob.digest in self.setup.taken else self.copy_origin
        if isinstance(spec, m.ArtifactLayer):
            step_name, _, art = spec.artifact.partition(".")
            results = self.compile(graph.step_of(self.man, step_name))
            names = [art] if art else sorted(graph.step_of(self.man, step_name).artifacts)
            what = f"artifact {spec.artifact}"
            if results is None:
                return [], what, "will-build"
            state = self.steps[step_name].state if step_name in self.steps else "cached"
            return [(results[n], f"artifact {step_name}.{n}") for n in names], what, state
        if isinstance(spec, m.PipLayer | m.UrlLayer):
            return self.prebuilt.place(spec)
        return self.runtime(graph.runtime_step(self.man, spec, index), image)

    # -- the whole ----------------------------------------------------------------------

    def finish(self, image: Image, base: Base | None) -> Image:
        """Config, labels and annotations on top of the layers (``base`` None: not known yet)."""
        man = self.man
        code = labels.step_code(
            man, self.artifacts, cache=self.cache, remote=self.remote if self.records else None, records=self.records
        )
        py = (  # a plan: nothing to read
            labels.python_facts(image, base, cache=self.cache, blobs=self.setup.blobs, shared=self.facts)
            if self.records
            else None
        )
        for warning in labels.driver_warnings(self.loaded, labels.image_code(man, code)):
            self.report(Event("warning", {"text": warning}))
        gpu = gpu_metadata(self.loaded, graph.needed_steps(man), code=code, base=base.image if base else None, stack=py)
        made = labels.facts_of(code, man, self.base, final=self.records)
        sources = labels.source_facts(man, self.sources, self.source, unknown=self.unknown_facts())
        expand = partial(labels.expand, sources=sources, made=made)
        config = man.image.config.model_copy(update={"labels": expand(man.image.config.labels)})
        changes = config_changes(config, image.container_config.get("Env") or [], labels=gpu, keep_unknown=base is None)
        image = mutate.set_config(image, changes, epoch=self.ctx.epoch)
        defaults = (
            default_annotations(base.image, base.registry_name, man.name, self.ctx.epoch)
            if base is not None
            else {mt.ANNOTATION_CREATED: mutate.timestamp(self.ctx.epoch), mt.ANNOTATION_TITLE: man.name}
        )
        return mutate.set_annotations(image, {**defaults, **gpu, **expand(man.annotations)})
