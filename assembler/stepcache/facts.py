"""Facts shared through a registry step cache: what a build reads from layers, by memo key.

A fact (:mod:`assembler.cache.memos`) is what a build reads from an image's layers and
remembers under a key naming those bytes and the code that read them: a layer's folders and
symlinks, an image's packages, its Python, its dependency report. A runner with an empty
cache that takes every step from the registry step cache would otherwise download a base's
layers (gigabytes of a CUDA runtime) only to learn these again.

A fact is an entry of the step cache's repositories as a step result is
(:mod:`assembler.stepcache.steps`): an OCI manifest tagged ``facts-<memo key>`` with no
layer, whose config (:data:`FACTS_CONFIG`) is the memo's fields as canonical JSON, so the
same fact is the same bytes on every machine and an export of one that is there uploads
nothing. It is signed on export and, under ``--cache-trust``, used only when a trusted key
signed it, as every entry is (:mod:`assembler.stepcache.trust`); the local memo then
names the entry it came from (``origin``), so a later build under ``--cache-trust`` does
not use one taken unchecked (and a build without it is told of one taken unchecked, to warn
once for its repository). A registry that fails is the step cache's warning, once.
Facts are not inputs of the image: the provenance does not name them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from assembler.cache import Cache, Origin
from assembler.errors import AssemblerError, InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import manifest_config
from assembler.registry.blobs import WithBytes, json_object
from assembler.stepcache.repository import CacheRepository
from assembler.stepcache.steps import entry_manifest

log = logging.getLogger(__name__)
FACTS_CONFIG = "application/vnd.assemble.facts.v1+json"
FACTS_TAG_PREFIX = "facts-"
_FACTS_LIMIT = 64 << 20  # a CUDA base's package inventory is a few MiB at most
_RESERVED = ("kind", "origin")  # the local record's own fields: never a fact's


@dataclass
class FactStats:
    """What the facts entries did in one run (merged into the step cache's counts)."""

    facts_hits: int = 0
    facts_exported: int = 0


class RemoteFacts:
    """Facts read from the repositories ``repo`` reads (in its order) and written to the one
    it writes, kept in ``cache`` as memos (:class:`~assembler.cache.memos.SharedFacts`)."""

    def __init__(
        self, repo: CacheRepository, cache: Cache, *, unchecked: Callable[[Origin], None] = lambda origin: None
    ) -> None:
        self.repo = repo
        self.cache = cache
        self.unchecked = unchecked  # told of each fact taken (the build warns of those nobody vouched for)
        self.stats = FactStats()
        self._exported: set[str] = set()  # keys offered to the target in this run
        self._lock = threading.Lock()

    def counts(self) -> dict[str, int]:
        return asdict(self.stats)

    def usable(self, key: str) -> bool:
        trusted = {k.key_id for k in self.repo.trust.keys}
        origin = self.cache.origin(key) if trusted else None
        if origin is None or origin.signer in trusted:
            return True
        # Fetched again (checked) or read again: a fact changes no byte by where it came from.
        log.info("facts %s: taken from %s unchecked; not used under --cache-trust", key, origin.repository)
        return False

    def fetch(self, key: str) -> bool:
        with self.repo.lock:
            origin = self._fetch(key)
        if origin is not None:
            self.unchecked(origin)  # not under the step cache's lock: it reports
        return origin is not None

    def _fetch(self, key: str) -> Origin | None:
        """The fact ``key`` from the first source that has it, as a memo: the entry it came from."""
        tag = FACTS_TAG_PREFIX + key
        repo = self.repo
        for name in repo.sources:
            if not repo.usable(name):
                continue
            try:
                found = repo.entry(name, tag, "facts")
                if found is None:
                    continue
                body, origin = found
                where = f"step cache {name.registry}/{name.repository}:{tag}"
                value = self._value(name.registry, name.repository, body, where)
            except AssemblerError as e:
                repo.failed(name, f"reading {tag}", e)
                continue
            self.cache.put_memo(key, {**value, "origin": origin.to_json()})
            self.stats.facts_hits += 1
            return origin
        return None

    def _value(self, registry: str, repository: str, body: bytes, where: str) -> dict[str, Any]:
        """The fact an entry's manifest ``body`` names (its config, verified by digest)."""
        config = manifest_config(body, where)
        if config.media_type != FACTS_CONFIG or json_object(body, where).get("layers"):
            raise InvalidImage(f"{where}: not a facts entry (config {config.media_type})")
        data = self.repo.client(registry).blob_bytes(repository, config, limit=_FACTS_LIMIT, what=f"{where}: facts")
        value = json_object(data, f"{where}: facts")
        if any(field in value for field in _RESERVED):
            raise InvalidImage(f"{where}: facts may not name {', '.join(_RESERVED)}")
        return value

    def export(self, key: str, value: Mapping[str, Any]) -> None:
        target = self.repo.target
        with self._lock:
            if target is None or key in self._exported:
                return
            self._exported.add(key)
        record = canonical_json(dict(value))
        config = Descriptor(FACTS_CONFIG, sha256_digest(record), len(record))
        reader = WithBytes(self.cache, {config.digest: record})
        with self.repo.lock:
            manifest = (entry_manifest(config), mt.OCI_MANIFEST)
            if self.repo.put_entry(target, key, FACTS_TAG_PREFIX + key, manifest, [config], reader):
                self.stats.facts_exported += 1
