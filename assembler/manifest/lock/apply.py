"""The lock applied to a loaded manifest: each step and ``run:`` layer with sets gets the
union of their pins in ``ASSEMBLE_PYTHON_LOCK`` (part of its definition, so of its key); the
container runner hands it to pip and uv as a constraints file (``PIP_CONSTRAINT``,
``UV_CONSTRAINT``). A ``locked: true`` ``pip:`` layer gets its wheels' sha256s; bases and
git refs their digests and commits.

What the lock could not do is said, set by set: with ``--locked`` a missing or stale lock,
an environment that cannot be resolved, or a set no index served (unless
``--allow-unresolved`` names it) is an InputError (exit 2); without, each is a warning and
the set installs unlocked, as cargo uses and updates a lock without ``--locked``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler.errors import InputError
from assembler.manifest.facts.basepython import over_base
from assembler.manifest.lock.debpins import DebLocked
from assembler.manifest.lock.file import LOCK_ENV, Entry, EnvEntry, Lock
from assembler.manifest.lock.inputpins import Pin, floating, pinned
from assembler.manifest.lock.pyenvs import set_uses
from assembler.manifest.schema import model as m
from assembler.manifest.schema.pysets import as_of_rule
from assembler.manifest.schema.setuses import SetUse, layer_name, plain_pin, set_key, used_steps
from assembler.manifest.text.urls import redacted, scrubbed


@dataclass(frozen=True)
class LockStatus:
    """What a lock did for one variant: for ``plan`` and the warnings."""

    file: str
    state: str  # fresh | stale | missing | none (no sets)
    sets: Mapping[str, Mapping[str, str]]  # where -> {key, state, why}
    warnings: tuple[str, ...] = ()
    locked: bool = False  # --locked: what a step installs unlocked fails the build
    debian: Mapping[str, DebLocked] = field(default_factory=dict)  # apt:WHERE -> the packages it installs

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "state": self.state, "sets": {k: dict(v) for k, v in self.sets.items()}}


class LayerRefused(InputError):
    """What the lock gives the image's ``index``-th layer does not make it (its kind's
    :meth:`~assembler.manifest.schema.prebuilt.When.with_lock` said why): the caller names
    the layer's file and line."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message, hint="write the lock anew (assemble lock MANIFEST), or fix the layer")
        self.index = index


@dataclass(frozen=True)
class Applying:
    """How a lock is applied: the file, ``--locked``, the sets ``--allow-unresolved`` names,
    and the ``assemble lock`` command that brings the lock up to date (for the hints)."""

    path: Path
    locked: bool
    redo: str
    allow_unresolved: Collection[str] = ()

    def allows(self, where: str) -> bool:
        return where in self.allow_unresolved or where.split(":")[-1] in self.allow_unresolved


def apply_lock(
    manifest: m.Manifest, lock: Lock | None, *, platform: str, how: Applying
) -> tuple[m.Manifest, LockStatus]:
    """The manifest with each step's and layer's locked pins in its env (``LOCK_ENV``), and
    what the lock did. InputError as the module says."""
    uses = set_uses(manifest, platform)
    floats = floating(manifest, platform, used_steps(manifest))
    if not uses and not floats:
        return manifest, LockStatus(str(how.path), "none", {}, locked=how.locked)
    entries, moved = _entries(uses, lock)
    _check_locked_wheels(uses, lock, entries, how)
    if lock is None and how.locked:
        raise InputError(f"--locked: no lock {how.path}", hint=f"write it: {how.redo}")
    states: dict[str, dict[str, str]] = {}
    values, warnings = _pin_states(floats, lock, states, how)
    warnings += _set_states(manifest, uses, lock, entries, moved, states, how)
    stale = any(s["state"] in ("not-locked", "stale") for s in states.values())
    if stale and not how.locked and lock is not None:
        warnings.insert(
            0,
            f"lock {how.path} is stale: a set it lacks installs unlocked (or with the pins it had, where only "
            f"another set of its environment changed); bring it up to date: {how.redo}",
        )
    state = "missing" if lock is None else "stale" if stale else "fresh"
    status = LockStatus(str(how.path), state, states, tuple(warnings), how.locked)
    if lock is None:
        return manifest, status
    return pinned(_with_pins(manifest, entries, uses), values), status


