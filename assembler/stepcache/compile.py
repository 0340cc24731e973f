"""Compile caches through a registry: a step's kept folders (build trees with their source
working copies, ccache/sccache, cargo's and uv's caches) exported with ``--cache-to`` and
restored with ``--cache-from`` (which folders, keyed how: :mod:`assembler.compile.keptcaches`).

An entry is an OCI image manifest tagged ``ccache-<key>`` in the cache repository: its
config (:data:`CONFIG`) counts the files and bytes, its layers are the folder's chunks
(:mod:`assembler.archive.chunks`: zstd tars of entries in path order, cut at path-hash
boundaries, real mtimes). Chunks are content addressed: re-exporting a folder after a
one-file change uploads the chunks that changed (every other one is found by ``HEAD``),
and a chunk whose files are unchanged since it was last written here (same size, mtime,
ctime and inode: a memo in the local cache) is not even re-read. ``--cache-max SIZE``
bounds what one entry holds: the oldest files (by mtime) are left out, and the log says so.

Restoring downloads each chunk to a spool, verified by digest, then unpacks it (the one
safe unpacker: nothing outside the folder, the files' bytes of all chunks within
``--cache-max``) into a work folder of the cache, then renames it onto the empty host
folder: a chunk that fails its digest or does not unpack, a registry that fails, an entry
not signed by a ``--cache-trust`` key is one warning line, the folder stays empty and the
step runs cold. Nothing here ever fails a build.

An entry is signed on export as step entries are (:mod:`assembler.stepcache.trust`),
unless the folder was restored from an entry whose signer nobody checked: where a folder
came from is kept beside it in the local cache (:meth:`assembler.cache.Cache.folder_origin`),
for as long as it holds anything, so neither a later run nor what a step builds in it
launders someone else's entry into one this machine's key vouches for.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from assembler.archive import chunks as ch
from assembler.archive.tarread import Limits
from assembler.cache import Cache, Origin, key_of
from assembler.errors import AssemblerError, Cancelled, NotFound, RegistryError
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.reference import ImageName
from assembler.registry.blobs import FileBlobs, json_object
from assembler.registry.client import Registry
from assembler.stepcache import trust as cachetrust
from assembler.stepcache.repository import Report
from assembler.stepcache.trust import Trust
from assembler.transports.common import RegistryOptions

CONFIG = "application/vnd.assemble.compile-cache.v1+json"
CHUNK = "application/vnd.assemble.compile-cache.chunk.v1.tar+zstd"
DEFAULT_MAX = 5 << 30  # --cache-max: what one entry holds at most
_CONFIG_LIMIT = 1 << 16
_CHUNK_OVERHEAD = 1 << 16  # zstd of bytes that do not compress is a little bigger than they are


@dataclass
class FolderStats:
    """What the compile caches did in one run (merged into the step cache's counts)."""

    compile_cache_restored: int = 0
    compile_cache_restored_bytes: int = 0
    compile_cache_exported: int = 0
    compile_cache_uploaded_chunks: int = 0
    compile_cache_uploaded_bytes: int = 0
    compile_cache_skipped_chunks: int = 0
    compile_cache_evicted_files: int = 0
    compile_cache_failed: int = 0


class _Hashing:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")  # noqa: SIM115 (closed by the caller)
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray, /) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.file.write(data)
        return len(data)


