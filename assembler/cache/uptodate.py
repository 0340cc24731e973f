"""The records of the up-to-date check (:mod:`assembler.cli.uptodate`), under
``CACHE/uptodate/``: what a build read, each path with its identity as the build left it,
the facts it learned of the host where no file's identity tells (:data:`FACTS`: the
filesystem buildah's storage is on, from ``/proc``), and what its registry outputs held;
keyed by the invocation. A record is JSON, read whole (at most ``MAX_RECORD`` bytes),
written through a temporary file and ``os.replace``; one that does not parse, or is of
another ``FORMAT``, is no record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler import hostdisk
from assembler.oci.digest import file_digest

FORMAT = 2  # 2: facts
MAX_RECORD = 64 << 20  # bytes: a record is read whole
KEEP = 64  # records kept per cache (the newest): one per invocation, its environment included
HOWS = frozenset({"full", "listed", "touched"})  # how a path's identity is read (signature)
# The facts a build may learn (assembler.trace.learned), by kind: the one function that
# learns each again, from its subject, for a replay (and for the record, to see it did not
# change while the build ran). A record with a kind not here is no record.
FACTS: dict[str, Callable[[str], Any]] = {
    hostdisk.MOUNT: lambda subject: hostdisk.mount_fact(Path(subject)),
}


def invocation_key(argv: Sequence[Any], *, cwd: str, environ: Mapping[str, str], executable: str) -> str:
    """What names a build's record: its arguments, working folder, environment, interpreter."""
    what = {"format": FORMAT, "argv": list(argv), "cwd": cwd, "env": sorted(environ.items()), "python": executable}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def signature(path: str, how: str) -> Any:
    """A path's identity as ``how`` reads it: ``listed`` (a folder: its entries, each with
    its own), ``touched`` (a cache entry whose times the build sets: its bytes' digest
    instead), else ``full``. A symlink is its target's text and what it leads to (a
    folder switched to another is a change). None: not there."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return ["link", os.readlink(path), _followed(path, how)]
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as e:  # ValueError: a path no file can have (a NUL in it)
        return ["error", getattr(e, "errno", None)]
    return _identity(path, st, how)


def _followed(path: str, how: str) -> Any:
    try:
        return _identity(path, os.stat(path), how)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return ["error", e.errno]


def _identity(path: str, st: os.stat_result, how: str) -> Any:
    if stat.S_ISDIR(st.st_mode):
        return ["dir", _listing(path)] if how == "listed" else ["dir"]
    if not stat.S_ISREG(st.st_mode):
        return [stat.S_IFMT(st.st_mode)]
    if how == "touched":
        return ["file", st.st_dev, st.st_ino, st.st_size, _digest(path)]
    return ["file", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode]


def facts_changed(facts: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The first of ``facts`` (kind -> subject -> value, as a record holds them) that is
    no longer so, named ("the mount of /scratch/st"), else None. Values are compared as
    JSON holds them (a tuple learned is the list recorded)."""
    for kind, known in facts.items():
        learn = FACTS[kind]
        for subject, was in known.items():
            if as_json(learn(subject)) != was:
                return f"the {kind} of {subject}"
    return None


def as_json(value: Any) -> Any:
    """``value`` as a record holds it once written and read back."""
    return json.loads(json.dumps(value))


def _digest(path: str) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


def _listing(path: str) -> str:
    """A folder's entries, each with its identity (a walk reads an entry's stat from the
    listing, not from a stat of its own)."""
    h = hashlib.sha256()
    try:
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                st = entry.stat(follow_symlinks=False)
                h.update(f"{entry.name}\0{st.st_mode}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
                h.update(f"{st.st_ctime_ns}\n".encode())
    except OSError as e:
        return f"error {e.errno}"
    return h.hexdigest()


@dataclass(frozen=True)
class HeldOutput:
    """A registry output as the build left it: ``reference`` (a tag or digest) names
    ``digest``, and each of ``referrers`` is there."""

    registry: str
    repository: str
    reference: str
    digest: str
    referrers: tuple[str, ...] = ()
    subject: str = ""  # a referrer written as an output of its own (an attached SIF): its image


@dataclass
class Record:
    paths: dict[str, list[Any]]  # path -> [how, signature]
    outputs: list[HeldOutput]
    lines: list[str]  # the summary the build printed
    digests: list[str]
    warnings: list[str] = field(default_factory=list)
    made: float = 0.0
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind -> subject -> value (FACTS)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "made": self.made,
            "paths": self.paths,
            "facts": self.facts,
            "outputs": [vars(o) | {"referrers": list(o.referrers)} for o in self.outputs],
            "lines": self.lines,
            "digests": self.digests,
            "warnings": self.warnings,
        }

    @staticmethod
    def from_json(data: Any) -> Record | None:
        """The record ``data`` holds; None for one of another format or shape."""
        try:
            if data["format"] != FORMAT:
                return None
            paths = data["paths"]
            outputs = [HeldOutput(**{**o, "referrers": tuple(o["referrers"])}) for o in data["outputs"]]
            lines, digests, warnings, made = data["lines"], data["digests"], data["warnings"], float(data["made"])
            record = Record(paths, outputs, lines, digests, warnings, made, data["facts"])
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
        return record if record._well_formed() else None

    def _well_formed(self) -> bool:
        def strings(values: Any) -> bool:
            return isinstance(values, list) and all(isinstance(v, str) for v in values)

        return (
            isinstance(self.facts, dict)
            and all(
                kind in FACTS and isinstance(known, dict) and strings(list(known)) for kind, known in self.facts.items()
            )
            and isinstance(self.paths, dict)
            and all(
                isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] in HOWS
                for v in self.paths.values()
            )
            and all(
                strings([o.registry, o.repository, o.reference, o.digest, o.subject, *o.referrers])
                for o in self.outputs
            )
            and strings(self.lines)
            and strings(self.digests)
            and bool(self.digests)
            and strings(self.warnings)
        )

    def changed(self) -> str | None:
        """The first fact or path that is not as the build left it, else None."""
        fact = facts_changed(self.facts)
        if fact is not None:
            return fact
        for path, (how, was) in self.paths.items():
            if not isinstance(path, str) or signature(path, how) != was:
                return str(path)
        return None


class Records:
    """The records of one cache folder (``CACHE/uptodate``)."""

    def __init__(self, cache_dir: Path) -> None:
        self.folder = cache_dir / "uptodate"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def files(self) -> list[Path]:
        """Every record's file (not one being written), by name: what ``cache ls`` lists
        and ``cache prune`` removes, as the other items of the cache."""
        return sorted(p for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def read(self, key: str) -> Record | None:
        try:
            with open(self.path(key), "rb") as f:
                data = f.read(MAX_RECORD + 1)
        except OSError:
            return None
        if len(data) > MAX_RECORD:
            return None
        try:
            return Record.from_json(json.loads(data))
        except (ValueError, RecursionError):
            return None

    def write(self, key: str, record: Record) -> None:
        """Write ``key``'s record; the oldest go beyond the newest ``KEEP``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        try:
            tmp.write_text(json.dumps(record.to_json()))
            os.replace(tmp, self.path(key))
        finally:
            tmp.unlink(missing_ok=True)
        self._keep_newest()

    def _keep_newest(self) -> None:
        aged = []
        for entry in os.scandir(self.folder):
            with contextlib.suppress(OSError):
                aged.append((entry.stat().st_mtime_ns, entry.path))
        for _, path in sorted(aged, reverse=True)[KEEP:]:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def forget(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
