"""Descriptors and platforms: frozen values with exact JSON round-trips."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from assembler.errors import BadPlatform, InvalidImage
from assembler.oci.digest import is_digest

_PLATFORM_PART = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True, order=True)
class Platform:
    """An OCI platform (``linux/amd64``, ``linux/arm64/v8``)."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]``; BadPlatform on anything else."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(_PLATFORM_PART.match(p) for p in parts):
            raise BadPlatform(f"platform must look like os/arch[/variant] (letters, digits, _), got {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        return cls(str(data.get("os", "")), str(data.get("architecture", "")), str(data.get("variant", "") or ""))

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, other: Platform) -> bool:
        """True when ``other`` satisfies this platform (an empty variant matches any)."""
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        return not self.variant or not other.variant or self.variant == other.variant

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says about a blob."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str = ""
    urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not is_digest(self.digest):
            raise InvalidImage(f"descriptor digest is not sha256:<hex>: {self.digest!r}")
        if self.size < 0:
            raise InvalidImage(f"descriptor size is negative: {self.size}")

    @classmethod
    def from_json(cls, data: object) -> Descriptor:
        """Build from a manifest's descriptor object; InvalidImage when malformed."""
        if not isinstance(data, Mapping):
            raise InvalidImage(f"a descriptor is a JSON object, got {type(data).__name__}")
        try:
            platform = data.get("platform")
            return cls(
                media_type=str(data.get("mediaType", "")),
                digest=str(data["digest"]),
                size=int(data["size"]),
                annotations=dict(data.get("annotations") or {}),
                platform=Platform.from_json(platform) if isinstance(platform, Mapping) else None,
                artifact_type=str(data.get("artifactType", "") or ""),
                urls=tuple(data.get("urls") or ()),
            )
        except (KeyError, TypeError, ValueError) as e:  # a missing field, a size that is no int
            raise InvalidImage(f"malformed descriptor {dict(data)!r}: {e}") from e

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.urls:
            out["urls"] = list(self.urls)
        return out

    def with_media_type(self, media_type: str) -> Descriptor:
        return replace(self, media_type=media_type)
