"""``assemble lock``: every Python set of every variant resolved into the lock, and the
lock applied to the variants a build or plan loads.

A set already in the lock keeps its pins (resolving again moves nothing) unless
``--upgrade`` or ``--upgrade-package NAME`` asks; a changed set is resolved with the pins
its place had as preferences, so a bump moves what it must and no more (as ``uv lock``
and ``cargo update -p`` do). Sets that only an unreachable index serves are kept in the
lock as *unresolved*, with the index and why; a retry resolves them when it can.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from assembler.oci.descriptor import Platform
from assembler.pipeline.variants import Variant
from assembler.proc import Runner
from assembler.spec.lockfile import Entry, Lock, apply_lock, pins_in, read_lock, write_lock
from assembler.spec.lockpins import Pin, floating
from assembler.spec.setuses import SetUse, set_uses, used_steps
from assembler.transports.common import RegistryOptions
from assembler.transports.pins import base_digest, git_commit
from assembler.transports.pyresolve import resolve


@dataclass(frozen=True)
class Locked:
    """What ``assemble lock`` did to one set of one variant."""

    variant: str
    where: str
    key: str
    state: str  # kept | resolved | unresolved
    pins: int
    why: str = ""


def platform_of(variant: Variant) -> str:
    return str(variant.platform or Platform.parse(variant.loaded.manifest.platform))


def lock_name(variant: Variant, sets: Mapping[str, str]) -> str:
    """A variant's name in the lock: its name, and the ``--set``s it was locked with."""
    return " ".join([variant.name, *(f"{k}={v}" for k, v in sorted(sets.items()))])


def _pin_count(entry: Entry) -> int:
    return len(entry.constraints())


def lock_variants(
    variants: Sequence[Variant],
    *,
    path: Path,
    sets: Mapping[str, str],
    runner: Runner,
    upgrade: bool = False,
    upgrade_packages: Sequence[str] = (),
    tls_verify: bool = True,
) -> list[Locked]:
    """Resolve every set of ``variants`` into the lock at ``path`` (kept entries stay)."""
    manifest_name = variants[0].loaded.path.name
    lock = read_lock(path) if path.is_file() else Lock(manifest_name)
    old = Lock(lock.manifest, dict(lock.sets), {k: dict(v) for k, v in lock.variants.items()}, dict(lock.pins))
    pinned_now: dict[str, Pin] = {}
    lock.manifest = manifest_name
    done: dict[str, tuple[Entry, str]] = {}
    report: list[Locked] = []
    with tempfile.TemporaryDirectory(prefix="assemble-lock-") as tmp:
        for variant in variants:
            name = lock_name(variant, sets)
            entries: dict[str, str] = {}
            for where, (key, want) in floating(
                variant.loaded.manifest, platform_of(variant), used_steps(variant.loaded.manifest)
            ).items():
                entries[where] = key
                if key not in pinned_now:  # once a run: a kept pin stays unless --upgrade
                    prior = old.pins.get(key)
                    keep = prior is not None and prior.value is not None and not upgrade
                    pinned_now[key] = prior if keep and prior else _pin(want, runner, tls_verify)
                pin = lock.pins[key] = pinned_now[key]
                report.append(
                    Locked(
                        name, where, key, "pinned" if pin.value else "unresolved", 0, pin.unresolved or pin.value or ""
                    )
                )
            # Lazily: each set is in the lock before the next (a layer above) is made against it.
            for use in set_uses(variant.loaded.manifest, platform_of(variant), pins_in(lock)):
                entries[use.where] = use.key
                entry, state = done.get(use.key) or _resolved(use, old, name, tmp, runner, upgrade, upgrade_packages)
                done[use.key] = (entry, state)
                lock.sets[use.key] = entry
                state = "unresolved" if entry.pins is None else state
                report.append(Locked(name, use.where, use.key, state, _pin_count(entry), entry.unresolved or ""))
            lock.variants[name] = entries
    lock.collect()
    if lock.sets or lock.pins or path.is_file():  # a manifest with nothing floating needs no lock
        write_lock(path, lock)
    return report


def _resolved(
    use: SetUse, old: Lock, name: str, tmp: str, runner: Runner, upgrade: bool, upgrade_packages: Sequence[str]
) -> tuple[Entry, str]:
    """A set's entry: kept from the lock (unless it is to move), else resolved by uv now."""
    kept = old.sets.get(use.key)
    names = {n.split("==")[0] for n in kept.constraints()} if kept else set()
    moving = upgrade or any(p.lower().replace("_", "-") in names for p in upgrade_packages)
    if kept is not None and kept.pins is not None and not moving:
        return kept, "kept"
    previous = _previous_pins(old, name, use.where, kept)
    got = resolve(
        use.definition,
        runner=runner,
        work=Path(tempfile.mkdtemp(dir=tmp)),
        prefer=previous,
        upgrade=upgrade,
        upgrade_packages=upgrade_packages,
    )
    return Entry(use.definition, got.pins, got.unresolved), "resolved"


def _pin(want: Pin, runner: Runner, tls_verify: bool) -> Pin:
    """A base's digest or a git ref's commit, now (or why not)."""
    if want.kind == "base":
        value, why = base_digest(want.what, options=RegistryOptions(tls_verify=tls_verify))
    else:
        value, why = git_commit(want.what, want.ref, runner=runner)
    return replace(want, value=value, unresolved=why)


def _previous_pins(old: Lock, variant: str, where: str, kept: Entry | None) -> str | None:
    """The pins this place had before (the set changed, or is upgraded): uv's preferences."""
    if kept is not None and kept.pins is not None:
        return kept.pins
    key = old.variants.get(variant, {}).get(where)
    entry = old.sets.get(key) if key else None
    return entry.pins if entry is not None else None


def with_lock(
    variants: Sequence[Variant], *, path: Path | None, locked: bool, redo: str
) -> tuple[list[Variant], list[str]]:
    """The variants with the lock (``path``, else ``MANIFEST.lock`` when it exists) applied,
    and its warnings. ``locked``: a missing or stale lock is an error (exit 2)."""
    if not variants:
        return [], []
    file = path or variants[0].loaded.path.with_suffix(".lock")
    lock = read_lock(file) if file.is_file() or path is not None else None
    out: list[Variant] = []
    warnings: list[str] = []
    for variant in variants:
        loaded = variant.loaded
        manifest, status = apply_lock(
            loaded.manifest, lock, path=file, platform=platform_of(variant), locked=locked, redo=redo
        )
        warnings += [w for w in status.warnings if w not in warnings]
        out.append(replace(variant, loaded=replace(loaded, manifest=manifest, lock=status)))
    return out, warnings
