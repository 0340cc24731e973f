"""Images and indexes as their exact bytes.

An :class:`Image` *is* its manifest bytes and config bytes; everything else is derived.
Its digest is the sha256 of the manifest bytes, so an image read from somewhere keeps
its digest as long as nobody re-serialises it (we never do: :mod:`mutate` makes new
bytes for new images only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from assembler.errors import InvalidImage, NotFound
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import sha256_digest


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as e:  # UnicodeDecodeError is one too
        raise InvalidImage(f"{what} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise InvalidImage(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True)
class Image:
    """One platform's image: exact manifest and config bytes.

    Construction checks that the manifest is a manifest and that the config bytes are
    the ones it names (InvalidImage otherwise); it never changes the bytes.
    """

    manifest_bytes: bytes
    config_bytes: bytes

    def __post_init__(self) -> None:
        manifest = self.manifest
        if manifest.get("schemaVersion") != 2:
            raise InvalidImage("image manifest: schemaVersion must be 2")
        media_type = self.media_type
        if media_type not in mt.MANIFEST_TYPES:
            raise InvalidImage(f"image manifest: unsupported media type {media_type!r}")
        desc = self.config_descriptor
        actual = sha256_digest(self.config_bytes)
        if desc.digest != actual or desc.size != len(self.config_bytes):
            raise InvalidImage(
                f"image manifest names config {desc.digest} ({desc.size} bytes) "
                f"but the config is {actual} ({len(self.config_bytes)} bytes)"
            )
        if not isinstance(manifest.get("layers"), list):
            raise InvalidImage("image manifest: no layers list")

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return _load_object(self.manifest_bytes, "image manifest")

    @cached_property
    def config(self) -> dict[str, Any]:
        return _load_object(self.config_bytes, "image config")

    @cached_property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def media_type(self) -> str:
        explicit = self.manifest.get("mediaType")
        if isinstance(explicit, str) and explicit:
            return explicit
        # The OCI spec makes mediaType optional in a manifest; a config object says which.
        return mt.OCI_MANIFEST

    @property
    def descriptor(self) -> Descriptor:
        """The descriptor of the manifest itself (what an index or a push names)."""
        return Descriptor(self.media_type, self.digest, len(self.manifest_bytes))

    @cached_property
    def config_descriptor(self) -> Descriptor:
        return manifest_config(self.manifest_bytes)

    @cached_property
    def layers(self) -> tuple[Descriptor, ...]:
        return tuple(Descriptor.from_json(d) for d in self.manifest.get("layers", []))

    @cached_property
    def diff_ids(self) -> tuple[str, ...]:
        rootfs = self.config.get("rootfs") or {}
        return tuple(str(d) for d in rootfs.get("diff_ids") or ())

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.manifest.get("annotations") or {})

    @property
    def platform(self) -> Platform:
        return Platform(
            str(self.config.get("os", "linux")),
            str(self.config.get("architecture", "amd64")),
            str(self.config.get("variant", "") or ""),
        )

    @property
    def container_config(self) -> dict[str, Any]:
        """The config's ``config`` object (Env, Entrypoint, Cmd...), empty if absent."""
        value = self.config.get("config") or {}
        return dict(value) if isinstance(value, Mapping) else {}

    def blob_descriptors(self) -> tuple[Descriptor, ...]:
        """Config then layers: every blob a copy of this image needs."""
        return (self.config_descriptor, *self.layers)


@dataclass(frozen=True)
class Index:
    """An image index (or Docker manifest list) as its exact bytes."""

    index_bytes: bytes

    def __post_init__(self) -> None:
        data = self.data
        if data.get("schemaVersion") != 2 or not isinstance(data.get("manifests"), list):
            raise InvalidImage("image index: schemaVersion 2 and a manifests list required")

    @cached_property
    def data(self) -> dict[str, Any]:
        return _load_object(self.index_bytes, "image index")

    @cached_property
    def digest(self) -> str:
        return sha256_digest(self.index_bytes)

    @property
    def media_type(self) -> str:
        value = self.data.get("mediaType")
        return value if isinstance(value, str) and value else mt.OCI_INDEX

    @cached_property
    def manifests(self) -> tuple[Descriptor, ...]:
        return tuple(Descriptor.from_json(d) for d in self.data["manifests"])

    def select(self, platform: Platform) -> Descriptor:
        """The manifest for ``platform``; NotFound naming what the index offers."""
        candidates = [
            d
            for d in self.manifests
            if d.media_type in mt.MANIFEST_TYPES and d.platform is not None and platform.matches(d.platform)
        ]
        if not candidates:
            offered = sorted({str(d.platform) for d in self.manifests if d.platform is not None})
            raise NotFound(
                f"no manifest for {platform} in the index (it has: {', '.join(offered) or 'none'})",
                hint="choose one with --platform",
            )
        # Prefer an exact variant match, then the first listed (index order is the publisher's).
        exact = [d for d in candidates if d.platform == platform]
        return (exact or candidates)[0]


def parse_manifest_or_index(data: bytes) -> str:
    """``"index"`` or ``"manifest"`` for a manifest-ish JSON document; InvalidImage otherwise."""
    obj = _load_object(data, "manifest")
    media_type = obj.get("mediaType")
    if media_type in mt.INDEX_TYPES or (media_type is None and "manifests" in obj):
        return "index"
    if media_type in mt.MANIFEST_TYPES or (media_type is None and "layers" in obj):
        return "manifest"
    raise InvalidImage(f"unsupported manifest media type {media_type!r}")


def manifest_config(manifest_bytes: bytes, what: str = "image manifest") -> Descriptor:
    """The config descriptor a manifest names, before its config is fetched; InvalidImage
    when the manifest is not JSON or names no valid config."""
    cfg = _load_object(manifest_bytes, what).get("config")
    if cfg is None:
        raise InvalidImage(f"{what}: no config descriptor")
    return Descriptor.from_json(cfg)
