"""References: registry image names and the containers-transports syntax skopeo users know.

``docker://HOST/REPO:TAG``, ``docker://HOST/REPO@sha256:...``, ``oci:DIR[:TAG]``,
``oci-archive:FILE[:TAG]``, ``docker-archive:FILE[:REF]``, ``rootfs:FILE.tar[.gz|.zst]``,
``sif:FILE``, ``sqsh:FILE`` (an Enroot image), ``oras://HOST/REPO:TAG`` (a SIF file as an
OCI artifact) and ``scratch``.
As in containers/image, the path ends at the first ``:``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from assembler.errors import BadReference
from assembler.oci.digest import is_digest

DEFAULT_REGISTRY = "docker.io"
_REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_REPO_COMPONENT}(?:/{_REPO_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")

Transport = Literal[
    "docker", "oras", "oci", "oci-archive", "docker-archive", "rootfs", "sif", "sqsh", "scratch", "artifact"
]
# artifact:DIR:STEP[.NAME] is an output of a step's artifacts as files (pipeline.artifacts), not an image.
TRANSPORTS: tuple[Transport, ...] = (
    "docker",
    "oras",
    "oci",
    "oci-archive",
    "docker-archive",
    "rootfs",
    "sif",
    "sqsh",
    "scratch",
    "artifact",
)

_NOT_BASES = {"sif": "a SIF file", "oras": "a SIF file", "sqsh": "an Enroot squashfs"}


@dataclass(frozen=True)
class ImageName:
    """A registry image name: ``registry/repository`` plus a tag or a digest.

    ``short`` is the name as written when it named no registry (``ubuntu``,
    ``nvidia/cuda``): such a name is Docker Hub's, unless registries.conf resolves short
    names otherwise (:mod:`assembler.registry.conf`). It takes no part in comparisons.
    """

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""
    short: str = field(default="", compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> ImageName:
        """Parse ``[host[:port]/]repo[:tag][@digest]`` with Docker's defaults; BadReference."""
        rest = text.strip()
        digest = ""
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not is_digest(digest):
                raise BadReference(f"{text!r}: digest must be sha256:<64 hex>")
        first, _, remainder = rest.partition("/")
        qualified = bool(remainder) and ("." in first or ":" in first or first == "localhost")
        registry, path = (first, remainder) if qualified else (DEFAULT_REGISTRY, rest)
        tag = ""
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = path.rsplit(":", 1)
            if not _TAG_RE.match(tag):
                raise BadReference(f"{text!r}: invalid tag {tag!r}")
        short = "" if qualified else path
        if registry == DEFAULT_REGISTRY and "/" not in path:
            path = "library/" + path
        if not _REPO_RE.match(path):
            raise BadReference(f"{text!r}: invalid repository name {path!r} (lowercase letters, digits, . _ - /)")
        if not tag and not digest:
            tag = "latest"
        return cls(registry, path, tag, digest, short)

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag

    def with_reference(self, reference: str) -> ImageName:
        if is_digest(reference):
            return replace(self, tag="", digest=reference)
        return replace(self, tag=reference, digest="")

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


@dataclass(frozen=True)
class Ref:
    """A parsed transport reference."""

    transport: Transport
    path: str = ""
    tag: str = ""
    name: ImageName | None = None

    @property
    def base_only(self) -> bool:
        """Whether this names an image that is only read (``rootfs:``, ``scratch``), never written."""
        return self.transport in ("rootfs", "scratch")

    @property
    def not_a_base(self) -> str | None:
        """What this names when it holds no image a build can start from (a SIF, an Enroot
        squashfs: outputs only), else None."""
        return _NOT_BASES.get(self.transport)

    @property
    def holds_files(self) -> bool:
        """Whether this is an ``artifact:DIR:STEP`` output: a step's artifacts as files, no image."""
        return self.transport == "artifact"

    def __str__(self) -> str:
        if self.transport == "scratch":
            return "scratch"
        if self.transport in ("docker", "oras"):
            return f"{self.transport}://{self.name}"
        return f"{self.transport}:{self.path}" + (f":{self.tag}" if self.tag else "")


def parse_ref(text: str) -> Ref:
    """Parse a transport reference; BadReference saying what is wrong and what is accepted."""
    value = text.strip()
    if value == "scratch":
        return Ref("scratch")
    for scheme in ("docker", "oras"):
        if value.startswith(f"{scheme}://"):
            return Ref(scheme, name=ImageName.parse(value[len(scheme) + 3 :]))
    transport, sep, rest = value.partition(":")
    if not sep or transport not in TRANSPORTS or transport in ("docker", "oras", "scratch"):
        raise BadReference(
            f"{text!r} is not a reference: use docker://HOST/REPO:TAG, oci:DIR[:TAG], oci-archive:FILE[:TAG], "
            "docker-archive:FILE[:REF], rootfs:FILE.tar, sif:FILE, sqsh:FILE (Enroot), oras://HOST/REPO:TAG (a SIF), "
            "artifact:DIR:STEP[.ARTIFACT] (files) or scratch"
        )
    path, _, tag = rest.partition(":")
    if not path:
        raise BadReference(f"{text!r}: no path after '{transport}:'")
    if transport in ("oci", "oci-archive") and tag and not _TAG_RE.match(tag):
        raise BadReference(f"{text!r}: invalid tag {tag!r}")
    if transport in ("rootfs", "sif", "sqsh") and tag:
        raise BadReference(f"{text!r}: {transport}: takes a file path only")
    if transport == "docker-archive" and tag:
        ImageName.parse(tag)  # validates
    if transport == "artifact" and not tag:
        raise BadReference(f"{text!r}: artifact:DIR:STEP[.ARTIFACT] names the step (and artifact) to write")
    return Ref(transport, path=path, tag=tag)


def without_folder(text: str) -> str:
    """The reference ``text`` as an output may carry it: a file or folder one (``oci:``,
    ``oci-archive:``, ``docker-archive:``, ``rootfs:``...) named by its last component
    alone (``oci:/srv/x/demo:latest`` -> ``oci:demo:latest``), so that no output's bytes
    depend on where on this host its source lies; a registry reference, and text that is
    no reference (``assemble:NAME``), unchanged."""
    try:
        ref = parse_ref(text)
    except BadReference:
        return text
    if not ref.path:
        return text
    return str(replace(ref, path=os.path.basename(ref.path.rstrip("/")) or ref.path))


def absolute_ref(ref: Ref, base_dir: Path) -> Ref:
    """``ref`` with a relative path made absolute against ``base_dir``, symlinks not
    followed: an output that is a symlink is the link, not what it points to."""
    if ref.path and not Path(ref.path).is_absolute():
        return replace(ref, path=os.path.abspath(base_dir / ref.path))
    return ref
