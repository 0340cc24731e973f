"""The weights lock (``MANIFEST.weights.lock``, beside the manifest): each model's files,
one ``{path, size, sha256}`` each, and the commit an ``hf://`` revision stood for. A URL
source is written :func:`~assembler.manifest.text.urls.redacted` (no credentials, no presigned
query string: the file is committed) and matched so: a URL signed anew is the same source,
its file still the sha256 the manifest pins.

JSON, keys sorted, files sorted by path: a reviewer diffs it. ``assemble lock`` writes it;
a build takes each model's entry when its source, include and exclude are still the ones
locked, and then refuses files that differ from it (a folder changed since), and fetches an
``hf://`` model at the locked commit (a branch that moved on changes nothing). A model
without an entry is fetched as it is now, with a warning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from assembler.errors import InputError
from assembler.manifest.schema.weights import WeightsSpec
from assembler.manifest.text.urls import redacted
from assembler.weights.files import WeightFile, plain_path

LOCK_VERSION = 1
MAX_LOCK_BYTES = 64 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HINT = "write it anew with assemble lock"


def lock_path(manifest: Path) -> Path:
    return manifest.with_suffix(".weights.lock")


@dataclass(frozen=True)
class Locked:
    """One model as locked: what it was locked from, the commit (hf://), its files."""

    source: str
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    revision: str | None
    files: tuple[WeightFile, ...]

    def matches(self, spec: WeightsSpec) -> bool:
        """Whether ``spec`` still asks for what was locked."""
        asked = (redacted(spec.source), tuple(spec.include), tuple(spec.exclude))
        return (self.source, self.include, self.exclude) == asked

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "include": list(self.include),
            "exclude": list(self.exclude),
            "revision": self.revision,
            "files": [f.to_json() for f in sorted(self.files)],
        }


def read(path: Path) -> dict[str, Locked]:
    """The models of the lock at ``path`` (none when there is no file); InputError naming
    the file and the field for one that is not a weights lock."""
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_LOCK_BYTES:
        raise InputError(f"{path}: larger than {MAX_LOCK_BYTES >> 20} MiB, not a weights lock")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not JSON: {e}", hint=_HINT) from None
    if not isinstance(data, dict) or data.get("version") != LOCK_VERSION or not isinstance(data.get("weights"), dict):
        raise InputError(f"{path}: not a weights lock of version {LOCK_VERSION}", hint=_HINT)
    return {name: _entry(path, name, entry) for name, entry in data["weights"].items()}


def _entry(path: Path, name: str, entry: object) -> Locked:
    def bad(field: str) -> InputError:
        return InputError(f"{path}: weights.{name}.{field} is not valid", hint=_HINT)

    if not isinstance(entry, dict):
        raise bad("(entry)")
    source, revision, files = entry.get("source"), entry.get("revision"), entry.get("files")
    if not isinstance(source, str):
        raise bad("source")
    if revision is not None and (not isinstance(revision, str) or _COMMIT.match(revision) is None):
        raise bad("revision")
    globs = {}
    for key in ("include", "exclude"):
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(key)
        globs[key] = tuple(value)
    if not isinstance(files, list):
        raise bad("files")
    out = [_file(f, f"files[{i}]", bad) for i, f in enumerate(files)]
    return Locked(source, globs["include"], globs["exclude"], revision, tuple(sorted(out)))


def _file(f: object, where: str, bad: Callable[[str], InputError]) -> WeightFile:
    if not isinstance(f, dict):
        raise bad(where)
    p, size, sha = f.get("path"), f.get("size"), f.get("sha256")
    if not isinstance(p, str) or plain_path(p) is None:
        raise bad(f"{where}.path")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad(f"{where}.size")
    if not isinstance(sha, str) or _SHA256.match(sha) is None:
        raise bad(f"{where}.sha256")
    return WeightFile(p, size, sha)


def write(path: Path, models: Mapping[str, Locked]) -> bool:
    """Write the lock (models by name, sorted); False when it already says exactly that."""
    body = json.dumps(
        {"version": LOCK_VERSION, "weights": {n: models[n].to_json() for n in sorted(models)}}, indent=2, sort_keys=True
    )
    text = body + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return True


def differences(locked: Locked, files: tuple[WeightFile, ...]) -> list[str]:
    """How ``files`` differ from the lock's (first ten), one line each."""
    have = {f.path: f for f in files}
    want = {f.path: f for f in locked.files}
    lines = []
    for p in sorted(have.keys() | want.keys()):
        a, b = want.get(p), have.get(p)
        if a is None:
            lines.append(f"{p}: not in the lock")
        elif b is None:
            lines.append(f"{p}: locked, not there")
        elif (a.size, a.sha256) != (b.size, b.sha256):
            lines.append(f"{p}: {b.size} bytes, sha256 {b.sha256[:12]}; locked {a.size} bytes, {a.sha256[:12]}")
    return lines[:10]
