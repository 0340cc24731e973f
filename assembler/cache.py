"""The cache: a content-addressed blob store plus an index of step keys.

Layout under the cache root (default ``$XDG_CACHE_HOME/assembler``)::

    blobs/sha256/<hex>     every blob we read or write, shaped like an OCI layout
    keys/<xx>/<key>.json   step key -> result (layer digests, sizes, ...)
    tmp/                   work files; removed when done
    logs/                  step logs

Writes go to a temp file in the same folder, then ``os.replace``. A missing or corrupt
entry is a miss (rebuild), never an error and never a wrong result: key entries are
only trusted when every blob they name is present with the recorded size.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from assembler.errors import CacheError, DigestMismatch, NotFound
from assembler.oci.digest import canonical_json, digest_hex, file_digest, sha256_digest
from assembler.oci.image import Image

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def default_root() -> Path:
    """``$XDG_CACHE_HOME/assembler`` (``~/.cache/assembler`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "assembler"


def key_of(parts: Mapping[str, Any]) -> str:
    """A step key: sha256 of the canonical JSON of everything that can change the result."""
    return sha256_digest(canonical_json(parts))[len("sha256:") :]


class BlobWriter:
    """A temp file that hashes what is written; :meth:`Cache.blob_writer` commits it."""

    def __init__(self, fileobj: BinaryIO, path: Path) -> None:
        self._f = fileobj
        self.path = path
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._f.write(data)
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()


class Cache:
    """Blob store and key index rooted at ``root`` (created on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.keys = self.root / "keys"
        try:
            for d in (self.blobs, self.keys, self.root / "tmp", self.root / "logs"):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(
                f"cannot create the cache at {self.root}: {e.strerror}", hint="pass --cache DIR with a writable folder"
            ) from e

    # -- blobs -------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def blob_file(self, digest: str) -> Path | None:
        path = self.blob_path(digest)
        return path if path.is_file() else None

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self.blob_path(digest), "rb")
        except FileNotFoundError as e:
            raise NotFound(f"blob {digest} is not in the cache at {self.root}") from e

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            return f.read()

    @contextmanager
    def blob_writer(self, *, expected: str | None = None) -> Iterator[BlobWriter]:
        """Write a blob; on a clean exit it is stored under its digest.

        With ``expected``, a different digest raises DigestMismatch and nothing is stored.
        """
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.blobs)
        path = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                writer = BlobWriter(f, path)
                yield writer
            if expected is not None and writer.digest != expected:
                raise DigestMismatch("downloaded blob", expected=expected, actual=writer.digest)
            os.chmod(path, 0o644)
            os.replace(path, self.blob_path(writer.digest))
        finally:
            path.unlink(missing_ok=True)

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_digest(data)
        if not self.has_blob(digest, len(data)):
            with self.blob_writer() as w:
                w.write(data)
        return digest

    def import_stream(self, stream: BinaryIO, *, digest: str, size: int | None = None) -> None:
        """Copy a stream into the store, verifying its digest (and size when given)."""
        if self.has_blob(digest, size):
            return
        with self.blob_writer(expected=digest) as w:
            while chunk := stream.read(_CHUNK):
                w.write(chunk)
        if size is not None and self.blob_path(digest).stat().st_size != size:
            self.blob_path(digest).unlink(missing_ok=True)
            raise DigestMismatch(f"blob {digest} size", expected=str(size), actual="other")

    def import_file(self, path: Path, *, digest: str, size: int | None = None) -> None:
        """Bring a file into the store, verified: hashed in place, then hard-linked
        (copied when on another filesystem). DigestMismatch leaves the store unchanged."""
        if self.has_blob(digest, size):
            return
        actual = file_digest(path)
        if actual != digest:
            raise DigestMismatch(f"blob file {path}", expected=digest, actual=actual)
        tmp = self.blobs / f".link-{os.getpid()}-{digest_hex(digest)[:16]}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES):
                raise
            with open(path, "rb") as f:
                self.import_stream(f, digest=digest, size=size)
            return
        os.replace(tmp, self.blob_path(digest))

    def link_out(self, digest: str, dest: Path) -> None:
        """Place a blob at ``dest``: hard link when on the same filesystem, else copy."""
        src = self.blob_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)

    def blobs_present(self, blobs: Iterable[tuple[str, int]]) -> bool:
        return all(self.has_blob(d, s) for d, s in blobs)

    def put_image(self, image: Image) -> None:
        """Store an image's manifest and config (its layers must be stored already)."""
        self.put_bytes(image.config_bytes)
        self.put_bytes(image.manifest_bytes)

    def get_image(self, digest: str) -> Image | None:
        """The image whose manifest is ``digest`` if it and all its blobs are here, else None."""
        try:
            manifest = self.read_blob(digest)
            if sha256_digest(manifest) != digest:
                return None
            probe = json.loads(manifest)
            config = self.read_blob(str(probe["config"]["digest"]))
            image = Image(manifest, config)
        except (NotFound, ValueError, KeyError, TypeError):
            return None
        if not self.blobs_present((d.digest, d.size) for d in image.layers):
            return None
        return image

    # -- keys --------------------------------------------------------------------------

    def _key_path(self, key: str) -> Path:
        return self.keys / key[:2] / f"{key}.json"

    def get_key(self, key: str) -> dict[str, Any] | None:
        """The stored result for ``key``, or None (absent or unreadable: a miss)."""
        try:
            value = json.loads(self._key_path(key).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("cache entry %s is unreadable (%s): treating it as a miss", key, e)
            return None
        return value if isinstance(value, dict) else None

    def put_key(self, key: str, value: Mapping[str, Any]) -> None:
        path = self._key_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(canonical_json(value))
        os.replace(tmp, path)

    def drop_key(self, key: str) -> None:
        self._key_path(key).unlink(missing_ok=True)

    # -- work space --------------------------------------------------------------------

    @contextmanager
    def workdir(self, prefix: str = "work-") -> Iterator[Path]:
        """A fresh folder under ``tmp/``, removed afterwards (also on error)."""
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.root / "tmp"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def path(self, *parts: str) -> Path:
        """A folder under the cache root for a component's own use (created)."""
        p = self.root.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p
