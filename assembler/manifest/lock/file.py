"""The lock (``manifests/NAME.lock``): every Python environment of a manifest resolved as one
whole (:mod:`assembler.manifest.lock.pyenvs`), each set's slice of it in exact versions with hashes,
and the bases' digests and git refs' commits; read and written here, applied to a build by
:mod:`assembler.manifest.lock.apply`.

The file is YAML a reviewer can read and diff. ``environments`` maps each environment's key
(the sha256 of its definition: Python, platform, the date it is resolved as of, its members'
digests in order) to how it was resolved: as of when, which unreachable indexes PyPI stood
in for and which pins that left unknown, or why it cannot be resolved (the two sets that
clash). ``sets`` maps each set's key (its definition and its environment's key) to its
slice, one ``name==version`` a line, or to why it has none (an index with no stand-in);
``hashes`` gives each pin's sha256s once (a version sits in many sets: written out in each,
vLLM's lock was 3.5 MB); ``variants`` says which sets each variant (target, matrix values,
``--set``s) installs where; ``debian`` maps the key of each bootstrapped base, ``packages:``
layer and compile step's ``packages:`` to the Debian packages apt installs there, each
``.deb`` with its sha256 (:mod:`assembler.manifest.lock.debpins`). A set is found by its key, so a
changed param that alters a set, or any set of its environment, makes the lock stale for
it, as ``Cargo.lock`` is for a changed ``Cargo.toml``.

In memory a set's pins are uv's requirements text, hashes and all (``torch==2.9.0 \\`` and
one ``--hash=sha256:...`` line each), as a step's ``--require-hashes`` file and a ``pip:``
layer take them; the file is that text with each pin's hash lines moved to ``hashes``. A pin
two sets give with different hashes (two indexes serving other files) keeps its hash lines
in each set, as uv wrote them. Lock version 2 wrote every set's hashes out: ``assemble lock``
reads it (``older=True``) to write it anew keeping its pins; a build or plan refuses it.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from assembler.errors import InputError
from assembler.manifest.lock.debpins import DEB_FIELDS, DebEntry, deb_data, deb_entry
from assembler.manifest.lock.inputpins import Pin
from assembler.manifest.schema.pysets import LOCK_ENV as LOCK_ENV
from assembler.manifest.schema.setuses import set_key

LOCK_VERSION = 3
KEPT_VERSIONS = (2,)  # older formats whose pins assemble lock keeps when it writes them anew
_HINT = "write it anew with assemble lock"


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
    """One set in a lock: its pins (uv's requirements text) or why there are none, and the
    names pinned from a stand-in's metadata (an index that could not be reached)."""

    definition: Mapping[str, object]
    pins: str | None = None
    unresolved: str | None = None
    stand_in: tuple[str, ...] = ()

    @property
    def environment(self) -> str:
        return str(self.definition.get("environment", ""))

    def hashes(self) -> dict[str, list[str]]:
        """name==version -> its ``--hash=sha256:HEX`` options, in uv's order."""
        found: dict[str, list[str]] = {}
        for name, _, version, shas in self.pinned():
            found.setdefault(f"{name}=={version}", []).extend(f"--hash=sha256:{h}" for h in shas)
        return found

    def pinned(self) -> list[tuple[str, str, str, list[str]]]:
        """Each pin: (normalized name, ``==`` or ``@``, version or URL, its sha256s in hex)."""
        found: list[tuple[str, str, str, list[str]]] = []
        for line in (self.pins or "").splitlines():
            pin = _pin_line(line)
            if pin:
                found.append((*pin, []))
            if found:
                found[-1][3].extend(h[len("--hash=sha256:") :] for h in re.findall(r"--hash=sha256:[0-9a-f]{64}", line))
        return found

    def constraints(self) -> dict[str, str]:
        """name -> ``name==version`` of every pin (direct-URL pins are left to the command)."""
        found: dict[str, str] = {}
        for line in (self.pins or "").splitlines():
            pin = _pin_line(line)
            if pin and pin[1] == "==":
                found[pin[0]] = f"{pin[0]}=={pin[2]}"
        return found


@dataclass(frozen=True)
class EnvEntry:
    """How one environment was resolved, or why it cannot be."""

    definition: Mapping[str, object]
    # uv's --exclude-newer, else the moment it was resolved (--upgrade); None: an older lock's
    # entry, resolved as of the day it was locked (plan --locked refuses it)
    resolved_as_of: str | None = None
    error: str | None = None
    unknown: tuple[str, ...] = ()
    stand_ins: tuple[str, ...] = ()
    # what the base's Python held, name==version, that the resolution kept where it could,
    # and where that was read (heldpython): the first item is "from: SOURCE"
    held: tuple[str, ...] = ()


@dataclass
class Lock:
    """A lock file's content."""

    manifest: str
    sets: dict[str, Entry] = field(default_factory=dict)
    variants: dict[str, dict[str, str]] = field(default_factory=dict)  # variant -> where -> key
    pins: dict[str, Pin] = field(default_factory=dict)  # bases' digests, git refs' commits
    environments: dict[str, EnvEntry] = field(default_factory=dict)
    debian: dict[str, DebEntry] = field(default_factory=dict)  # apt-installed packages

    def collect(self) -> None:
        """Forget the sets, pins and environments no variant uses any more."""
        used = {key for uses in self.variants.values() for key in uses.values()}
        self.sets = {k: v for k, v in self.sets.items() if k in used}
        self.pins = {k: v for k, v in self.pins.items() if k in used}
        envs = {e.environment for e in self.sets.values()} | used
        self.environments = {k: v for k, v in self.environments.items() if k in envs}
        self.debian = {k: v for k, v in self.debian.items() if k in used}


def default_lock_path(manifest: Path) -> Path:
    return manifest.with_suffix(".lock")


def read_lock(path: Path, *, older: bool = False) -> Lock:
    """The lock at ``path``; InputError (exit 2) when it is not one, or is of another
    ``lock_version`` (its message names it; ``older``: a version of ``KEPT_VERSIONS`` is
    read too, for ``assemble lock`` to write it anew).

    Read first by libyaml (ruamel's C loader: a 2 MB lock in 0.04 s, not 3.5 s), which
    reads YAML 1.1; the lock is written as YAML 1.2 (``yes`` a string, ``:`` in a flow
    item): where the two could differ, a refusal, ruamel's own parser decides. A version
    reads the same in both: its refusal is not read again."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"lock {path}: {e.strerror or e}") from None
    try:
        return _lock_from(path, _yaml(path, text, pure=False), older)
    except InputError as e:
        if "lock_version" in e.message:
            raise
        return _lock_from(path, _yaml(path, text, pure=True), older)


def _yaml(path: Path, text: str, *, pure: bool) -> Any:
    try:
        return YAML(typ="safe", pure=pure).load(text)
    except Exception as e:  # ruamel's parser errors share no base class worth naming
        raise InputError(f"lock {path}: not YAML: {e}") from None


_SET_FIELDS = ("pins", "unresolved", "stand_in")
_ENV_FIELDS = ("resolved_as_of", "error", "unknown", "stand_ins", "held")


def _keyed(
    path: Path, key: object, raw: object, fields: tuple[str, ...], what: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(definition, the other fields) of one keyed entry, its key checked against its definition."""
    if not isinstance(raw, dict):
        raise InputError(f"lock {path}: {what} {key} is not a mapping", hint=_HINT)
    definition = {k: v for k, v in raw.items() if k not in fields}
    if set_key(definition) != key:
        raise InputError(f"lock {path}: {what} {key} was edited by hand (its key is not its definition's)", hint=_HINT)
    return definition, {k: raw.get(k) for k in fields}


def _check_version(path: Path, data: Any, older: bool) -> None:
    """InputError (its message names ``lock_version``) unless ``data`` is a lock this
    assemble reads."""
    version = data.get("lock_version") if isinstance(data, dict) else None
    if version == LOCK_VERSION or (older and version in KEPT_VERSIONS):
        return
    if not isinstance(version, int) or isinstance(version, bool):
        raise InputError(f"lock {path}: not an assemble lock (no lock_version)", hint=_HINT)
    if version > LOCK_VERSION:
        raise InputError(
            f"lock {path}: lock_version {version} is newer than this assemble reads (lock_version {LOCK_VERSION})",
            hint="update assemble, or write the lock anew with this one's assemble lock",
        )
    kept = "keeping its pins" if version in KEPT_VERSIONS else "resolving every set again"
    raise InputError(
        f"lock {path}: lock_version {version} is an older format than this assemble reads "
        f"(lock_version {LOCK_VERSION}; assemble lock writes it anew, {kept})",
        hint=_HINT,
    )


def _lock_from(path: Path, data: Any, older: bool) -> Lock:
    _check_version(path, data, older)
    table = _hash_table_from(path, data.get("hashes"))
    sets: dict[str, Entry] = {}
    for key, raw in (data.get("sets") or {}).items():
        definition, got = _keyed(path, key, raw, _SET_FIELDS, "set")
        text = None if got["pins"] is None else _expanded(str(got["pins"]), table)
        sets[str(key)] = Entry(definition, text, got["unresolved"], tuple(got["stand_in"] or ()))
    envs: dict[str, EnvEntry] = {}
    for key, raw in (data.get("environments") or {}).items():
        definition, got = _keyed(path, key, raw, _ENV_FIELDS, "environment")
        envs[str(key)] = EnvEntry(
            definition,
            got["resolved_as_of"],
            got["error"],
            tuple(got["unknown"] or ()),
            tuple(got["stand_ins"] or ()),
            tuple(str(h) for h in got["held"] or ()),
        )
    debian: dict[str, DebEntry] = {}
    for key, raw in (data.get("debian") or {}).items():
        definition, got = _keyed(path, key, raw, DEB_FIELDS, "Debian package set")
        debian[str(key)] = deb_entry(definition, got, f"lock {path}: Debian package set {key}")
    variants = {str(k): {str(w): str(s) for w, s in (v or {}).items()} for k, v in (data.get("variants") or {}).items()}
    try:
        pins = {str(k): Pin.from_data(v) for k, v in (data.get("pins") or {}).items()}
    except (KeyError, TypeError, AttributeError):
        raise InputError(f"lock {path}: a pin is not kind/what[/value]", hint=_HINT) from None
    return Lock(str(data.get("manifest", "")), sets, variants, pins, envs, debian)


_HASHED = re.compile(r"(\S[^\n]*?)((?: \\\n    --hash=sha256:[0-9a-f]{64})+)\n")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


def _groups(text: str) -> list[str]:
    """``text`` cut before each line that starts with no space: a pin and its hash lines each."""
    groups: list[str] = []
    for line in text.splitlines(keepends=True):
        if groups and line[:1].isspace():
            groups[-1] += line
        else:
            groups.append(line)
    return groups


def _hashed(group: str) -> tuple[str, tuple[str, ...]] | None:
    """(pin, its ``sha256:HEX``s) of a group as uv writes one (``pin \\``, then one
    ``    --hash=sha256:HEX`` line each, nothing else); None for any other group."""
    found = _HASHED.fullmatch(group)
    return (found.group(1), tuple(_SHA256.findall(found.group(2)))) if found else None


def _hash_table(entries: Iterable[Entry]) -> dict[str, tuple[str, ...]]:
    """pin -> its sha256s, for each pin every set holding it gives in uv's form with the
    same hashes: those pins' hash lines are written once (a pin given otherwise anywhere, a
    line of its own included, keeps its lines where each set has them)."""
    table: dict[str, tuple[str, ...]] = {}
    mixed: set[str] = set()
    for entry in entries:
        for group in _groups(_pins_text(entry.pins or "")):
            got = _hashed(group)
            if got is None:
                mixed.add(group.split("\n", 1)[0].removesuffix(" \\"))
            elif table.setdefault(got[0], got[1]) != got[1]:
                mixed.add(got[0])
    return {pin: hashes for pin, hashes in table.items() if pin not in mixed}


def _pins_text(pins: str) -> str:
    return pins.rstrip("\n") + "\n"


def _compacted(pins: str, table: Mapping[str, tuple[str, ...]]) -> str:
    """A set's pins as written: the pins ``table`` holds without their hash lines."""
    out = []
    for group in _groups(_pins_text(pins)):
        got = _hashed(group)
        out.append(f"{got[0]}\n" if got is not None and got[0] in table else group)
    return "".join(out)


def _expanded(text: str, table: Mapping[str, tuple[str, ...]]) -> str:
    """A set's pins as read: each line alone that ``table`` holds given its hash lines."""
    out = []
    for group in _groups(text):
        hashes = table.get(group[:-1]) if group.endswith("\n") and group.count("\n") == 1 else None
        out.append("".join([group[:-1], *(f" \\\n    --hash={h}" for h in hashes), "\n"]) if hashes else group)
    return "".join(out)


def _hash_table_from(path: Path, raw: object) -> dict[str, tuple[str, ...]]:
    """The ``hashes`` table as read; InputError when it is not pin -> a list of sha256:HEX."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"lock {path}: hashes is not a mapping of pins to their sha256s", hint=_HINT)
    table: dict[str, tuple[str, ...]] = {}
    for pin, hashes in raw.items():
        if (
            not isinstance(hashes, list)
            or not hashes
            or not all(isinstance(h, str) and _SHA256.fullmatch(h) for h in hashes)
        ):
            raise InputError(f"lock {path}: hashes of {pin} is not a list of sha256:HEX", hint=_HINT)
        table[str(pin)] = tuple(hashes)
    return table


def _set_data(entry: Entry, table: Mapping[str, tuple[str, ...]]) -> dict[str, Any]:
    item: dict[str, Any] = {k: entry.definition[k] for k in sorted(entry.definition)}
    if entry.pins is not None:
        item["pins"] = LiteralScalarString(_compacted(entry.pins, table))
    if entry.unresolved is not None:
        item["unresolved"] = entry.unresolved
    if entry.stand_in:
        item["stand_in"] = list(entry.stand_in)
    return item


def _env_data(entry: EnvEntry) -> dict[str, Any]:
    item: dict[str, Any] = {k: entry.definition[k] for k in sorted(entry.definition)}
    item["resolved_as_of"] = entry.resolved_as_of
    for name in ("error", "unknown", "stand_ins", "held"):
        value = getattr(entry, name)
        if value:
            item[name] = list(value) if isinstance(value, tuple) else value
    return item


def write_lock(path: Path, lock: Lock) -> None:
    """Write ``lock`` atomically, sorted, the pins as literal blocks (one line each to diff),
    each pin's hashes once in ``hashes`` (one line each)."""
    doc: dict[str, Any] = {"lock_version": LOCK_VERSION, "manifest": lock.manifest}
    doc["environments"] = {key: _env_data(lock.environments[key]) for key in sorted(lock.environments)}
    table = _hash_table(lock.sets.values())
    doc["sets"] = {key: _set_data(lock.sets[key], table) for key in sorted(lock.sets)}
    doc["pins"] = {key: lock.pins[key].to_data() for key in sorted(lock.pins)}
    if lock.debian:
        doc["debian"] = {key: deb_data(lock.debian[key]) for key in sorted(lock.debian)}
    doc["variants"] = {name: dict(sorted(lock.variants[name].items())) for name in sorted(lock.variants)}
    doc["hashes"] = {pin: list(table[pin]) for pin in sorted(table)}
    yaml = YAML()
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    buf.write(
        f"# {path.name}: written by `assemble lock {lock.manifest}`; commit it, do not edit it.\n"
        "# Each Python environment resolved by uv as one whole; each set its slice in exact versions,\n"
        "# each version's hashes once under hashes.\n"
        + ("# Under debian: what apt installs from the mirror, each .deb's sha256.\n" if lock.debian else "")
    )
    yaml.dump(doc, buf)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    tmp.replace(path)
