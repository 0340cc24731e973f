"""One OCI index over images that differ only in platform, under one tag: in an ``oci:``
layout or a registry. The images go first (untagged, by digest), the index last, so a
reader never meets an index naming a manifest that is not there. Each image's referrers
(its SBOM and provenance) go with it, as for a single image: untagged entries of the
layout whose ``subject`` is that platform's image, or referrers pushed to the registry
after it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from assembler.errors import InputError
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.oci.reference import Ref
from assembler.transports import Context, Written, _path, layout, registry_options
from assembler.transports.common import BlobReader


def index_bytes(images: Sequence[Image]) -> bytes:
    """The index of ``images``, each entry with its platform."""
    entries = [replace(image.descriptor, platform=image.platform).to_json() for image in images]
    return canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})


def write_index(
    ref: Ref,
    images: Sequence[Image],
    ctx: Context,
    *,
    blobs: BlobReader,
    referrers: Sequence[Sequence[Artifact]] = (),
) -> Written:
    """Write ``images`` and their index to the output ``ref`` (``oci:`` or ``docker://``),
    with ``referrers[i]`` the referrers of ``images[i]`` (none when not given)."""
    body = index_bytes(images)
    per_image = [list(referrers[i]) if i < len(referrers) else [] for i in range(len(images))]
    attached = tuple(a.digest for arts in per_image for a in arts)
    if ref.transport == "oci":
        _layout_index(ref, images, per_image, body, ctx, blobs)
        return Written(str(ref), sha256_digest(body), referrers=attached)
    if ref.transport == "docker":
        from assembler.registry.client import Registry
        from assembler.transports import remote
        from assembler.transports.referrers import push_referrers

        assert ref.name is not None
        uploaded = 0
        for image, arts in zip(images, per_image, strict=True):
            name = replace(ref.name, tag="", digest=image.digest)
            pushed = remote.push(
                image, name, blobs=blobs, options=registry_options(ctx), progress=ctx.upload_progress or ctx.progress
            )
            uploaded += pushed.stats.uploaded_bytes
            if arts:  # after their image: a registry may refuse a subject it does not have
                push_referrers(name, arts, options=registry_options(ctx))
        with Registry(ref.name.registry, options=registry_options(ctx)) as registry:
            digest = registry.put_manifest(ref.name.repository, ref.name.reference, body, mt.OCI_INDEX)
        return Written(str(ref), digest, uploaded, referrers=attached)
    raise InputError(f"{ref}: images of several platforms under one name go to oci: or docker:// outputs only")


def _layout_index(
    ref: Ref,
    images: Sequence[Image],
    referrers: Sequence[Sequence[Artifact]],
    body: bytes,
    ctx: Context,
    blobs: BlobReader,
) -> None:
    path = _path(ctx, ref.path)
    for image, arts in zip(images, referrers, strict=True):
        layout.write(path, image, tag="", blobs=blobs, referrers=arts)
    layout.write_blob_bytes(path, body)
    entry = Descriptor(
        mt.OCI_INDEX, sha256_digest(body), len(body), {mt.ANNOTATION_REF_NAME: ref.tag} if ref.tag else {}
    )
    # The platform images are reached through the index: not listed untagged beside it.
    inner = {image.digest for image in images}
    with layout.index_lock(path):
        manifests = [
            d
            for d in layout.read_index(path)["manifests"]
            if d.get("digest") not in inner
            and not (ref.tag and (d.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) == ref.tag)
        ]
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [*manifests, entry.to_json()]}
        layout.write_atomically(path / "index.json", canonical_json(index))
