"""The Python each base runs against the Pythons run, installed and resolved for on it
(``distros.json``, ``interpreters.json``, ``tags.json``).

What a base starts with is known when it has no Python of its own (``tags.json``'s
``python: none``: nvidia/cuda, ubuntu; a bootstrap of a variant that installs none, minbase
and smaller, whose bootstrap packages may add its suite's python3), or has one that
``interpreters.json`` names (NGC PyTorch, SGLang's and AMD's images, each from what made
it) or its tag names (``..._py3.9_...``, ``-py310-``). The distribution is the one its
name says (``ubuntu22.04``, ``rocm/dev-ubuntu-24.04``), or a bootstrap's suite.

Each compile step, and the image's layers, are followed in order: the apt packages
``python3*`` give the distribution's python3, ``pythonX.Y*`` must be packaged by it (Ubuntu
22.04: 3.10 and 3.11) and add it, a command running ``pythonX.Y`` (or ``uv venv --python
X.Y`` told to use the system's Pythons only) needs one of those, and so does each Python
set's ``python:`` once a Python is there. A step or layer that takes Python from elsewhere (the deadsnakes PPA,
``uv python install``, a ``uv venv`` free to download one, conda), or takes the artifacts
of a step that does, ends the walk: its Pythons are not known.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assembler.manifest.facts.bases import distribution, parse
from assembler.manifest.facts.data import read, where
from assembler.manifest.facts.scope import Place, base_ref, describe, params_at, places, settable
from assembler.manifest.schema import model as m
from assembler.manifest.text.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject

_ELSEWHERE = re.compile(r"uv python install|\bconda\b|micromamba|\bpyenv\b|/opt/python/|python-build-standalone")
# the deadsnakes PPA builds for Ubuntu's releases only: on Debian it gives nothing
_DEADSNAKES = re.compile(r"deadsnakes")
# an artifact that may hold an interpreter (a CPython tree, a venv, a conda prefix)
_HOLDS_PYTHON = re.compile(r"python|venv|conda|mamba", re.IGNORECASE)
_PACKAGE = re.compile(r"^(?:lib)?python(3\.\d{1,2})(?:-[a-z]+)?(?::[a-z0-9]+)?$")
_RUNS = re.compile(r"(?:^|[\s'\"(;&|])python(3\.\d{1,2})(?=[\s'\";)]|$)")
_APT = re.compile(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install\b")
_SAYS = re.compile(r"^[\s{(!]*(?:echo|printf)\b")  # a message naming a Python runs none
# `uv venv --python 3.12` (or /usr/bin/python3.12): uv downloads a CPython it does not find
# unless told to use the system's only
_UV_VENV = re.compile(r"\buv\s+venv\b[^;&|]*?\s(?:--python|-p)[=\s]+['\"]?(?:\S*/python)?(3\.\d{1,2})(?![\d.])")
_SYSTEM_ONLY = re.compile(r"only-system|UV_PYTHON_DOWNLOADS=(?:never|manual)")
_VERSION = re.compile(r"^3\.\d{1,2}$")
_TAG_PYTHON = re.compile(r"(?:^|[-_])py3\.?(\d{1,2})(?=[-_]|$)")
_NO_PYTHON_VARIANTS = {"extract", "custom", "essential", "apt", "required", "minbase", "buildd"}


@dataclass
class Start:
    """What a base is known to run: its distribution (None where not known) and its Pythons."""

    name: str
    described: str  # "nvidia/cuda:12.4.1-devel-ubuntu22.04", "a bootstrap of bookworm"
    param_path: PathKey  # where the base is written, for the params that make it
    param_value: str
    release: tuple[str, str] | None
    own: str | None = None  # the Python the image itself runs, from interpreters.json or its tag
    have: set[str] = field(default_factory=set)

    @property
    def distro(self) -> dict[str, Any] | None:
        return read("distros")["distributions"][self.release[0]][self.release[1]] if self.release else None

    @property
    def os_name(self) -> str:
        if self.release is None or self.distro is None:
            return ""
        return f"{self.release[0].capitalize()} {self.release[1]} ({self.distro['codename']})"


def _by_codename(suite: str) -> tuple[str, str] | None:
    for name, releases in read("distros")["distributions"].items():
        for release, facts in releases.items():
            if suite == facts["codename"]:
                return name, release
    return None


def _own(repository: str, tag: str) -> tuple[str, str] | None:
    """(the Python, where it is said) an image runs by interpreters.json or its tag."""
    images = read("interpreters")["images"]
    repository = re.sub(r"^(?:docker\.io/)?(?:library/)?", "", repository)
    entry = images.get(f"{repository}:{tag}") or images.get(repository)
    if entry is not None:
        return str(entry["python"]), where("interpreters")
    found = _TAG_PYTHON.search(tag)
    return (f"3.{found.group(1)}", f"its tag {tag}") if found else None


def start(loaded: Subject, name: str) -> Start | None:
    """What base ``name`` is known to run; None where that is not known."""
    spec = loaded.manifest.bases.get(name)
    if isinstance(spec, m.BootstrapBase):
        boot = spec.bootstrap
        release = _by_codename(boot.suite)
        if release is None or boot.variant not in _NO_PYTHON_VARIANTS:
            return None
        path = ("bases", name, "bootstrap", "suite")
        base = Start(name, f"a bootstrap of {boot.suite}", path, boot.suite, release)
        for package in boot.packages:
            base.have |= _gives(package, base.distro)
        return base
    ref = base_ref(loaded, name)
    image = parse(ref) if ref else None
    if ref is None or image is None:
        return None
    base = Start(name, ref.removeprefix("docker://"), ("bases", name), ref, distribution(image))
    own = _own(image.repository, image.tag)
    if own is not None:
        base.own = own[0] if own[0] != "python3" else (base.distro or {}).get("python3")
        if base.own is None:
            return None
        base.have.add(base.own)
        return base
    if image.known is None or image.known.get("python") != "none" or base.release is None:
        return None  # a Python the base may have, or a distribution not known
    return base


def _gives(package: str, distro: dict[str, Any] | None) -> set[str]:
    if package == "python3" or package.startswith(("python3-", "libpython3-")):
        return {distro["python3"]} if distro else set()
    found = _PACKAGE.match(package)
    return {found.group(1)} if found else set()


def check(loaded: Subject) -> None:
    """The Pythons of each compile step, then of the image's layers; ManifestError."""
    elsewhere = _elsewhere_artifacts(loaded)
    for chain in _chains(loaded):
        base = start(loaded, chain[0].base)
        if base is None:
            continue
        for place in chain:
            if not _walk(loaded, base, place, elsewhere):
                break


