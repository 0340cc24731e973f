"""A wheel pinned as pip's hash-checking mode writes it (``pip install --require-hashes``,
``uv pip compile --generate-hashes``): ``name==version --hash=sha256:HEX`` (several hashes:
one file per platform), or ``name @ https://.../FILE.whl --hash=sha256:HEX``; read for the
``pip:`` layers (:mod:`.prebuilt`), the lock and the package index client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from assembler.manifest.text.urls import redacted

if TYPE_CHECKING:
    from packaging.requirements import Requirement as Pep508

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Requirement:
    """One pinned wheel: its project name (normalised as PEP 503 says), version, and the
    sha256 of each file it may be (one per platform or Python)."""

    name: str
    version: str  # "" for a URL: its file name says it
    hashes: tuple[str, ...]
    text: str
    url: str = ""

    @property
    def pin(self) -> str:
        """``name==version``, or ``name @ FILE`` of a direct reference (its URL's last part,
        as recorded: no signed query string)."""
        return f"{self.name} @ {redacted(self.url).rsplit('/', 1)[-1]}" if self.url else f"{self.name}=={self.version}"


def plain_pin(text: str) -> str:
    """A ``pip:`` entry as the requirement a resolver reads: ``name==version``, whether the
    entry carries its hashes or the lock gives them (``locked: true``), or ``name @ URL``
    for a wheel by URL. Raises ValueError for an entry that is neither."""
    req = parse_requirement(text, hashed="--hash" in text)
    return f"{req.name} @ {req.url}" if req.url else f"{req.name}=={req.version}"


def _split_hashes(text: str) -> tuple[str, list[str]]:
    """The PEP 508 part of a hash-checking line and its ``--hash`` values (pip's requirements
    file options, which PEP 508 does not cover): ``--hash=sha256:HEX`` or ``--hash = ...``."""
    words = [w for w in text.split() if w != "\\"]  # pip's line continuations, as a requirements file has them
    first = next((i for i, w in enumerate(words) if w.startswith("--")), len(words))
    options = " ".join(words[first:])
    values = [v.strip() for v in options.split("--hash")[1:]]
    if options and (not options.startswith("--hash") or not all(v.startswith("=") for v in values)):
        raise ValueError(f"{text.strip()!r}: expected --hash=sha256:<64 lowercase hex digits>, got {options!r}")
    return " ".join(words[:first]), [v[1:].strip() for v in values]


def _sha256(text: str, value: str) -> str:
    algorithm, _, hex_ = value.partition(":")
    if algorithm != "sha256" or len(hex_) != 64 or not set(hex_) <= _HEX:
        raise ValueError(f"{text.strip()!r}: expected --hash=sha256:<64 lowercase hex digits>, got {value!r}")
    return hex_


def _direct_reference(req: Pep508) -> str:
    """The wheel URL of ``name @ URL`` (PEP 508 direct reference: a GitHub release, a
    vendor's index); ValueError when it is not a wheel over HTTP(S) of that project."""
    url = req.url or ""
    if urlsplit(url).scheme not in ("http", "https") or not url.endswith(".whl"):
        raise ValueError(f"{req.name} @ {url}: a direct reference is name @ https://.../FILE.whl")
    wheel = url.rsplit("/", 1)[-1]
    try:
        project = parse_wheel_filename(wheel)[0]
    except InvalidWheelFilename as e:
        raise ValueError(f"{req.name} @ {wheel}: not a wheel's file name ({e})") from None
    if project != canonicalize_name(req.name):
        raise ValueError(f"{req.name} @ {wheel}: the wheel is not one of {req.name} (its file name says so)")
    return url


def _pinned_version(text: str, req: Pep508) -> str:
    """The version of ``name==version`` as written; ValueError for any other specifier."""
    specs = list(req.specifier)
    if len(specs) != 1 or specs[0].operator != "==" or specs[0].version.endswith(".*"):
        raise ValueError(f"{text.strip()!r} is not pinned as name==version (every wheel is pinned)")
    return specs[0].version


def parse_requirement(text: str, *, hashed: bool = True) -> Requirement:
    """``name==version --hash=sha256:HEX [--hash=sha256:HEX ...]`` or ``name @ URL.whl
    --hash=sha256:HEX``; ValueError otherwise. ``hashed=False``: a ``name==version`` whose
    hashes a lock gives (``locked: true``), which may not carry its own."""
    # packaging's requirement grammar: imported for manifests that list wheels, not on every load
    from packaging.requirements import InvalidRequirement
    from packaging.requirements import Requirement as Pep508

    body, values = _split_hashes(text)
    try:
        req = Pep508(body)
    except InvalidRequirement as e:
        why = str(e).splitlines()[0]  # packaging's message goes on with the text and a caret
        raise ValueError(f"{text.strip()!r} is not pinned as name==version (every wheel is pinned): {why}") from None
    if req.marker is not None:
        raise ValueError(
            f"{text.strip()!r}: environment markers (; ...) are not read: the list is the lock of this image, "
            "list only the wheels it installs"
        )
    url = _direct_reference(req) if req.url is not None else ""
    version = "" if url else _pinned_version(text, req)
    hashes = [_sha256(text, value) for value in values]
    name = canonicalize_name(req.name)
    if not hashed:
        if hashes or url:
            raise ValueError(f"{text.strip()!r}: with locked: true the lock gives the hashes: name==version alone")
        return Requirement(name, version, (), text.strip())
    if not hashes:
        raise ValueError(
            f"{body} has no --hash=sha256:...: every wheel is pinned by its sha256 (or the layer says "
            "locked: true and assemble lock writes them)"
        )
    if url and len(hashes) > 1:
        raise ValueError(f"{req.name} @ URL: one file, one --hash")
    return Requirement(name, version, tuple(dict.fromkeys(hashes)), text.strip(), url)
