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
from assembler.pipeline.graph import StepReport
from assembler.pipeline.lock.aptpins import PREFIX, debian_uses
from assembler.pipeline.lock.lockbases import status_of
from assembler.pipeline.runs.resolve import Plan
from assembler.pipeline.runs.run import Run
from assembler.spec.debs import DebLocked

Installed = dict[tuple[str, str], str]  # (name, arch) -> version


def reuse_steps(before: Run, after: Run, plan: Callable[[Run], Plan]) -> list[str]:
    """The names of the steps of ``after`` (a variant with the lock applied) its cache
    lacked under their locked keys and now holds: those ``before`` (the variant without
    the lock, in the same cache) made, where they installed what the lock installs.
    ``plan``: a run's plan (a step whose inputs are taken is planned again)."""
    lock = after.loaded.lock
    if lock is None or not lock.debian:
        return []
    try:
        made = {s.name: s.key for s in plan(before).steps if s.state == "cached" and s.key is not None}
    except (AssemblerError, ValueError):  # not to be planned without the lock (a pip: layer's
        return []  # locked: true): so never built without it either
    wants = _wanted(after, lock.debian)
    cache = after.ctx.cache
    taken: list[str] = []
    while True:  # each round takes at least one step, or ends
        try:
            planned = plan(after).steps
        except (AssemblerError, ValueError):  # the build says why; the lock is written
            return taken
        now = [s for s in planned if s.state == "will-run" and s.key is not None]
        fresh = [
            s.name
            for s in now
            if s.name in wants and s.name not in taken and _take(cache, made.get(s.name), s, wants[s.name])
        ]
        if not fresh:
            return taken
        taken += fresh


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


def _take(cache: Cache, was: str | None, now: StepReport, want: Installed) -> bool:
    """Step ``now``'s result made under key ``was`` recorded under its key, where it
    installed ``want``; whether it was."""
    assert now.key is not None
    result = cache.step_result(was) if was is not None else None
    if was is None or result is None or _installed(cache, was, result) != want:
        return False
    cache.put_step_result(now.key, result, cache.origin(was))
    return True


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
