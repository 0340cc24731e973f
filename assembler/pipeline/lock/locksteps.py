"""The steps a build made before the lock, taken for the lock's: a build after the first
``assemble lock`` whose packages did not move runs no step again.

The lock pins a compile step's ``packages:`` (``name=version`` of each package it locked:
:func:`assembler.pipeline.lock.aptpins.pinned_steps`) and names its entry in a ``packages:``
layer's definition, so both keys change with the first lock, though apt installed the
very versions the lock names: the build after it ran the demo's packages step and layer
again (issue 67). ``assemble lock`` plans the variant as built (without the lock) and with
the lock; a step the first plan finds made and the second would run is recorded under its
locked key where what it installed is exactly what the locked build installs: the lock's
packages of its base, of the ``packages:`` layers below it and its own (name, architecture
and version), nothing more, nothing less. What it installed is what dpkg's status said:
for a compile step, of its root when its artifacts were exported (a memo the export agent
writes, :func:`assembler.compile.steps.installed_memo`); for a layer, in the layer itself.
Where that is not known (a step made before this was recorded, or taken from a registry
step cache) the step runs again, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from assembler.cache import Cache
from assembler.cache.entries import StepResult
from assembler.compile.steps import installed_memo
from assembler.errors import AssemblerError
from assembler.manifest.lock.debpins import DebLocked
from assembler.manifest.lock.file import LOCK_ENV
from assembler.manifest.schema import model as m
from assembler.pipeline.graph import StepReport
from assembler.pipeline.image.installed import installed as dist_infos
from assembler.pipeline.image.installed import pinned_names
from assembler.pipeline.image.installed import unlocked as unpinned
from assembler.pipeline.lock.aptpins import PREFIX, debian_uses
from assembler.pipeline.lock.lockbases import status_of
from assembler.pipeline.runs.resolve import Plan
from assembler.pipeline.runs.run import Run

Installed = dict[tuple[str, str], str]  # (name, arch) -> version


def reuse_steps(before: Run, after: Run, plan: Callable[[Run], Plan]) -> list[str]:
    """The names of the steps of ``after`` (a variant with the lock applied) its cache
    lacked under their locked keys and now holds: those ``before`` (the variant without
    the lock, in the same cache) made, where they installed what the lock installs.
    ``plan``: a run's plan (a step whose inputs are taken is planned again)."""
    lock = after.loaded.lock
    if lock is None:
        return []
    try:
        planned = plan(before)
    except (AssemblerError, ValueError):  # not to be planned without the lock (a pip: layer's
        return []  # locked: true): so never built without it either
    made = {s.name: s.key for s in planned.steps if s.state == "cached" and s.key is not None}
    check = _Check(before, after, _wanted(after, lock.debian), planned.bases)
    taken: list[str] = []
    while True:  # each round takes at least one step, or ends
        try:
            now = plan(after)
        except (AssemblerError, ValueError):  # the build says why; the lock is written
            return taken
        # Made under both keys, to other bytes (a locked build before): what is built on
        # them is another thing, whatever its own definition.
        differs = {
            s.name
            for s in now.steps
            if s.state == "cached" and s.key and made.get(s.name, s.key) != s.key and check.other(made[s.name], s.key)
        }
        fresh = [
            s.name
            for s in now.steps
            if s.state == "will-run" and s.name not in taken and check.take(made.get(s.name), s, now.bases, differs)
        ]
        if not fresh:
            return taken
        taken += fresh


