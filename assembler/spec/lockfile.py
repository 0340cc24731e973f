"""The lock (``manifests/NAME.lock``): every Python set of a manifest, resolved to exact
versions with hashes, and applied to a build.

The file is YAML a reviewer can read and diff: ``sets`` maps each set's key (the sha256 of
its definition: requirements, Python, platform, indexes, ``no_deps``, constraints) to what
uv resolved, in requirements form (``torch==2.9.0 --hash=sha256:...``), or to why it could
not be (an index that cannot be reached); ``variants`` says which sets each variant (target,
matrix values, ``--set``s) installs where. A set is found by its key, so a changed param that
alters a set makes the lock stale for it, as ``Cargo.lock`` is for a changed ``Cargo.toml``.

Applied to a loaded manifest, each step and ``run:`` layer with sets gets the union of their
pins in ``ASSEMBLE_PYTHON_LOCK`` (part of its definition, so of its key); the container
runner hands it to pip and uv as a constraints file (``PIP_CONSTRAINT``, ``UV_CONSTRAINT``).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from assembler.errors import InputError
from assembler.spec import model as m
from assembler.spec.lockpins import Pin, floating, pinned
from assembler.spec.setuses import SetUse, layer_name, plain_pin, set_key, set_uses
from assembler.spec.setuses import used_steps as used_steps

LOCK_VERSION = 1
LOCK_ENV = "ASSEMBLE_PYTHON_LOCK"


def _pin_line(line: str) -> tuple[str, str, str] | None:
    """(normalized name, ``==`` or ``@``, version or URL) of a requirement line of uv's
    output (``torch==2.9.0 \\``); None for its hash, comment and option lines."""
    if not line or line[:1].isspace() or line.startswith(("#", "-")):
        return None
    from packaging.requirements import InvalidRequirement, Requirement  # only when a lock is read

    try:
        req = Requirement(line.split(" \\")[0].split(" --hash=")[0].strip())
    except InvalidRequirement:
        return None
    name = canonicalize_name(req.name)
    if req.url:
        return name, "@", req.url
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "==="):
        return name, "==", specs[0].version
    return None


@dataclass(frozen=True)
class Entry:
    """One resolved set in a lock: its pins (uv's requirements text) or why there are none."""

    definition: Mapping[str, object]
    pins: str | None = None
    unresolved: str | None = None

    def hashes(self) -> dict[str, list[str]]:
        """name==version -> its ``--hash=sha256:HEX`` options, in uv's order."""
        found: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in (self.pins or "").splitlines():
            pin = _pin_line(line)
            if pin:
                current = found.setdefault(f"{pin[0]}=={pin[2]}", [])
            for h in re.findall(r"--hash=sha256:[0-9a-f]{64}", line):
                if current is not None:
                    current.append(h)
        return found

    def constraints(self) -> dict[str, str]:
        """name -> ``name==version`` of every pin (direct-URL pins are left to the command)."""
        found: dict[str, str] = {}
        for line in (self.pins or "").splitlines():
            pin = _pin_line(line)
            if pin and pin[1] == "==":
                found[pin[0]] = f"{pin[0]}=={pin[2]}"
        return found


@dataclass
class Lock:
    """A lock file's content."""

    manifest: str
    sets: dict[str, Entry] = field(default_factory=dict)
    variants: dict[str, dict[str, str]] = field(default_factory=dict)  # variant -> where -> key
    pins: dict[str, Pin] = field(default_factory=dict)  # bases' digests, git refs' commits

    def collect(self) -> None:
        """Forget the sets and pins no variant uses any more."""
        used = {key for uses in self.variants.values() for key in uses.values()}
        self.sets = {k: v for k, v in self.sets.items() if k in used}
        self.pins = {k: v for k, v in self.pins.items() if k in used}


def default_lock_path(manifest: Path) -> Path:
    return manifest.with_suffix(".lock")


def read_lock(path: Path) -> Lock:
    """The lock at ``path``; InputError (exit 2) when it is not one.

    Read first by libyaml (ruamel's C loader: a 2 MB lock in 0.04 s, not 3.5 s), which
    reads YAML 1.1; the lock is written as YAML 1.2 (``yes`` a string, ``:`` in a flow
    item): where the two could differ, a refusal, ruamel's own parser decides."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"lock {path}: {e.strerror or e}") from None
    try:
        return _lock_from(path, _yaml(path, text, pure=False))
    except InputError:
        return _lock_from(path, _yaml(path, text, pure=True))


def _yaml(path: Path, text: str, *, pure: bool) -> Any:
    try:
        return YAML(typ="safe", pure=pure).load(text)
    except Exception as e:  # ruamel's parser errors share no base class worth naming
        raise InputError(f"lock {path}: not YAML: {e}") from None


def _lock_from(path: Path, data: Any) -> Lock:
    if not isinstance(data, dict) or data.get("lock_version") != LOCK_VERSION:
        raise InputError(
            f"lock {path}: not an assemble lock (lock_version {LOCK_VERSION})", hint="write it anew with assemble lock"
        )
    sets: dict[str, Entry] = {}
    for key, raw in (data.get("sets") or {}).items():
        if not isinstance(raw, dict):
            raise InputError(f"lock {path}: set {key} is not a mapping", hint="write it anew with assemble lock")
        definition = {k: v for k, v in raw.items() if k not in ("pins", "unresolved")}
        if set_key(definition) != key:
            raise InputError(
                f"lock {path}: set {key} was edited by hand (its key is not its definition's)",
                hint="write it anew with assemble lock",
            )
        sets[str(key)] = Entry(definition, raw.get("pins"), raw.get("unresolved"))
    variants = {str(k): {str(w): str(s) for w, s in (v or {}).items()} for k, v in (data.get("variants") or {}).items()}
    try:
        pins = {str(k): Pin.from_data(v) for k, v in (data.get("pins") or {}).items()}
    except (KeyError, TypeError, AttributeError):
        raise InputError(
            f"lock {path}: a pin is not kind/what[/value]", hint="write it anew with assemble lock"
        ) from None
    return Lock(str(data.get("manifest", "")), sets, variants, pins)


def write_lock(path: Path, lock: Lock) -> None:
    """Write ``lock`` atomically, sorted, the pins as literal blocks (one line each to diff)."""
    doc: dict[str, Any] = {"lock_version": LOCK_VERSION, "manifest": lock.manifest, "sets": {}, "variants": {}}
    for key in sorted(lock.sets):
        entry = lock.sets[key]
        item: dict[str, Any] = {k: entry.definition[k] for k in sorted(entry.definition)}
        if entry.pins is not None:
            item["pins"] = LiteralScalarString(entry.pins.rstrip("\n") + "\n")
        if entry.unresolved is not None:
            item["unresolved"] = entry.unresolved
        doc["sets"][key] = item
    doc["pins"] = {key: lock.pins[key].to_data() for key in sorted(lock.pins)}
    for name in sorted(lock.variants):
        doc["variants"][name] = dict(sorted(lock.variants[name].items()))
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    buf.write(
        f"# {path.name}: written by `assemble lock {lock.manifest}`; commit it, do not edit it.\n"
        "# Each Python set a step installs, resolved by uv to exact versions with hashes.\n"
    )
    yaml.dump(doc, buf)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    tmp.replace(path)


@dataclass(frozen=True)
class LockStatus:
    """What a lock did for one variant: for ``plan --json`` and the warnings."""

    file: str
    state: str  # fresh | stale | missing | none (no sets)
    sets: Mapping[str, Mapping[str, str]]  # where -> {key, state: locked|unresolved|not-locked, why}
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "state": self.state, "sets": {k: dict(v) for k, v in self.sets.items()}}


def apply_lock(
    manifest: m.Manifest, lock: Lock | None, *, path: Path, platform: str, locked: bool, redo: str
) -> tuple[m.Manifest, LockStatus]:
    """The manifest with each step's and layer's locked pins in its env (``LOCK_ENV``).

    ``locked`` (``--locked``): a missing lock, or a set not in it, is an InputError (exit
    2) naming the set, and a set whose index could not be reached when locking is a
    warning; else such sets install unlocked and the status (``plan --json``) says so, as
    cargo uses and updates a lock without ``--locked``. ``redo`` is the
    ``assemble lock`` command line that brings the lock up to date, for the hints."""
    uses = list(set_uses(manifest, platform, pins_in(lock)))
    floats = floating(manifest, platform, used_steps(manifest))
    if not uses and not floats:
        return manifest, LockStatus(str(path), "none", {})
    _check_locked_wheels(uses, lock, path, redo)
    if lock is None and locked:
        raise InputError(f"--locked: no lock {path}", hint=f"write it: {redo}")
    states: dict[str, dict[str, str]] = {}
    values = _pin_states(floats, lock, states, path=path, locked=locked, redo=redo)
    warnings = _set_states(uses, lock, states, path=path, locked=locked, redo=redo)
    stale = any(s["state"] == "not-locked" for s in states.values())
    state = "missing" if lock is None else "stale" if stale else "fresh"
    status = LockStatus(str(path), state, states, tuple(warnings))
    if lock is None:
        return manifest, status
    return pinned(_with_pins(manifest, lock, uses), values), status


def _pin_states(
    floats: Mapping[str, tuple[str, Pin]],
    lock: Lock | None,
    states: dict[str, dict[str, str]],
    *,
    path: Path,
    locked: bool,
    redo: str,
) -> dict[str, str]:
    """Each floating input's state into ``states``; where -> the value the lock pins it to.
    InputError under ``locked`` for one the lock lacks."""
    values: dict[str, str] = {}
    for where, (key, want) in floats.items():
        pin = lock.pins.get(key) if lock is not None else None
        if pin is None:
            if locked:
                raise InputError(
                    f"--locked: lock {path} is stale: {where} ({want.what} {want.ref}) is not in it",
                    hint=f"bring it up to date: {redo}",
                )
            states[where] = {"key": key, "state": "not-locked"}
        elif pin.value is None:
            states[where] = {"key": key, "state": "unresolved", "why": pin.unresolved or ""}
        else:
            states[where] = {"key": key, "state": "locked", "value": pin.value}
            values[where] = pin.value
    return values


def _set_states(
    uses: Sequence[SetUse],
    lock: Lock | None,
    states: dict[str, dict[str, str]],
    *,
    path: Path,
    locked: bool,
    redo: str,
) -> list[str]:
    """Each Python set's state into ``states``; the warnings for sets that could not be locked.
    InputError under ``locked`` for one the lock lacks."""
    warnings: list[str] = []
    for use in uses:
        entry = lock.sets.get(use.key) if lock is not None else None
        if entry is None:
            reqs = " ".join(sorted(use.pyset.requirements))
            if locked:
                raise InputError(
                    f"--locked: lock {path} is stale: python set {use.where} ({reqs}) is not in it",
                    hint=f"bring it up to date: {redo}",
                )
            states[use.where] = {"key": use.key, "state": "not-locked"}
        elif entry.pins is None:
            why = entry.unresolved or "not resolved"
            states[use.where] = {"key": use.key, "state": "unresolved", "why": why}
            if locked:
                warnings.append(f"python set {use.where} could not be locked: {why}: installed unlocked")
        else:
            states[use.where] = {"key": use.key, "state": "locked"}
    return warnings


def _check_locked_wheels(uses: Sequence[SetUse], lock: Lock | None, path: Path, redo: str) -> None:
    """A ``pip:`` layer with ``locked: true`` has no hashes but the lock's: without them it
    cannot be planned or built, ``--locked`` or not."""
    for use in uses:
        if not use.where.endswith(":wheels"):
            continue
        entry = lock.sets.get(use.key) if lock is not None else None
        if entry is None or entry.pins is None:
            why = f" ({entry.unresolved})" if entry is not None and entry.unresolved else ""
            raise InputError(
                f"pip layer {use.where.rsplit(':', 1)[0]} takes its hashes from the lock, and "
                f"{path.name} has none for {' '.join(use.pyset.requirements)}{why}",
                hint=f"write them: {redo}",
            )


def _pins_of(uses: Sequence[SetUse], lock: Lock, where: str) -> str | None:
    merged: dict[str, tuple[str, str]] = {}
    for use in uses:
        entry = lock.sets.get(use.key)
        if entry is None or entry.pins is None:
            continue
        for name, pin in entry.constraints().items():
            other = merged.setdefault(name, (pin, use.where))
            if other[0] != pin:
                raise InputError(
                    f"{where}: python sets {other[1]} and {use.where} lock {name} differently "
                    f"({other[0]}, {pin}): one constraints file holds one version",
                    hint="install them in separate steps or layers, or pin the one version in both",
                )
    if not merged:
        return None
    return "".join(pin + "\n" for pin, _ in sorted(merged.values()))


def _with_pins(manifest: m.Manifest, lock: Lock, uses: Sequence[SetUse]) -> m.Manifest:
    by_owner: dict[str, list[SetUse]] = {}
    for use in uses:
        by_owner.setdefault(use.where.rsplit(":", 1)[0], []).append(use)
    steps = []
    for step in manifest.compile:
        pins = _pins_of(by_owner.get(step.name, []), lock, f"step {step.name}")
        steps.append(step.model_copy(update={"env": {**step.env, LOCK_ENV: pins}}) if pins else step)
    layers: list[m.LayerSpec] = []
    for i, layer in enumerate(manifest.image.layers):
        if isinstance(layer, m.RunLayer):
            owner = layer_name(layer, i)
            pins = _pins_of(by_owner.get(owner, []), lock, owner)
            if pins:
                layer = layer.model_copy(update={"env": {**layer.env, LOCK_ENV: pins}})
        elif isinstance(layer, m.PipLayer) and layer.locked:
            (use,) = by_owner[layer_name(layer, i)]
            layer = layer.model_copy(update={"pip": _hashed(layer.pip, lock.sets[use.key], use.where)})
        layers.append(layer)
    image = manifest.image.model_copy(update={"layers": layers})
    return manifest.model_copy(update={"compile": steps, "image": image})


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


def pins_in(lock: Lock | None) -> Callable[[str], dict[str, str] | None]:
    """A set's resolved pins in ``lock`` (name -> name==version), None when it has none."""

    def pins(key: str) -> dict[str, str] | None:
        entry = lock.sets.get(key) if lock is not None else None
        return entry.constraints() if entry is not None and entry.pins is not None else None

    return pins
