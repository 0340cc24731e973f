"""Registries (``docker://HOST/REPO:TAG``): read and push images, with oras-py underneath.

This module and its ``remote_*`` helpers are the only code that imports ``oras`` and
``requests``. oras-py 0.2.43 (pinned) provides the HTTP session; the registry protocol is
ours, because oras gets too much of it wrong for images (see ARCHITECTURE.md):

- manifests go up as their exact bytes and the registry's ``Docker-Content-Digest`` is
  compared with sha256 of those bytes (oras re-serialises JSON and cannot push an index);
- blobs stream up with flat memory, chunked above ``monolithic_max`` (remote_upload);
- tokens are fetched and cached per scope; ``Basic`` challenges get basic auth;
  credentials come from containers' and Docker's auth files (remote_auth);
- retries cover connection errors, timeouts, 429 and 5xx with ``Retry-After`` (remote_http);
- blobs already in the repository are skipped, blobs in another repository of the same
  registry are mounted (remote_upload);
- every downloaded blob, and every manifest fetched by digest, is verified (remote_blobs).

``tls_verify=False`` means plain HTTP, as skopeo users expect for a loopback registry.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

from assembler.errors import DigestMismatch, InputError, InvalidImage, NotFound, RegistryError
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json, digest_hex, is_digest, sha256_digest
from assembler.oci.image import Image, Index, manifest_config, parse_manifest_or_index
from assembler.oci.reference import ImageName
from assembler.transports.common import BlobReader, RegistryOptions, SourceImage, pick_manifest
from assembler.transports.remote_auth import pull_scope, push_scope, scopes_of
from assembler.transports.remote_blobs import fetch_small, open_verified
from assembler.transports.remote_http import HttpClient, TransferStats
from assembler.transports.remote_upload import BlobUploader

__all__ = ["PushResult", "Registry", "RegistryOptions", "RemoteBlobs", "TransferStats", "push", "read"]

log = logging.getLogger(__name__)

_MANIFEST_TYPES = (mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST)
_MANIFEST_LIMIT = 4 << 20  # what containerd accepts for a manifest
_CONFIG_LIMIT = 64 << 20
_MAX_NESTING = 4


class Registry:
    """A client for one registry host. Not thread-safe: one per thread."""

    def __init__(self, host: str, *, options: RegistryOptions, progress: Callable[[int], None] | None = None) -> None:
        self.host = host
        self.options = options
        self.stats = TransferStats()
        self._http = HttpClient(host, options=options, stats=self.stats)
        self._uploader = BlobUploader(self._http, progress=progress)
        self._progress = progress

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _where(self, repository: str) -> str:
        return f"{self.host}/{repository}"

    # -- manifests ---------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The exact manifest (or index) bytes and their media type.

        Raises NotFound, RegistryError, or DigestMismatch when the bytes do not hash to the
        digest asked for (or to the digest the registry announces).
        """
        what = f"reading manifest {reference} of {self._where(repository)}"
        body, headers = fetch_small(
            self._http,
            self._http.url(f"/v2/{repository}/manifests/{reference}"),
            scopes=scopes_of(pull_scope(repository)),
            what=what,
            limit=_MANIFEST_LIMIT,
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

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT ``body`` as is under ``reference`` (tag or digest); returns its digest.

        Raises DigestMismatch when the registry stored other bytes, InputError when a digest
        reference is not the digest of ``body``, RegistryError when refused.
        """
        return self._put_manifest(repository, reference, body, media_type)[0]

    def _put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> tuple[str, bool]:
        """PUT a manifest; its digest and whether the registry processed its subject."""
        digest = sha256_digest(body)
        if is_digest(reference) and reference != digest:
            raise InputError(f"manifest pushed as {reference} hashes to {digest}")
        what = f"pushing manifest {reference} to {self._where(repository)}"
        response = self._http.request(
            "PUT",
            self._http.url(f"/v2/{repository}/manifests/{reference}"),
            scopes=scopes_of(push_scope(repository)),
            what=what,
            ok=(200, 201),
            headers={"Content-Type": media_type},
            data=body,
        )
        stored = response.headers.get("Docker-Content-Digest", "")
        if stored and stored != digest:
            raise DigestMismatch(f"{what}: the registry stored", expected=digest, actual=stored)
        log.info("pushed %s@%s", self._where(repository), digest)
        return digest, bool(response.headers.get("OCI-Subject"))

    # -- blobs -------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        """True when ``repository`` has the blob (HEAD). Raises RegistryError."""
        response = self._http.request(
            "HEAD",
            self._http.url(f"/v2/{repository}/blobs/{digest}"),
            scopes=scopes_of(pull_scope(repository)),
            what=f"checking blob {digest} in {self._where(repository)}",
            ok=(200, 404, 302, 303, 307),
            allow_redirects=False,  # a redirect to storage already says "it is there"
        )
        return response.status_code != 404

    def open_blob(self, repository: str, digest: str, *, size: int | None = None) -> BinaryIO:
        """A streaming reader of the blob; DigestMismatch at EOF if the bytes are not ``digest``.

        With ``size`` (what a manifest declares), a registry sending more fails at once.
        Raises NotFound or RegistryError when the download cannot start.
        """
        return open_verified(
            self._http,
            self._http.url(f"/v2/{repository}/blobs/{digest}"),
            digest=digest,
            size=size,
            scopes=scopes_of(pull_scope(repository)),
            what=f"reading blob {digest} from {self._where(repository)}",
            progress=self._progress,
        )

    def _blob_bytes(self, repository: str, desc: Descriptor, *, limit: int, what: str) -> bytes:
        """A small blob (a config) in memory, verified; RegistryError past ``limit`` bytes."""
        body, _ = fetch_small(
            self._http,
            self._http.url(f"/v2/{repository}/blobs/{desc.digest}"),
            scopes=scopes_of(pull_scope(repository)),
            what=what,
            limit=limit,
        )
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

    # -- referrers ---------------------------------------------------------------------

    def list_referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Manifests whose subject is ``digest``: the referrers API, else the fallback tag.

        Raises RegistryError; an index that does not parse raises InvalidImage.
        """
        what = f"listing referrers of {digest} in {self._where(repository)}"
        params = {"artifactType": artifact_type} if artifact_type else {}
        try:
            body, _ = fetch_small(
                self._http,
                self._http.url(f"/v2/{repository}/referrers/{digest}", **params),
                scopes=scopes_of(pull_scope(repository)),
                what=what,
                limit=_MANIFEST_LIMIT,
                headers={"Accept": mt.OCI_INDEX},
            )
        except NotFound:
            # No referrers API (distribution 2.8): the tag schema's index, if any.
            try:
                body, _ = self.get_manifest(repository, _fallback_tag(digest))
            except NotFound:
                return []
        try:
            found = list(Index(body).manifests)
        except InvalidImage as e:
            raise InvalidImage(f"{what}: not an image index ({e})") from e
        return [d for d in found if not artifact_type or d.artifact_type == artifact_type]

    def put_referrer(self, repository: str, manifest: bytes, media_type: str, subject: Descriptor) -> str:
        """Push ``manifest`` (whose ``subject`` is ``subject``) by digest; returns its digest.

        Without a referrers API (no ``OCI-Subject`` in the answer) the index tagged
        ``sha256-<subject hex>`` is updated too. Its blobs must be pushed first.
        Raises InputError when the manifest's subject is not ``subject``.
        """
        data = _json_object(manifest, "referrer manifest")
        named = _mapping(data.get("subject"))
        if named.get("digest") != subject.digest:
            raise InputError(f"referrer manifest: subject is {named.get('digest')!r}, expected {subject.digest}")
        digest, processed = self._put_manifest(repository, sha256_digest(manifest), manifest, media_type)
        if processed:
            return digest
        tag = _fallback_tag(subject.digest)
        try:
            existing, _ = self.get_manifest(repository, tag)
            entries: list[Any] = list(_json_object(existing, f"referrers index {tag}").get("manifests") or [])
        except NotFound:
            entries = []
        if any(isinstance(e, Mapping) and e.get("digest") == digest for e in entries):
            return digest
        config = _mapping(data.get("config"))
        entry = Descriptor(
            media_type,
            digest,
            len(manifest),
            annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
            artifact_type=str(data.get("artifactType") or config.get("mediaType") or ""),
        )
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [*entries, entry.to_json()]}
        self.put_manifest(repository, tag, canonical_json(index), mt.OCI_INDEX)
        return digest


