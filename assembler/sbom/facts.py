"""What a build knows about how an image was made, as plain values: the input of the SBOM
(:mod:`assembler.sbom.spdx`) and of the provenance (:mod:`assembler.sbom.provenance`).

:func:`assembler.pipeline.checks.attest.build_facts` fills them from a build's records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from assembler.oci.image import Image


@dataclass(frozen=True)
class SourceFact:
    """A source a compile step read."""

    name: str
    kind: str  # path | git | url
    revision: str  # git: the commit; url: sha256:HEX of the file; path: sha256:HEX of the folder's normalised tar
    url: str = ""  # git or download URL
    ref: str = ""  # git: the ref the manifest names (a tag, a branch)
    path: str = ""  # path: the folder, as the manifest (or --source) names it


@dataclass(frozen=True)
class DownloadFact:
    """A pinned file a ``pip:`` or ``url:`` layer put into the image: an input as a source is."""

    name: str  # pip:six==1.16.0, url:FILE
    uri: str  # the URL, or the wheel's purl (the index picks the file)
    sha256: str  # HEX of the file, as the manifest pins it


@dataclass(frozen=True)
class CacheEntryFact:
    """An entry of a registry step cache the build used instead of making it: a step's
    result, a ``pip:``/``url:`` layer, a bootstrapped base."""

    what: str  # step NAME, base NAME, url FILE, pip ...
    repository: str  # REG/REPO
    tag: str  # step-<key>, base-<key>
    digest: str  # sha256:HEX of the entry's manifest
    signer: str = ""  # the key id of the trusted key that signed it ("": used without --cache-trust)


@dataclass(frozen=True)
class BaseFact:
    name: str
    digest: str  # the image manifest's
    what: str  # where it came from (a reference) or how it was made (bootstrap SUITE/VARIANT)


@dataclass(frozen=True)
class StepFact:
    name: str
    kind: str  # compile | runtime
    key: str  # the step key its result is cached under
    base: str = ""  # compile: the base it ran on
    sources: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # STEP.ARTIFACT of other steps, mounted into it


@dataclass(frozen=True)
class ArtifactFact:
    """A step's artifact: a layer of the image, or an input of another step."""

    ref: str  # STEP.NAME
    step: str
    diff_id: str  # of the artifact as the step made it
    layer: int | None = None  # its layer in the image (None: only an input of other steps)


@dataclass(frozen=True)
class LayerFact:
    index: int
    kind: str  # base | packages | run | artifact | copy
    what: str
    diff_id: str
    step: str | None = None


@dataclass(frozen=True)
class BuildFacts:
    """How ``image`` was built from the manifest at ``manifest``."""

    name: str  # the manifest's name
    image: Image
    base: str  # the name of the image's base
    epoch: int
    manifest: str  # the manifest's file name
    manifest_digest: str  # sha256:HEX of its bytes
    params: Mapping[str, str]
    target: str | None
    platform: str
    bases: Mapping[str, BaseFact]
    sources: Mapping[str, SourceFact]
    steps: Mapping[str, StepFact]
    artifacts: tuple[ArtifactFact, ...]
    layers: tuple[LayerFact, ...]
    recipes: Mapping[str, str] = field(default_factory=dict)  # recipe name -> sha256:HEX of its file
    tool: str = ""  # assemble's version
    downloads: tuple[DownloadFact, ...] = ()
    cache_entries: tuple[CacheEntryFact, ...] = ()
