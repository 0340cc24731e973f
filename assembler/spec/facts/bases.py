"""Bases against what their registries publish and what their distributions package
(``tags.json``, ``distros.json``).

- A ``docker://`` base of a repository ``tags.json`` lists (nvidia/cuda, ubuntu) names a
  tag the repository has, unless its version is newer than the list: ``nvidia/cuda:12.1.0-
  devel-ubuntu24.04`` is refused (12.1.0 was made for Ubuntu 18.04 to 22.04).
- On a base whose distribution is known (its tag says ``ubuntu22.04``, or it is ``ubuntu:
  22.04``) and whose Python is known (none, for those repositories), each step and the
  image's layers are followed in order: the apt packages ``python3*`` give the distribution's
  python3, ``pythonX.Y*`` must be packaged by it (Ubuntu 22.04: 3.10 and 3.11), and a
  command running ``pythonX.Y`` needs one of those. A step or layer that takes Python from
  elsewhere (the deadsnakes PPA, ``uv python install``, conda) ends the walk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assembler.spec import model as m
from assembler.spec.facts.data import read, where
from assembler.spec.facts.scope import Place, base_ref, describe, params_at, places, settable
from assembler.spec.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.spec.loaded import Loaded

_ELSEWHERE = re.compile(
    r"deadsnakes|uv python install|\bconda\b|micromamba|\bpyenv\b|/opt/python/|python-build-standalone"
)
_PACKAGE = re.compile(r"^(?:lib)?python(3\.\d{1,2})(?:-[a-z]+)?(?::[a-z0-9]+)?$")
_RUNS = re.compile(r"(?:^|[\s'\"(;&|])python(3\.\d{1,2})(?=[\s'\";)]|$)")
_APT = re.compile(r"\bapt(?:-get)?\s+(?:-\S+\s+)*install\b")


@dataclass(frozen=True)
class Image:
    """What a ``docker://`` reference is: its repository (as tags.json names it), tag and facts."""

    ref: str
    repository: str
    tag: str
    known: dict[str, Any] | None  # tags.json's entry, None for a repository it does not list


def parse(ref: str) -> Image | None:
    """A ``docker://`` base reference split; None for other transports and digests alone."""
    if not ref.startswith("docker://"):
        return None
    name = ref.removeprefix("docker://").split("@")[0]
    repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    repository = repository.lower()
    for plain, entry in read("tags")["repositories"].items():
        if repository == plain or repository in entry.get("aliases", []):
            return Image(ref, plain, tag, entry)
    return Image(ref, repository, tag, None)


def _version(text: str) -> tuple[int, ...] | None:
    found = re.match(r"^(\d+(?:\.\d+)*)", text)
    return tuple(int(n) for n in found.group(1).split(".")) if found else None


def distribution(image: Image) -> tuple[str, str] | None:
    """(distribution, release) the image is, as its name says: ``ubuntu22.04`` in a tag or
    repository (``rocm/dev-ubuntu-22.04``), or the ubuntu and debian repositories themselves."""
    known = read("distros")["distributions"]
    if image.repository in ("ubuntu", "debian"):
        for release, facts in known[image.repository].items():
            if image.tag in (release, facts["codename"]) or image.tag.startswith(f"{facts['codename']}-"):
                return image.repository, release
        return None
    found = re.search(r"ubuntu-?(\d\d\.\d\d)(?![\d.])", f"{image.repository}:{image.tag}")
    if found and found.group(1) in known["ubuntu"]:
        return "ubuntu", found.group(1)
    return None


def check(loaded: Loaded) -> None:
    """Each base's tag, then each step's and the image's Pythons; ManifestError."""
    seen: set[str] = set()
    for place in places(loaded):
        if place.base not in seen:
            seen.add(place.base)
            _check_tag(loaded, place.base)
    for chain in _chains(loaded):
        _check_pythons(loaded, chain)


def _check_tag(loaded: Loaded, name: str) -> None:
    ref = base_ref(loaded, name)
    image = parse(ref) if ref else None
    if image is None or image.known is None or image.tag in image.known["tags"]:
        return
    version, through = _version(image.tag), _version(image.known["through"])
    if version is None or through is None or version > through:
        return  # not a versioned tag, or newer than the list: not known
    kind = image.tag.rsplit("-", 1)[0] + "-" if "-" in image.tag else ""
    same = [t.removeprefix(kind) for t in image.known["tags"] if kind and t.startswith(kind)]
    has = f"its {kind.rstrip('-')} tags end in {', '.join(same)}" if same else _nearby(image)
    params = params_at(loaded, ("bases", name), ref or "")
    raise loaded.error(
        ("bases", name),
        f"base {name}: {image.repository} publishes no tag {image.tag}"
        + (f" ({describe(loaded, params)})" if params else "")
        + f": {has} ({where('tags')})",
        hint=f"--set {' or '.join(settable(loaded, params)) or 'the base'} to a tag it has",
    )


