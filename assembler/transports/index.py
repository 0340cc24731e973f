"""One OCI index over images that differ only in platform, under one tag: in an ``oci:``
layout or a registry. The images go first (untagged, by digest), the index last, so a
reader never meets an index naming a manifest that is not there. Each image's referrers
(its SBOM and provenance) go with it, as for a single image: untagged entries of the
layout whose ``subject`` is that platform's image, or referrers pushed to the registry
after it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.oci.reference import ImageName
from assembler.transports import beside, layout
from assembler.transports.beside import Beside, index_entries
from assembler.transports.common import BlobReader, RegistryOptions


def index_bytes(images: Sequence[Image], weights: Sequence[Beside] = ()) -> bytes:
    """The index of ``images``, each entry with its platform, and of the models that go
    with them (``weights``: their platform ``unknown/unknown``, no image their subject)."""
    entries = [replace(image.descriptor, platform=image.platform).to_json() for image in images]
    entries += index_entries(weights, None)
    return canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})


def write_layout(
    path: Path,
    tag: str,
    images: Sequence[Image],
    *,
    blobs: BlobReader,
    referrers: Sequence[Sequence[Artifact]],
    weights: Sequence[Beside] = (),
) -> str:
    """Write ``images`` and their index (tagged ``tag``, or untagged) into the OCI layout at
    ``path``, with ``referrers[i]`` the referrers of ``images[i]`` and the models of
    ``weights`` (reached through the index alone); the index's digest."""
    body = index_bytes(images, weights)
    for image, arts in zip(images, referrers, strict=True):
        layout.write(path, image, tag="", blobs=blobs, referrers=arts)
    for model in weights:
        layout.write_artifact_blobs(path, model.artifact(None), blobs=model.blobs())
    layout.write_blob_bytes(path, body)
    entry = Descriptor(mt.OCI_INDEX, sha256_digest(body), len(body), {mt.ANNOTATION_REF_NAME: tag} if tag else {})
    # The platform images are reached through the index: not listed untagged beside it.
    inner = {image.digest for image in images}
    with layout.index_lock(path):
        manifests = [
            d
            for d in layout.read_index(path)["manifests"]
            if d.get("digest") not in inner
            and not (tag and (d.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) == tag)
        ]
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [*manifests, entry.to_json()]}
        layout.write_atomically(path / "index.json", canonical_json(index))
    return entry.digest


def push(
    name: ImageName,
    images: Sequence[Image],
    *,
    blobs: BlobReader,
    referrers: Sequence[Sequence[Artifact]],
    options: RegistryOptions,
    progress: Callable[[int], None] | None = None,
    weights: Sequence[Beside] = (),
) -> tuple[str, int]:
    """Push ``images`` (by digest, each followed by its ``referrers[i]``) and the models of
    ``weights`` (by digest), then their index as ``name``; the index's digest as the
    registry gave it, and the bytes uploaded."""
    from assembler.registry.client import Registry
    from assembler.transports import remote
    from assembler.transports.referrers import push_referrers

    uploaded = 0
    for image, arts in zip(images, referrers, strict=True):
        by_digest = replace(name, tag="", digest=image.digest)
        pushed = remote.push(image, by_digest, blobs=blobs, options=options, progress=progress)
        uploaded += pushed.stats.uploaded_bytes
        if arts:  # after their image: a registry may refuse a subject it does not have
            push_referrers(by_digest, arts, options=options)
    uploaded += sum(w.uploaded_bytes for w in beside.push(name, weights, None, options=options, progress=progress))
    with Registry(name.registry, options=options) as registry:
        digest = registry.put_manifest(name.repository, name.reference, index_bytes(images, weights), mt.OCI_INDEX)
    return digest, uploaded
