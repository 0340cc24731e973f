"""Bases the steps build on, as entries of a registry step cache, tagged ``base-<key>`` (a
bootstrapped base, by the key of what bootstraps it): the image itself, its layers the
base's blobs. A machine with an empty cache reads an entry's manifest and config only (what
a step key needs, the base's digest) and downloads its layers only when a step runs on it
or the image is stacked on it (:meth:`RemoteBases.ensure`)."""

from __future__ import annotations

from assembler.errors import AssemblerError
from assembler.oci.image import Image, manifest_config
from assembler.oci.reference import ImageName
from assembler.registry.blobs import WithBytes
from assembler.stepcache.repository import CacheRepository

BASE_TAG_PREFIX = "base-"
_CONFIG_LIMIT = 1 << 20


class RemoteBases:
    """The base entries of ``repo``'s repositories."""

    def __init__(self, repo: CacheRepository) -> None:
        self.repo = repo
        self._bases: dict[str, tuple[ImageName, Image]] = {}  # base entries read, layers not here yet

    def fetch(self, key: str, what: str = "") -> Image | None:
        """The base entry ``key`` (``what``: the base, for messages; manifest and config,
        verified; no layer downloaded: see :meth:`ensure`) from the first source that
        has it signed as :class:`Trust` asks; None when none has it."""
        tag = BASE_TAG_PREFIX + key
        with self.repo.lock:
            for name in self.repo.sources:
                if not self.repo.usable(name):
                    continue
                try:
                    found = self.repo.entry(name, tag, what)
                    if found is None:
                        continue
                    body, origin = found
                    where = f"step cache {name.registry}/{name.repository}:{tag}"
                    config = manifest_config(body, where)
                    config_bytes = self.repo.client(name.registry).blob_bytes(
                        name.repository, config, limit=_CONFIG_LIMIT, what=f"{where}: config"
                    )
                    image = Image(body, config_bytes)
                except AssemblerError as e:
                    self.repo.failed(name, f"reading {tag}", e)
                    continue
                self._bases[key] = (name, image)
                self.repo.origins[key] = origin
                self.repo.report("remote-cache", {"state": "hit", "base": key})
                return image
            return None

    def ensure(self, key: str) -> None:
        """The layers of the base entry ``key`` read by :meth:`fetch`, downloaded
        (verified as they stream), and its record in the local cache."""
        with self.repo.lock:
            found = self._bases.get(key)
            if found is None:
                return
            name, image = found
            client = self.repo.client(name.registry)
            for desc in image.layers:
                if not self.repo.cache.has_blob(desc.digest, desc.size):
                    with client.open_blob(name.repository, desc.digest, size=desc.size) as stream:
                        self.repo.cache.import_stream(stream, digest=desc.digest, size=desc.size)
                    self.repo.stats.downloaded_bytes += desc.size
            self.repo.cache.put_base_image(key, image, self.repo.origins.get(key))
            del self._bases[key]

    def export(self, key: str, image: Image) -> None:
        """Make ``image`` (its layers in the local cache) the base entry ``key`` of the target."""
        target = self.repo.target
        if target is None:
            return
        reader = WithBytes(self.repo.cache, {image.config_descriptor.digest: image.config_bytes})
        blobs = [*image.layers, image.config_descriptor]
        with self.repo.lock:
            manifest = (image.manifest_bytes, image.media_type)
            if self.repo.put_entry(target, key, BASE_TAG_PREFIX + key, manifest, blobs, reader):
                self.repo.report("remote-cache", {"state": "exported", "base": key})
