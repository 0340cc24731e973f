"""Publishing a SIF file to a registry as an OCI artifact, as ``apptainer push oras://`` does.

The artifact is an OCI manifest whose config is ``{}`` typed
``application/vnd.sylabs.sif.config.v1+json`` and whose one layer is the SIF file typed
``application/vnd.sylabs.sif.layer.v1.sif`` (titled with the file name): what
``apptainer pull oras://HOST/REPO:TAG`` looks for. With a ``subject`` it is also a
referrer of an OCI image, so one image tag serves Docker and Apptainer users.

The push goes through the registry client (:class:`registry.client.Registry`): the SIF
streamed from its file (skipped when the repository has it), the manifest as its exact
bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.reference import ImageName
from assembler.registry.blobs import FileBlobs
from assembler.registry.client import Registry
from assembler.registry.types import RegistryOptions

SIF_CONFIG_BYTES = b"{}"


@dataclass(frozen=True)
class Published:
    ref: str
    digest: str
    uploaded_bytes: int
    referrer_of: str = ""


def artifact_manifest(sif_digest: str, sif_size: int, title: str, subject: Descriptor | None = None) -> bytes:
    """The exact manifest bytes of a SIF artifact (and referrer, with ``subject``)."""
    config = Descriptor(mt.SIF_CONFIG, sha256_digest(SIF_CONFIG_BYTES), len(SIF_CONFIG_BYTES))
    layer = Descriptor(mt.SIF_LAYER, sif_digest, sif_size, {mt.ANNOTATION_TITLE: title})
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json()],
    }
    if subject is not None:
        manifest["subject"] = subject.to_json()
    return canonical_json(manifest)


def push_sif(
    path: Path,
    digest: str,
    size: int,
    name: ImageName,
    *,
    options: RegistryOptions,
    subject: Descriptor | None = None,
    progress: Callable[[int], None] | None = None,
) -> Published:
    """Push the SIF at ``path`` to ``name`` (tagged), or as a referrer of ``subject``
    (untagged, found through the referrers API or its tag-schema fallback)."""
    body = artifact_manifest(digest, size, path.name, subject)
    config = Descriptor(mt.SIF_CONFIG, sha256_digest(SIF_CONFIG_BYTES), len(SIF_CONFIG_BYTES))
    layer = Descriptor(mt.SIF_LAYER, digest, size)
    with Registry(name.registry, options=options, progress=progress) as reg:
        reg.push_blob(name.repository, layer, FileBlobs({layer.digest: path}))
        reg.push_blob(name.repository, config, FileBlobs({}, {config.digest: SIF_CONFIG_BYTES}))
        if subject is not None:
            pushed = reg.put_referrer(name.repository, body, mt.OCI_MANIFEST, subject)
        else:
            pushed = reg.put_manifest(name.repository, name.reference, body, mt.OCI_MANIFEST)
        uploaded = reg.stats.uploaded_bytes
    return Published(f"oras://{name}", pushed, uploaded, subject.digest if subject is not None else "")
