"""One layer of an image as one frozen value: its blob, its tar's digest, what made it.

Writing a layer, reading a base, converting or fitting one all give a :class:`Layer`;
:func:`assembler.oci.mutate.append_layers` stacks them (``origin`` becomes the history
entry). The cache records a layer as :meth:`Layer.to_json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, cast

from assembler.errors import InvalidImage, InvalidRecord
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import is_digest
from assembler.oci.image import Image

# The same values as archive.compress.Compression (oci/ imports nothing above it), less
# zstd:chunked: its media type is zstd's; ``Layer.chunked`` tells it by its annotations.
LayerCompression = Literal["zstd", "gzip", "none"]
# The annotation every zstd:chunked layer carries (its TOC's digest), c/storage's name.
ZSTD_CHUNKED_TOC = "io.github.containers.zstd-chunked.manifest-checksum"


@dataclass(frozen=True)
class Layer:
    """A layer blob (``descriptor``), the digest of its uncompressed tar (``diff_id``) and
    what made it (``origin``, the history's ``created_by``; ``comment`` its comment)."""

    descriptor: Descriptor
    diff_id: str
    origin: str = ""
    comment: str = ""
    # Known when we wrote the layer ourselves (0: not known); docker-archive needs it.
    uncompressed_size: int = 0

    @classmethod
    def of(
        cls,
        digest: str,
        size: int,
        diff_id: str,
        compression: str,
        *,
        uncompressed_size: int = 0,
        annotations: Mapping[str, str] | None = None,
    ) -> Layer:
        """A layer of ``compression`` ("zstd", "zstd:chunked", "gzip", "none"; KeyError for
        any other) whose descriptor carries ``annotations`` (zstd:chunked's TOC)."""
        media_type = mt.oci_layer_type("zstd" if compression == "zstd:chunked" else compression)
        descriptor = Descriptor(media_type, digest, size, annotations=dict(annotations or {}))
        return cls(descriptor, diff_id, uncompressed_size=uncompressed_size)

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def media_type(self) -> str:
        return self.descriptor.media_type

    @property
    def compression(self) -> LayerCompression:
        return cast(LayerCompression, mt.compression_of(self.descriptor.media_type))

    @property
    def chunked(self) -> bool:
        """A zstd:chunked layer (a zstd layer with a TOC that partial pulls read)."""
        return ZSTD_CHUNKED_TOC in self.descriptor.annotations

    def made_by(self, origin: str, comment: str = "") -> Layer:
        return replace(self, origin=origin, comment=comment)

    def to_json(self) -> dict[str, object]:
        """The cache's record of the blob (not of ``origin``: the same blob serves many)."""
        record: dict[str, object] = {
            "digest": self.digest,
            "size": self.size,
            "diff_id": self.diff_id,
            "uncompressed_size": self.uncompressed_size,
            "compression": self.compression,
        }
        if self.descriptor.annotations:
            record["annotations"] = dict(self.descriptor.annotations)
        return record

    @classmethod
    def from_json(cls, data: object) -> Layer:
        """From :meth:`to_json`; InvalidRecord when ``data`` is not such a record."""
        if not isinstance(data, Mapping):
            raise InvalidRecord(f"a layer record is a JSON object, got {type(data).__name__}")
        try:
            compression = str(data["compression"])
            size, unpacked = int(str(data["size"])), int(str(data.get("uncompressed_size", 0)))
            digest, diff_id = str(data["digest"]), str(data["diff_id"])
        except (KeyError, ValueError) as e:  # a missing field, a size that is no int
            raise InvalidRecord(f"malformed layer record {dict(data)!r}: {e!r}") from e
        annotations = data.get("annotations", {})
        if (
            compression not in ("zstd", "gzip", "none")
            or not (is_digest(digest) and is_digest(diff_id))
            or not isinstance(annotations, Mapping)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items())
        ):
            raise InvalidRecord(f"malformed layer record {dict(data)!r}")
        return cls.of(digest, size, diff_id, compression, uncompressed_size=unpacked, annotations=annotations)


def layers_of(image: Image) -> tuple[Layer, ...]:
    """The layers of ``image``, bottom first; InvalidImage when its config's diff_ids do not
    pair with its layers."""
    if len(image.layers) != len(image.diff_ids):
        raise InvalidImage(f"{len(image.layers)} layers but {len(image.diff_ids)} diff_ids in the config")
    return tuple(Layer(d, i) for d, i in zip(image.layers, image.diff_ids, strict=True))
