"""Blob uploads with flat memory (part of the registry client).

A blob goes up in one of three ways, tried in this order:

- **mounted** from another repository of the same registry
  (``POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<other>``: 201 = done; 202 = the
  registry started an ordinary upload instead, which we continue);
- **monolithic**: one ``PUT <location>?digest=`` whose body is the blob *stream* (requests
  sends it block by block; oras-py reads the whole blob into memory here);
- **chunked**, for blobs over ``monolithic_max``: ``PATCH`` chunks of at most
  ``chunk_size`` bytes with ``Content-Range``, then ``PUT <location>?digest=``. A registry
  that refuses ``PATCH`` (405/501) gets a streamed monolithic ``PUT`` instead.

Bodies are streamed from the blob reader, never held in memory. Any failure restarts the
blob's upload from the beginning (a new upload session, the blob reopened), within the
client's retry budget.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import BinaryIO, Literal

import requests

from assembler.errors import DigestMismatch, RegistryError
from assembler.oci.descriptor import Descriptor
from assembler.registry.failures import Transient
from assembler.registry.http import RegistryClient
from assembler.registry.types import BlobReader

log = logging.getLogger(__name__)

# What a client's Python code reads per call when the caller asks for "everything".
_BLOCK = 1 << 20
# Answers to PATCH meaning "this registry does not do chunked uploads".
_PATCH_REFUSED = frozenset({405, 501})
_OCTET = "application/octet-stream"


class _Body:
    """At most ``length`` bytes of a stream, as a request body requests sends block by block.

    ``__len__`` gives requests the Content-Length, so it neither buffers nor chunk-encodes.
    A stream that ends early raises DigestMismatch (a Content-Length we cannot honour
    would otherwise leave the registry waiting for bytes until the timeout).
    """

    def __init__(self, stream: BinaryIO, length: int, *, what: str, progress: Callable[[int], None] | None) -> None:
        self._stream = stream
        self._length = length
        self._left = length
        self._what = what
        self._progress = progress

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        want = self._left if size is None or size < 0 else min(size, self._left)
        want = min(want, _BLOCK)  # a caller asking for "all" still gets bounded blocks
        if want <= 0:
            return b""
        data = self._stream.read(want)
        if not data:
            sent = self._length - self._left
            raise DigestMismatch(
                f"{self._what}: the blob ended early", expected=f"{self._length} bytes", actual=f"{sent} bytes"
            )
        self._left -= len(data)
        if self._progress is not None:
            self._progress(len(data))
        return data


class BlobUploader:
    """Pushes blobs through one :class:`RegistryClient` (remembers whether PATCH works)."""

    def __init__(self, http: RegistryClient, *, progress: Callable[[int], None] | None) -> None:
        self.http = http
        self.progress = progress
        self.patch_refused = False

    def upload(
        self, repository: str, desc: Descriptor, blobs: BlobReader, *, mount_from: Sequence[str], what: str
    ) -> Literal["mounted", "uploaded"]:
        """Mount or upload ``desc`` into ``repository``; RegistryError after the retries."""
        _check_size(blobs, desc, what)
        # The whole upload, its retries included, is one operation: a big blob gets more time.
        return self.http.retrying(
            what, lambda: self._attempt(repository, desc, blobs, mount_from, what), size=desc.size
        )

    def _attempt(
        self, repository: str, desc: Descriptor, blobs: BlobReader, mount_from: Sequence[str], what: str
    ) -> Literal["mounted", "uploaded"]:
        location = self._start(repository, desc, mount_from, what)
        if location is None:
            return "mounted"
        opts = self.http.options
        if desc.size > opts.monolithic_max and not self.patch_refused:
            with _open(blobs, desc) as stream:
                if self._chunked(location, repository, desc, stream, what):
                    return "uploaded"
            log.info("%s: the registry refuses PATCH; uploading in one streamed PUT", self.http.host)
            self.patch_refused = True
            location = self._start(repository, desc, (), what)
            assert location is not None  # no mount asked
        with _open(blobs, desc) as stream:
            body = _Body(stream, desc.size, what=what, progress=self.progress)
            self._finish(location, repository, desc, body, what)
        return "uploaded"

    def _start(self, repository: str, desc: Descriptor, mount_from: Sequence[str], what: str) -> str | None:
        """Open an upload session (mounting when possible); its location, or None if mounted."""
        uploads = f"/v2/{repository}/blobs/uploads/"
        for i, source in enumerate(mount_from):
            response = self.http.send(
                "POST",
                self.http.url(uploads, mount=desc.digest, **{"from": source}),
                what=what,
                ok=(201, 202),
                headers={"Content-Length": "0"},
            )
            if response.status_code == 201:
                log.debug("%s: mounted from %s", what, source)
                return None
            location = self._location(response, what)
            if i == len(mount_from) - 1:
                return location  # the registry started an upload: continue through it
            self._cancel(location, repository, what)
        response = self.http.send(
            "POST",
            self.http.url(uploads),
            what=what,
            ok=(202,),
            headers={"Content-Length": "0"},
        )
        return self._location(response, what)

    def _location(self, response: requests.Response, what: str) -> str:
        location = response.headers.get("Location", "")
        if not location:
            raise RegistryError(f"{what}: the registry gave no upload location", registry=self.http.host)
        return self.http.url(location)

    def _cancel(self, location: str, repository: str, what: str) -> None:
        try:
            self.http.send("DELETE", location, what=what, ok=(200, 202, 204, 404))
        except (Transient, RegistryError) as e:  # an abandoned session expires on its own
            log.debug("%s: could not cancel upload session: %s", what, e)

    def _chunked(self, location: str, repository: str, desc: Descriptor, stream: BinaryIO, what: str) -> bool:
        """PATCH the blob in chunks then PUT; False when the registry refuses PATCH."""
        chunk_size = max(1, self.http.options.chunk_size)
        offset = 0
        while offset < desc.size:
            n = min(chunk_size, desc.size - offset)
            response = self.http.send(
                "PATCH",
                location,
                what=what,
                ok=(202, *_PATCH_REFUSED),
                headers={
                    "Content-Type": _OCTET,
                    "Content-Range": f"{offset}-{offset + n - 1}",
                    "Content-Length": str(n),
                },
                data=_Body(stream, n, what=what, progress=self.progress),
            )
            if response.status_code in _PATCH_REFUSED:
                if offset:
                    raise Transient(f"PATCH refused at byte {offset}", status=response.status_code)
                return False
            location = self._location(response, what)
            offset += n
            stored = response.headers.get("Range", "")
            if stored and stored.rpartition("-")[2] != str(offset - 1):
                # The registry lost or doubled bytes: start this blob again.
                raise Transient(f"registry holds bytes {stored}, sent 0-{offset - 1}")
        self._finish(location, repository, desc, None, what)
        return True

    def _finish(self, location: str, repository: str, desc: Descriptor, body: _Body | None, what: str) -> None:
        headers = {"Content-Type": _OCTET, "Content-Length": str(len(body) if body is not None else 0)}
        response = self.http.send(
            "PUT",
            self.http.url(location, digest=desc.digest),
            what=what,
            ok=(201, 204),
            headers=headers,
            data=body,
        )
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != desc.digest:
            raise DigestMismatch(f"{what}: the registry stored", expected=desc.digest, actual=stored)


def _open(blobs: BlobReader, desc: Descriptor) -> AbstractContextManager[BinaryIO]:
    # Through the reader, which checks the digest as the bytes go out: a damaged cache
    # blob fails here (and is dropped) rather than as the registry's DIGEST_INVALID.
    return blobs.open_blob(desc.digest)


def _check_size(blobs: BlobReader, desc: Descriptor, what: str) -> None:
    path = blobs.blob_file(desc.digest)
    if path is not None and (size := os.stat(path).st_size) != desc.size:
        raise DigestMismatch(f"{what}: blob file {path} size", expected=f"{desc.size} bytes", actual=f"{size} bytes")
