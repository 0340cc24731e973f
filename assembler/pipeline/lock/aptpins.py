"""The Debian packages of a manifest in its lock: what each bootstrapped base (``bases.NAME``)
and each ``packages:`` layer on one installs, resolved by ``assemble lock`` (:func:`lock_debian`)
and handed to the build that loads the lock (:func:`apply_debian`).

Each is found in the lock by a key of what the manifest says decides it (a base: its
``mirror:`` if it names one, suite, variant, packages, components, keyring, architecture; a
layer: its packages and the keys of what is installed below it), so a changed package list
makes the lock stale for it, as a changed Python set does. The mirror a base without
``mirror:`` was resolved from (this host's, else Debian's) is recorded beside the packages,
not in the key: a machine with another mirror builds the lock from that one, as long as it
serves the same files. The build of a locked base or layer installs exactly the lock's packages
and refuses, naming them, those the mirror no longer serves as locked
(:mod:`assembler.transports.aptlock`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from assembler.errors import AssemblerError, InputError
from assembler.oci.descriptor import Platform
from assembler.pipeline import graph
from assembler.pipeline.lock.lockreport import Asked, Locked
from assembler.proc import Runner
from assembler.spec import model as m
from assembler.spec.debs import Deb, DebEntry, DebLocked
from assembler.spec.lockfile import Lock
from assembler.spec.setuses import set_key
from assembler.transports import aptlock
from assembler.transports import bootstrap as boot

PREFIX = "apt:"  # a Debian package set's ``where`` in the lock and in plan: apt:bases.NAME, apt:packages-1


@dataclass(frozen=True)
class DebUse:
    """One bootstrapped base, or one ``packages:`` layer on one, of a variant."""

    where: str
    definition: Mapping[str, object]
    packages: tuple[str, ...]  # what it asks for
    mirror: str  # the mirror it installs from (a layer: its base's)
    below: tuple[str, ...] = ()  # the wheres installed below a layer: its base first
    base: str = ""  # a layer's base (the bootstrapped one's where)
    spec: boot.BootstrapSpec | None = None  # a base's

    @property
    def key(self) -> str:
        return set_key(dict(self.definition))


def debian_uses(manifest: m.Manifest, platform: Platform) -> dict[str, DebUse]:
    """where -> use of every bootstrapped base the image or its used steps start from, of
    each used compile step's ``packages:`` on such a base, and of every ``packages:`` layer
    on the image's base where that is bootstrapped; bases first."""
    from assembler.spec.setuses import used_steps

    arch = boot.debian_arch(platform)
    steps = [s for s in manifest.compile if s.name in used_steps(manifest)]
    wanted = {manifest.image.base, *(s.base for s in steps if s.base)}
    mirrors = boot.bootstrap_mirrors(manifest)
    out: dict[str, DebUse] = {}
    for name, spec in manifest.bases.items():
        if not isinstance(spec, m.BootstrapBase) or name not in wanted:
            continue
        b = spec.bootstrap
        bspec = boot.BootstrapSpec(b.suite, b.variant, tuple(b.packages), b.mirror, tuple(b.components), b.keyring)
        definition = {
            "kind": "bootstrap",
            "mirror": b.mirror,
            "suite": b.suite,
            "components": list(b.components),
            "variant": b.variant,
            "packages": sorted(b.packages),
            "keyring": b.keyring,
            "arch": arch,
        }
        where = f"{PREFIX}bases.{name}"
        out[where] = DebUse(where, definition, tuple(sorted(b.packages)), mirrors[name], spec=bspec)
    for step in steps:
        base = f"{PREFIX}bases.{step.base}"
        if step.packages and base in out:
            where = f"{PREFIX}{step.name}"
            names = tuple(step.packages)
            definition = {"kind": "packages", "packages": list(names), "below": [out[base].key]}
            out[where] = DebUse(where, definition, names, out[base].mirror, (base,), base=base)
    base = f"{PREFIX}bases.{manifest.image.base}"
    if base in out:
        below = [base]
        for i, layer in enumerate(manifest.image.layers):
            if isinstance(layer, m.PackagesLayer):
                names = tuple(graph.packages(manifest, layer.packages))
                where = f"{PREFIX}{layer.runtime_name(i)}"
                definition = {"kind": "packages", "packages": list(names), "below": [out[w].key for w in below]}
                out[where] = DebUse(where, definition, names, out[base].mirror, tuple(below), base=base)
                below.append(where)
    return out


def pinned_steps(manifest: m.Manifest, debs: Mapping[str, DebLocked]) -> m.Manifest:
    """The manifest with each compile step's ``packages:`` the lock installs given as
    ``name=version`` of every package it locked (apt-get installs exactly those, or names
    the one the mirror no longer serves): a step's packages are its build environment,
    never shipped, so their versions are what is pinned."""
    steps = []
    for step in manifest.compile:
        locked = debs.get(f"{PREFIX}{step.name}")
        if locked is not None and step.packages:
            step = step.model_copy(update={"packages": [f"{d.name}={d.version}" for d in locked.debs]})
        steps.append(step)
    return manifest.model_copy(update={"compile": steps})


def sources_line(use: DebUse) -> str:
    d = use.definition
    components = " ".join(str(c) for c in d["components"])  # type: ignore[attr-defined]
    return f"deb [trusted=yes] {use.mirror} {d['suite']} {components}"


def debs_of(entry: DebEntry) -> list[Deb]:
    return [Deb.parse(line) for line in entry.installed]


