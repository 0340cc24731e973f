"""Media types, as constants: never spell one as a literal elsewhere."""

from __future__ import annotations

from assembler.errors import InvalidImage

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYOUT_VERSION = "1.0.0"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# Apptainer's `oras://` pulls look for these.
SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"

# What an image's referrers carry: an SPDX SBOM, an in-toto statement (SLSA provenance).
SPDX_JSON = "application/spdx+json"
IN_TOTO_JSON = "application/vnd.in-toto+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})

LAYER_TYPES_GZIP = frozenset({OCI_LAYER_GZIP, DOCKER_LAYER_GZIP, DOCKER_FOREIGN_LAYER_GZIP})
LAYER_TYPES_ZSTD = frozenset({OCI_LAYER_ZSTD})
LAYER_TYPES_PLAIN = frozenset({OCI_LAYER, DOCKER_LAYER})
LAYER_TYPES = LAYER_TYPES_GZIP | LAYER_TYPES_ZSTD | LAYER_TYPES_PLAIN

# Docker media types and their OCI equivalents (same bytes, other name).
TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_MANIFEST_LIST: OCI_INDEX,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_FOREIGN_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER: OCI_LAYER,
}

# Annotation keys we read or write.
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_BASE_DIGEST = "org.opencontainers.image.base.digest"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_PREDICATE_TYPE = "in-toto.io/predicate-type"  # an in-toto statement's, as BuildKit and cosign write it
# cosign verify-attestation --type NAME: the predicate type each name stands for.
PREDICATE_TYPES = {
    "spdxjson": "https://spdx.dev/Document",
    "slsaprovenance1": "https://slsa.dev/provenance/v1",
    "testresult": "https://in-toto.io/attestation/test-result/v0.1",  # cosign takes the URI itself
}


def compression_of(media_type: str) -> str:
    """``"gzip"``, ``"zstd"`` or ``"none"`` for a layer media type; InvalidImage otherwise."""
    if media_type in LAYER_TYPES_GZIP:
        return "gzip"
    if media_type in LAYER_TYPES_ZSTD:
        return "zstd"
    if media_type in LAYER_TYPES_PLAIN:
        return "none"
    raise InvalidImage(f"not a layer media type: {media_type}")


def oci_layer_type(compression: str) -> str:
    """The OCI layer media type for ``"gzip"``, ``"zstd"`` or ``"none"``."""
    return {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}[compression]
