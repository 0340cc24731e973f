"""An image's referrers (its SBOM, its provenance, a SIF): attached, listed and read, in a
registry, an OCI layout or oci-archive, a SIF, or next to a docker-archive or sqsh file.

In a registry they go through the registry client (:class:`registry.client.Registry`): blobs,
then the manifest by digest, found by the referrers API or, on registries without it
(distribution 2.8), the tag schema's ``sha256-<hex>`` index (see registry.referrers). In a
layout they are untagged entries of ``index.json`` with an ``artifactType``, whose
manifest's ``subject`` names the image (see :func:`layout.write`); a tagged oci-archive
holds them the same way. A SIF holds their blobs as data objects (see
:mod:`assembler.transports.hpc.sif`); a docker-archive, a sqsh file and an untagged
oci-archive have them next to them as files (see :mod:`assembler.transports.sidecar`).
There no manifest exists: the entries listed are the files themselves, and the subject is
the image their provenance names.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from assembler.errors import InputError, InvalidImage, NotFound
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import sha256_digest
from assembler.oci.reference import ImageName
from assembler.transports import layout, sidecar
from assembler.transports.archive import TarBlobs
from assembler.transports.common import BlobReader, DirBlobs, RegistryOptions

_SMALL = 64 << 20  # an SBOM of a big image is a few MiB; a manifest far less


def push_referrers(
    name: ImageName,
    artifacts: Sequence[Artifact],
    *,
    options: RegistryOptions,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Push ``artifacts`` (referrers of an image already in ``name``'s repository); their digests.

    Raises RegistryError, InputError (an artifact whose subject is not its image's)."""
    from assembler.registry.blobs import FileBlobs  # the registry client, only when pushing
    from assembler.registry.client import Registry

    pushed = []
    listed: dict[str, set[str]] = {}  # by subject: the referrers the registry lists (read once)
    with Registry(name.registry, options=options, progress=progress) as reg:
        for artifact in artifacts:
            # Pushed before and listed (by the referrers API or the fallback tag's index):
            # nothing to do, where each push asked for every blob and updated the index.
            if reg.holds_manifest(name.repository, artifact.digest, artifact.manifest_bytes, mt.OCI_MANIFEST):
                subject = artifact.subject.digest
                if subject not in listed:
                    listed[subject] = {d.digest for d in reg.list_referrers(name.repository, subject)}
                if artifact.digest in listed[subject]:
                    pushed.append(artifact.digest)
                    continue
            blobs = FileBlobs({}, artifact.blobs())
            for digest, data in artifact.blobs().items():
                media_type = artifact.artifact_type if digest == artifact.blob.digest else mt.OCI_EMPTY
                reg.push_blob(name.repository, Descriptor(media_type, digest, len(data)), blobs)
            pushed.append(reg.put_referrer(name.repository, artifact.manifest_bytes, mt.OCI_MANIFEST, artifact.subject))
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
    """An image (its digest) and its referrers, with a reader of their blobs."""

    subject: str
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


def list_layout(path: Path, tag: str, image: str) -> Listing:
    """The referrers of ``image`` (a digest) in the layout at ``path``."""
    blobs = DirBlobs(path / "blobs", what=f"oci:{path}")
    found = []
    for entry in layout.read_index(path)["manifests"]:
        if layout.subject_of(path, entry) != image:
            continue
        desc = Descriptor.from_json(entry)
        with blobs.open_blob(desc.digest) as f:
            found.append(Referrer(desc, _manifest(f.read(_SMALL), f"oci:{path}: referrer {desc.digest}")))
    return Listing(image, found, blobs)


def list_archive(path: Path, image: str, blobs: TarBlobs) -> Listing:
    """The referrers of ``image`` (a digest) in the oci-archive at ``path`` whose members
    ``blobs`` reads: its index's entries with an ``artifactType`` whose subject is ``image``."""
    what = f"oci-archive:{path}"
    index = _manifest(blobs.read_member("index.json"), f"{what}: index.json")
    entries = index.get("manifests")
    found = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not entry.get("artifactType"):
            continue
        desc = Descriptor.from_json(entry)
        with blobs.open_blob(desc.digest) as f:
            manifest = _manifest(f.read(_SMALL), f"{what}: referrer {desc.digest}")
        subject = manifest.get("subject")
        if isinstance(subject, dict) and subject.get("digest") == image:
            found.append(Referrer(desc, manifest))
    return Listing(image, found, blobs)


class _Files:
    """Blobs held in memory (the files of a SIF's objects or of sidecars: a few MiB)."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self._blobs = blobs

    def blob_file(self, digest: str) -> Path | None:
        return None

    def open_blob(self, digest: str) -> BinaryIO:
        if digest not in self._blobs:
            raise NotFound(f"blob {digest} is not among the attached files")
        return io.BytesIO(self._blobs[digest])


def _statement_subject(data: bytes) -> str:
    """The first subject digest of an in-toto statement ("" when there is none)."""
    try:
        subjects = json.loads(data).get("subject") or []
        return f"sha256:{subjects[0]['digest']['sha256']}"
    except (ValueError, AttributeError, LookupError, TypeError):
        return ""


def _files_listing(files: Sequence[tuple[str, str, bytes]]) -> Listing:
    """A listing of attached files, (artifact type, name, bytes): each its own entry."""
    found, blobs, subject = [], {}, ""
    for artifact_type, name, data in files:
        blob = Descriptor(artifact_type, sha256_digest(data), len(data), {mt.ANNOTATION_TITLE: name})
        blobs[blob.digest] = data
        found.append(
            Referrer(
                Descriptor(artifact_type, blob.digest, blob.size, artifact_type=artifact_type),
                {"layers": [blob.to_json()]},
            )
        )
        if artifact_type == mt.IN_TOTO_JSON:
            subject = subject or _statement_subject(data)
    return Listing(subject, found, _Files(blobs))


def list_sif(path: Path) -> Listing:
    """The SBOM and provenance objects of the SIF at ``path``; the subject is the image its
    provenance names. Raises InputError (no such file, not a SIF file)."""
    from assembler.transports.hpc.sif import read_attached

    if not path.is_file():  # the user's reference: exit 2, as for the other transports
        raise InputError(f"sif:{path}: file does not exist")
    return _files_listing(read_attached(path))


def list_sidecars(
    path: Path, transport: str, *, recognise: Callable[[Path], bool], what: str = "an image archive"
) -> Listing:
    """The SBOM and provenance written next to the output file at ``path`` (a
    docker-archive, an untagged oci-archive, a sqsh file); InputError when ``path`` is not
    such a file (one ``recognise`` knows: ``what``)."""
    if not path.is_file():
        raise InputError(f"{transport}:{path}: file does not exist")
    if not recognise(path):
        raise InputError(f"{transport}:{path}: not {what}")
    return _files_listing([(t, p.name, p.read_bytes()) for t, p in sidecar.read_sidecars(path)])


def list_remote(name: ImageName, image: str, blobs: BlobReader, *, options: RegistryOptions) -> Listing:
    """The referrers of ``image`` (a digest) in ``name``'s repository (the API, else the fallback tag)."""
    from assembler.registry.client import Registry

    found = []
    with Registry(name.registry, options=options) as reg:
        for desc in reg.list_referrers(name.repository, image):
            body, _ = reg.fetch_manifest(name.repository, desc.digest)
            found.append(Referrer(desc, _manifest(body, f"docker://{name}: referrer {desc.digest}")))
    return Listing(image, found, blobs)
