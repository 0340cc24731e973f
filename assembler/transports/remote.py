"""Registries (``docker://HOST/REPO:TAG``) as a transport: read an image, push one.

Both go through the registry client (:class:`assembler.registry.client.Registry`): every
blob streams and is verified, blobs already in the repository are skipped, blobs in
another repository of the registry are mounted, the manifest goes up as its exact bytes.
A read goes through registries.conf's mirrors first (:mod:`assembler.registry.pull`); a
push goes to the name's registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from assembler.errors import InvalidImage, RegistryError, Unreachable
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import FilesArtifact
from assembler.oci.descriptor import Platform
from assembler.oci.digest import sha256_digest
from assembler.oci.image import Image, Index, manifest_config
from assembler.oci.reference import ImageName
from assembler.registry import pull
from assembler.registry.blobs import WithBytes
from assembler.registry.client import Registry, RemoteBlobs
from assembler.registry.http import TransferStats
from assembler.registry.retry import SYSTEM_CLOCK, Clock
from assembler.registry.types import BlobReader, RegistryOptions
from assembler.transports.common import SourceImage, pick_manifest

__all__ = ["PushResult", "push", "read"]

log = logging.getLogger(__name__)

_CONFIG_LIMIT = 64 << 20
_MAX_NESTING = 4


def read(
    name: ImageName,
    *,
    platform: Platform,
    options: RegistryOptions,
    progress: Callable[[int], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> SourceImage:
    """The image ``name`` names, following an index to ``platform``; retries wait on ``clock``.

    It is read from the first of its registries.conf mirrors that has it, else from its
    location (:mod:`assembler.registry.pull`); its blobs stream from there, verified.
    Raises NotFound, RegistryError (Unreachable), DigestMismatch, InvalidImage, and
    InputError when registries.conf blocks it.
    """
    what = f"docker://{name}"

    def read_from(registry: Registry, source: ImageName) -> SourceImage:
        image, index_digest = _read_image(registry, source, platform, what)
        sizes = {d.digest: d.size for d in image.blob_descriptors()}
        return SourceImage(image, RemoteBlobs(registry, source.repository, sizes), what, index_digest)

    return pull.first_source(name, options, read_from, progress=progress, clock=clock)


def _read_image(registry: Registry, name: ImageName, platform: Platform, what: str) -> tuple[Image, str | None]:
    """The image at ``name`` in ``registry`` and the digest of the index it was picked from."""
    body, media_type = registry.fetch_manifest(name.repository, name.reference)
    index_digest: str | None = None
    for _ in range(_MAX_NESTING):
        if media_type not in mt.INDEX_TYPES:
            break
        try:
            index = Index(body)
        except InvalidImage as e:
            raise InvalidImage(f"{what}: {e}") from e
        index_digest = index_digest or index.digest
        body, media_type = registry.fetch_manifest(name.repository, pick_manifest(index, platform, what=what))
    else:
        raise InvalidImage(f"{what}: indexes nested too deep")
    config_desc = manifest_config(body, f"{what}: manifest")
    config = registry.blob_bytes(
        name.repository, config_desc, limit=_CONFIG_LIMIT, what=f"{what}: reading config {config_desc.digest}"
    )
    try:
        return Image(body, config), index_digest  # checks the config bytes against the manifest's digest
    except InvalidImage as e:
        raise InvalidImage(f"{what}: {e}") from e


@dataclass(frozen=True)
class PushResult:
    """The pushed manifest's digest and what the push did."""

    digest: str
    stats: TransferStats


def push(
    image: Image | FilesArtifact,
    name: ImageName,
    *,
    blobs: BlobReader,
    options: RegistryOptions,
    mount_from: Sequence[ImageName] = (),
    progress: Callable[[int], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> PushResult:
    """Push ``image`` (or an artifact of its own) to ``name`` (its tag, or its digest):
    layers, config, then the manifest.

    Blobs already in the repository are skipped; blobs in a ``mount_from`` repository
    of the same registry are mounted; retries wait on ``clock``. Raises RegistryError,
    DigestMismatch, NotFound (a blob ``blobs`` does not have).
    """
    sources = [m.repository for m in mount_from if m.registry == name.registry]
    if isinstance(image, FilesArtifact):
        layers, config, media_type = image.layers, image.config, mt.OCI_MANIFEST
        reader = WithBytes(blobs, {image.config.digest: image.config_bytes})
    else:
        layers, config, media_type = tuple(image.layers), image.config_descriptor, image.media_type
        reader = WithBytes(blobs, {image.config_descriptor.digest: image.config_bytes})
    with Registry(name.registry, options=options, progress=progress, clock=clock) as registry:
        if registry.holds_manifest(name.repository, name.reference, image.manifest_bytes, media_type):
            registry.stats.skipped_blobs += len(layers) + 1  # all there, with the manifest naming them
            log.info("%s: already holds %s", name, sha256_digest(image.manifest_bytes))
            return PushResult(sha256_digest(image.manifest_bytes), replace(registry.stats))
        for i, desc in enumerate((*layers, config)):
            label = f"layer {i + 1}/{len(layers)}" if i < len(layers) else "config"
            try:
                outcome = registry.push_blob(name.repository, desc, reader, mount_from=sources)
            except Unreachable as e:
                raise Unreachable(f"{label}: {e.message}", registry=e.registry, host=e.host, why=e.why) from e
            except RegistryError as e:
                raise RegistryError(f"{label}: {e.message}", registry=e.registry, status=e.status, hint=e.hint) from e
            log.info("%s: %s %s: %s", name, label, desc.digest, outcome)
        digest = registry.put_manifest(name.repository, name.reference, image.manifest_bytes, media_type)
        return PushResult(digest, replace(registry.stats))
