"""Runtime steps, decided as the image's layers are stacked: :class:`RuntimeSteps`.

A runtime step (a ``run:`` or ``packages:`` layer) runs on the image below it, so its key is
that image, what it mounts and its definition. Like a compile step it is taken from the
cache when its key matches, else made (a build) or noted as still to come (a plan); the
walk's step decisions (:class:`StepDecider`, which :class:`~assembler.pipeline.walk.walk.Walk`
is) record it either way. What it installed into Python is checked against the lock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from assembler.cache import Cache, StepResult
from assembler.compile.steps import Mounted, runtime_key
from assembler.manifest.lock.apply import LockStatus
from assembler.manifest.schema import model as m
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline import graph
from assembler.pipeline.graph import RuntimeStep, StepReport
from assembler.pipeline.image.installed import check_installed
from assembler.pipeline.layers.placed import Placed
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.walk.modes import Made, RuntimeJob
from assembler.pipeline.walk.walk import Decision


class StepDecider(Protocol):
    """What the walk answers of a step, either kind (:class:`~assembler.pipeline.walk.walk.Walk`)."""

    def artifact(self, ref: str) -> Layer | None: ...

    def step_result(self, key: str, what: str) -> StepResult | None: ...

    def decide(self, name: str, key: str, hit: StepResult | None, report: Callable[..., StepReport]) -> Decision: ...

    def record_step(self, report: StepReport) -> StepReport: ...

    def record_made(self, key: str, result: StepResult, on: Iterable[str]) -> None: ...

    def built(self, report: StepReport, seconds: float) -> None: ...


@dataclass(frozen=True)
class RuntimeSteps:
    """The runtime steps of one walk's image (see the module's doc)."""

    steps: StepDecider
    man: m.Manifest
    defs: graph.Definitions
    tool: Callable[[], str]  # buildah's version (part of each key)
    make: Callable[[RuntimeJob], Made[Layer] | None]  # the walk's mode: made (a build) or None (a plan)
    lock: LockStatus | None
    cache: Cache
    report: Reporter
    epoch: int

    def layer(self, rs: RuntimeStep, image: Image | None, *, chain: str, below: Sequence[str]) -> Placed:
        """The layer of ``rs`` on ``image`` (None: not known yet), the image defined by
        ``chain`` and built from the steps ``below``: from the cache when its key matches,
        else made (a build) or still to come (a plan, or ``image`` not known)."""
        steps = self.steps
        mounted = {ref: steps.artifact(ref) for ref in rs.mounts}
        depends = (
            f"base:{self.man.image.base}",
            *dict.fromkeys([*below, *(f"step:{r.partition('.')[0]}" for r in rs.mounts)]),
        )
        report = partial(
            StepReport,
            rs.name,
            "runtime",
            seconds=0.0,
            definition=self.defs.runtime(rs.definition, chain),
            depends_on=depends,
        )
        if image is None or any(b is None for b in mounted.values()):
            steps.record_step(report(state="will-run", key=None, reason="the image below is not built yet"))
            return Placed([], rs.what, "will-build")
        known = {r: b for r, b in mounted.items() if b is not None}
        mounts = {r: b.diff_id for r, b in known.items()}
        definition = {**rs.definition, "secrets": list(rs.secrets)}
        key = runtime_key(definition, parent=image, mounts=mounts, tool=self.tool(), epoch=self.epoch)
        hit = steps.step_result(key, rs.name)
        decision = steps.decide(rs.name, key, hit if hit is not None and hit.layer is not None else None, report)
        if decision.taken is not None and decision.taken.layer is not None:
            blob = decision.taken.layer
            self._check_installed(rs, blob)
            return Placed([(blob, rs.what)], rs.what, "cached")
        will_run = report(state="will-run", key=key, reason=decision.reason)
        mounted_at = [Mounted(r, b, graph.artifact_spec(self.man, r).to) for r, b in known.items()]
        made = self.make(RuntimeJob(rs, key, image, known, mounted_at))
        if made is None:
            steps.record_step(will_run)
            return Placed([], rs.what, "will-build")
        on = [*image.diff_ids, *(b.diff_id for b in known.values())]  # what it is built on
        steps.record_made(key, StepResult(rs.name, layer=made.made), on)
        steps.built(will_run, made.seconds)
        self._check_installed(rs, made.made)
        return Placed([(made.made, rs.what)], rs.what, "built")

    def _check_installed(self, rs: RuntimeStep, blob: Layer) -> None:
        """What the step installed into Python against its locked pins, where a lock is used."""
        status = self.lock
        if status is None or rs.packages or (status.state in ("none", "missing") and not status.locked):
            return
        for line in check_installed(rs.name, rs.env, self.cache, blob.diff_id, locked=status.locked):
            self.report(Event("warning", {"text": line}))
