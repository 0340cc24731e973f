"""Step results shared through a registry (``--cache-to`` / ``--cache-from docker://REG/REPO``).

A step result is a small OCI manifest in the cache repository, tagged ``step-<key>``:

- its config (media type :data:`STEP_CONFIG`) is the step's record, the very JSON the local
  cache keeps (:class:`assembler.cache.StepResult`: names, digests, diff_ids);
- its layers are the step's blobs, the very blobs an image of the step pushes, so exporting a
  step costs one small manifest plus HEAD checks for blobs the repository has.

Reading verifies everything by digest: the manifest against the registry's digest, the
config against the manifest, each layer descriptor against the record, and each blob as it
streams into the local cache. Tags are per key, a manifest goes up only after its blobs and
its bytes are a function of the result, so builds exporting to one repository at once write
the same bytes or other tags: none loses or corrupts another's entries.

A base the steps build on is an entry too, tagged ``base-<key>`` (a bootstrapped base, by the
key of what bootstraps it): the image itself, its layers the base's blobs. A machine with an
empty cache reads its manifest and config only (what a step key needs, the base's digest)
and downloads its layers only when a step runs on it or the image is stacked on it.

Facts read from layers (a layer's folders, an image's packages: :mod:`assembler.cache.memos`)
are entries too, tagged ``facts-<key>`` (:mod:`assembler.stepcache.facts`, through this
cache's clients, trust and failures: :meth:`RemoteStepCache.entry`, :meth:`~RemoteStepCache.put_entry`).

A cache registry that fails (down, refused, damaged) is a warning: the build goes on with
its local cache, and the registry is not asked again in that run.

Who made an entry is :mod:`assembler.stepcache.trust`'s (signed exports; with trusted
keys, an entry none of them signed is a warning and a miss). Where each entry taken came from
(:class:`Origin`) goes into its local record, for the provenance. With ``check``, a result's
blobs come into the local cache, with its record, only once the check has passed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from assembler.cache import Cache, Origin, StepResult
from assembler.errors import AssemblerError, InputError, NotFound
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image, manifest_config
from assembler.oci.layer import Layer
from assembler.oci.reference import ImageName
from assembler.registry.blobs import WithBytes, json_object
from assembler.registry.client import Registry
from assembler.stepcache import trust as cachetrust
from assembler.stepcache.trust import Check, Trust
from assembler.transports.common import RegistryOptions

# What the cache tells the build: an event's kind ("warning", "remote-cache") and fields.
Report = Callable[[str, Mapping[str, Any]], None]
STEP_CONFIG = "application/vnd.assemble.step.v1+json"
TAG_PREFIX = "step-"
BASE_TAG_PREFIX = "base-"
_RECORD_LIMIT = 1 << 20


def tag_of(key: str) -> str:
    """The tag of a step key (a step key is 64 hex digits: well within the 128-character grammar)."""
    return TAG_PREFIX + key


def parse_cache_ref(text: str) -> ImageName:
    """``docker://REG/REPO`` (no tag, no digest) as an image name; BadReference or InputError."""
    if not text.startswith("docker://"):
        raise InputError(f"{text!r}: a step cache is a registry repository, docker://REG/REPO")
    name = ImageName.parse(text.removeprefix("docker://"))
    if name.digest or text.rstrip("/").rsplit("/", 1)[-1].count(":"):
        raise InputError(f"{text!r}: name the repository only (its tags are the cache's entries)")
    return name


def entry_manifest(config: Descriptor, layers: Sequence[Descriptor] = ()) -> bytes:
    """The manifest of an entry: its record (``config``) and its blobs (``layers``)."""
    body = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config.to_json()}
    return canonical_json({**body, "layers": [d.to_json() for d in layers]})


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


