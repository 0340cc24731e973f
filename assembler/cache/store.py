"""The cache's storage: a content-addressed blob store plus an index of records by key.

Layout under the cache root (default ``$XDG_CACHE_HOME/assembler``)::

    blobs/sha256/<hex>     every blob we read or write, shaped like an OCI layout
    keys/<xx>/<key>.json   step key -> result (layer digests, sizes, ...)
    tmp/                   work files; removed when done
    logs/                  step logs (0700: they hold what builds printed)
    lock                   held shared by every process using the cache, exclusive by prune
    CACHEDIR.TAG           marks the folder as a cache (:mod:`assembler.cache.marker`)

Writes go to a temp file in the same folder, then ``os.replace``. A missing or corrupt
entry is a miss (rebuild), never an error and never a wrong result: key entries are
only trusted when every blob they name is present with the recorded size, and every
blob read is checked against its digest as it streams (:class:`CorruptBlob` when it is
not: the blob is dropped, so the next attempt rebuilds or re-fetches it).

Blobs leave and enter the store as copies (a reflink where the filesystem can), never
as hard links: a later corruption of the cache must not reach an output already
written, nor a user's file reach the cache. Temp files carry the writer's pid and a tag
of its machine (``.tmp-p<pid>-h<host>-...``), so the next run on that machine reclaims
those of runs that were killed; another machine's are left for a day
(:mod:`assembler.cache.temps`).

Several machines may share one cache folder (Slurm nodes over NFS or Lustre): every
entry and blob is written whole and renamed into place, and a reader trusts an entry only
with all its blobs present, so no ``flock`` is needed for a build to be right. ``flock``
only keeps ``cache prune`` off blobs a running build will use, and one build of a step off
the kept folder another build of that step uses (compile.worktree): where the filesystem's
locks are per node, prune when no node builds.

A process holds the cache lock once, however many :class:`Store` objects it opens on one
root (:mod:`assembler.cache.filelock`), and keeps there what it used of the cache.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from assembler.archive.layer import HashingSink
from assembler.cache.filelock import held
from assembler.cache.marker import claim
from assembler.cache.temps import reclaim, temp_prefix
from assembler.errors import CacheError, CorruptBlob, DigestMismatch, InvalidImage, NotFound
from assembler.oci.digest import canonical_json, digest_hex, file_digest, sha256_digest
from assembler.oci.image import Image
from assembler.oci.verify import VerifiedReader
from assembler.trace import housekeeping

log = logging.getLogger(__name__)
_CHUNK = 1 << 20
_FICLONE = 0x40049409  # linux/fs.h: share the extents of another file (btrfs, xfs, overlay...)


def reflink(src: Path, dest: Path) -> bool:
    """Make ``dest`` a copy-on-write clone of ``src`` if the filesystem can; False if not
    (``dest`` is then left absent)."""
    try:
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            fcntl.ioctl(fout.fileno(), _FICLONE, fin.fileno())
        return True
    except OSError:
        dest.unlink(missing_ok=True)
        return False


def copy_verified(blob: BinaryIO, dest: Path, *, src: Path | None = None) -> None:
    """Write the (verifying) stream ``blob`` to ``dest``; with ``src`` (the file behind it),
    reflink it and only read ``blob`` through to check it. Never a hard link."""
    if src is not None and reflink(src, dest):
        while blob.read(_CHUNK):
            pass
        return
    with open(dest, "wb") as out:
        shutil.copyfileobj(blob, out, _CHUNK)


def default_root() -> Path:
    """``$XDG_CACHE_HOME/assembler`` (``~/.cache/assembler`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "assembler"


def key_of(parts: Mapping[str, Any]) -> str:
    """A step key: sha256 of the canonical JSON of everything that can change the result."""
    return sha256_digest(canonical_json(parts))[len("sha256:") :]


class BlobWriter(HashingSink):
    """A temp file that hashes what is written; :meth:`Cache.blob_writer` commits it.
    A layer written into it takes its digest from here (:func:`write_layer`)."""

    def __init__(self, fileobj: BinaryIO, path: Path) -> None:
        super().__init__(fileobj)
        self.path = path

    @property
    def size(self) -> int:
        return self.count


class Store:
    """Blob store and key index rooted at ``root`` (created on first use). Records are
    raw JSON here; :class:`assembler.cache.Cache` gives them a schema."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.keys = self.root / "keys"
        self.tmp = self.root / "tmp"  # work folders and spools, emptied when a cache is opened
        try:
            claim(self.root)
            for d in (self.blobs, self.keys, self.tmp, self.root / "logs"):
                d.mkdir(parents=True, exist_ok=True)
            # steps' logs are what a build printed: for the cache's owner only, as a shell's history
            (self.root / "logs").chmod(0o700)
        except OSError as e:
            raise CacheError(
                f"cannot create the cache at {self.root}: {e.strerror}", hint="pass --cache DIR with a writable folder"
            ) from e
        self._held = held(self.root / "lock")
        self._lock = self._held.hold()
        weakref.finalize(self, self._held.release)
        self.uses = self._held.uses
        with housekeeping():  # no input of the build (assembler.trace)
            reclaim(self.blobs, ".tmp-*")
            reclaim(self.keys, "*/.tmp-*")
            reclaim(self.tmp, "*")

    def try_exclusive(self) -> bool:
        """Hold the cache lock alone if no other process (a build) holds it: True. Kept
        until :meth:`share` or until this process's stores on this cache are all gone
        (``cache prune``). False leaves it shared, as it was."""
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A lock converted on Linux is dropped first, then taken anew: take it back.
            self.share()
            return False
        return True

    def share(self) -> None:
        """After :meth:`try_exclusive`: hold the lock shared again (waiting while a prune
        holds it)."""
        fcntl.flock(self._lock, fcntl.LOCK_SH)

    # -- blobs -------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        self.uses.blobs.add(digest)
        return size is None or st.st_size == size

    def blob_file(self, digest: str) -> Path | None:
        path = self.blob_path(digest)
        if not path.is_file():
            return None
        self.uses.blobs.add(digest)
        return path

    def open_blob(self, digest: str) -> BinaryIO:
        """A verified reader of the blob: CorruptBlob (and the blob dropped) when its bytes
        are not ``digest``."""
        path = self.blob_path(digest)
        try:
            f = open(path, "rb")  # noqa: SIM115 - owned by the returned reader
        except FileNotFoundError as e:
            raise NotFound(f"blob {digest} is not in the cache at {self.root}") from e
        size = os.fstat(f.fileno()).st_size
        self.uses.blobs.add(digest)

        def corrupt(expected: str, actual: str) -> Exception:
            self.drop_blob(digest)
            return CorruptBlob(f"cached blob {path}", expected=expected, actual=actual)

        return cast(BinaryIO, VerifiedReader(f, digest, on_mismatch=corrupt, size=size))

    def drop_blob(self, digest: str) -> None:
        """Remove a blob found damaged (with a warning): the next use rebuilds or re-fetches it."""
        log.warning("cache blob %s does not match its digest: dropped it, it will be made again", digest)
        self.blob_path(digest).unlink(missing_ok=True)

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as f:
            return f.read()

    @contextmanager
    def blob_writer(self, *, expected: str | None = None) -> Iterator[BlobWriter]:
        """Write a blob; on a clean exit it is stored under its digest.

        With ``expected``, a different digest raises DigestMismatch and nothing is stored.
        """
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(".tmp-"), dir=self.blobs)
        path = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                writer = BlobWriter(f, path)
                yield writer
            if expected is not None and writer.digest != expected:
                raise DigestMismatch("downloaded blob", expected=expected, actual=writer.digest)
            os.chmod(path, 0o644)
            os.replace(path, self.blob_path(writer.digest))
            self.uses.blobs.add(writer.digest)
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
        """Bring a file into the store, verified: a reflink where the filesystem can (then
        hashed once), else a copy hashed as it goes. Never a hard link: the user's file
        may change later. DigestMismatch leaves the store unchanged."""
        if self.has_blob(digest, size):
            return
        tmp = self.blobs / f"{temp_prefix('.tmp-')}{digest_hex(digest)[:16]}"
        try:
            if reflink(path, tmp):
                actual = file_digest(tmp)  # the clone is hashed, not copied again
                if actual != digest:
                    raise DigestMismatch(f"blob file {path}", expected=digest, actual=actual)
                os.chmod(tmp, 0o644)
                os.replace(tmp, self.blob_path(digest))
                self.uses.blobs.add(digest)
                return
        finally:
            tmp.unlink(missing_ok=True)
        with open(path, "rb") as f:
            self.import_stream(f, digest=digest, size=size)

    def copy_out(self, digest: str, dest: Path) -> None:
        """Place a verified copy (or reflink) of a blob at ``dest``, atomically."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{temp_prefix('tmp-')}x")
        try:
            with self.open_blob(digest) as blob:
                copy_verified(blob, tmp, src=self.blob_path(digest))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def blobs_present(self, blobs: Iterable[tuple[str, int]]) -> bool:
        return all(self.has_blob(d, s) for d, s in blobs)

    def put_image(self, image: Image) -> None:
        """Store an image's manifest and config (its layers must be stored already)."""
        self.put_bytes(image.config_bytes)
        self.put_bytes(image.manifest_bytes)

    def get_image(self, digest: str, *, layers: bool = True) -> Image | None:
        """The image whose manifest is ``digest`` if its blobs (``layers=False``: only its config) are here."""
        try:
            manifest = self.read_blob(digest)
            if sha256_digest(manifest) != digest:
                return None
            probe = json.loads(manifest)
            config = self.read_blob(str(probe["config"]["digest"]))
            image = Image(manifest, config)
        except (NotFound, InvalidImage, ValueError, KeyError, TypeError):
            return None
        if layers and not self.blobs_present((d.digest, d.size) for d in image.layers):
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
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(".tmp-"), dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(canonical_json(value))
        os.replace(tmp, path)

    # -- work space --------------------------------------------------------------------

    @contextmanager
    def workdir(self, prefix: str = "work-") -> Iterator[Path]:
        """A fresh folder under ``tmp/``, removed afterwards (also on error)."""
        path = Path(tempfile.mkdtemp(prefix=temp_prefix(prefix), dir=self.tmp))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def mark_used(self, path: Path) -> None:
        """Stamp ``path`` (a folder or file under the cache) as used now: its mtime is its
        last use for ``cache prune``."""
        try:
            os.utime(path)
        except OSError as e:
            log.debug("cannot stamp %s as used: %s", path, e)

    def path(self, *parts: str) -> Path:
        """A folder under the cache root for a component's own use (created)."""
        p = self.root.joinpath(*parts)
        p.mkdir(parents=True, exist_ok=True)
        return p
