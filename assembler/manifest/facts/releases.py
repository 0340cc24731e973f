"""Pins against the releases that exist (``pypi.json``, ``torch_builds.json``).

Each ``name==version`` of a Python set (its requirements and what it says the image below
``provided``) and of a ``pip:`` layer, whose environment markers hold for the set's Python:

- is a release of ``name`` where the set's indexes are PyPI's or PyTorch's (another
  index may carry its own versions), unless the manifest builds ``name`` from a source of
  that name; a version newer than the data's newest is not known;
- admits the set's Python: the release's Requires-Python on PyPI (vLLM 0.11.1: >=3.10);
- for torch, torchvision and torchaudio from a PyTorch index of one CUDA (``.../whl/cu118``),
  lies within the builds that index carries (cu118: torch 2.0.0 to 2.7.1), unless it is
  newer than every build the data knows of.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from assembler.manifest.facts.data import read, where
from assembler.manifest.facts.scope import Place, describe, params_at, places, settable
from assembler.manifest.schema.prebuilt import Installs, sets_installed
from assembler.manifest.text.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject

_PYPI = ("https://pypi.org/simple", "https://pypi.python.org/simple")
_TORCH_INDEX = "https://download.pytorch.org/whl/"


@dataclass(frozen=True)
class Pinned:
    """One ``name==version`` where a set or layer writes it, with the set's Python and indexes."""

    place: Place
    what: str  # "python set build", "pip"
    path: PathKey  # the requirement's own
    python_path: PathKey
    name: str
    version: Version
    text: str
    python: str
    indexes: tuple[str, ...]


def check(loaded: Subject) -> None:
    """Every pin of the image and its compile steps against the releases; ManifestError."""
    for pin in _pins(loaded):
        _check_release(loaded, pin)
        _check_python(loaded, pin)
        _check_torch_index(loaded, pin)


def pypi_pins(loaded: Subject) -> Iterator[Pinned]:
    """The pins of the image and its compile steps taken from PyPI alone."""
    return (pin for pin in _pins(loaded) if all(url in _PYPI for url in pin.indexes))


def _pins(loaded: Subject) -> Iterator[Pinned]:
    for place in places(loaded):
        # a step's sets, or what the layer's kind says it installs
        owned = sets_installed(place.step.python_sets) if place.step is not None else []
        for installs in owned + (place.layer.installs() if place.layer is not None else []):
            yield from _set_pins(loaded, place, installs)


def _set_pins(loaded: Subject, place: Place, installs: Installs) -> Iterator[Pinned]:
    pyset, path = installs.pyset, (*place.path, *installs.at)
    indexes = tuple(url.rstrip("/") for url in pyset.indexes())
    for field, texts in ((installs.listed, pyset.requirements), ("provided", pyset.provided)):
        for k, text in enumerate(texts):
            _check_version_text(loaded, place, (*path, field, k), text)
            pin = _exact(text, pyset.python)
            if pin is not None:
                at = (*path, field, k)
                yield Pinned(place, installs.what, at, (*path, "python"), *pin, text, pyset.python, indexes)


_PINNED = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)\s*(?:;.*)?$")


def _check_version_text(loaded: Subject, place: Place, path: PathKey, text: str) -> None:
    """``name==X`` whose X is no version (``torch==latest``): pip stops on it, plan first."""
    found = _PINNED.match(text)
    if found is None or found.group(2).endswith(".*"):
        return
    try:
        Version(found.group(2))
    except InvalidVersion:
        names = params_at(loaded, path, found.group(2))
        raise loaded.error(
            path,
            f"{place.what}: {text.strip()}: {found.group(2)!r}"
            + (f" ({describe(loaded, names)})" if names else "")
            + " is not a version",
            hint=_hint(loaded, names, "a release (2.5.1)"),
        ) from None


def _exact(text: str, python: str) -> tuple[str, Version] | None:
    """(name, public version) of ``name[extras]==version`` whose markers hold for ``python``."""
    try:
        req = Requirement(text)
    except InvalidRequirement:
        return None
    specs = list(req.specifier)
    if req.url or len(specs) != 1 or specs[0].operator != "==" or specs[0].version.endswith(".*"):
        return None
    if req.marker is not None and not _holds(req.marker, python):
        return None
    try:
        return canonicalize_name(req.name), Version(Version(specs[0].version).public)
    except InvalidVersion:
        return None


def _holds(marker: Marker, python: str) -> bool:
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux"}
    return marker.evaluate(env)


@cache
def releases(name: str) -> dict[Version, str]:
    """PyPI's releases of ``name`` (version -> Requires-Python); empty when not recorded."""
    out: dict[Version, str] = {}
    for text, requires in read("pypi")["packages"].get(name, {}).items():
        try:
            out[Version(text)] = requires
        except InvalidVersion:
            continue  # a legacy version string: no pin can name it
    return out


def _from_pypi_or_torch(indexes: Sequence[str]) -> bool:
    return all(url in _PYPI or url.startswith(_TORCH_INDEX) for url in indexes)


