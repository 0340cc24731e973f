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

A base the steps build on is an entry too, tagged ``base-<key>``
(:mod:`assembler.stepcache.bases`, reached through :attr:`RemoteStepCache.bases`).

Facts read from layers (a layer's folders, an image's packages: :mod:`assembler.cache.memos`)
are entries too, tagged ``facts-<key>`` (:mod:`assembler.stepcache.facts`, through this
cache's clients, trust and failures: :class:`assembler.stepcache.repository.CacheRepository`).

A cache registry that fails (down, refused, damaged) is a warning: the build goes on with
its local cache, and the registry is not asked again in that run.

Who made an entry is :mod:`assembler.stepcache.trust`'s (signed exports; with trusted
keys, an entry none of them signed is a warning and a miss). Where each entry taken came from
(:class:`Origin`) goes into its local record, for the provenance. With ``check``, a result's
blobs come into the local cache, with its record, only once the check has passed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from assembler.cache import Origin, StepResult
from assembler.errors import AssemblerError, InputError
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.oci.reference import ImageName
from assembler.registry.blobs import WithBytes, json_object
from assembler.stepcache import trust as cachetrust
from assembler.stepcache.bases import RemoteBases
from assembler.stepcache.repository import CacheRepository
from assembler.stepcache.trust import Check

STEP_CONFIG = "application/vnd.assemble.step.v1+json"
TAG_PREFIX = "step-"
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


class RemoteStepCache:
    """Step results (and, through :attr:`bases`, bases) of ``repo``'s repositories."""

    def __init__(self, repo: CacheRepository) -> None:
        self.repo = repo
        self.bases = RemoteBases(repo)
        self._pending: dict[str, tuple[ImageName, StepResult]] = {}  # fetched, blobs not all here yet

    def close(self) -> None:
        self.repo.close()

    def counts(self) -> dict[str, int]:
        return self.repo.counts()

    def origin(self, key: str) -> Origin | None:
        return self.repo.origin(key)

    def fetch_base(self, key: str, what: str = "") -> Image | None:
        return self.bases.fetch(key, what)

    def ensure_base(self, key: str) -> None:
        self.bases.ensure(key)

    def export_base(self, key: str, image: Image) -> None:
        self.bases.export(key, image)

    # -- reading -----------------------------------------------------------------------

    def fetch(self, key: str, what: str = "", check: Check | None = None) -> StepResult | None:
        """The step result ``key`` (``what``: its step, for messages) from the first source
        that has it signed as :class:`Trust` asks, its record written to the local cache once
        its blobs are here; None when no source has it. With ``check``, its blobs are
        downloaded now and checked first: a result the check refuses is a warning and None."""
        with self.repo.lock:
            found = self._find(key, what)
            if found is None or check is None:
                return self._take(key, found)
        name, result, _ = found
        with self.repo.cache.workdir("stepcache-") as work:
            with self.repo.lock:
                try:
                    paths = cachetrust.download(self.repo.client(name.registry), name, result, work, self.repo.cache)
                except AssemblerError as e:
                    self.repo.failed(name, f"reading {tag_of(key)}", e)
                    return None
            why = check(result, paths)
            if why is not None:
                with self.repo.lock:
                    self.repo.untrusted(name, tag_of(key), what, why)
                return None
            for blob in result.layers():
                self.repo.stats.downloaded_bytes += 0 if self.repo.cache.has_blob(blob.digest, blob.size) else blob.size
                self.repo.cache.import_file(paths[blob.digest], digest=blob.digest, size=blob.size)
        with self.repo.lock:
            return self._take(key, found)

    def _find(self, key: str, what: str) -> tuple[ImageName, StepResult, Origin] | None:
        for name in self.repo.sources:
            if not self.repo.usable(name):
                continue
            try:
                found = self._fetch_from(name, key, what)
            except AssemblerError as e:
                self.repo.failed(name, f"reading {tag_of(key)}", e)
                continue
            if found is not None:
                return (name, *found)
        return None

    def _take(self, key: str, found: tuple[ImageName, StepResult, Origin] | None) -> StepResult | None:
        if found is None:
            self.repo.stats.misses += 1
            return None
        name, result, origin = found
        self.repo.stats.hits += 1
        self.repo.origins[key] = origin
        self._pending[key] = (name, result)
        self._record_if_complete(key)
        self.repo.report("remote-cache", {"state": "hit", "step": result.step, "key": key})
        return result

    def _fetch_from(self, name: ImageName, key: str, what: str) -> tuple[StepResult, Origin] | None:
        found = self.repo.entry(name, tag_of(key), what)
        if found is None:
            return None
        body, origin = found
        client = self.repo.client(name.registry)
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
        if self.repo.cache.blobs_present((b.digest, b.size) for b in result.layers()):
            self.repo.cache.put_step_result(key, result, self.repo.origins.get(key))
            del self._pending[key]

    def ensure(self, blob: Layer) -> None:
        """Download ``blob`` when it belongs to a fetched result and is not here: a result's
        blobs are fetched only when a build needs them (placed in the image, mounted).
        Raises what a download raises (a wrong blob never lands: it is verified)."""
        with self.repo.lock:
            if self.repo.cache.has_blob(blob.digest, blob.size):
                return
            for key, (name, result) in list(self._pending.items()):
                if any(b.digest == blob.digest for b in result.layers()):
                    client = self.repo.client(name.registry)
                    with client.open_blob(name.repository, blob.digest, size=blob.size) as stream:
                        self.repo.cache.import_stream(stream, digest=blob.digest, size=blob.size)  # verified
                    self.repo.stats.downloaded_bytes += blob.size
                    self._record_if_complete(key)
                    return

    # -- writing -----------------------------------------------------------------------

    def export(self, key: str, result: StepResult) -> None:
        """Make ``result`` the entry ``key`` of the target repository (blobs first, then the
        manifest, then its signature); nothing is uploaded when all is there already."""
        target = self.repo.target
        if target is None:
            return
        with self.repo.lock:
            pending = self._pending.get(key)
        if pending is not None and pending[0] == target:
            return  # fetched from the target itself: the entry is there
        for blob in result.layers():
            self.ensure(blob)  # a result fetched from another repository: its blobs go up from here
        result = StepResult.from_json(result.to_json())  # as read back: the same bytes on every machine
        record = canonical_json(result.to_json())
        config = Descriptor(STEP_CONFIG, sha256_digest(record), len(record))
        reader = WithBytes(self.repo.cache, {config.digest: record})
        blobs = [*(b.descriptor for b in result.layers()), config]
        with self.repo.lock:
            manifest = entry_manifest(config, [b.descriptor for b in result.layers()])
            if self.repo.put_entry(target, key, tag_of(key), (manifest, mt.OCI_MANIFEST), blobs, reader):
                self.repo.stats.exported += 1
                self.repo.report("remote-cache", {"state": "exported", "step": result.step, "key": key})
