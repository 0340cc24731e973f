"""One run of uv's resolver (``uv pip compile``), for ``assemble lock``.

uv reads only package metadata (no wheels are downloaded for a resolution; cached pages are
revalidated, ``--refresh``: a lock sees what the index serves now), for the target
interpreter and platform (``--python-version``, ``--python-platform``: without the platform
uv reads one wheel's metadata for all platforms). Indexes are merged as pip merges them
(``unsafe-best-match``). ``UV_PYTHON_DOWNLOADS=never``: uv would otherwise first spend
seconds failing to download a CPython. Each requirement file is named by its place
(``m3.in``) and uv runs in the work folder, so its annotations (``# via -r m3.in``) say
which member brought a package and no temp path reaches a lock.

Distributions fixed from elsewhere (what a base provides, what a ``--no-deps`` install put
there) are wheels of that version with no dependencies (``+provided``), found only in a
folder of ours and forced by an override, never written out.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from assembler.manifest.text.urls import scrubbed
from assembler.proc import Runner, tail, uv_binary
from assembler.registry import trust

if TYPE_CHECKING:
    from assembler.python.index import SdistMetadata

UV_TIMEOUT = 600.0  # seconds for one resolution (sdist-only packages are built for their metadata)


@dataclass(frozen=True)
class Pinned:
    """One line of uv's output: a distribution, its version, hashes and who required it."""

    name: str  # canonical
    pin: str  # name==version (or name @ URL)
    hashes: tuple[str, ...]
    via: tuple[str, ...]  # canonical parents, and "-r FILE" for the requirement files

    def text(self) -> str:
        """The pin in requirements form, as uv writes it."""
        return "".join([self.pin, *(f" \\\n    {h}" for h in self.hashes), "\n"])


@dataclass(frozen=True)
class Query:
    """What one ``uv pip compile`` resolves: requirement files (one per member), for one
    interpreter and platform, against indexes, with what is fixed from elsewhere."""

    files: Sequence[Sequence[str]]
    python: str
    platform: str
    indexes: Sequence[str]
    no_deps: bool = False
    overrides: Sequence[str] = ()
    fixed: Mapping[str, str] = field(default_factory=dict)  # name -> version: no dependencies, not emitted
    constraints: Sequence[str] = ()
    exclude_newer: str | None = None
    exclude_newer_packages: Mapping[str, str] = field(default_factory=dict)
    prefer: str | None = None
    upgrade: bool = False
    upgrade_packages: Sequence[str] = ()


class Unsatisfiable(Exception):
    """uv found no resolution; ``reason`` is its explanation, on one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def stub_version(version: str) -> str:
    """The version a stub of ``version`` carries: a local label uv matches against ``==version``."""
    return f"{version}.provided" if "+" in version else f"{version}+provided"  # 2.9.0+cu128 stays 2.9.0


def _stub_wheel(folder: Path, name: str, version: str) -> None:
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: assemble\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as z:
        for member, text in files.items():
            z.writestr(zipfile.ZipInfo(member, (1980, 1, 1, 0, 0, 0)), text)


def _fixed_args(query: Query, work: Path) -> tuple[list[str], list[str]]:
    """uv's arguments for the fixed distributions, and their override lines."""
    if not query.fixed:
        return [], []
    stubs = work / "provided"
    stubs.mkdir(exist_ok=True)
    argv = ["--find-links", "provided"]
    lines = []
    for name, version in sorted(query.fixed.items()):
        local = stub_version(version)
        _stub_wheel(stubs, name, local)
        lines.append(f"{name}=={local}")
        argv += ["--no-emit-package", name]
    return argv, lines


def _argv(query: Query, work: Path) -> list[str]:
    """``uv pip compile`` for ``query``, its files written into ``work`` (names relative to it)."""
    argv = [uv_binary(), "pip", "compile"]
    for i, requirements in enumerate(query.files):
        (work / f"m{i}.in").write_text("".join(f"{r}\n" for r in requirements))
        argv.append(f"m{i}.in")
    argv += ["-o", "out.txt", "--quiet", "--no-config", "--no-header", "--generate-hashes", "--refresh"]
    argv += ["--python-version", query.python, "--python-platform", query.platform]
    argv += ["--index-strategy", "unsafe-best-match"]  # the indexes: index_env
    if query.no_deps:
        argv.append("--no-deps")
    fixed_argv, overrides = _fixed_args(query, work)
    argv += fixed_argv
    overrides += list(query.overrides)
    if overrides:
        (work / "overrides.txt").write_text("".join(f"{o}\n" for o in overrides))
        argv += ["--override", "overrides.txt"]
    if query.constraints:
        (work / "constraints.txt").write_text("".join(f"{c}\n" for c in query.constraints))
        argv += ["-c", "constraints.txt"]
    if query.exclude_newer:
        argv += ["--exclude-newer", query.exclude_newer]
    for name, date in sorted(query.exclude_newer_packages.items()):
        argv += ["--exclude-newer-package", f"{name}={date}"]
    if query.upgrade:
        argv.append("--upgrade")
    for name in query.upgrade_packages:
        argv += ["--upgrade-package", name]
    return argv


def index_env(indexes: Sequence[str]) -> dict[str, str]:
    """uv's indexes (``--index-url``, then each ``--extra-index-url``) in its environment,
    never its arguments: an index's credentials (a requirements file's ``${TOKEN}``) stay
    out of the process list and of the command line a debug message shows
    (:mod:`assembler.manifest.text.urls`). Both always set: one the caller's environment set is not taken."""
    return {"UV_INDEX_URL": indexes[0], "UV_EXTRA_INDEX_URL": " ".join(indexes[1:])}