def _check_release(loaded: Subject, pin: Pinned) -> None:
    known = releases(pin.name)
    if not known or pin.version in known or pin.version > max(known) or not _from_pypi_or_torch(pin.indexes):
        return
    if pin.name in {canonicalize_name(name) for name in loaded.manifest.sources}:
        return  # built here from its source (vllm==0.11.1.dev200 of a commit between releases)
    names = params_at(loaded, pin.path, str(pin.version))
    lower = sorted(v for v in known if v < pin.version)[-2:]
    higher = sorted(v for v in known if v > pin.version)[:2]
    near = ", ".join(str(v) for v in [*lower, *higher])
    raise loaded.error(
        pin.path,
        f"{pin.place.what}: {pin.what}: {pin.name}=={pin.version}"
        + (f" ({describe(loaded, names)})" if names else "")
        + f" was never released: PyPI's {pin.name} has {near} around it ({where('pypi')})",
        hint=_hint(loaded, names, f"one of {near}"),
    )


def _admits(requires: str, python: str) -> bool:
    try:
        spec = SpecifierSet(requires)
    except InvalidSpecifier:
        return True  # a malformed Requires-Python says nothing pip would act on
    return any(spec.contains(f"{python}.{patch}", prereleases=True) for patch in (0, 99))


def _check_python(loaded: Subject, pin: Pinned) -> None:
    requires = releases(pin.name).get(pin.version, "")
    if not requires or _admits(requires, pin.python):
        return
    python = params_at(loaded, pin.python_path, pin.python)
    names = params_at(loaded, pin.path, str(pin.version))
    said = f"{describe(loaded, python)}" if python else f"Python {pin.python}"
    raise loaded.error(
        pin.path,
        f"{pin.place.what}: {pin.what}: {pin.name}=={pin.version}"
        + (f" ({describe(loaded, names)})" if names else "")
        + f" requires Python {requires} (its Requires-Python on PyPI, {where('pypi')}), not the set's "
        f"{pin.python} ({said})",
        hint=_hint(loaded, [*python, *names], f"a Python that {pin.name} {pin.version} admits, or another release"),
    )


def _flavour(url: str) -> str | None:
    if not url.startswith(_TORCH_INDEX):
        return None
    parts = url[len(_TORCH_INDEX) :].split("/")
    flavour = parts[1] if parts[0] == "nightly" and len(parts) > 1 else parts[0]
    return flavour if flavour.startswith("cu") else None


def builds(flavour: str, name: str) -> list[Version]:
    """The versions of ``name`` PyTorch's ``flavour`` index (cu128) is known to build."""
    return [Version(v) for v in read("torch_builds")["flavours"].get(flavour, {}).get(name, [])]


def _check_torch_index(loaded: Subject, pin: Pinned) -> None:
    for n, url in enumerate(pin.indexes):
        flavour = _flavour(url)
        built = builds(flavour, pin.name) if flavour else []
        if not built or built[0] <= pin.version <= built[-1]:
            continue
        newest = max((v for f in read("torch_builds")["flavours"] for v in builds(f, pin.name)), default=built[-1])
        if pin.version > newest:
            continue  # newer than the data: not known
        _refuse_flavour(loaded, pin, n, url, built)


def _refuse_flavour(loaded: Subject, pin: Pinned, n: int, url: str, built: list[Version]) -> None:
    flavour = _flavour(url) or ""
    others = [f for f in sorted(read("torch_builds")["flavours"]) if builds(f, pin.name)[:1] <= [pin.version]]
    others = [f for f in others if builds(f, pin.name) and pin.version <= builds(f, pin.name)[-1]]
    version = params_at(loaded, pin.path, str(pin.version))
    index = _index_params(loaded, pin, n, url)
    raise loaded.error(
        pin.path,
        f"{pin.place.what}: {pin.what}: {pin.name}=={pin.version}"
        + (f" ({describe(loaded, version)})" if version else "")
        + f" has no {flavour} build: {url}"
        + (f" ({describe(loaded, index)})" if index else "")
        + f" carries {pin.name} {built[0]} to {built[-1]} only ({where('torch_builds')})",
        hint=_hint(
            loaded,
            [*index, *version],
            f"a CUDA whose index builds {pin.name} {pin.version} ({', '.join(others) or 'none known'}), "
            f"or a {pin.name} from {built[0]} to {built[-1]}",
        ),
    )


def _index_params(loaded: Subject, pin: Pinned, n: int, url: str) -> list[str]:
    """The params the ``n``th index of the pin's set (or its layer's ``index:``) is made of."""
    if pin.what == "pip":
        path: PathKey = (*pin.place.path, "index")
    else:
        set_path = pin.path[:-2]
        path = (*set_path, "index_url") if n == 0 else (*set_path, "extra_index_urls", n - 1)
    return params_at(loaded, path, url)


def _hint(loaded: Subject, names: Sequence[str], wanted: str) -> str:
    roots = settable(loaded, names)
    return f"--set {' or '.join(roots)} to {wanted}" if roots else f"pin {wanted}"