def _entries(uses: Sequence[SetUse], lock: Lock | None) -> tuple[dict[str, Entry], set[str]]:
    """Each set's entry by its key; where the lock lacks it because its environment changed
    (another set of it did) and the set itself did not, the pins it had, when the lock has
    one slice for it (a vLLM bump keeps torch's layer as it was). The keys so found."""
    found: dict[str, Entry] = {}
    moved: set[str] = set()
    if lock is None:
        return found, moved
    by_own: dict[str, list[Entry]] | None = None
    for use in uses:
        entry = lock.sets.get(use.key)
        if entry is not None:
            found[use.key] = entry
            continue
        if by_own is None:
            by_own = {}
            for other in lock.sets.values():
                if other.pins is not None and not other.unresolved:
                    by_own.setdefault(_own_key(other.definition), []).append(other)
        had = by_own.get(_own_key(use.definition), [])
        if had and len({e.pins for e in had}) == 1:
            found[use.key] = had[0]
            moved.add(use.key)
    return found, moved


def _own_key(definition: Mapping[str, object]) -> str:
    return set_key({k: v for k, v in definition.items() if k != "environment"})


def _pin_states(
    floats: Mapping[str, tuple[str, Pin]], lock: Lock | None, states: dict[str, dict[str, str]], how: Applying
) -> tuple[dict[str, str], list[str]]:
    """Each floating input's state into ``states``; (where -> the value the lock pins it to,
    a warning for each the lock could not pin). InputError under ``locked`` for one it lacks."""
    values: dict[str, str] = {}
    warnings: list[str] = []
    for where, (key, want) in floats.items():
        pin = lock.pins.get(key) if lock is not None else None
        if pin is None:
            if how.locked:
                raise InputError(
                    f"--locked: lock {how.path} is stale: {where} ({redacted(want.what)} {want.ref}) is not in it",
                    hint=f"bring it up to date: {how.redo}",
                )
            states[where] = {"key": key, "state": "not-locked"}
        elif pin.value is None:
            states[where] = {"key": key, "state": "unresolved", "why": pin.unresolved or ""}
            if how.locked:
                warnings.append(
                    f"{where} ({redacted(want.what)}{' ' + want.ref if want.ref else ''}) is not pinned by the lock: "
                    f"{pin.unresolved or 'not resolved'}"
                )
        else:
            states[where] = {"key": key, "state": "locked", "value": pin.value}
            values[where] = pin.value
    return values, warnings


def _set_states(
    manifest: m.Manifest,
    uses: Sequence[SetUse],
    lock: Lock | None,
    entries: Mapping[str, Entry],
    moved: set[str],
    states: dict[str, dict[str, str]],
    how: Applying,
) -> list[str]:
    """Each Python set's state into ``states``; the warnings. InputError under ``locked`` for a
    set the lock lacks, an environment it could not resolve or date, a set no index served, a
    pin over what the base holds."""
    warnings: list[str] = []
    for use in uses:
        entry = entries.get(use.key)
        env = lock.environments.get(use.environment) if lock is not None else None
        if entry is None or use.key in moved:
            if how.locked:
                reqs = scrubbed(" ".join(sorted(use.pyset.requirements)))
                raise InputError(
                    f"--locked: lock {how.path} is stale: python set {use.where} ({reqs}) is not in it",
                    hint=f"bring it up to date: {how.redo}",
                )
            states[use.where] = {"key": use.key, "state": "stale" if entry is not None else "not-locked"}
            continue
        state, warning = _entry_state(manifest, use, uses, entry, env, how)
        states[use.where] = {"key": use.key, **state}
        if env is not None and env.resolved_as_of and not env.error:
            rule = env.definition.get("as_of")
            states[use.where]["as_of"] = (
                f"{env.resolved_as_of} ({as_of_rule(rule if isinstance(rule, Mapping) else None, env.resolved_as_of)})"
            )
        if warning is not None and warning not in warnings:
            warnings.append(warning)
    return warnings