def _chains(loaded: Subject) -> Iterator[tuple[Place, ...]]:
    """What runs on one base, in order: a compile step, or the image's layers."""
    layers: list[Place] = []
    for place in places(loaded):
        if place.step is not None:
            yield (place,)
        else:
            layers.append(place)
    if layers:
        yield tuple(layers)


def _downloads(command: str, env: str, release: tuple[str, str] | None) -> bool:
    """Whether the command takes a Python from elsewhere (a download, a PPA, conda...) on a
    base of distribution ``release`` (None: not known)."""
    if _ELSEWHERE.search(command) or (_DEADSNAKES.search(command) and (release or ("ubuntu",))[0] == "ubuntu"):
        return True
    return bool(_UV_VENV.search(command) and not _SYSTEM_ONLY.search(env))


def _elsewhere_artifacts(loaded: Subject) -> set[str]:
    """The artifacts (STEP.NAME, and STEP for all of them) that may carry a Python taken from
    elsewhere: those of a step that takes one, whose path may hold an interpreter."""
    out = set()
    for step in loaded.manifest.compile:
        env = " ".join(f"{k}={v}" for k, v in step.env.items())
        base = start(loaded, step.base) if step.base else None
        if not any(_downloads(c, f"{env} {c}", base.release if base else None) for c in step.run):
            continue
        held = [name for name, artifact in step.artifacts.items() if _HOLDS_PYTHON.search(artifact.path)]
        out |= {f"{step.name}.{name}" for name in held} | ({step.name} if held else set())
    return out


