"""The registry client: :class:`Registry`, one per host, made of the package's parts.

- requests, credentials, tokens and retries: :class:`http.RegistryClient`, its base
  (logins from :mod:`login`, challenges and scopes from :mod:`auth`, waits from :mod:`retry`);
- manifests as their exact bytes, checked against their digest (:mod:`manifests`);
- blobs: verified, resumable downloads (:mod:`blobs`); streamed, chunked or mounted
  uploads (:mod:`upload`); blobs already in the repository are skipped;
- referrers: the API, else the tag schema's fallback (:mod:`referrers`).

Each part imports only the ones before it; :class:`Registry` puts them together and
:class:`RemoteBlobs` reads one repository's blobs through it, as a BlobReader.
``tls_verify=False`` means plain HTTP, as skopeo users expect for a loopback registry.
Why this client is our own rather than oras-py: ARCHITECTURE.md (measured).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

import requests

from assembler.errors import DigestMismatch, InputError, RegistryError, Unreachable
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import sha256_digest
from assembler.proc import Runner
from assembler.registry import manifests, referrers
from assembler.registry.blobs import fetch_small, open_verified
from assembler.registry.http import RegistryClient
from assembler.registry.retry import SYSTEM_CLOCK, Clock
from assembler.registry.types import BlobReader, RegistryOptions
from assembler.registry.upload import BlobUploader


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
        insecure: bool | None = None,
    ) -> None:
        super().__init__(host, options=options, runner=runner, clock=clock, insecure=insecure)
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

    # -- manifests ---------------------------------------------------------------------

    def fetch_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        """The exact manifest (or index) bytes and their media type (see :mod:`manifests`).

        Raises NotFound, RegistryError, DigestMismatch.
        """
        return manifests.fetch_manifest(self, repository, reference)

    def holds_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> bool:
        """True when ``reference`` (tag or digest) already names these very manifest bytes:
        a registry keeps a manifest only with every blob it names, so nothing of it need
        be pushed again (one HEAD where a push asks for every blob). Raises RegistryError."""
        self._writable(repository)
        try:
            held = manifests.manifest_digest(self, repository, reference, media_type)
        except RegistryError as e:  # a registry that refuses this HEAD (4xx): the push asks blob by blob, as it did
            if isinstance(e, Unreachable) or not 400 <= (e.status or 0) < 500:
                raise  # down, or failing after its retries: so would every blob request
            return False
        return held == sha256_digest(body)

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """PUT ``body`` as is under ``reference`` (tag or digest); returns its digest.

        Raises DigestMismatch when the registry stored other bytes, InputError when a digest
        reference is not the digest of ``body``, RegistryError when refused.
        """
        self.put_manifest_bytes(repository, reference, body, media_type)
        return sha256_digest(body)

    def put_manifest_bytes(self, repository: str, reference: str, body: bytes, media_type: str) -> requests.Response:
        """:meth:`put_manifest`, returning the registry's answer (``OCI-Subject``...)."""
        self._writable(repository)
        return manifests.put_manifest(self, repository, reference, body, media_type)

    def _writable(self, repository: str) -> None:
        """InputError when registries.conf blocks ``HOST/repository``: containers/image opens
        no connection to a blocked name, for a push no more than for a pull."""
        table = self.options.conf.find(f"{self.host}/{repository}")
        if table is not None and table.blocked:
            raise InputError(
                f"docker://{self.host}/{repository}: pushes to this registry are blocked "
                f"({table.prefix} in {table.origin})",
                hint="remove `blocked = true` there, or push somewhere else",
            )

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
        self._writable(repository)
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