class RemoteBlobs:
    """The blobs of one repository, as a BlobReader (streamed, verified; never a file)."""

    def __init__(self, registry: Registry, repository: str, sizes: Mapping[str, int] | None = None) -> None:
        self.registry = registry
        self.repository = repository
        self.sizes = dict(sizes or {})  # what the manifest declares: downloads stop there

    def open_blob(self, digest: str) -> BinaryIO:
        return self.registry.open_blob(self.repository, digest, size=self.sizes.get(digest))

    def blob_file(self, digest: str) -> Path | None:
        return None


class _WithBytes:
    """A BlobReader that also serves some blobs from memory (an image's config)."""

    def __init__(self, inner: BlobReader, extra: Mapping[str, bytes]) -> None:
        self._inner = inner
        self._extra = extra

    def open_blob(self, digest: str) -> BinaryIO:
        if digest in self._extra:
            return io.BytesIO(self._extra[digest])
        return self._inner.open_blob(digest)

    def blob_file(self, digest: str) -> Path | None:
        return None if digest in self._extra else self._inner.blob_file(digest)


def _fallback_tag(digest: str) -> str:
    return f"sha256-{digest_hex(digest)}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidImage(f"{what} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise InvalidImage(f"{what} is not a JSON object")
    return value


def _media_type_of(body: bytes, what: str) -> str:
    explicit = _json_object(body, what).get("mediaType")
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
) -> SourceImage:
    """The image ``name`` names, following an index to ``platform``.

    Its blobs stream from the registry, verified. Raises NotFound, RegistryError,
    DigestMismatch, InvalidImage.
    """
    registry = Registry(name.registry, options=options, progress=progress)
    what = f"docker://{name}"
    body, media_type = registry.get_manifest(name.repository, name.reference)
    index_digest: str | None = None
    for _ in range(_MAX_NESTING):
        if media_type not in mt.INDEX_TYPES:
            break
        try:
            index = Index(body)
        except InvalidImage as e:
            raise InvalidImage(f"{what}: {e}") from e
        index_digest = index_digest or index.digest
        body, media_type = registry.get_manifest(name.repository, pick_manifest(index, platform, what=what))
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
    image: Image,
    name: ImageName,
    *,
    blobs: BlobReader,
    options: RegistryOptions,
    mount_from: Sequence[ImageName] = (),
    progress: Callable[[int], None] | None = None,
) -> PushResult:
    """Push ``image`` to ``name`` (its tag, or its digest): layers, config, then the manifest.

    Blobs already in the repository are skipped; blobs in a ``mount_from`` repository
    of the same registry are mounted. Raises RegistryError, DigestMismatch, NotFound (a
    blob ``blobs`` does not have).
    """
    sources = [m.repository for m in mount_from if m.registry == name.registry]
    reader = _WithBytes(blobs, {image.config_descriptor.digest: image.config_bytes})
    with Registry(name.registry, options=options, progress=progress) as registry:
        for i, desc in enumerate((*image.layers, image.config_descriptor)):
            label = f"layer {i + 1}/{len(image.layers)}" if i < len(image.layers) else "config"
            try:
                outcome = registry.push_blob(name.repository, desc, reader, mount_from=sources)
            except RegistryError as e:
                raise RegistryError(f"{label}: {e.message}", registry=e.registry, status=e.status, hint=e.hint) from e
            log.info("%s: %s %s: %s", name, label, desc.digest, outcome)
        digest = registry.put_manifest(name.repository, name.reference, image.manifest_bytes, image.media_type)
        return PushResult(digest, replace(registry.stats))