def compile_query(query: Query, *, runner: Runner, work: Path) -> list[Pinned]:
    """uv's resolution of ``query`` (work files in ``work``, a fresh folder), in its order.
    Raises Unsatisfiable with uv's reason when there is none.

    An sdist whose metadata uv cannot build here (setup.py failing on this machine's Python:
    pyext on 3.11, flash-attn without torch) is given the requirements its own PKG-INFO or
    ``requires.txt`` records (uv's ``dependency-metadata``), and uv runs again."""
    work.mkdir(parents=True, exist_ok=True)
    # The system's trust store (and --cert's), as assemble's own connections have (registry.trust).
    env = {"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", **trust.tool_env(work), **index_env(query.indexes)}
    given: dict[tuple[str, str], SdistMetadata] = {}
    while True:
        (work / "out.txt").write_text(query.prefer or "")
        argv = _argv(query, work) + _metadata_args(given, work)
        ran = runner.run(argv, env=env, timeout=UV_TIMEOUT, cwd=work, check=False)
        if ran.returncode == 0:
            return parse_pins((work / "out.txt").read_text(encoding="utf-8"))
        stderr = ran.stderr or ran.stdout
        built = _BUILD_FAILED.search(stderr)
        if built is None or (built.group(1), built.group(2)) in given:
            raise Unsatisfiable(_reason(tail(stderr)))
        found = _sdist_metadata(query.indexes, built.group(1), built.group(2))
        if found is None:
            raise Unsatisfiable(_reason(tail(stderr)) + " (and no sdist of it records its requirements)")
        given[(built.group(1), built.group(2))] = found


_BUILD_FAILED = re.compile(r"Failed to (?:download and )?build `([A-Za-z0-9._-]+)==([^`]+)`")
_metadata_seen: dict[tuple[str, str], SdistMetadata | None] = {}


def _sdist_metadata(indexes: Sequence[str], name: str, version: str) -> SdistMetadata | None:
    """What the first index with an sdist of ``name==version`` records of it (once a process)."""
    from assembler.errors import AssemblerError
    from assembler.python.index import sdist_metadata  # the index client, only when uv needs it

    if (name, version) not in _metadata_seen:
        found = None
        for index in indexes:
            try:
                found = sdist_metadata(index, name, version)
            except AssemblerError:
                continue
            if found is not None:
                break
        _metadata_seen[(name, version)] = found
    return _metadata_seen[(name, version)]


def _metadata_args(given: Mapping[tuple[str, str], SdistMetadata], work: Path) -> list[str]:
    """``--config-file`` of a uv.toml giving uv the sdists' recorded metadata."""
    if not given:
        return []
    lines = []
    for (name, version), meta in sorted(given.items()):
        lines += ["[[dependency-metadata]]", f"name = {json.dumps(name)}", f"version = {json.dumps(version)}"]
        lines.append(f"requires-dist = {json.dumps(list(meta.requires_dist))}")
        if meta.requires_python:
            lines.append(f"requires-python = {json.dumps(meta.requires_python)}")
    (work / "uv.toml").write_text("\n".join(lines) + "\n")
    return ["--config-file", "uv.toml"]


def _reason(stderr: str) -> str:
    """uv's explanation on one line, without its work folder's names or a URL's credentials
    (the reason is written in the lock and said)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("hint: Pre-releases")]
    text = " ".join(lines[-8:])
    text = re.sub(r"(?:/[^\s/]+)+/(m[0-9]+\.in|provided|overrides\.txt)\b", r"\1", text)
    text = re.sub(r"/(?:tmp|root/\.cache|var/tmp)/\S*", "...", text)  # uv's build folders: a lock's bytes stay
    text = (
        text.replace("error: ", "").replace("cause: ", "").replace("No solution found when resolving dependencies ", "")
    )
    return scrubbed(text)[-900:]


_VIA_ONE = re.compile(r"^\s+# via (.+)$")
_VIA_MORE = re.compile(r"^\s+#   (.+)$")


def parse_pins(text: str) -> list[Pinned]:
    """uv's requirements output (hashes and ``# via`` annotations) as pins, in its order."""
    found: list[Pinned] = []
    current: tuple[str, str] | None = None
    hashes: list[str] = []
    via: list[str] = []

    def close() -> None:
        if current is not None:
            found.append(Pinned(current[0], current[1], tuple(hashes), tuple(via)))

    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            close()
            pin = line.split(" \\")[0].strip()
            current, hashes, via = (_name_of(pin), pin), [], []
        elif current is not None:
            hashes += re.findall(r"--hash=sha256:[0-9a-f]{64}", line)
            one, more = _VIA_ONE.match(line), _VIA_MORE.match(line)
            if one and one.group(1).strip() != "":
                via += [part.strip() for part in one.group(1).split(",")]
            elif more:
                via.append(more.group(1).strip())
    close()
    return [replace_via(p) for p in found]


def replace_via(pin: Pinned) -> Pinned:
    """Its parents as canonical names (requirement files and options as written)."""
    via = tuple(v if v.startswith("-") else canonicalize_name(v.split("[")[0]) for v in pin.via)
    return Pinned(pin.name, pin.pin, pin.hashes, via)


def _name_of(pin: str) -> str:
    return canonicalize_name(re.split(r"[=@ \[;]", pin, maxsplit=1)[0])