class _Check:
    """Whether a step made without the lock is what the locked build would make: the same
    definition but for what the lock pins (a compile step's packages: and the Python pins
    in its env), on the same base, and what it installed is what the lock installs."""

    def __init__(self, before: Run, after: Run, wants: Mapping[str, Installed], bases: Mapping[str, str | None]):
        self.cache = after.ctx.cache
        self.wants, self.bases = wants, bases
        self.man = after.loaded.manifest
        self.steps = ({s.name: s for s in before.loaded.manifest.compile}, {s.name: s for s in self.man.compile})

    def other(self, was: str, now: str) -> bool:
        """Whether the results under keys ``was`` and ``now`` hold other layers."""
        a, b = self.cache.step_result(was), self.cache.step_result(now)
        return a is None or b is None or sorted(x.diff_id for x in a.layers()) != sorted(x.diff_id for x in b.layers())

    def take(self, was: str | None, now: StepReport, bases: Mapping[str, str | None], differs: set[str]) -> bool:
        """Step ``now``'s result made under key ``was`` recorded under its key, where it
        is what the lock makes (``differs``: the steps made to other bytes under the lock);
        whether it was."""
        result = self.cache.step_result(was) if was is not None else None
        if was is None or result is None or now.key is None:
            return False
        if result.layer is not None:  # a packages: layer on the image's base
            base = self.man.image.base
            want = self.wants.get(now.name)
            ok = not differs and want is not None and _installed(self.cache, was, result) == want
        else:
            unlocked, locked = self.steps[0].get(now.name), self.steps[1].get(now.name)
            if unlocked is None or locked is None or {r.partition(".")[0] for r in locked.inputs} & differs:
                return False
            base = locked.base or ""
            ok = self._compile(was, result, unlocked, locked)
        if not ok or self.bases.get(base) is None or self.bases.get(base) != bases.get(base):
            return False
        self.cache.put_step_result(now.key, result, self.cache.origin(was))
        return True

    def _compile(self, was: str, result: StepResult, unlocked: m.CompileStep, locked: m.CompileStep) -> bool:
        if _bare(unlocked) != _bare(locked):
            return False  # another definition: not the lock's doing
        pins = locked.env.get(LOCK_ENV)
        apt, python = unlocked.packages != locked.packages, pins is not None and unlocked.env.get(LOCK_ENV) != pins
        if not (apt or python):
            return False  # its key moved for another reason (its inputs): not the lock's doing
        if apt:  # pinned by the lock
            want = self.wants.get(locked.name)
            if want is None or _installed(self.cache, was, result) != want:
                return False
        return not python or _python_pinned(self.cache, result, locked, pins or "")


def _bare(step: m.CompileStep) -> m.CompileStep:
    """``step`` without what a lock pins in it."""
    return step.model_copy(update={"packages": [], "env": {k: v for k, v in step.env.items() if k != LOCK_ENV}})


def _python_pinned(cache: Cache, result: StepResult, step: m.CompileStep, pins: str) -> bool:
    """Whether the step's artifacts hold every distribution its locked pins name, each at
    its pinned version, and none they do not (what a constrained pip installs then is
    what this one did). A pin its artifacts do not hold (a build tool installed outside
    them) cannot be checked: not taken."""
    dists = []
    for layer in result.artifacts.values():
        found = dist_infos(cache, layer.diff_id, anywhere=True)
        if found is None:
            return False  # its entries were not recorded
        dists += found
    if not dists or unpinned(step.name, step.env, dists):
        return False
    names = {d.name for d in dists}
    return all(name in names for name in pinned_names(pins))


def _wanted(run: Run, debian: Mapping[str, DebLocked]) -> dict[str, Installed]:
    """Step name -> what dpkg holds once it installed its packages under the lock: its
    base's packages, then those of each layer below it and its own (the later wins)."""
    out = {}
    for where, use in debian_uses(run.loaded.manifest, run.ctx.platform).items():
        chain = [*use.below, where] if use.below else []
        if not chain or any(w not in debian for w in chain):
            continue  # a base, or not locked whole
        want: Installed = {}
        for w in chain:
            want.update({(d.name, d.arch): d.version for d in debian[w].debs})
        out[where.removeprefix(PREFIX)] = want
    return out


def _installed(cache: Cache, key: str, result: StepResult) -> Installed | None:
    """What dpkg said the step under ``key`` installed (None: not known)."""
    if result.layer is not None:  # a packages: layer holds dpkg's status as it left it
        return status_of([result.layer], cache) or None
    return cache.memo_as(installed_memo(key), lambda memo: _parsed(memo["installed"])) or None


def _parsed(lines: Iterable[object]) -> Installed:
    """``name:arch=version`` lines as (name, arch) -> version; ValueError for another."""
    out: Installed = {}
    for line in lines:
        ident, eq, version = str(line).partition("=")
        name, colon, arch = ident.partition(":")
        if not (eq and colon and name and arch and version):
            raise ValueError(f"not name:arch=version: {line!r}")
        out[(name, arch)] = version
    return out
