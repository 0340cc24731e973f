"""The registry client: :class:`Registry`, one per host, made of the package's parts.

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
skopeo users expect for a loopback registry. :class:`RemoteBlobs` reads one repository's
blobs through it, as a BlobReader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal

import oras.container
import requests

from assembler.errors import DigestMismatch, InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, is_digest, sha256_digest
from assembler.proc import Runner
from assembler.registry import manifests, referrers
from assembler.registry.blobs import FileBlobs, fetch_small, json_object, open_verified
from assembler.registry.http import RegistryClient
from assembler.registry.retry import SYSTEM_CLOCK, Clock
from assembler.registry.types import BlobReader, RegistryOptions
from assembler.registry.upload import BlobUploader

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
        return manifests.where(self, repository)

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
        """The exact manifest (or index) bytes and their media type (see :mod:`manifests`).

        Raises NotFound, RegistryError, DigestMismatch.
        """
        return manifests.fetch_manifest(self, repository, reference)

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
        return manifests.put_manifest(self, repository, reference, body, media_type)

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

    def blob_bytes(self, repository: str, desc: Descriptor, *, limit: int, what: str) -> bytes:
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
        """Manifests whose subject is ``digest`` (see :mod:`referrers`)."""
        return referrers.list_referrers(self, repository, digest, artifact_type)

    def put_referrer(self, repository: str, manifest: bytes, media_type: str, subject: Descriptor) -> str:
        """Push a referrer of ``subject`` by digest; returns its digest (see :mod:`referrers`)."""
        return referrers.put_referrer(self, repository, manifest, media_type, subject)


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