class CompileCaches:
    """Kept folders restored from ``sources`` (in order) and exported to ``target``."""

    def __init__(
        self,
        cache: Cache,
        *,
        target: ImageName | None,
        sources: Sequence[ImageName],
        options: RegistryOptions,
        report: Report,
        trust: Trust | None = None,
        max_bytes: int = DEFAULT_MAX,
        unchecked: Callable[[Origin], None] = lambda origin: None,
    ) -> None:
        self.cache = cache
        self.target = target
        self.sources = list(dict.fromkeys([*sources, *([target] if target is not None else [])]))
        self.options = options
        self.report = report
        self.trust = trust or Trust()
        self.max_bytes = max_bytes
        self.unchecked = unchecked  # told of each entry restored (the build warns of those nobody vouched for)
        self.stats = FolderStats()
        self._lock = threading.Lock()
        self._clients: dict[tuple[int, str], Registry] = {}  # per thread: a client is not thread-safe
        self._broken: set[str] = set()

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return asdict(self.stats)

    def _count(self, **more: int) -> None:
        with self._lock:
            for name, n in more.items():
                setattr(self.stats, name, getattr(self.stats, name) + n)

    def _client(self, host: str) -> Registry:
        with self._lock:
            key = (threading.get_ident(), host)
            if key not in self._clients:
                self._clients[key] = Registry(host, options=self.options)
            return self._clients[key]

    def _warn(self, name: ImageName, tag: str, what: str, text: str) -> None:
        self._count(compile_cache_failed=1)
        where = f"compile cache docker://{name.registry}/{name.repository}:{tag} ({what})"
        self.report("warning", {"text": f"{where}: {text}"})

    def _info(self, text: str) -> None:
        self.report("info", {"text": text})

    # -- restoring -----------------------------------------------------------------------

    def restore(self, tag: str, folder: Path, what: str, *, stop: Callable[[], bool] = bool) -> bool:
        """Fill the empty (or absent) ``folder`` from the first source that has the entry
        ``tag`` (signed as :class:`Trust` asks), the entry recorded as its origin; whether
        it did. Never raises for what a registry or its entry does: a warning, and the
        folder stays empty. Once ``stop()`` turns true it gives up between chunks (no
        warning: the build is stopping)."""
        if ch.folder_is_empty(folder):
            self._forget(folder)  # whatever it came from, nothing of it is left
        for name in self.sources:
            if f"{name.registry}/{name.repository}" in self._broken:
                continue
            try:
                found = self._entry(name, tag, what)
                if found is None:
                    continue
                layers, origin = found
                # Named before the folder is filled: a run killed once it is still knows.
                self.cache.put_folder_origin(folder, origin)
                self._restore_from(name, layers, folder, stop)
                self.cache.put_folder_origin(folder, origin)  # now this very folder's
            except Cancelled:
                self._forget(folder)
                return False
            except RegistryError as e:
                self._forget(folder)
                self._broken.add(f"{name.registry}/{name.repository}")
                self._warn(name, tag, what, f"restoring failed ({e}); the step runs without it")
                return False
            except (AssemblerError, OSError) as e:
                self._forget(folder)
                self._warn(name, tag, what, f"restoring failed ({e}); the step runs without it")
                return False
            self._info(f"compile cache {tag} ({what}): restored from {name.registry}/{name.repository}")
            self.unchecked(origin)
            return True
        return False

    def _forget(self, folder: Path) -> None:
        """No origin recorded for the (empty) ``folder``: what is built in it is made here."""
        if ch.folder_is_empty(folder):
            try:
                self.cache.put_folder_origin(folder, None)
            except OSError as e:
                self.report("warning", {"text": f"{folder}: its origin cannot be removed ({e})"})

    def _entry(self, name: ImageName, tag: str, what: str) -> tuple[list[Descriptor], Origin] | None:
        """The chunks of the entry ``tag`` (its manifest verified, its signer checked) and
        where they come from."""
        client = self._client(name.registry)
        try:
            body, _ = client.fetch_manifest(name.repository, tag)
        except NotFound:
            return None
        digest = sha256_digest(body)
        signer, why = cachetrust.vouched(client, name, tag, digest, self.trust.keys)
        if why:
            self._warn(name, tag, what, f"{why}; not used")
            return None
        manifest = json_object(body, f"{name.registry}/{name.repository}:{tag}")
        config = Descriptor.from_json(manifest.get("config"))
        layers = [Descriptor.from_json(d) for d in manifest.get("layers") or []]
        if config.media_type != CONFIG or any(d.media_type != CHUNK for d in layers):
            raise AssemblerError("not a compile cache entry")
        return layers, Origin(f"{name.registry}/{name.repository}", tag, digest, signer)

    def _restore_from(
        self, name: ImageName, layers: Sequence[Descriptor], folder: Path, stop: Callable[[], bool]
    ) -> None:
        client = self._client(name.registry)
        compressed = sum(d.size for d in layers)
        if compressed > self.max_bytes + (self.max_bytes >> 4) + len(layers) * _CHUNK_OVERHEAD:
            raise AssemblerError(f"its chunks hold {compressed} bytes, more than --cache-max {self.max_bytes} allows")
        # The files' bytes of all the chunks together are bounded by --cache-max, as an export is.
        bound = Limits(bytes=self.max_bytes, hint="a bigger --cache-max lets a bigger compile cache be restored")
        with self.cache.workdir("ccache-") as work:
            tree = work / "tree"
            spool = work / "chunk"
            with ch.Unpacking(tree, limits=bound) as unpacking:
                for desc in layers:
                    if stop():
                        raise Cancelled("restoring a compile cache: the build is stopping")
                    # Spooled whole and its digest checked (at the end of the stream) before a
                    # byte of it is unpacked: a registry serving other bytes unpacks nothing.
                    with (
                        client.open_blob(name.repository, desc.digest, size=desc.size) as stream,
                        open(spool, "wb") as out,
                    ):
                        shutil.copyfileobj(stream, out, 1 << 20)
                    with open(spool, "rb") as chunk:
                        unpacking.add(chunk, what=f"compile cache chunk {desc.digest}")
                unpacking.finish()
            folder.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tree, folder)  # onto an absent or empty folder, whole or not at all
            except OSError as e:
                raise AssemblerError(f"{folder} is not empty any more ({e})") from e
        self._count(compile_cache_restored=1, compile_cache_restored_bytes=sum(d.size for d in layers))

    # -- exporting -----------------------------------------------------------------------

    def export(self, tag: str, folder: Path, what: str) -> None:
        """Make ``folder`` the entry ``tag`` of the target (the chunks it lacks, then the
        manifest, then its signature). A failure is a warning."""
        name = self.target
        if name is None or f"{name.registry}/{name.repository}" in self._broken:
            return
        try:
            self._export(name, tag, folder, what)
        except RegistryError as e:
            self._broken.add(f"{name.registry}/{name.repository}")
            self._warn(name, tag, what, f"exporting failed ({e})")
        except (AssemblerError, OSError) as e:
            self._warn(name, tag, what, f"exporting failed ({e})")

    def _export(self, name: ImageName, tag: str, folder: Path, what: str) -> None:
        entries = ch.scan(folder) if folder.is_dir() else []
        if not entries:
            return
        kept, evicted = ch.evict(entries, self.max_bytes)
        if evicted:
            self._count(compile_cache_evicted_files=len(evicted))
            self.report(
                "warning",
                {
                    "text": f"compile cache {tag} ({what}): {len(evicted)} oldest files "
                    f"({sum(e.size for e in evicted)} bytes) left out (--cache-max {self.max_bytes})"
                },
            )
        client = self._client(name.registry)
        with self.cache.workdir("ccache-") as work:
            layers = [self._chunk(client, name, folder, group, work) for group in ch.chunks(kept)]
        files = sum(1 for e in kept if e.kind == "file")
        config = canonical_json({"files": files, "bytes": sum(e.size for e in kept if e.kind == "file")})
        config_desc = Descriptor(CONFIG, sha256_digest(config), len(config))
        body = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": config_desc.to_json(),
                "layers": [d.to_json() for d in layers],
            }
        )
        try:
            current, _ = client.fetch_manifest(name.repository, tag)
        except NotFound:
            current = b""
        if current != body:
            client.push_blob(name.repository, config_desc, FileBlobs({}, {config_desc.digest: config}))
            client.put_manifest(name.repository, tag, body, mt.OCI_MANIFEST)
            self._count(compile_cache_exported=1)
            self._info(f"compile cache {tag} ({what}): exported, {len(layers)} chunks")
        origin = self.cache.folder_origin(folder)
        # Signed: a folder made here, or restored signed by a trusted key; never one restored
        # unchecked, whatever was built in it since (this key would vouch for someone else's).
        if self.trust.signer is not None and (origin is None or origin.signer):
            cachetrust.sign_entry(client, name, tag, sha256_digest(body), self.trust.signer)

    def _chunk(self, client: Registry, name: ImageName, folder: Path, group: list[ch.Entry], work: Path) -> Descriptor:
        """The chunk of ``group`` present in ``name`` (uploaded when it is not there)."""
        memo_key = key_of({"compile-cache-chunk": [e.identity() for e in group]})
        desc = self.cache.memo_as(memo_key, lambda v: Descriptor(CHUNK, str(v["digest"]), int(v["size"])))
        if desc is not None and client.has_blob(name.repository, desc.digest):
            self._count(compile_cache_skipped_chunks=1)
            return desc
        path = work / "chunk"
        sink = _Hashing(path)
        try:
            ch.write_chunk(folder, group, sink)
        finally:
            sink.file.close()
        desc = Descriptor(CHUNK, "sha256:" + sink.sha.hexdigest(), sink.size)
        self.cache.put_memo(memo_key, {"digest": desc.digest, "size": desc.size})
        done = client.push_blob(name.repository, desc, FileBlobs({desc.digest: path}))
        if done == "exists":
            self._count(compile_cache_skipped_chunks=1)
        else:
            self._count(compile_cache_uploaded_chunks=1, compile_cache_uploaded_bytes=desc.size)
        path.unlink()
        return desc
