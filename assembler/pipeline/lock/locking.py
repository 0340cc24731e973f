"""``assemble lock``: every Python environment of every variant resolved as one whole into
the lock (:mod:`assembler.python.env`), each set its slice; bases' digests and git
refs' commits; and the lock applied to the variants a build or plan loads.

An environment already in the lock keeps its pins (resolving again moves nothing) unless
``--upgrade`` or ``--upgrade-package NAME`` asks; a changed one is resolved with the pins
its sets had as preferences, so a bump moves what it must and no more (as ``uv lock`` and
``cargo update -p`` do). What failed for a stated reason (an environment that cannot be
resolved, an index with no stand-in, a registry that cannot be reached) is kept with its
reason and not tried again unless ``--retry`` asks: re-locking an unchanged manifest writes
the same bytes. An environment resolves as of its manifest's ``resolve_as_of`` (uv's
``--exclude-newer``); ``--upgrade`` resolves as of today, on purpose.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from assembler.errors import InputError
from assembler.manifest.lock.apply import Applying, LayerRefused, apply_lock
from assembler.manifest.lock.file import Lock, read_lock, write_lock
from assembler.manifest.lock.inputpins import Pin, floating
from assembler.manifest.lock.pyenvs import environments
from assembler.manifest.schema.setuses import used_steps
from assembler.manifest.text.urls import redacted, scrubbed
from assembler.oci.descriptor import Platform
from assembler.pipeline.lock.aptpins import DebLocker, apply_debian, pinned_steps
from assembler.pipeline.lock.heldpython import held_python
from assembler.pipeline.lock.lockinputs import base_digest, git_commit
from assembler.pipeline.lock.lockreport import Asked, Locked
from assembler.pipeline.variants import Variant
from assembler.proc import Runner
from assembler.transports.common import RegistryOptions


def platform_of(variant: Variant) -> str:
    return str(variant.platform or Platform.parse(variant.loaded.manifest.platform))


def indexes_of(variants: Sequence[Variant]) -> list[str]:
    """Every index the Python sets of ``variants`` name, as the manifest gives them (its
    credentials, a requirements file's ``${TOKEN}`` expanded): what reads again an index
    the lock names without them."""
    found = [
        index
        for variant in variants
        for env in environments(variant.loaded.manifest, platform_of(variant))
        for member in env.members
        for index in member.pyset.indexes()
    ]
    return list(dict.fromkeys(found))


def lock_name(variant: Variant, sets: Mapping[str, str]) -> str:
    """A variant's name in the lock: its name, and the ``--set``s it was locked with (those
    its matrix values already name left out)."""
    extra = [f"{k}={v}" for k, v in sorted(sets.items()) if variant.values.get(k) != v]
    return " ".join([variant.name, *extra])


def lock_variants(
    variants: Sequence[tuple[Variant, Mapping[str, str]]], *, path: Path, runner: Runner, asked: Asked
) -> list[Locked]:
    """Resolve every environment of ``variants`` (each with the ``--set``s it is locked with)
    into the lock at ``path``, and write it. Kept entries stay."""
    from assembler.pipeline.lock.lockenvs import EnvLocker  # the resolver: only when locking, never in a build

    manifest_name = variants[0][0].loaded.path.name
    old = _old_lock(path, manifest_name)
    lock = Lock(manifest_name, dict(old.sets), {k: dict(v) for k, v in old.variants.items()}, dict(old.pins))
    lock.environments = dict(old.environments)
    lock.debian = dict(old.debian)
    report: list[Locked] = []
    pinned_now: dict[str, Pin] = {}
    with tempfile.TemporaryDirectory(prefix="assemble-lock-") as tmp:
        locker = EnvLocker(old, lock, runner=runner, asked=asked, work=Path(tmp))
        debs = DebLocker(old, lock, runner=runner, asked=asked, work=Path(tmp) / "debian")
        for variant, sets in variants:
            name = lock_name(variant, sets)
            entries: dict[str, str] = {}
            report += _lock_pins(variant, name, old, lock, entries, pinned_now, runner=runner, asked=asked)
            manifest, platform = variant.loaded.manifest, platform_of(variant)
            report += debs.lock_variant(variant.loaded, Platform.parse(platform), name, entries)
            held_of = functools.partial(held_python, manifest, variant.loaded.path.parent, platform=platform)
            for env in environments(manifest, platform):
                report += locker.lock_env(env, name, entries, held_of)
            lock.variants[name] = entries
    lock.collect()
    if lock.sets or lock.pins or lock.debian or path.is_file():  # a manifest with nothing floating needs no lock
        write_lock(path, lock)
    return report


def _old_lock(path: Path, manifest_name: str) -> Lock:
    """The lock as it is (one of a format it replaces, ``KEPT_VERSIONS``, read to be written
    anew with its pins); an empty one where there is none, or one of a format it cannot read
    (written anew: nothing of it is kept)."""
    if not path.is_file():
        return Lock(manifest_name)
    try:
        return read_lock(path, older=True)
    except InputError as e:
        if "lock_version" not in e.message:
            raise
        return Lock(manifest_name)


def _lock_pins(
    variant: Variant,
    name: str,
    old: Lock,
    lock: Lock,
    entries: dict[str, str],
    pinned_now: dict[str, Pin],
    *,
    runner: Runner,
    asked: Asked,
) -> list[Locked]:
    """Each base's digest and git ref's commit of ``variant`` into ``lock`` (kept, failed
    ones too, unless ``--upgrade`` or ``--retry``)."""
    report = []
    manifest, platform = variant.loaded.manifest, platform_of(variant)
    for where, (key, want) in floating(manifest, platform, used_steps(manifest)).items():
        entries[where] = key
        if key not in pinned_now:  # once a run
            prior = old.pins.get(key)
            keep = prior is not None and not asked.upgrade and (prior.value is not None or not asked.retry)
            pinned_now[key] = prior if keep and prior else _pin(want, platform, runner, asked.tls_verify)
        pin = lock.pins[key] = pinned_now[key]
        state = "pinned" if pin.value else "unresolved"
        report.append(Locked(name, where, key, state, 0, pin.unresolved or pin.value or ""))
    return report


def _pin(want: Pin, platform: str, runner: Runner, tls_verify: bool) -> Pin:
    """A base's digest (its platform's manifest) or a git ref's commit, now (or why not),
    as the lock holds it: its URL and why without credentials (``want`` has them, to fetch)."""
    if want.kind == "base":
        value, why = base_digest(want.what, options=RegistryOptions(tls_verify=tls_verify), platform=platform)
    else:
        value, why = git_commit(want.what, want.ref, runner=runner)
    return replace(want, what=redacted(want.what), value=value, unresolved=scrubbed(why) if why else why)


def with_lock(
    variants: Sequence[Variant],
    *,
    path: Path | None,
    locked: bool,
    redo: str,
    allow_unresolved: Sequence[str] = (),
) -> tuple[list[Variant], list[str]]:
    """The variants with the lock (``path``, else ``MANIFEST.lock`` when it exists) applied,
    and its warnings. ``locked``: what the lock cannot vouch for is an error (exit 2)."""
    if not variants:
        return [], []
    file = path or variants[0].loaded.path.with_suffix(".lock")
    warnings: list[str] = []
    try:
        lock = read_lock(file) if file.is_file() or path is not None else None
    except InputError as e:
        if locked or "lock_version" not in e.message:
            raise
        lock = None  # a lock of an older format: as if there were none, and said
        warnings.append(f"{e.message}: its sets install unlocked; write it anew: {redo}")
    how = Applying(file, locked, redo, frozenset(allow_unresolved))
    out: list[Variant] = []
    for variant in variants:
        loaded = variant.loaded
        platform = platform_of(variant)
        try:
            manifest, status = apply_lock(loaded.manifest, lock, platform=platform, how=how)
        except LayerRefused as e:  # at the layer's file and line
            raise loaded.error(loaded.layer_paths[e.index], e.message, hint=e.hint) from None
        debs, states, deb_warnings = apply_debian(
            loaded, lock, platform=Platform.parse(platform), locked=locked, path=file, redo=redo
        )
        if states:
            state = status.state if status.state != "none" else ("missing" if lock is None else "fresh")
            if state == "fresh" and any(s["state"] == "not-locked" for s in states.values()):
                state = "stale"
            manifest = pinned_steps(manifest, debs)
            status = replace(
                status,
                state=state,
                sets={**status.sets, **states},
                debian=debs,
                warnings=status.warnings + tuple(deb_warnings),
            )
        warnings += [w for w in status.warnings if w not in warnings]
        out.append(replace(variant, loaded=replace(loaded, manifest=manifest, lock=status)))
    return out, warnings
