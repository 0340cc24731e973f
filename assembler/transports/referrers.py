"""An image's referrers (its SBOM, its provenance, a SIF): attached, listed and read, in a
registry or an OCI layout.

In a registry they go through the registry client (:class:`remote.Registry`): blobs,
then the manifest by digest, found by the referrers API or, on registries without it
(distribution 2.8), the tag schema's ``sha256-<hex>`` index (see remote_referrers). In a
layout they are untagged entries of ``index.json`` with an ``artifactType``, whose
manifest's ``subject`` names the image (see :func:`layout.write`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from assembler.errors import InputError, InvalidImage, NotFound
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.image import Image
from assembler.oci.reference import ImageName, Ref
from assembler.transports import layout
from assembler.transports.common import BlobReader, DirBlobs, RegistryOptions

_SMALL = 64 << 20  # an SBOM of a big image is a few MiB; a manifest far less


def push_referrers(
    name: ImageName, artifacts: Sequence[Artifact], *, options: RegistryOptions,
    progress: Callable[[int], None] | None = None,
) -> list[str]:  # fmt: skip
    """Push ``artifacts`` (referrers of an image already in ``name``'s repository); their digests.

    Raises RegistryError, InputError (an artifact whose subject is not its image's)."""
    from assembler.transports import remote  # the registry client, only when pushing

    pushed = []
    with remote.Registry(name.registry, options=options, progress=progress) as reg:
        for artifact in artifacts:
            blobs = remote.FileBlobs({}, artifact.blobs())
            for digest, data in artifact.blobs().items():
                media_type = artifact.artifact_type if digest == artifact.blob.digest else mt.OCI_EMPTY
                reg.push_blob(name.repository, Descriptor(media_type, digest, len(data)), blobs)
            pushed.append(reg.put_referrer(name.repository, artifact.manifest_bytes, mt.OCI_MANIFEST,
                                           artifact.subject))  # fmt: skip
    return pushed


@dataclass(frozen=True)
class Referrer:
    """A referrer of an image: its manifest's descriptor and, once read, its manifest."""

    descriptor: Descriptor
    manifest: dict[str, object]

    @property
    def blobs(self) -> list[Descriptor]:
        layers = self.manifest.get("layers")
        return [Descriptor.from_json(d) for d in layers] if isinstance(layers, list) else []


@dataclass
class Listing:
    """An image and its referrers, with a reader of their blobs."""

    image: Image
    referrers: list[Referrer]
    blobs: BlobReader

    def read(self, desc: Descriptor) -> bytes:
        """A referrer's blob, verified; InputError past 64 MiB."""
        if desc.size > _SMALL:
            raise InputError(f"blob {desc.digest} is {desc.size} bytes; not reading more than {_SMALL}")
        with self.blobs.open_blob(desc.digest) as f:
            return f.read(desc.size + 1)


def _manifest(body: bytes, what: str) -> dict[str, object]:
    try:
        data = json.loads(body)
    except ValueError as e:
        raise InvalidImage(f"{what}: not JSON ({e})") from e
    if not isinstance(data, dict):
        raise InvalidImage(f"{what}: not a JSON object")
    return data


def list_layout(path: Path, tag: str, image: Image) -> Listing:
    """The referrers of ``image`` in the layout at ``path``."""
    blobs = DirBlobs(path / "blobs", what=f"oci:{path}")
    found = []
    for entry in layout.read_index(path)["manifests"]:
        if layout.subject_of(path, entry) != image.digest:
            continue
        desc = Descriptor.from_json(entry)
        with blobs.open_blob(desc.digest) as f:
            found.append(Referrer(desc, _manifest(f.read(_SMALL), f"oci:{path}: referrer {desc.digest}")))
    return Listing(image, found, blobs)


def list_remote(name: ImageName, image: Image, blobs: BlobReader, *, options: RegistryOptions) -> Listing:
    """The referrers of ``image`` in ``name``'s repository (the API, else the fallback tag)."""
    from assembler.transports import remote

    found = []
    with remote.Registry(name.registry, options=options) as reg:
        for desc in reg.list_referrers(name.repository, image.digest):
            body, _ = reg.fetch_manifest(name.repository, desc.digest)
            found.append(Referrer(desc, _manifest(body, f"docker://{name}: referrer {desc.digest}")))
    return Listing(image, found, blobs)


def list_referrers(ref: Ref, image: Image, blobs: BlobReader, *, options: RegistryOptions) -> Listing:
    """The referrers of ``image`` (read from ``ref``): for ``oci:`` and ``docker://`` references."""
    if ref.transport == "oci":
        return list_layout(Path(ref.path), ref.tag, image)
    if ref.transport == "docker":
        assert ref.name is not None
        return list_remote(ref.name, image, blobs, options=options)
    raise NotFound(f"{ref}: only OCI layouts (oci:) and registries (docker://) hold referrers")