def _entry_state(
    manifest: m.Manifest, use: SetUse, uses: Sequence[SetUse], entry: Entry, env: EnvEntry | None, how: Applying
) -> tuple[dict[str, str], str | None]:
    """A set the lock holds: its state and the warning; InputError under ``locked`` for what
    the lock could not do for it."""
    if env is not None and env.error:
        if how.locked:
            raise InputError(env.error, hint="fix the manifest's sets (force: true where upstream installs over it)")
        return {"state": "unresolvable", "why": env.error}, env.error
    if env is not None and env.resolved_as_of is None:
        why = _undated(use, uses, how)
        if how.locked:
            raise InputError(f"--locked: {why}", hint=f"resolve it as of its releases' day: {how.redo}")
        return {"state": "undated", "why": why}, why
    if entry.pins is None or entry.unresolved is not None:
        why = entry.unresolved or "not resolved"
        if how.locked and not how.allows(use.where):
            raise InputError(
                f"--locked: python set {use.where} could not be locked: {why}",
                hint=f"install it unlocked with --allow-unresolved {use.where}, or lock it where the index answers",
            )
        return {
            "state": "unresolved",
            "why": why,
        }, f"python set {use.where} could not be locked: {why}: installed unlocked"
    over = over_base(manifest, use, entry.constraints())
    if over is not None:
        if how.locked:
            raise InputError(over, hint=_OVER_BASE)
        return {"state": "over-base", "why": over}, f"{over}; {_OVER_BASE}"
    return {"state": "stand-in" if entry.stand_in else "locked"}, None


_OVER_BASE = (
    "declare what the base holds in the set's provided: (left to the base), or force: true where the "
    "step installs over it on purpose, then lock again"
)


def _undated(use: SetUse, uses: Sequence[SetUse], how: Applying) -> str:
    """Why a set whose environment the lock resolved with no date is not as upstream built it:
    the releases its environment names exactly, and what it leaves floating."""
    exact: set[str] = set()
    loose: set[str] = set()
    for other in uses:
        if other.environment == use.environment:
            for req in other.pyset.requirements:
                (exact if "==" in req else loose).add(scrubbed(req.strip()))
    named = f" ({', '.join(sorted(exact)[:4])}{', ...' if len(exact) > 4 else ''})" if exact else ""
    floats = f": what it leaves floating ({', '.join(sorted(loose)[:6])}) may be years newer" if loose else ""
    return (
        f"lock {how.path} resolved the environment of python set {use.where} as of the day it was locked, "
        f"not as of the releases it names{named}{floats}"
    )


def _check_locked_wheels(
    uses: Sequence[SetUse], lock: Lock | None, entries: Mapping[str, Entry], how: Applying
) -> None:
    """A ``pip:`` layer with ``locked: true`` has no hashes but the lock's: without them it
    cannot be planned or built, ``--locked`` or not."""
    for use in uses:
        if not use.where.endswith(":wheels"):
            continue
        entry = entries.get(use.key)
        env = lock.environments.get(use.environment) if lock is not None else None
        if entry is None or entry.pins is None:
            why = f" ({entry.unresolved})" if entry is not None and entry.unresolved else ""
            if env is not None and env.error:
                raise InputError(env.error, hint="fix the manifest's layers, then lock again")
            raise InputError(
                f"pip layer {use.where.rsplit(':', 1)[0]} takes its hashes from the lock, and "
                f"{how.path.name} has none for {scrubbed(' '.join(use.pyset.requirements))}{why}",
                hint=f"write them: {how.redo}",
            )


