"""The registry side a registry step cache's entries share (:mod:`assembler.stepcache.steps`'
step results, :mod:`assembler.stepcache.bases`' bases, :mod:`assembler.stepcache.facts`'
facts): one client per host, the repositories that failed this run (not asked again), who
signs and whom to trust, where each entry taken came from, and the counts. An entry is a
manifest tagged in a repository: read verified by its digest and signer (:meth:`entry`),
written blobs first, then the manifest, then its signature (:meth:`put_entry`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from assembler.cache import Cache, Origin
from assembler.errors import AssemblerError, NotFound
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import sha256_digest
from assembler.oci.reference import ImageName
from assembler.registry.blobs import WithBytes
from assembler.registry.client import Registry
from assembler.stepcache import trust as cachetrust
from assembler.stepcache.trust import Trust
from assembler.transports.common import RegistryOptions

# What the cache tells the build: an event's kind ("warning", "remote-cache") and fields.
Report = Callable[[str, Mapping[str, Any]], None]


@dataclass
class RemoteStats:
    """What the step cache did in one run (for the report and tests)."""

    hits: int = 0
    misses: int = 0
    exported: int = 0
    downloaded_bytes: int = 0
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0
    skipped_blobs: int = 0
    untrusted: int = 0  # entries found but signed by no trusted key (or refused by a check): not used


class CacheRepository:
    """Entries read from ``sources`` (in order) and written to ``target``, through ``cache``."""

    def __init__(
        self,
        cache: Cache,
        *,
        target: ImageName | None,
        sources: Sequence[ImageName],
        options: RegistryOptions,
        report: Report,
        trust: Trust | None = None,
    ) -> None:
        self.cache = cache
        self.trust = trust or Trust()
        self.target = target
        self.sources = list(dict.fromkeys([*sources, *([target] if target is not None else [])]))
        self.options = options
        self.report = report
        self.stats = RemoteStats()
        self._clients: dict[str, Registry] = {}
        self._broken: set[str] = set()
        self.origins: dict[str, Origin] = {}  # key -> the entry this run took it from
        # One client per host, used by one thread at a time (the client is not thread-safe).
        self.lock = threading.Lock()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def counts(self) -> dict[str, int]:
        """What it did so far (:class:`RemoteStats` as a mapping)."""
        return asdict(self.stats)

    # Shared with the other kinds of entries (stepcache.facts): called with ``lock`` held.
    def client(self, host: str) -> Registry:
        if host not in self._clients:
            self._clients[host] = Registry(host, options=self.options)
        return self._clients[host]

    def failed(self, name: ImageName, doing: str, error: Exception) -> None:
        self._broken.add(f"{name.registry}/{name.repository}")
        text = f"step cache docker://{name.registry}/{name.repository}: {doing} failed ({error}); building locally"
        self.report("warning", {"text": text})

    def usable(self, name: ImageName) -> bool:
        return f"{name.registry}/{name.repository}" not in self._broken

    def origin(self, key: str) -> Origin | None:
        """The entry this run took ``key`` from (None: not taken from a registry here)."""
        with self.lock:
            return self.origins.get(key)

    def untrusted(self, name: ImageName, tag: str, what: str, why: str) -> None:
        self.stats.untrusted += 1
        where = f"step cache docker://{name.registry}/{name.repository}: {tag}" + (f" ({what})" if what else "")
        self.report("warning", {"text": f"{where}: {why}; not used"})

    def entry(self, name: ImageName, tag: str, what: str) -> tuple[bytes, Origin] | None:
        """The manifest tagged ``tag`` (verified by its digest) and where it is, when it is
        there and signed as :class:`Trust` asks (else a warning and None)."""
        client = self.client(name.registry)
        try:
            body, _ = client.fetch_manifest(name.repository, tag)
        except NotFound:
            return None
        digest = sha256_digest(body)
        signer, why = cachetrust.vouched(client, name, tag, digest, self.trust.keys)
        if why:
            self.untrusted(name, tag, what, why)
            return None
        return body, Origin(f"{name.registry}/{name.repository}", tag, digest, signer)

    def put_entry(
        self,
        name: ImageName,
        key: str,
        tag: str,
        manifest: tuple[bytes, str],
        blobs: Sequence[Descriptor],
        reader: WithBytes,
    ) -> bool:
        """The entry ``tag`` of ``name`` made ``manifest`` (bytes, media type) over ``blobs``,
        and signed when this run may vouch for it; whether the manifest was uploaded. A
        registry error is a warning (and the repository is not written again)."""
        if not self.usable(name):
            return False
        body, media_type = manifest
        try:
            client = self.client(name.registry)
            try:
                current, _ = client.fetch_manifest(name.repository, tag)
            except NotFound:
                current = b""
            if current != body:  # else the entry is there with these very bytes: its blobs are there too
                before = (client.stats.uploaded_blobs, client.stats.uploaded_bytes, client.stats.skipped_blobs)
                for desc in blobs:
                    client.push_blob(name.repository, desc, reader)
                client.put_manifest(name.repository, tag, body, media_type)
                self.stats.uploaded_blobs += client.stats.uploaded_blobs - before[0]
                self.stats.uploaded_bytes += client.stats.uploaded_bytes - before[1]
                self.stats.skipped_blobs += client.stats.skipped_blobs - before[2]
            signer = self.trust.signer
            origin = self.origins.get(key) or self.cache.origin(key)
            # Signed: what was made here, or taken signed by a trusted key; never what was
            # taken from a cache unchecked (this key would vouch for someone else's entry).
            if signer is not None and (origin is None or origin.signer):
                cachetrust.sign_entry(client, name, tag, sha256_digest(body), signer)
        except AssemblerError as e:
            self.failed(name, f"exporting {tag}", e)
            return False
        return current != body
