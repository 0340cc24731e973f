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
(:mod:`assembler.debian.aptlock`). Packages apt refuses (a name the suite does not have)
are recorded with apt's reason (:mod:`assembler.debian.aptreasons`): the lock exits 2,
and a plan or build of that very list refuses it before any bootstrap, at the manifest's line.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from assembler.debian import aptlock, aptreasons
from assembler.debian import bootstrap as boot
from assembler.errors import AptRefused, AssemblerError, InputError
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.lock.debpins import Deb, DebEntry, DebLocked
from assembler.manifest.lock.file import Lock
from assembler.manifest.schema import model as m
from assembler.manifest.schema.setuses import set_key
from assembler.oci.descriptor import Platform
from assembler.pipeline import graph
from assembler.pipeline.image.bases import base_platform, bootstrap_spec
from assembler.pipeline.lock.lockreport import Asked, Locked
from assembler.proc import Runner

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
    field: tuple[str | int, ...] = ()  # where the manifest asks for its packages (its errors say)

    @property
    def key(self) -> str:
        return set_key(dict(self.definition))


def debian_uses(manifest: m.Manifest, platform: Platform) -> dict[str, DebUse]:
    """where -> use of every bootstrapped base the image or its used steps start from, of
    each used compile step's ``packages:`` on such a base, and of every ``packages:`` layer
    on the image's base where that is bootstrapped; bases first."""
    from assembler.manifest.schema.setuses import used_steps

    steps = [s for s in manifest.compile if s.name in used_steps(manifest)]
    wanted = {manifest.image.base, *(s.base for s in steps if s.base)}
    mirrors = boot.bootstrap_mirrors(manifest)
    out: dict[str, DebUse] = {}
    for name, spec in manifest.bases.items():
        if not isinstance(spec, m.BootstrapBase) or name not in wanted:
            continue
        b = spec.bootstrap
        bspec, _ = bootstrap_spec(spec)
        arch = boot.debian_arch(base_platform(spec, platform))  # a base of its own platform: for that one
        definition = {
            "kind": "bootstrap",
            "mirror": b.mirror,
            "suite": b.suite,
            "components": list(b.components),
            "variant": b.variant,
            "packages": sorted(b.packages),
            "keyring": b.keyring,
            **({"architectures": list(b.architectures)} if b.architectures else {}),
            "arch": arch,
        }
        where = f"{PREFIX}bases.{name}"
        field: tuple[str | int, ...] = ("bases", name, "bootstrap", "packages")
        out[where] = DebUse(where, definition, tuple(sorted(b.packages)), mirrors[name], spec=bspec, field=field)
    for step in steps:
        base = f"{PREFIX}bases.{step.base}"
        if step.packages and base in out:
            where = f"{PREFIX}{step.name}"
            names = tuple(step.packages)
            definition = {"kind": "packages", "packages": list(names), "below": [out[base].key]}
            field = ("compile", [s.name for s in manifest.compile].index(step.name), "packages")
            out[where] = DebUse(where, definition, names, out[base].mirror, (base,), base=base, field=field)
    base = f"{PREFIX}bases.{manifest.image.base}"
    if base in out:
        below = [base]
        for i, layer in enumerate(manifest.image.layers):
            if (asked := layer.apt_packages()) is not None:
                names = tuple(graph.packages(manifest, asked))
                where = f"{PREFIX}{layer.runtime_name(i)}"
                definition = {"kind": "packages", "packages": list(names), "below": [out[w].key for w in below]}
                field = ("image", "layers", i, "packages")
                out[where] = DebUse(where, definition, names, out[base].mirror, tuple(below), base=base, field=field)
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

    def lock_variant(self, loaded: Loaded, platform: Platform, name: str, entries: dict[str, str]) -> list[Locked]:
        """Each Debian package set of the variant ``name`` (``loaded``) resolved, or kept; what
        failed is reported at the manifest's field that asks for the packages, ``unresolvable``
        where apt refused them (the manifest is wrong: exit 2), else ``unresolved``."""
        report = []
        uses = debian_uses(loaded.manifest, platform)
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
            report.append(self._report(loaded, name, use, uses, entry, keep))
        return report

    @staticmethod
    def _report(
        loaded: Loaded, name: str, use: DebUse, uses: Mapping[str, DebUse], entry: DebEntry, keep: bool
    ) -> Locked:
        if entry.error:
            refused = aptreasons.is_refusal(entry.error)
            field = use.field if refused else use.field[:-1]  # the packages at fault, else what they go in
            why = loaded.error(field, entry.error).message if field else entry.error
            return Locked(name, use.where, use.key, "unresolvable" if refused else "unresolved", 0, why)
        source = uses[use.base] if use.base else use
        why = f"{entry.mirror} {source.definition['suite']} of {entry.mirror_date}"
        return Locked(name, use.where, use.key, "kept" if keep else "resolved", len(entry.installed), why)

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
            return DebEntry(dict(use.definition), locked_at=self._now, mirror=use.mirror, error=_why(e))
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


def _why(e: AssemblerError) -> str:
    """What a lock records of a failure: what apt refused and its reasons (with the served
    names most like them), else the failure's first line and apt's or mmdebstrap's errors
    (``E:``), else its last lines; never a bare "received signal PIPE"."""
    if isinstance(e, AptRefused):
        guess = e.hint if e.hint and "did you mean" in e.hint else ""
        return e.message + (f"; {guess}" if guess else "")
    lines = [line.strip() for line in e.message.splitlines() if line.strip()]
    if not lines:
        return "failed"
    errors = [line for line in lines[1:] if line.startswith("E: ") and line != "E: mmdebstrap failed to run"]
    return " ".join(dict.fromkeys([lines[0], *(errors or lines[-2:])]))[:400]


def apply_debian(
    loaded: Loaded, lock: Lock | None, *, platform: Platform, locked: bool, path: Path, redo: str
) -> tuple[dict[str, DebLocked], dict[str, dict[str, str]], list[str]]:
    """(where -> what the lock installs there, where -> state for plan, warnings); InputError
    under ``locked`` for a base or layer the lock lacks or could not resolve, and without it
    for one whose packages the lock says apt refused (:func:`_refused`)."""
    found: dict[str, DebLocked] = {}
    states: dict[str, dict[str, str]] = {}
    warnings: list[str] = []
    uses = debian_uses(loaded.manifest, platform)
    if uses and lock is None and locked:
        raise InputError(f"--locked: no lock {path}", hint=f"write it: {redo}")
    for where, use in uses.items():
        entry = lock.debian.get(use.key) if lock is not None else None
        if entry is not None and entry.error and aptreasons.is_refusal(entry.error):
            raise _refused(loaded, use, entry, path, redo)
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


def _refused(loaded: Loaded, use: DebUse, entry: DebEntry, path: Path, redo: str) -> InputError:
    """A plan's or a build's error for packages the lock says apt refused, from the very
    list the manifest asks for now (the key is made of it): apt would refuse them again,
    after the bootstrap's minute, where an unlocked Python set may still install."""
    message = f"{entry.error} (as {path.name} records it, locked at {entry.locked_at})"
    hint = f"fix the names, then lock again: {redo} (if the mirror serves them now: {redo} --retry)"
    return loaded.error(use.field, message, hint=hint) if use.field else InputError(message, hint=hint)
