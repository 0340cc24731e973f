"""Bases against what their registries publish (``tags.json``), and what a reference
says of itself: its repository, tag and distribution.

A ``docker://`` base of a repository ``tags.json`` lists (nvidia/cuda, ubuntu) names a tag
the repository has, unless its version is newer than the list: ``nvidia/cuda:12.1.0-devel-
ubuntu24.04`` is refused (12.1.0 was made for Ubuntu 18.04 to 22.04). The Pythons a base
runs are :mod:`.interpreters`'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from assembler.manifest.facts.data import read, where
from assembler.manifest.facts.scope import base_ref, describe, params_at, places, settable

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject


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


def check(loaded: Subject) -> None:
    """Each base's tag; ManifestError."""
    seen: set[str] = set()
    for place in places(loaded):
        if place.base not in seen:
            seen.add(place.base)
            _check_tag(loaded, place.base)


def _check_tag(loaded: Subject, name: str) -> None:
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
