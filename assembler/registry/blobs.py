"""Downloads from a registry, verified, and blob readers (part of the registry client).

oras-py writes what it downloads without checking the digest; here every blob is hashed
as it streams and a mismatch raises DigestMismatch at the end of the stream, before the
reader sees EOF. A connection that drops mid-blob is resumed with a ``Range`` request
(or the already-read part skipped, when the server ignores ``Range``), within the
client's retry budget. A blob's download, its resumes included, is one operation under
one deadline (``options.deadline`` plus a second per ``options.min_rate`` bytes of the
size the manifest declares): a registry that trickles it is given up at that time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast

import requests

from assembler.errors import DigestMismatch, InvalidImage, NotFound, RegistryError
from assembler.registry import deadlines
from assembler.registry.failures import read_failed, too_slow
from assembler.registry.http import RegistryClient
from assembler.registry.retry import IDLE_HINT, seconds
from assembler.registry.types import BlobReader

log = logging.getLogger(__name__)

_CHUNK = 256 << 10  # a dropped connection loses at most this much of what already arrived
_BUFFER = 1 << 20
_READ_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
# Registries may compress on the fly when asked; blobs must arrive as stored.
_IDENTITY = {"Accept-Encoding": "identity"}


class BlobStream(io.RawIOBase):
    """One blob's bytes as they download; DigestMismatch at EOF when they are not ``digest``."""

    def __init__(
        self,
        http: RegistryClient,
        url: str,
        *,
        digest: str,
        what: str,
        progress: Callable[[int], None] | None,
        size: int | None = None,
    ) -> None:
        super().__init__()
        self._size = size
        # A whole-download deadline: per-read timeouts alone let a trickle go on forever.
        self._deadline = http.deadline(size or 0)
        self._http = http
        self._url = url
        self._digest = digest
        self._what = what
        self._progress = progress
        self._sha = hashlib.sha256()
        self._offset = 0  # bytes received and hashed
        self._pending = memoryview(b"")
        self._failures = 0  # failed reads in a row without a byte received
        self._failed_at = 0  # the offset of the last failure
        self._eof = False
        self._response: requests.Response | None = None
        self._chunks: Iterator[bytes] = iter(())
        self._skip = 0
        self._open()

    def _open(self) -> None:
        headers = dict(_IDENTITY)
        if self._offset:
            headers["Range"] = f"bytes={self._offset}-"
        response = self._http.retrying(
            self._what,
            lambda: self._http.send("GET", self._url, what=self._what, ok=(200, 206), headers=headers, stream=True),
            deadline=self._deadline,  # the body, read later, keeps it too (registry.deadlines)
        )
        # A server that ignores Range sends the whole blob again: skip what we have.
        self._skip = self._offset if response.status_code == 200 else 0
        announced = response.headers.get("Content-Length", "")
        if self._size is not None and announced.isdigit() and int(announced) - self._skip > self._size - self._offset:
            response.close()
            raise self._too_big(f"announces {announced} bytes")
        self._response = response
        self._chunks = deadlines.arriving(response, _CHUNK, decode=False)

    def _resume(self, error: Exception) -> None:
        if self._offset != self._failed_at:
            # Bytes came in since the last failure: a flaky link, not a dead one.
            self._failures, self._failed_at = 0, self._offset
        self._failures += 1
        failed = read_failed(error, host=self._http.host, idle=self._http.options.timeout)
        reason = failed.reason
        if self._deadline.expired():
            raise self._too_slow() from error
        if self._failures >= self._http.retry.tries:
            raise RegistryError(
                f"{self._what}: {reason} after {self._failures} tries",
                registry=self._http.host,
                hint=IDLE_HINT if failed.silent is not None else None,
            ) from error
        wait = self._http.retry.wait(self._failures)
        if wait >= self._deadline.remaining():
            raise self._too_slow() from error
        log.warning("%s: %s at byte %d; resuming in %.1f s", self._what, reason, self._offset, wait)
        self._close_response()
        self._http.renew_session()
        self._http.retry.clock.sleep(wait)
        self._open()

    def _next_chunk(self) -> bytes | None:
        while True:
            try:
                chunk = next(self._chunks, None)
            except _READ_ERRORS as e:
                self._resume(e)
                continue
            if chunk is None:
                return None
            if self._deadline.expired():
                raise self._too_slow()
            if self._skip:
                dropped = min(self._skip, len(chunk))
                self._skip -= dropped
                chunk = chunk[dropped:]
            if chunk:
                return chunk

    def _too_slow(self) -> RegistryError:
        size = f" of {self._size}" if self._size is not None else ""
        options = self._http.options
        return too_slow(
            self._what,
            self._http.host,
            self._deadline,
            f"{self._offset}{size} bytes arrived; {seconds(options.deadline)} s plus 1 s per {options.min_rate} bytes",
        )

    def _too_big(self, how: str) -> RegistryError:
        # Not retried: a registry that lies about one blob's size will do it again.
        return RegistryError(
            f"{self._what}: the registry {how} than the {self._size} bytes the manifest declares",
            registry=self._http.host,
        )

    def _verify(self) -> None:
        actual = "sha256:" + self._sha.hexdigest()
        if actual != self._digest:
            raise DigestMismatch(f"{self._what}: downloaded bytes", expected=self._digest, actual=actual)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if not self._pending:
            if self._eof:
                return 0
            chunk = self._next_chunk()
            if chunk is None:
                self._eof = True
                self._close_response()
                self._verify()
                return 0
            if self._size is not None and self._offset + len(chunk) > self._size:
                raise self._too_big("sent more")
            self._sha.update(chunk)
            self._offset += len(chunk)
            self._http.stats.downloaded_bytes += len(chunk)
            if self._progress is not None:
                self._progress(len(chunk))
            self._pending = memoryview(chunk)
        n = min(len(view), len(self._pending))
        view[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _close_response(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None

    def close(self) -> None:
        self._close_response()
        super().close()


def open_verified(
    http: RegistryClient,
    url: str,
    *,
    digest: str,
    what: str,
    progress: Callable[[int], None] | None = None,
    size: int | None = None,
) -> BinaryIO:
    """A buffered, verified stream of the blob at ``url`` (at most ``size`` bytes, when given)."""
    raw = BlobStream(http, url, digest=digest, what=what, progress=progress, size=size)
    return cast(BinaryIO, io.BufferedReader(raw, buffer_size=_BUFFER))


def fetch_small(
    http: RegistryClient,
    url: str,
    *,
    what: str,
    limit: int,
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, requests.structures.CaseInsensitiveDict[str]]:
    """The whole body (at most ``limit`` bytes) of a GET and its headers, with retries."""

    def attempt() -> tuple[bytes, requests.structures.CaseInsensitiveDict[str]]:
        response = http.send("GET", url, what=what, headers={**_IDENTITY, **(headers or {})}, stream=True)
        with response:
            parts: list[bytes] = []
            size = 0
            try:
                for chunk in response.iter_content(_CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise RegistryError(f"{what}: larger than {limit} bytes", registry=http.host)
                    parts.append(chunk)
            except _READ_ERRORS as e:
                raise read_failed(e, host=http.host, idle=http.options.timeout) from e
        http.stats.downloaded_bytes += size
        return b"".join(parts), response.headers

    return http.retrying(what, attempt)


def json_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` as a JSON object; InvalidImage when it is not one."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidImage(f"{what} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise InvalidImage(f"{what} is not a JSON object")
    return value


# -- blob readers ------------------------------------------------------------------------


class FileBlobs:
    """Files and in-memory blobs by digest, as a BlobReader (for pushes of local files)."""

    def __init__(self, files: Mapping[str, Path], data: Mapping[str, bytes] | None = None) -> None:
        self.files = dict(files)
        self.data = dict(data or {})

    def blob_file(self, digest: str) -> Path | None:
        return self.files.get(digest)

    def open_blob(self, digest: str) -> BinaryIO:
        if digest in self.files:
            return open(self.files[digest], "rb")
        if digest in self.data:
            return io.BytesIO(self.data[digest])
        raise NotFound(f"blob {digest} is not among the files pushed")


class WithBytes:
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
