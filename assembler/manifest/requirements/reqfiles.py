"""A Python set's requirements read from the project's own files (``requirements_file:``):
a pip requirements file, a ``pyproject.toml``, or a lock used as it is (``uv.lock``, PEP
751's ``pylock.toml``).

A requirements file is read as pip reads one: requirement lines (PEP 508, markers and
direct references), ``\\`` continuations, comments, ``-r``/``--requirement`` (relative to
the file that names it), ``-c``/``--constraint`` (the set's constraints), ``-i``/
``--index-url``, ``--extra-index-url`` and each requirement's ``--hash`` options (the lock
keeps only those files of the pin: :func:`assembler.python.slices.kept_hashes`). What a lock cannot
pin (``-e``, a local path, ``--find-links``, ``--no-index``) is refused with the file's line.
A ``pyproject.toml`` gives ``[project] dependencies``, the ``extras`` its
``optional-dependencies`` name and the ``groups`` of its ``[dependency-groups]`` (PEP 735,
includes resolved by pypa's ``dependency-groups``); the project itself is not installed.
A ``uv.lock`` is read by uv (``uv export --frozen``), a ``pylock.toml`` by packaging: every
pin with its hashes, the set then locked each pin alone (``no_deps``), never resolved again.
A requirements file's ``${NAME}`` (capitals, digits, ``_``) is the environment's, as pip
expands it (unset: kept): an index's password stays out of the file, and out of every record
(they name URLs without credentials: :mod:`assembler.manifest.text.urls`).

The manifest's loader reads these before the models see the set (:func:`expand`): the set's
``requirements`` are the file's, so a change to the file is a change to the set's
definition, and the lock says the set is stale.

Every file is read only where it is named, each once and bounded (:mod:`.projectfiles`).
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from assembler.manifest.requirements.projectfiles import FileError, Reader, read_text, resolved

_SHA256 = re.compile(r"sha256:([0-9a-f]{64})")
# a URL of this machine's files: file:, and a VCS's over it (git+file:, hg+file:), which a
# lock on another machine cannot fetch and which reads any path of this one
_LOCAL_URL = re.compile(r"^([a-z][a-z0-9]*\+)?file:", re.IGNORECASE)


@dataclass
class SetInput:
    """What a set takes from its file: requirements, indexes, constraints, hashes."""

    requirements: list[str] = field(default_factory=list)
    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    hashes: dict[str, list[str]] = field(default_factory=dict)  # canonical name -> sha256 hexes
    files: list[Path] = field(default_factory=list)  # every file read: the set's, its -r and -c files


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: continuations joined, comments cut."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        if whole:
            out.append((start, whole))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


_REFUSED = {
    "-e": "an editable install",
    "--editable": "an editable install",
    "-f": "--find-links (a folder or page of files the lock cannot pin)",
    "--find-links": "--find-links (a folder or page of files the lock cannot pin)",
    "--no-index": "--no-index",
}


def read_requirements(path: Path, shown: str, into: SetInput, *, reader: Reader) -> None:
    """Add what the requirements file at ``path`` (the one the manifest names) says to
    ``into`` (``shown``: its name in messages, relative to the manifest)."""
    _include(resolved(path, shown), path, shown, into, _At(reader, environ=os.environ))


def _include(real: Path, path: Path, shown: str, into: SetInput, at: _At) -> None:
    """The file at ``path`` (``real``: resolved) read into ``into``, once."""
    if at.reader.first(real, shown, constraint=at.constraint, depth=at.depth):
        into.files.append(path)
        _parse(read_text(real, shown), path, shown, into, at)


@dataclass(frozen=True)
class _At:
    """Where a file's lines are read: the set's reader, how deep in -r files, and whether
    what they say are constraints (a -c file's, and every file it names)."""

    reader: Reader
    depth: int = 0
    constraint: bool = False
    environ: Mapping[str, str] = field(default_factory=dict)  # ${NAME}'s (a pip file's; uv export's lines: none)


def _parse(text: str, path: Path, shown: str, into: SetInput, at: _At) -> None:
    for number, written in _logical_lines(text):  # ${NAME} expanded after comments are cut, as pip does
        line = re.sub(r"\$\{([A-Z0-9_]+)\}", lambda name: at.environ.get(name.group(1)) or name.group(0), written)
        where = f"{shown}:{number}"
        if not line.startswith("-"):
            _requirement(re.split(r"\s+(?=--)", line), where, into)
            continue
        try:
            words = shlex.split(line)
        except ValueError as e:
            raise FileError(where, f"{e}") from None
        first = words[0]
        option, _, inline = first.partition("=")
        if option in _REFUSED:
            raise FileError(where, f"{_REFUSED[option]} cannot be locked: name the requirement (NAME==VERSION)")
        if option == "--trusted-host":
            continue  # pip-compile writes it beside a plain-HTTP index; it pins nothing
        if option in ("-r", "--requirement", "-c", "--constraint", "-i", "--index-url", "--extra-index-url"):
            value = inline or (words[1] if len(words) > 1 else "")
            if not value:
                raise FileError(where, f"{option} names nothing")
            _option(option, value, path, shown, where, into, at)
        else:
            raise FileError(where, f"{first}: not an option a lock takes (-r, -c, -i, --extra-index-url, --hash)")


def _option(option: str, value: str, path: Path, shown: str, where: str, into: SetInput, at: _At) -> None:
    if option in ("-i", "--index-url"):
        into.index_url = value
        return
    if option == "--extra-index-url":
        into.extra_index_urls.append(value)
        return
    named = path.parent / value
    real = at.reader.included(named, where, f"{option} {value}")
    deeper = replace(at, depth=at.depth + 1)
    shown = str(Path(shown).parent / value)
    if option in ("-r", "--requirement"):
        _include(real, named, shown, into, deeper)
        return
    sub = SetInput()  # -c: what it (and every file it names) says are constraints
    _include(real, named, shown, sub, replace(deeper, constraint=True))
    into.constraints += sub.requirements + sub.constraints
    into.files += sub.files


def _requirement(words: list[str], where: str, into: SetInput) -> None:
    """One requirement line: the requirement, then its ``--hash=`` options."""
    text, options = words[0].strip(), [w.strip() for w in words[1:]]
    other = [o for o in options if not o.startswith("--hash=")]
    if other:
        raise FileError(where, f"{other[0]}: a requirement's option a lock does not take (only --hash=sha256:HEX)")
    hashes = options
    if text.startswith((".", "/")) or re.match(r"^[a-z+]+://", text):
        raise FileError(where, f"{text!r}: a path or bare URL; a lock takes NAME==VERSION or NAME @ URL")
    try:
        req = Requirement(text)
    except InvalidRequirement as e:
        raise FileError(where, f"{text!r} is not a requirement: {e}") from None
    if req.url and _LOCAL_URL.match(req.url):
        raise FileError(where, f"{text!r}: a file on this machine (as pip freeze in conda writes): NAME==VERSION")
    into.requirements.append(text)
    shas = []
    for option in hashes:
        found = _SHA256.fullmatch(option.partition("=")[2])
        if found is None:
            raise FileError(where, f"{option}: the lock keeps sha256 hashes (--hash=sha256:HEX)")
        shas.append(found.group(1))
    if shas:
        into.hashes.setdefault(canonicalize_name(req.name), []).extend(shas)


def read_pyproject(path: Path, shown: str, extras: list[str], groups: list[str], into: SetInput) -> None:
    """``[project] dependencies``, the named ``optional-dependencies`` and dependency groups."""
    from dependency_groups import CyclicDependencyError, resolve  # pypa's PEP 735 reader

    try:
        data = tomllib.loads(read_text(path, shown))
    except tomllib.TOMLDecodeError as e:
        raise FileError(shown, f"not TOML: {e}") from None
    project = data.get("project", {})
    if not isinstance(project, dict):
        raise FileError(shown, "[project] is not a table")
    if "dependencies" in project.get("dynamic", []):
        raise FileError(shown, "its dependencies are dynamic (the build backend's): give a requirements file instead")
    reqs = _strings(project.get("dependencies", []), shown, "[project] dependencies")
    if groups:
        table = data.get("dependency-groups", {})
        try:
            reqs += list(resolve(table, *groups))
        except (LookupError, ValueError, TypeError, CyclicDependencyError) as e:
            raise FileError(shown, f"groups: {e} (it has {_names(table)})") from None
    optional = project.get("optional-dependencies", {})
    optional = {canonicalize_name(k): v for k, v in optional.items()} if isinstance(optional, dict) else {}
    own = canonicalize_name(str(project.get("name", ""))) if project.get("name") else None
    for text in _own_extras_expanded(reqs, [canonicalize_name(e) for e in extras], optional, own, shown):
        _requirement([text], shown, into)


def _own_extras_expanded(
    reqs: list[str], extras: list[str], optional: dict[str, Any], own: str | None, shown: str
) -> list[str]:
    """``reqs`` and the named extras' requirements, the project's own extras read in place
    (``all = ["myapp[serve,test]"]`` is serve's and test's: never ``myapp`` from an index)."""
    out: list[str] = []
    done: set[str] = set()
    texts, wanted = list(reqs), list(extras)
    while texts or wanted:
        for text in texts:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                out.append(text)  # said with its reason where it is read
                continue
            if own is not None and canonicalize_name(req.name) == own:
                wanted += [canonicalize_name(e) for e in req.extras]
            else:
                out.append(text)
        texts = []
        for extra in [e for e in wanted if e not in done]:
            done.add(extra)
            if extra not in optional:
                raise FileError(shown, f"extras: no optional-dependencies {extra!r} (it has {_names(optional)})")
            texts += _strings(optional[extra], shown, f"optional-dependencies.{extra}")
        wanted = []
    return out


def read_uv_lock(path: Path, shown: str, extras: list[str], groups: list[str], into: SetInput) -> None:
    """What a ``uv.lock`` pins for the project beside it, its ``extras`` and ``groups`` (none
    of its default groups), every pin with its hashes and index: read by uv itself (``uv
    export --frozen``: the lock is neither resolved again nor written)."""
    from assembler.errors import AssemblerError
    from assembler.proc import Runner, uv_binary  # uv reads its own lock

    if not (path.parent / "pyproject.toml").is_file():
        raise FileError(shown, "a uv.lock is read with its project: no pyproject.toml beside it")
    try:
        data = tomllib.loads(read_text(path, shown))
    except tomllib.TOMLDecodeError as e:
        raise FileError(shown, f"not TOML: {e}") from None
    argv = [uv_binary(), "export", "--frozen", "--offline", "--no-config", "--format", "requirements-txt"]
    argv += ["--no-emit-workspace", "--no-header", "--no-annotate", "--no-default-groups"]
    argv += [f"--extra={e}" for e in extras] + [f"--group={g}" for g in groups]
    try:
        done = Runner().run([*argv, "--project", str(path.parent)], timeout=120)
    except AssemblerError as e:
        raise FileError(shown, f"uv export could not read it: {e}") from None
    _parse(done.stdout, path, f"{shown} (uv export's line)", into, _At(Reader((path.parent,))))
    # the indexes its packages came from, in the lock's order (uv export names only the
    # project's configured ones)
    packages = data.get("package", [])
    sources = [p.get("source", {}) for p in packages if isinstance(p, dict)] if isinstance(packages, list) else []
    registries = list(dict.fromkeys(str(s["registry"]) for s in sources if isinstance(s, dict) and "registry" in s))
    if registries:
        into.index_url, into.extra_index_urls = registries[0], registries[1:]


def read_pylock(path: Path, shown: str, into: SetInput) -> None:
    """What a PEP 751 ``pylock.toml`` pins (packaging reads and validates it): each package
    at its version with the hashes of its files, its marker kept (uv evaluates it for the
    image's Python and platform), its index where the file names one."""
    from packaging.pylock import Pylock, PylockUnsupportedVersionError, PylockValidationError

    try:
        lock = Pylock.from_dict(tomllib.loads(read_text(path, shown)))
    except (tomllib.TOMLDecodeError, PylockValidationError, PylockUnsupportedVersionError) as e:
        raise FileError(shown, f"not a PEP 751 lock file: {e}") from None
    indexes: list[str] = []
    for package in lock.packages:
        if package.directory is not None:
            continue  # the project itself (or a workspace member): not installed, as for a uv.lock
        marker = f" ; {package.marker}" if package.marker else ""
        if package.marker and re.search(r"\b(extras|dependency_groups)\b", str(package.marker)):
            raise FileError(shown, f"{package.name}: a marker on extras or dependency groups ({package.marker})")
        hashes: list[Mapping[str, str]] = [w.hashes for w in package.wheels or []]
        hashes += [package.sdist.hashes] if package.sdist else []
        if package.vcs is not None:
            url = f"{package.vcs.type}+{package.vcs.url}@{package.vcs.commit_id}"
            _requirement([f"{package.name} @ {url}{marker}"], shown, into)
            continue
        if package.archive is not None and package.archive.url:
            hashes, text = [package.archive.hashes], f"{package.name} @ {package.archive.url}{marker}"
        elif package.version is not None and hashes:
            text = f"{package.name}=={package.version}{marker}"
        else:
            raise FileError(shown, f"{package.name}: neither a version with files nor an archive or git commit")
        shas = [f"--hash=sha256:{h['sha256']}" for h in hashes if "sha256" in h]
        if not shas:
            raise FileError(shown, f"{package.name}: no sha256 among its files' hashes")
        _requirement([text, *shas], shown, into)
        if package.index and package.index not in indexes:
            indexes.append(package.index)
    if indexes:
        into.index_url, into.extra_index_urls = indexes[0], indexes[1:]


def _strings(value: Any, shown: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FileError(shown, f"{what} is not a list of requirements")
    return list(value)


def _names(table: Any) -> str:
    return ", ".join(sorted(table)) if isinstance(table, dict) and table else "none"


LOCKED = ("uv.lock", "pylock")  # files that pin every distribution, with hashes


def kind_of(name: str) -> str:
    """What a ``requirements_file`` is, by its name: pyproject, uv.lock, pylock (PEP 751's
    ``pylock.toml``, ``pylock.NAME.toml``) or requirements."""
    base = Path(name).name
    if base == "pyproject.toml":
        return "pyproject"
    if base == "uv.lock":
        return "uv.lock"
    if re.fullmatch(r"pylock\.([^.]+\.)?toml", base):
        return "pylock"
    return "requirements"


def read_set_file(path: Path, shown: str, extras: list[str], groups: list[str], *, project: Path) -> SetInput:
    """What the file at ``path`` gives a set, read as its kind (:func:`kind_of`) is;
    ``project``: the manifest's folder (a requirements file's -r and -c stay inside it, or
    inside the folder of the file the manifest names)."""
    into = SetInput()
    kind = kind_of(shown)
    if kind == "pyproject":
        read_pyproject(path, shown, extras, groups, into)
    elif kind == "uv.lock":
        read_uv_lock(path, shown, extras, groups, into)
    elif extras or groups:
        raise FileError(shown, "extras: and groups: are a pyproject.toml's or a uv.lock's")
    elif kind == "pylock":
        read_pylock(path, shown, into)
    else:
        read_requirements(path, shown, into, reader=Reader.of(project, path))
    if path not in into.files:
        into.files.insert(0, path)
    return into


def _many(value: Any) -> list[str]:
    """A one-or-many field as written (``extras: serve`` is ``[serve]``), as the models read it."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value] if isinstance(value, list) else [str(value)]


def expand(pyset: dict[str, Any], folder: Path, error: Callable[[str], Exception]) -> dict[str, Any] | None:
    """``pyset`` (a ``python_sets:`` entry as written) with its ``requirements_file`` read:
    the file's requirements after any written, its indexes and constraints where the set
    names none, its hashes. ``error`` makes the manifest's error at the set's field.

    None: a pip requirements file naming nothing (comments only), in a set that writes no
    requirements of its own, is no set: ``pip install -r`` installs nothing from it, so
    there is nothing to lock (``assemble init python``'s fresh ``requirements.txt``). A
    ``pyproject.toml`` or a lock naming nothing stays an error: an extra or a group misnamed."""
    name = pyset.get("requirements_file")
    if not isinstance(name, str):
        return pyset
    written = _many(pyset.get("requirements"))
    if written and kind_of(name) in LOCKED:
        raise error(
            f"{name} is a lock, used as it is: requirements: beside it would go in unlocked (a set of their own)"
        )
    try:
        into = read_set_file(
            folder / name, name, _many(pyset.get("extras")), _many(pyset.get("groups")), project=folder
        )
    except FileError as e:
        raise error(str(e)) from None
    if not into.requirements and not written and kind_of(name) == "requirements" and not into.constraints:
        return None
    if not into.requirements:
        raise error(f"{name}: no requirement in it")
    out = dict(pyset)
    if kind_of(name) in LOCKED:
        # every pin of the environment is in the file: each is locked at its version alone,
        # nothing resolved again (pip's --no-deps; require_hashes installs it as it is)
        out.setdefault("no_deps", True)
    # what the set writes first: its own entries keep their places (an error names their line)
    out["requirements"] = written + into.requirements
    if into.index_url and "index_url" not in pyset:
        out["index_url"] = into.index_url
    if into.extra_index_urls and "extra_index_urls" not in pyset:
        out["extra_index_urls"] = into.extra_index_urls
    if into.constraints:
        out["constraints"] = _many(pyset.get("constraints")) + into.constraints
    if into.hashes:
        out["hashes"] = into.hashes
    return out
