"""A build's bases: read as manifest and config, their layers fetched only when read."""

from __future__ import annotations

from pathlib import Path

import pytest

from assembler.cache import Cache
from assembler.errors import NotFound
from assembler.oci import mutate
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline.store.baseblobs import BaseBlobs, merged


def _base(elsewhere: Cache, blobs: list[bytes]) -> tuple[list[Layer], Image]:
    """A base of ``blobs`` (as uncompressed layers) whose bytes are only in ``elsewhere``."""
    layers = []
    for data in blobs:
        digest = elsewhere.put_bytes(data)
        layers.append(Layer.of(digest, len(data), digest, "none"))
    image = mutate.append_layers(mutate.scratch(Platform.parse("linux/amd64"), epoch=0), layers, epoch=0)
    return layers, image


def test_a_put_off_base_is_fetched_once_when_a_layer_is_read(tmp_path: Path) -> None:
    cache, elsewhere = Cache(tmp_path / "c"), Cache(tmp_path / "e")
    layers, image = _base(elsewhere, [b"one", b"three"])
    fetched: list[str] = []

    def fetch() -> None:
        fetched.append("base")
        for layer in layers:
            with elsewhere.open_blob(layer.digest) as f:
                cache.import_stream(f, digest=layer.digest, size=layer.size)

    blobs = BaseBlobs(cache)
    blobs.put_off(image, fetch)
    assert blobs.pending(layers[0].digest) and blobs.blob_file(layers[0].digest) is None  # asking fetches nothing
    assert not fetched and blobs.read_bytes == 0
    with blobs.open_blob(layers[1].digest) as f:
        assert f.read() == b"three"
    with blobs.open_blob(layers[0].digest) as f:
        assert f.read() == b"one"
    blobs.need(image)
    assert fetched == ["base"] and blobs.read_bytes == 8 and not blobs.pending(layers[0].digest)


def test_a_failed_fetch_is_tried_again_and_other_blobs_come_from_the_cache(tmp_path: Path) -> None:
    cache, elsewhere = Cache(tmp_path / "c"), Cache(tmp_path / "e")
    layers, image = _base(elsewhere, [b"layer"])
    tries: list[int] = []

    def fetch() -> None:
        tries.append(1)
        if len(tries) == 1:
            raise NotFound("the registry is down")
        with elsewhere.open_blob(layers[0].digest) as f:
            cache.import_stream(f, digest=layers[0].digest, size=layers[0].size)

    blobs = BaseBlobs(cache)
    blobs.put_off(image, fetch)
    with pytest.raises(NotFound):
        blobs.need(image)
    together = merged(cache, [blobs])  # the reader of an index over several builds
    with together.open_blob(layers[0].digest) as f:
        assert f.read() == b"layer"
    assert len(tries) == 2 and blobs.read_bytes == 5
    with pytest.raises(NotFound):
        blobs.open_blob("sha256:" + "1" * 64)  # not a base's, not in the cache


def test_a_base_whose_layers_are_here_is_checked_at_once_and_counts_nothing(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    layers, image = _base(cache, [b"here"])
    checked: list[int] = []
    blobs = BaseBlobs(cache)
    blobs.put_off(image, lambda: checked.append(1))  # its diff_ids checked as a read base's are
    assert checked == [1] and blobs.read_bytes == 0 and not blobs.pending(layers[0].digest)
    blobs.need(image)
    assert checked == [1]
