"""OCI 1.1 artifacts that refer to an image: a manifest with ``artifactType``, the empty
config, one blob, and ``subject`` (the image's descriptor).

An SBOM or a provenance statement attached to an image is one of these. Registries with
the referrers API list them under the image's digest; an OCI layout lists them in its
``index.json`` (untagged, with their ``artifactType``), where ``oras discover
--oci-layout`` and ``assemble referrers`` find them by their ``subject``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest

# The empty config of an artifact manifest (image-spec 1.1, "Guidelines for artifact usage").
EMPTY_CONFIG = b"{}"
EMPTY_DESCRIPTOR = Descriptor(mt.OCI_EMPTY, sha256_digest(EMPTY_CONFIG), len(EMPTY_CONFIG))


def artifact_manifest(
    artifact_type: str,
    blobs: Sequence[Descriptor],
    annotations: Mapping[str, str],
    *,
    subject: Descriptor | None = None,
    config: Descriptor = EMPTY_DESCRIPTOR,
) -> bytes:
    """The canonical bytes of an artifact manifest: ``blobs`` on ``config`` (the empty one
    unless the artifact's type defines its own)."""
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.to_json(),
        "layers": [d.to_json() for d in blobs],
    }
    if subject is not None:
        manifest["subject"] = subject.to_json()
    if annotations:
        manifest["annotations"] = dict(annotations)
    return canonical_json(manifest)


@dataclass(frozen=True)
class Artifact:
    """One blob (``data``, typed ``artifact_type``) as a referrer of ``subject``."""

    artifact_type: str
    data: bytes
    title: str  # the blob's file name (org.opencontainers.image.title)
    subject: Descriptor
    annotations: Mapping[str, str] = field(default_factory=dict)  # of the manifest and its index entry

    @cached_property
    def blob(self) -> Descriptor:
        return Descriptor(
            self.artifact_type, sha256_digest(self.data), len(self.data), {mt.ANNOTATION_TITLE: self.title}
        )

    @cached_property
    def manifest_bytes(self) -> bytes:
        return artifact_manifest(self.artifact_type, [self.blob], self.annotations, subject=self.subject)

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def descriptor(self) -> Descriptor:
        """Its entry in an index (a layout's ``index.json``, a referrers list)."""
        return Descriptor(
            mt.OCI_MANIFEST,
            self.digest,
            len(self.manifest_bytes),
            dict(self.annotations),
            artifact_type=self.artifact_type,
        )

    def blobs(self) -> dict[str, bytes]:
        """Every blob it needs besides its manifest, by digest."""
        return {EMPTY_DESCRIPTOR.digest: EMPTY_CONFIG, self.blob.digest: self.data}


@dataclass(frozen=True)
class FilesArtifact:
    """An OCI 1.1 artifact of files: ``layers`` as its blobs, the empty config or one of its
    type's own. A compile step's artifacts published without an image: each blob is the
    artifact's layer as the cache holds it (a tar, compressed), titled ``STEP.NAME.tar.zst``
    and so on, so ``oras pull`` saves files named after the artifacts. A model's weights
    (:mod:`assembler.weights`): ModelPack's config, and the image as ``subject``."""

    artifact_type: str
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)
    config_bytes: bytes = EMPTY_CONFIG
    config_type: str = mt.OCI_EMPTY
    subject: Descriptor | None = None

    @cached_property
    def config(self) -> Descriptor:
        return Descriptor(self.config_type, sha256_digest(self.config_bytes), len(self.config_bytes))

    @cached_property
    def manifest_bytes(self) -> bytes:
        return artifact_manifest(
            self.artifact_type, self.layers, self.annotations, subject=self.subject, config=self.config
        )

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    def descriptor(self, annotations: Mapping[str, str]) -> Descriptor:
        """Its entry in an index (``annotations``: e.g. the tag of a layout entry)."""
        return Descriptor(
            mt.OCI_MANIFEST, self.digest, len(self.manifest_bytes), dict(annotations), artifact_type=self.artifact_type
        )