class RemoteStepCache:
    """Step results read from ``sources`` (in order) and written to ``target``, through ``cache``."""

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
        self._pending: dict[str, tuple[ImageName, StepResult]] = {}  # fetched, blobs not all here yet
        self._bases: dict[str, tuple[ImageName, Image]] = {}  # base entries read, layers not here yet
        self._origins: dict[str, Origin] = {}  # key -> the entry this run took it from
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
            return self._origins.get(key)

    def _untrusted(self, name: ImageName, tag: str, what: str, why: str) -> None:
        self.stats.untrusted += 1
        where = f"step cache docker://{name.registry}/{name.repository}: {tag}" + (f" ({what})" if what else "")
        self.report("warning", {"text": f"{where}: {why}; not used"})

    # -- reading -----------------------------------------------------------------------

    def fetch(self, key: str, what: str = "", check: Check | None = None) -> StepResult | None:
        """The step result ``key`` (``what``: its step, for messages) from the first source
        that has it signed as :class:`Trust` asks, its record written to the local cache once
        its blobs are here; None when no source has it. With ``check``, its blobs are
        downloaded now and checked first: a result the check refuses is a warning and None."""
        with self.lock:
            found = self._find(key, what)
            if found is None or check is None:
                return self._take(key, found)
        name, result, _ = found
        with self.cache.workdir("stepcache-") as work:
            with self.lock:
                try:
                    paths = cachetrust.download(self.client(name.registry), name, result, work, self.cache)
                except AssemblerError as e:
                    self.failed(name, f"reading {tag_of(key)}", e)
                    return None
            why = check(result, paths)
            if why is not None:
                with self.lock:
                    self._untrusted(name, tag_of(key), what, why)
                return None
            for blob in result.layers():
                self.stats.downloaded_bytes += 0 if self.cache.has_blob(blob.digest, blob.size) else blob.size
                self.cache.import_file(paths[blob.digest], digest=blob.digest, size=blob.size)
        with self.lock:
            return self._take(key, found)

    def _find(self, key: str, what: str) -> tuple[ImageName, StepResult, Origin] | None:
        for name in self.sources:
            if not self.usable(name):
                continue
            try:
                found = self._fetch_from(name, key, what)
            except AssemblerError as e:
                self.failed(name, f"reading {tag_of(key)}", e)
                continue
            if found is not None:
                return (name, *found)
        return None

    def _take(self, key: str, found: tuple[ImageName, StepResult, Origin] | None) -> StepResult | None:
        if found is None:
            self.stats.misses += 1
            return None
        name, result, origin = found
        self.stats.hits += 1
        self._origins[key] = origin
        self._pending[key] = (name, result)
        self._record_if_complete(key)
        self.report("remote-cache", {"state": "hit", "step": result.step, "key": key})
        return result

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
            self._untrusted(name, tag, what, why)
            return None
        return body, Origin(f"{name.registry}/{name.repository}", tag, digest, signer)

    def _fetch_from(self, name: ImageName, key: str, what: str) -> tuple[StepResult, Origin] | None:
        found = self.entry(name, tag_of(key), what)
        if found is None:
            return None
        body, origin = found
        client = self.client(name.registry)
        where = f"step cache {name.registry}/{name.repository}:{tag_of(key)}"
        manifest = json_object(body, where)
        config = Descriptor.from_json(manifest.get("config"))
        if config.media_type != STEP_CONFIG:
            raise AssemblerError(f"{where}: not a step result (config {config.media_type})")
        record = client.blob_bytes(name.repository, config, limit=_RECORD_LIMIT, what=f"{where}: record")
        try:
            result = StepResult.from_json(json.loads(record))
        except (KeyError, TypeError, ValueError, AttributeError, AssemblerError) as e:
            raise AssemblerError(f"{where}: its record is not a step result ({e})") from e
        listed = [(d.get("digest"), d.get("size")) for d in manifest.get("layers") or []]
        if listed != [(b.digest, b.size) for b in result.layers()]:
            raise AssemblerError(f"{where}: its layers are not the blobs its record names")
        return result, origin

    def _record_if_complete(self, key: str) -> None:
        """The local record of a fetched result, once all its blobs are here (the local
        cache never holds a record naming a missing blob)."""
        _, result = self._pending[key]
        if self.cache.blobs_present((b.digest, b.size) for b in result.layers()):
            self.cache.put_step_result(key, result, self._origins.get(key))
            del self._pending[key]

    def ensure(self, blob: Layer) -> None:
        """Download ``blob`` when it belongs to a fetched result and is not here: a result's
        blobs are fetched only when a build needs them (placed in the image, mounted).
        Raises what a download raises (a wrong blob never lands: it is verified)."""
        with self.lock:
            if self.cache.has_blob(blob.digest, blob.size):
                return
            for key, (name, result) in list(self._pending.items()):
                if any(b.digest == blob.digest for b in result.layers()):
                    client = self.client(name.registry)
                    with client.open_blob(name.repository, blob.digest, size=blob.size) as stream:
                        self.cache.import_stream(stream, digest=blob.digest, size=blob.size)  # verified
                    self.stats.downloaded_bytes += blob.size
                    self._record_if_complete(key)
                    return

    # -- writing -----------------------------------------------------------------------

    def export(self, key: str, result: StepResult) -> None:
        """Make ``result`` the entry ``key`` of the target repository (blobs first, then the
        manifest, then its signature); nothing is uploaded when all is there already."""
        target = self.target
        if target is None:
            return
        with self.lock:
            pending = self._pending.get(key)
        if pending is not None and pending[0] == target:
            return  # fetched from the target itself: the entry is there
        for blob in result.layers():
            self.ensure(blob)  # a result fetched from another repository: its blobs go up from here
        result = StepResult.from_json(result.to_json())  # as read back: the same bytes on every machine
        record = canonical_json(result.to_json())
        config = Descriptor(STEP_CONFIG, sha256_digest(record), len(record))
        reader = WithBytes(self.cache, {config.digest: record})
        blobs = [*(b.descriptor for b in result.layers()), config]
        with self.lock:
            manifest = entry_manifest(config, [b.descriptor for b in result.layers()])
            if self.put_entry(target, key, tag_of(key), (manifest, mt.OCI_MANIFEST), blobs, reader):
                self.stats.exported += 1
                self.report("remote-cache", {"state": "exported", "step": result.step, "key": key})

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
            origin = self._origins.get(key) or self.cache.origin(key)
            # Signed: what was made here, or taken signed by a trusted key; never what was
            # taken from a cache unchecked (this key would vouch for someone else's entry).
            if signer is not None and (origin is None or origin.signer):
                cachetrust.sign_entry(client, name, tag, sha256_digest(body), signer)
        except AssemblerError as e:
            self.failed(name, f"exporting {tag}", e)
            return False
        return current != body

    # -- bases -------------------------------------------------------------------------

    def fetch_base(self, key: str, what: str = "") -> Image | None:
        """The base entry ``key`` (``what``: the base, for messages; manifest and config,
        verified; no layer downloaded: see :meth:`ensure_base`) from the first source that
        has it signed as :class:`Trust` asks; None when none has it."""
        tag = BASE_TAG_PREFIX + key
        with self.lock:
            for name in self.sources:
                if not self.usable(name):
                    continue
                try:
                    found = self.entry(name, tag, what)
                    if found is None:
                        continue
                    body, origin = found
                    where = f"step cache {name.registry}/{name.repository}:{tag}"
                    config = manifest_config(body, where)
                    config_bytes = self.client(name.registry).blob_bytes(
                        name.repository, config, limit=_RECORD_LIMIT, what=f"{where}: config"
                    )
                    image = Image(body, config_bytes)
                except AssemblerError as e:
                    self.failed(name, f"reading {tag}", e)
                    continue
                self._bases[key] = (name, image)
                self._origins[key] = origin
                self.report("remote-cache", {"state": "hit", "base": key})
                return image
            return None

    def ensure_base(self, key: str) -> None:
        """The layers of the base entry ``key`` read by :meth:`fetch_base`, downloaded
        (verified as they stream), and its record in the local cache."""
        with self.lock:
            found = self._bases.get(key)
            if found is None:
                return
            name, image = found
            client = self.client(name.registry)
            for desc in image.layers:
                if not self.cache.has_blob(desc.digest, desc.size):
                    with client.open_blob(name.repository, desc.digest, size=desc.size) as stream:
                        self.cache.import_stream(stream, digest=desc.digest, size=desc.size)
                    self.stats.downloaded_bytes += desc.size
            self.cache.put_base_image(key, image, self._origins.get(key))
            del self._bases[key]

    def export_base(self, key: str, image: Image) -> None:
        """Make ``image`` (its layers in the local cache) the base entry ``key`` of the target."""
        target = self.target
        if target is None:
            return
        reader = WithBytes(self.cache, {image.config_descriptor.digest: image.config_bytes})
        blobs = [*image.layers, image.config_descriptor]
        with self.lock:
            manifest = (image.manifest_bytes, image.media_type)
            if self.put_entry(target, key, BASE_TAG_PREFIX + key, manifest, blobs, reader):
                self.report("remote-cache", {"state": "exported", "base": key})