def _pins_of(uses: Sequence[SetUse], entries: Mapping[str, Entry]) -> str | None:
    """One constraints file for a step or layer: its sets' pins. Sets of one environment are
    slices of one resolution and agree; where a step installs into two environments (a
    venv, and a ``--target`` folder) whose pins of a name differ, the file leaves the name
    out: each environment's own commands install it as their exact requirements say. A set
    with ``require_hashes`` gives its pins with their sha256s (``name==1.0 --hash=...``)."""
    merged: dict[str, set[str]] = {}
    hashed: dict[str, str] = {}
    for use in uses:
        entry = entries.get(use.key)
        if entry is None or entry.pins is None:
            continue
        hashes = entry.hashes() if use.pyset.require_hashes else {}
        for name, pin in entry.constraints().items():
            merged.setdefault(name, set()).add(pin)
            if hashes.get(pin):
                hashed[pin] = " ".join([pin, *hashes[pin]])
    one = sorted(next(iter(pins)) for pins in merged.values() if len(pins) == 1)
    return "".join(hashed.get(pin, pin) + "\n" for pin in one) or None


def _with_pins(manifest: m.Manifest, entries: Mapping[str, Entry], uses: Sequence[SetUse]) -> m.Manifest:
    by_owner: dict[str, list[SetUse]] = {}
    for use in uses:
        by_owner.setdefault(use.where.rsplit(":", 1)[0], []).append(use)
    steps = []
    for step in manifest.compile:
        pins = _pins_of(by_owner.get(step.name, []), entries)
        steps.append(step.model_copy(update={"env": {**step.env, LOCK_ENV: pins}}) if pins else step)
    layers = []
    for i, layer in enumerate(manifest.image.layers):
        try:
            layers.append(layer.with_lock(_LayerLock(by_owner.get(layer_name(layer, i), []), entries)))
        except ValueError as e:
            raise LayerRefused(i, str(e)) from None
    image = manifest.image.model_copy(update={"layers": layers})
    return manifest.model_copy(update={"compile": steps, "image": image})


@dataclass(frozen=True)
class _LayerLock:
    """The lock's answer for one layer: the pins of its sets' uses (the layer's kind says
    where making it reads them, :meth:`~assembler.manifest.schema.prebuilt.When.with_lock`)."""

    uses: Sequence[SetUse]
    entries: Mapping[str, Entry]

    def pins(self) -> str | None:
        return _pins_of(self.uses, self.entries)

    def hashed(self, texts: Sequence[str]) -> list[str]:
        (use,) = self.uses  # a layer of wheels is one set of the lock
        return _hashed(texts, self.entries[use.key], use.where)

    def every(self) -> list[str]:
        (use,) = self.uses
        entry = self.entries[use.key]
        if entry.unresolved or entry.stand_in:
            left = entry.unresolved or f"{', '.join(entry.stand_in)} pinned from a stand-in's metadata"
            raise ValueError(f"the lock's resolution of its requirements is not whole ({left})")
        direct = [f"{name} @ {url}" for name, how, url, _ in entry.pinned() if how == "@"]
        if direct:
            raise ValueError(f"the lock pins {direct[0]}, a direct URL: a layer of wheels takes name==version pins")
        pins = [f"{name}=={version}" for name, _, version, _ in entry.pinned()]
        missing = [r for r in use.pyset.requirements if plain_pin(r) not in pins]
        if missing or not pins:
            raise ValueError(f"the lock's pins for it lack {', '.join(missing) or 'every wheel'}")
        return _hashed(pins, entry, use.where)


def _hashed(texts: Sequence[str], entry: Entry, where: str) -> list[str]:
    hashes = entry.hashes()
    out = []
    for text in texts:
        pin = plain_pin(text)
        if not hashes.get(pin):
            raise InputError(
                f"pip layer {where}: the lock's pins for it have no hashes for {pin}",
                hint="write the lock anew: assemble lock MANIFEST --upgrade-package NAME",
            )
        out.append(f"{pin} {' '.join(hashes[pin])}")
    return out
