"""The layers of a build's bases, brought into the cache only when something reads them.

A base is read as its manifest and config: its digest is all a step key needs. Its layers
are put off (:meth:`BaseBlobs.put_off`) until a step runs on it (:meth:`BaseBlobs.need`) or
something reads one of them through :class:`BaseBlobs` (the build's blob reader): the
headers of its layers for the view of the image, the SBOM and the dependency check (each
only when not remembered: :mod:`assembler.cache.memos`, also through a registry step
cache), a gzip conversion, an output that holds the bytes (an ``oci:`` layout, an archive,
a SIF). A push to the base's registry mounts them or finds them there and reads none. A
runner that finds everything cached never downloads the base.

A base is fetched once, whole, and verified as it always was (each layer's digest and
diff_id, :func:`assembler.transports.import_image`); the bytes of the layers it brought in
are counted (:attr:`BaseBlobs.read_bytes`, the summary's ``base_bytes_read``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from assembler.cache import Cache
from assembler.oci.image import Image


@dataclass
class _PutOff:
    image: Image
    fetch: Callable[[], None]  # brings every layer into the cache, verified
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False


class BaseBlobs:
    """A blob reader over ``cache`` that fetches a put-off base layer when it is opened."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.read_bytes = 0  # bytes of base layers brought into the cache by this build
        self._lock = threading.Lock()
        self._bases: dict[str, _PutOff] = {}  # image digest -> its put-off layers
        self._owner: dict[str, str] = {}  # layer digest -> the image digest that fetches it

    def put_off(self, image: Image, fetch: Callable[[], None]) -> None:
        """``image``'s layers come into the cache by ``fetch`` (raising what it raises),
        when first needed; until then they may be absent. A base whose layers are all here
        is checked now (no download: ``fetch`` verifies what the cache remembers)."""
        with self._lock:
            self._bases[image.digest] = _PutOff(image, fetch)
            for desc in image.layers:
                self._owner.setdefault(desc.digest, image.digest)
        if self.cache.blobs_present((d.digest, d.size) for d in image.layers):
            self._fetch(image.digest)

    def need(self, image: Image) -> None:
        """Every layer of ``image`` that a put-off base holds, in the cache (a step runs on it)."""
        with self._lock:
            owners = dict.fromkeys(self._owner[d.digest] for d in image.layers if d.digest in self._owner)
        for owner in owners:
            self._fetch(owner)

    def pending(self, digest: str) -> bool:
        """Whether blob ``digest`` is a put-off base layer that is not in the cache."""
        with self._lock:
            owned = digest in self._owner
        return owned and not self.cache.has_blob(digest)

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob from the cache (verified), its base fetched first when it is put off
        (every layer's diff_id checked against its config before any is read)."""
        with self._lock:
            owner = self._owner.get(digest)
        if owner is not None:
            self._fetch(owner)
        return self.cache.open_blob(digest)

    def blob_file(self, digest: str) -> Path | None:
        return self.cache.blob_file(digest)  # never fetches: a push asks before it mounts

    def _fetch(self, digest: str) -> None:
        with self._lock:
            put = self._bases.get(digest)
        if put is None:
            return
        with put.lock:  # one base at a time; two bases may come down side by side
            if put.done:
                return
            missing = sum(d.size for d in put.image.layers if not self.cache.has_blob(d.digest, d.size))
            put.fetch()
            put.done = True
        with self._lock:
            self.read_bytes += missing
            self._bases.pop(digest, None)
            for desc in put.image.layers:
                if self._owner.get(desc.digest) == digest:
                    del self._owner[desc.digest]


def merged(cache: Cache, readers: Sequence[BaseBlobs]) -> BaseBlobs:
    """One reader over ``cache`` for the blobs of several builds (the platforms of an
    index): each put-off layer fetched by the build that put it off."""
    out = BaseBlobs(cache)
    for reader in readers:
        with reader._lock:
            for digest, put in reader._bases.items():
                out.put_off(put.image, functools.partial(reader._fetch, digest))
    return out
