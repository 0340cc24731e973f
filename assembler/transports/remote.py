"""Registries (``docker://HOST/REPO:TAG``): read and push images through oras-py.

:class:`Registry` is the client: a subclass of ``oras.provider.Registry`` (through
:class:`registry.http.RegistryClient`), so oras's session, credential lookup, container
names and API methods are there, and oras's own ``push``/``pull`` go through our
overrides. It overrides what oras gets wrong for images (see ARCHITECTURE.md):

- ``upload_manifest``: the exact bytes go up and the registry's ``Docker-Content-Digest``
  is compared with sha256 of those bytes (oras re-serialises JSON and cannot push an index);
- ``upload_blob``: blobs stream up with flat memory, chunked above ``monolithic_max`` with a
  streamed PUT when PATCH is refused, mounted from other repositories (registry.upload);
- ``get_manifest``, ``download_blob``: every manifest fetched by digest and every blob is
  verified as it streams (registry.blobs);
- ``do_request``: tokens per scope, ``Basic`` challenges, identity tokens, retries on
  connection errors, timeouts, 429 and 5xx honouring ``Retry-After`` (registry.http);
- credentials: containers' and Docker's auth files in order, credential helpers run
  through :mod:`assembler.proc` (registry.login).

Blobs already in the repository are skipped. ``tls_verify=False`` means plain HTTP, as
skopeo users expect for a loopback registry. This module and ``assembler.registry`` are
the only code that imports ``oras`` and ``requests``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

import oras.container
import requests

from assembler.errors import DigestMismatch, InputError, InvalidImage, RegistryError
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import EMPTY_CONFIG, EMPTY_DESCRIPTOR, FilesArtifact
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json, is_digest, sha256_digest
from assembler.oci.image import Image, Index, manifest_config, parse_manifest_or_index
from assembler.oci.reference import ImageName
from assembler.proc import Runner
from assembler.registry.blobs import FileBlobs, RemoteBlobs, WithBytes, fetch_small, json_object, open_verified
from assembler.registry.http import RegistryClient, TransferStats
from assembler.registry.referrers import MANIFEST_LIMIT, list_referrers, put_referrer
from assembler.registry.retry import SYSTEM_CLOCK, Clock
from assembler.registry.upload import BlobUploader
from assembler.transports.common import BlobReader, RegistryOptions, SourceImage, pick_manifest

__all__ = ["FileBlobs", "PushResult", "Registry", "RegistryOptions", "RemoteBlobs", "TransferStats", "push", "read"]

log = logging.getLogger(__name__)

_MANIFEST_TYPES = (mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST)
_CONFIG_LIMIT = 64 << 20
_MAX_NESTING = 4
_COPY_BLOCK = 1 << 20


class Registry(RegistryClient):
    """The registry client for one host. Not thread-safe: one per thread."""

    def __init__(
        self,
        host: str,
        *,
        options: RegistryOptions,
        progress: Callable[[int], None] | None = None,
        runner: Runner | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        super().__init__(host, options=options, runner=runner, clock=clock)
        self._uploader = BlobUploader(self, progress=progress)
        self._progress = progress

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _where(self, repository: str) -> str:
        return f"{self.host}/{repository}"

    def container(self, repository: str, reference: str = "") -> oras.container.Container:
        """oras's name for ``repository`` (and a tag or digest) on this registry."""
        at = "@" if is_digest(reference) else ":"
        name = oras.container.Container(f"{repository}{at}{reference}" if reference else repository, self.hostname)
        # oras's pattern takes a first path part with a dot for a host: name the parts ourselves.
        name.registry = self.hostname
        namespace, _, name.repository = repository.rpartition("/")
        name.namespace = namespace or None
        return name

    def _repository_and_reference(self, container: Any) -> tuple[str, str]:
        """oras's container name (``oras.container.Container`` or a string) as repository, reference."""
        parsed = self.get_container(container)
        return str(parsed.api_prefix), str(parsed.digest or parsed.tag)

    # -- manifests ---------------------------------------------------------------------

    def fetch_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The exact manifest (or index) bytes and their media type.

        Raises NotFound, RegistryError, or DigestMismatch when the bytes do not hash to the
        digest asked for (or to the digest the registry announces).
        """
        what = f"reading manifest {reference} of {self._where(repository)}"
        body, headers = fetch_small(
            self,
            self.url(f"/v2/{repository}/manifests/{reference}"),
            what=what,
            limit=MANIFEST_LIMIT,
            headers={"Accept": ", ".join(_MANIFEST_TYPES)},
        )
        actual = sha256_digest(body)
        announced = headers.get("Docker-Content-Digest", "")
        expected = reference if is_digest(reference) else announced if is_digest(announced) else actual
        if actual != expected:
            raise DigestMismatch(what, expected=expected, actual=actual)
        media_type = headers.get("Content-Type", "").split(";", 1)[0].strip()
        if media_type not in _MANIFEST_TYPES:
            media_type = _media_type_of(body, what)
        return body, media_type

    def get_manifest(self, container: Any, allowed_media_type: Sequence[str] | None = None) -> dict[str, Any]:
        """oras's ``get_manifest``, verified (see :meth:`fetch_manifest`)."""
        repository, reference = self._repository_and_reference(container)
        body, media_type = self.fetch_manifest(repository, reference)
        if allowed_media_type and media_type not in allowed_media_type:
            raise InvalidImage(f"{self._where(repository)}:{reference} is a {media_type}")
        return json_object(body, f"manifest {reference} of {self._where(repository)}")

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT ``body`` as is under ``reference`` (tag or digest); returns its digest.

        Raises DigestMismatch when the registry stored other bytes, InputError when a digest
        reference is not the digest of ``body``, RegistryError when refused.
        """
        self.put_manifest_bytes(repository, reference, body, media_type)
        return sha256_digest(body)

    def put_manifest_bytes(self, repository: str, reference: str, body: bytes, media_type: str) -> requests.Response:
        """:meth:`put_manifest`, returning the registry's answer (``OCI-Subject``...)."""
        digest = sha256_digest(body)
        if is_digest(reference) and reference != digest:
            raise InputError(f"manifest pushed as {reference} hashes to {digest}")
        what = f"pushing manifest {reference} to {self._where(repository)}"
        response = self.request(
            "PUT",
            self.url(f"/v2/{repository}/manifests/{reference}"),
            what=what,
            ok=(200, 201),
            headers={"Content-Type": media_type},
            data=body,
        )
        stored = response.headers.get("Docker-Content-Digest", "")
        if stored and stored != digest:
            raise DigestMismatch(f"{what}: the registry stored", expected=digest, actual=stored)
        log.info("pushed %s@%s", self._where(repository), digest)
        return response

    def upload_manifest(
        self, manifest: bytes | Mapping[str, Any], container: Any, *, media_type: str | None = None
    ) -> requests.Response:
        """oras's ``upload_manifest`` with exact bytes: ``manifest`` bytes go up as they are
        (a mapping, which has no bytes yet, as canonical JSON), under the container's tag
        or digest, typed ``media_type`` or the manifest's own ``mediaType``."""
        body = manifest if isinstance(manifest, bytes) else canonical_json(manifest)
        repository, reference = self._repository_and_reference(container)
        declared = json_object(body, f"manifest for {self._where(repository)}").get("mediaType")
        kind = media_type or (declared if isinstance(declared, str) and declared else mt.OCI_MANIFEST)
        return self.put_manifest_bytes(repository, reference, body, kind)

    # -- blobs -------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        """True when ``repository`` has the blob (HEAD). Raises RegistryError."""
        response = self.request(
            "HEAD",
            self.url(f"/v2/{repository}/blobs/{digest}"),
            what=f"checking blob {digest} in {self._where(repository)}",
            ok=(200, 404, 302, 303, 307),
            allow_redirects=False,  # a redirect to storage already says "it is there"
        )
        return response.status_code != 404

    def blob_exists(self, layer: Mapping[str, Any], container: Any) -> bool:
        """oras's ``blob_exists`` (a redirect to storage counts as there)."""
        return self.has_blob(self._repository_and_reference(container)[0], str(layer["digest"]))

    def open_blob(self, repository: str, digest: str, *, size: int | None = None) -> BinaryIO:
        """A streaming reader of the blob; DigestMismatch at EOF if the bytes are not ``digest``.

        With ``size`` (what a manifest declares), a registry sending more fails at once.
        Raises NotFound or RegistryError when the download cannot start.
        """
        return open_verified(
            self,
            self.url(f"/v2/{repository}/blobs/{digest}"),
            digest=digest,
            size=size,
            what=f"reading blob {digest} from {self._where(repository)}",
            progress=self._progress,
        )

    def download_blob(self, container: Any, digest: str, outfile: str) -> str:
        """oras's ``download_blob``, verified as it streams: ``outfile`` appears only when
        its bytes are ``digest``. Raises DigestMismatch, NotFound, RegistryError."""
        target = Path(outfile)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")
        try:
            with self.open_blob(self._repository_and_reference(container)[0], digest) as src, open(part, "wb") as out:
                while block := src.read(_COPY_BLOCK):
                    out.write(block)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        return outfile

    def _blob_bytes(self, repository: str, desc: Descriptor, *, limit: int, what: str) -> bytes:
        """A small blob (a config) in memory, verified; RegistryError past ``limit`` bytes."""
        body, _ = fetch_small(self, self.url(f"/v2/{repository}/blobs/{desc.digest}"), what=what, limit=limit)
        if sha256_digest(body) != desc.digest:
            raise DigestMismatch(what, expected=desc.digest, actual=sha256_digest(body))
        return body

    def push_blob(
        self, repository: str, desc: Descriptor, blobs: BlobReader, *, mount_from: Sequence[str] = ()
    ) -> Literal["exists", "mounted", "uploaded"]:
        """Make ``desc`` present in ``repository``: skip, mount from ``mount_from`` repos, or upload.

        Raises RegistryError after the retries, DigestMismatch when the local blob is not
        what ``desc`` says.
        """
        if self.has_blob(repository, desc.digest):
            self.stats.skipped_blobs += 1
            return "exists"
        what = f"pushing blob {desc.digest} to {self._where(repository)}"
        sources = [r for r in dict.fromkeys(mount_from) if r != repository]
        result = self._uploader.upload(repository, desc, blobs, mount_from=sources, what=what)
        if result == "mounted":
            self.stats.mounted_blobs += 1
        else:
            self.stats.uploaded_blobs += 1
            self.stats.uploaded_bytes += desc.size
        return result

    def upload_blob(self, blob: str, container: Any, layer: Mapping[str, Any], **_: Any) -> requests.Response:
        """oras's ``upload_blob`` of the file ``blob``, streamed (oras reads it into memory).
        Chunking follows ``options`` (oras's ``do_chunked``/``chunk_size`` are not needed)."""
        desc = Descriptor(str(layer["mediaType"]), str(layer["digest"]), int(layer["size"]))
        repository = self._repository_and_reference(container)[0]
        outcome = self.push_blob(repository, desc, FileBlobs({desc.digest: Path(blob)}))
        answer = requests.Response()
        answer.status_code = 200 if outcome == "exists" else 201
        return answer

    # -- referrers ---------------------------------------------------------------------

    def list_referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose subject is ``digest`` (see registry.referrers)."""
        return list_referrers(self, repository, digest, artifact_type)

    def put_referrer(self, repository: str, manifest: bytes, media_type: str, subject: Descriptor) -> str:
        """Push a referrer of ``subject`` by digest; returns its digest (see registry.referrers)."""
        return put_referrer(self, repository, manifest, media_type, subject)


def _media_type_of(body: bytes, what: str) -> str:
    explicit = json_object(body, what).get("mediaType")
    if isinstance(explicit, str) and explicit in _MANIFEST_TYPES:
        return explicit
    try:
        kind = parse_manifest_or_index(body)
    except InvalidImage as e:
        raise InvalidImage(f"{what}: {e}", hint="schema 1 manifests are not supported") from e
    return mt.OCI_INDEX if kind == "index" else mt.OCI_MANIFEST


def read(
    name: ImageName,
    *,
    platform: Platform,
    options: RegistryOptions,
    progress: Callable[[int], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> SourceImage:
    """The image ``name`` names, following an index to ``platform``; retries wait on ``clock``.

    Its blobs stream from the registry, verified. Raises NotFound, RegistryError,
    DigestMismatch, InvalidImage.
    """
    registry = Registry(name.registry, options=options, progress=progress, clock=clock)
    what = f"docker://{name}"
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
    config = registry._blob_bytes(
        name.repository, config_desc, limit=_CONFIG_LIMIT, what=f"{what}: reading config {config_desc.digest}"
    )
    try:
        image = Image(body, config)  # checks the config bytes against the manifest's digest
    except InvalidImage as e:
        raise InvalidImage(f"{what}: {e}") from e
    sizes = {d.digest: d.size for d in image.blob_descriptors()}
    return SourceImage(image, RemoteBlobs(registry, name.repository, sizes), what, index_digest)


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
        layers, config, media_type = image.layers, EMPTY_DESCRIPTOR, mt.OCI_MANIFEST
        reader = WithBytes(blobs, {EMPTY_DESCRIPTOR.digest: EMPTY_CONFIG})
    else:
        layers, config, media_type = tuple(image.layers), image.config_descriptor, image.media_type
        reader = WithBytes(blobs, {image.config_descriptor.digest: image.config_bytes})
    with Registry(name.registry, options=options, progress=progress, clock=clock) as registry:
        for i, desc in enumerate((*layers, config)):
            label = f"layer {i + 1}/{len(layers)}" if i < len(layers) else "config"
            try:
                outcome = registry.push_blob(name.repository, desc, reader, mount_from=sources)
            except RegistryError as e:
                raise RegistryError(f"{label}: {e.message}", registry=e.registry, status=e.status, hint=e.hint) from e
            log.info("%s: %s %s: %s", name, label, desc.digest, outcome)
        digest = registry.put_manifest(name.repository, name.reference, image.manifest_bytes, media_type)
        return PushResult(digest, replace(registry.stats))