def _nearby(image: Image) -> str:
    version = _version(image.tag) or ()
    versions = sorted({_version(t) or () for t in image.known["tags"]} if image.known else set())
    lower = [v for v in versions if v < version][-2:]
    higher = [v for v in versions if v > version][:2]
    return "its versions around it are " + ", ".join(".".join(map(str, v)) for v in [*lower, *higher])


@dataclass(frozen=True)
class Chain:
    """What runs on one base, in order: a compile step, or the image's layers."""

    base: str
    places: tuple[Place, ...]


def _chains(loaded: Loaded) -> Iterator[Chain]:
    layers: list[Place] = []
    for place in places(loaded):
        if place.step is not None:
            yield Chain(place.base, (place,))
        else:
            layers.append(place)
    if layers:
        yield Chain(layers[0].base, tuple(layers))


def _check_pythons(loaded: Loaded, chain: Chain) -> None:
    ref = base_ref(loaded, chain.base)
    image = parse(ref) if ref else None
    release = distribution(image) if image is not None else None
    if image is None or image.known is None or image.known.get("python") != "none" or release is None:
        return  # a Python the base may have, or a distribution not known
    distro = read("distros")["distributions"][release[0]][release[1]]
    have: set[str] = set()
    for place in chain.places:
        if not _walk(loaded, chain, place, distro, have):
            return


def _walk(loaded: Loaded, chain: Chain, place: Place, distro: dict[str, Any], have: set[str]) -> bool:
    """The Pythons ``place`` installs into ``have``, refusing what it runs or installs that the
    distribution lacks; False once Python comes from elsewhere."""
    owner: Any = place.step if place.step is not None else place.layer
    packages = list(getattr(owner, "packages", None) or []) if not isinstance(owner, m.RunLayer) else []
    for k, package in enumerate(packages):
        _package(loaded, chain, place, (*place.path, "packages", k), package, distro, have)
    for k, command in enumerate(_commands(owner)):
        if _ELSEWHERE.search(command):
            return False
        for segment in re.split(r"&&|\|\||;|\|", command):
            path = (*place.path, "run", k)
            if _APT.search(segment):
                for word in segment.split():
                    _package(loaded, chain, place, path, word.strip("'\""), distro, have)
                continue
            for version in _RUNS.findall(segment):
                if version not in have:
                    _refuse(loaded, chain, place, path, f"runs python{version}", version, distro, have)
    return True


def _commands(owner: Any) -> Sequence[str]:
    run = getattr(owner, "run", None)
    return list(run) if isinstance(run, list) else []


def _package(
    loaded: Loaded,
    chain: Chain,
    place: Place,
    path: PathKey,
    package: str,
    distro: dict[str, Any],
    have: set[str],
) -> None:
    if package == "python3" or package.startswith("python3-") or package.startswith("libpython3-"):
        have.add(distro["python3"])
        return
    found = _PACKAGE.match(package)
    if found is None:
        return
    if found.group(1) not in distro["pythons"]:
        _refuse(loaded, chain, place, path, f"installs {package}", found.group(1), distro, have)
    have.add(found.group(1))


def _refuse(
    loaded: Loaded,
    chain: Chain,
    place: Place,
    path: PathKey,
    does: str,
    version: str,
    distro: dict[str, Any],
    have: set[str],
) -> None:
    ref = base_ref(loaded, chain.base) or ""
    image = parse(ref)
    release = distribution(image) if image is not None else None
    os_name = f"{(release or ('', ''))[0].capitalize()} {(release or ('', ''))[1]} ({distro['codename']})"
    python = params_at(loaded, path, version)
    base = params_at(loaded, ("bases", chain.base), ref)
    packaged = ", ".join("python" + p for p in distro["pythons"])
    given = ", ".join("python" + p for p in sorted(have))
    why = (
        f"which nothing installs (its packages and those before it give {given})"
        if version in distro["pythons"] and have
        else f"which nothing installs: add python{version} to its packages"
        if version in distro["pythons"]
        else f"which {os_name} does not package"
    )
    raise loaded.error(
        path,
        f"{place.what} {does}, {why}: {os_name} has {packaged} (python3 is {distro['python3']}) "
        f"({where('distros')}); the base {chain.base} is {ref.removeprefix('docker://')}"
        + (f" ({describe(loaded, base)})" if base else "")
        + (f", Python {describe(loaded, python)}" if python else ""),
        hint=f"--set {' or '.join(settable(loaded, [*python, *base])) or 'the base'} so that they agree, "
        f"or install Python {version} another way (the deadsnakes PPA, uv python install)",
    )