class DebLocker:
    """Resolves the Debian package sets of the variants ``assemble lock`` is given, into
    ``lock``; one whose key the old lock holds is kept unless ``--upgrade`` (``--retry``
    for one that failed). A mirror's index is fetched once a run."""

    def __init__(self, old: Lock, lock: Lock, *, runner: Runner, asked: Asked, work: Path) -> None:
        self.old, self.lock, self.runner, self.asked, self.work = old, lock, runner, asked, work
        self._indexes: dict[str, tuple[list[tuple[str, str, str]], aptlock.MirrorIndex] | AssemblerError] = {}
        self._now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._resolved: set[str] = set()  # keys resolved in this run

    def lock_variant(
        self, manifest: m.Manifest, platform: Platform, name: str, entries: dict[str, str]
    ) -> list[Locked]:
        report = []
        uses = debian_uses(manifest, platform)
        for where, use in uses.items():
            key = use.key
            entries[where] = key
            prior = self.old.debian.get(key)
            keep = prior is not None and not self.asked.upgrade and (prior.error is None or not self.asked.retry)
            if key in self._resolved:
                entry = self.lock.debian[key]  # resolved this run, for another variant
            elif keep and prior is not None:
                entry = self.lock.debian[key] = prior
            else:
                entry = self.lock.debian[key] = self._resolve(use, uses)
                self._resolved.add(key)
            state = "unresolved" if entry.error else "kept" if keep else "resolved"
            source = uses[use.base] if use.base else use
            why = entry.error or f"{entry.mirror} {source.definition['suite']} of {entry.mirror_date}"
            report.append(Locked(name, where, key, state, len(entry.installed), why))
        return report

    def _resolve(self, use: DebUse, uses: Mapping[str, DebUse]) -> DebEntry:
        try:
            if use.spec is not None:
                wanted, index = self._index(use)
                debs = aptlock.locked_debs(wanted, index)
            else:
                base = uses[use.base]
                _, index = self._index(base)
                below = [d for w in use.below for d in debs_of(self._entry(uses[w]))]
                debs = aptlock.simulate_install(
                    index,
                    below,
                    use.packages,
                    arch=str(base.definition["arch"]),
                    sources=sources_line(base),
                    work=self.work / use.key[:16],
                    runner=self.runner,
                )
        except AssemblerError as e:
            lines = [line.strip() for line in e.message.splitlines() if line.strip()]
            error = " ".join(dict.fromkeys([lines[0], *lines[-2:]]))[:400] if lines else "failed"
            return DebEntry(dict(use.definition), locked_at=self._now, mirror=use.mirror, error=error)
        return DebEntry(dict(use.definition), tuple(d.line() for d in debs), self._now, index.date, use.mirror)

    def _entry(self, use: DebUse) -> DebEntry:
        entry = self.lock.debian.get(use.key)
        if entry is None or entry.error:
            raise InputError(f"{use.where} below could not be locked" + (f": {entry.error}" if entry else ""))
        return entry

    def _index(self, use: DebUse) -> tuple[list[tuple[str, str, str]], aptlock.MirrorIndex]:
        """What mmdebstrap would install for a base, and the index it read (once a run: a
        failure too, for each layer on the base)."""
        if use.key not in self._indexes:
            assert use.spec is not None
            work = self.work / f"bootstrap-{use.key[:16]}"
            work.mkdir(parents=True)
            # Unprivileged, mmdebstrap works as the user's subordinate root: it must pass
            # through the lock's private temp folder and write in its own.
            for folder in (self.work.parent, self.work):
                os.chmod(folder, 0o711)
            os.chmod(work, 0o1777)
            d = use.definition
            argv = boot.mmdebstrap_argv(use.spec, arch=str(d["arch"]), mirror=use.mirror, output=work / "out")
            env = boot.mmdebstrap_env(epoch=0, tmpdir=work)
            try:
                self._indexes[use.key] = aptlock.simulate_bootstrap(argv, env, runner=self.runner, work=work)
            except AssemblerError as e:
                self._indexes[use.key] = e
        found = self._indexes[use.key]
        if isinstance(found, AssemblerError):
            raise found
        return found


def apply_debian(
    manifest: m.Manifest, lock: Lock | None, *, platform: Platform, locked: bool, path: Path, redo: str
) -> tuple[dict[str, DebLocked], dict[str, dict[str, str]], list[str]]:
    """(where -> what the lock installs there, where -> state for plan, warnings); InputError
    under ``locked`` for a base or layer the lock lacks or could not resolve."""
    found: dict[str, DebLocked] = {}
    states: dict[str, dict[str, str]] = {}
    warnings: list[str] = []
    uses = debian_uses(manifest, platform)
    if uses and lock is None and locked:
        raise InputError(f"--locked: no lock {path}", hint=f"write it: {redo}")
    for where, use in uses.items():
        entry = lock.debian.get(use.key) if lock is not None else None
        if entry is None or entry.error:
            what = f"{where} (Debian packages {' '.join(use.packages) or use.definition.get('variant', '')})"
            why = f"could not be locked: {entry.error}" if entry is not None else "is not in it"
            if locked:
                raise InputError(f"--locked: lock {path}: {what} {why}", hint=f"bring it up to date: {redo}")
            if lock is not None:
                warnings.append(f"lock {path}: {what} {why}: installed from the mirror as it is now")
            states[where] = {"key": use.key, "state": "unresolved" if entry is not None else "not-locked"}
            continue
        debs = tuple(debs_of(entry))
        found[where] = DebLocked(where, use.key, debs, entry.locked_at, use.packages)
        source = uses[use.base].definition if use.base else use.definition
        states[where] = {
            "key": use.key,
            "state": "locked",
            "debs": str(len(debs)),
            "as_of": f"{len(debs)} packages of {entry.mirror} {source['suite']} as of {entry.mirror_date}",
        }
    return found, states, warnings