def _walk(loaded: Subject, base: Start, place: Place, elsewhere: set[str]) -> bool:
    """The Pythons ``place`` installs into ``base.have``, refusing what it runs, installs or
    resolves a set for that is not there; False once Python comes from elsewhere."""
    if place.step is not None:
        taken, packages = list(place.step.inputs), list(place.step.packages)
    else:
        assert place.layer is not None  # a place is a step's or a layer's
        taken, packages = [r.ref for r in place.layer.step_refs()], place.layer.apt_packages() or []
    if any(ref in elsewhere for ref in taken):
        return False
    for k, package in enumerate(packages):
        _package(loaded, base, place, (*place.path, "packages", k), package)
    config = " ".join(f"{k}={v}" for k, v in loaded.manifest.image.config.env.items())
    env = " ".join(f"{k}={v}" for k, v in place.env.items()) + (f" {config}" if place.step is None else "")
    for k, command in enumerate(place.commands):
        if _downloads(command, f"{env} {command}", base.release):
            return False
        _command(loaded, base, place, (*place.path, "run", k), command)
    for k, pyset in enumerate(place.python_sets):
        version = str(pyset.python).strip()
        # with no Python given yet, where the set's comes from is not known
        if base.have and _VERSION.match(version) and version not in base.have:
            path = (*place.path, "python_sets", k, "python")
            _refuse(loaded, base, place, path, f"resolves Python set {pyset.name} for Python {version}", version)
    return True


def _command(loaded: Subject, base: Start, place: Place, path: PathKey, command: str) -> None:
    """The Pythons a command installs with apt into ``base.have``, refusing one it runs that is not there."""
    for segment in re.split(r"&&|\|\||;|\|", command):
        if _APT.search(segment):
            for word in segment.split():
                _package(loaded, base, place, path, word.strip("'\""))
            continue
        if _SAYS.match(segment):
            continue
        for version in [*_RUNS.findall(segment), *_UV_VENV.findall(segment)]:
            if version not in base.have:
                _refuse(loaded, base, place, path, f"runs python{version}", version)


def _package(loaded: Subject, base: Start, place: Place, path: PathKey, package: str) -> None:
    gives = _gives(package, base.distro)
    found = _PACKAGE.match(package)
    if found is not None and base.distro is not None and found.group(1) not in base.distro["pythons"]:
        _refuse(loaded, base, place, path, f"installs {package}", found.group(1))
    base.have |= gives


def _refuse(loaded: Subject, base: Start, place: Place, path: PathKey, does: str, version: str) -> None:
    distro = base.distro
    python = params_at(loaded, path, version)
    params = params_at(loaded, base.param_path, base.param_value)
    why = _why(loaded, base, version, installs=does.startswith("installs"))
    debian = base.release is not None and base.release[0] != "ubuntu"
    ways = "uv python install" if debian else "the deadsnakes PPA, uv python install"
    packaged = (
        f": {base.os_name} has {', '.join('python' + p for p in distro['pythons'])} (python3 is {distro['python3']}) "
        f"({where('distros')})"
        if distro is not None
        else ""
    )
    raise loaded.error(
        path,
        f"{place.what} {does}, {why}{packaged}; the base {base.name} is {base.described}"
        + (f" ({describe(loaded, params)})" if params else "")
        + (f", Python {describe(loaded, python)}" if python else ""),
        hint=f"--set {' or '.join(settable(loaded, [*python, *params])) or 'the base'} so that they agree, "
        f"or install Python {version} another way ({ways})" + _fix(loaded, base, python),
    )


def _fix(loaded: Subject, base: Start, python: list[str]) -> str:
    """The --set that gives the base's own Python (or its distribution's python3), if a param makes it."""
    want = base.own or (base.distro or {}).get("python3")
    roots = [r for r in settable(loaded, python) if loaded.params.get(r) == loaded.params.get(python[0])]
    return f"; the base's is {want}: --set {roots[0]}={want}" if want and roots else ""


def _why(loaded: Subject, base: Start, version: str, *, installs: bool) -> str:
    """Why Python ``version`` is not there: what the base runs, packages, or was given."""
    distro = base.distro
    others = sorted(base.have - {base.own}) if base.own else sorted(base.have)
    given = ", ".join("python" + p for p in others)
    if distro is not None and version not in distro["pythons"] and (installs or base.own is None):
        return f"which {base.os_name} does not package"
    if base.own is not None:
        runs = f"the base runs Python {base.own} ({_own_source(loaded, base)})"
        return f"which nothing installs: {runs}" + (f", and the packages before it give {given}" if given else "")
    if base.have:
        return f"which nothing installs (its packages and those before it give {given})"
    return f"which nothing installs: add python{version} to its packages"


def _own_source(loaded: Subject, base: Start) -> str:
    ref = base_ref(loaded, base.name) or ""
    image = parse(ref)
    own = _own(image.repository, image.tag) if image is not None else None
    return own[1] if own is not None else where("interpreters")
