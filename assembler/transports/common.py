"""What every transport shares: a readable image with its blobs, and blob readers.

``RegistryOptions`` and the ``BlobReader`` protocol are the registry client's
(:mod:`assembler.registry.types`), named here too for the transports and their callers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from assembler.errors import InputError, InvalidImage, NotFound
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import is_digest, sha256_digest
from assembler.oci.image import Image, Index, manifest_config, parse_manifest_or_index
from assembler.oci.verify import VerifiedReader
from assembler.registry.types import BlobReader as BlobReader
from assembler.registry.types import RegistryOptions as RegistryOptions

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class SourceImage:
    """An image read from somewhere, and how to read its blobs."""

    image: Image
    blobs: BlobReader
    name: str
    index_digest: str | None = None


class DirBlobs:
    """Blobs stored as ``<root>/<algorithm>/<hex>`` files (an OCI layout, the cache)."""

    def __init__(self, root: Path, *, what: str) -> None:
        self.root = root
        self.what = what

    def blob_file(self, digest: str) -> Path | None:
        if not is_digest(digest):  # never a path built from a malformed digest
            raise InputError(f"{self.what}: malformed digest {digest!r}")
        algo, _, hexpart = digest.partition(":")
        path = self.root / algo / hexpart
        return path if path.is_file() else None

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob, verified as it is read: InputError when its bytes are not ``digest``."""
        path = self.blob_file(digest)
        if path is None:
            raise NotFound(f"{self.what}: blob {digest} is missing")
        return verified(open(path, "rb"), digest, what=self.what)


def damaged(what: str) -> Callable[[str, str], Exception]:
    """The error for a blob of the user's input that is not what its digest says."""

    def error(expected: str, actual: str) -> Exception:
        return InputError(
            f"{what}: blob {expected} does not match its digest (got {actual}): the copy is damaged or was swapped",
            hint="copy the image again from its source",
        )

    return error


def verified(raw: BinaryIO, digest: str, *, what: str, size: int | None = None) -> BinaryIO:
    """``raw`` read through a digest check (InputError naming ``what`` on a mismatch)."""
    return cast(BinaryIO, VerifiedReader(raw, digest, on_mismatch=damaged(what), size=size))


def descriptors(entries: Any, what: str) -> list[Descriptor]:
    """The descriptors of an index's ``manifests`` list; InputError for malformed ones."""
    if not isinstance(entries, list):
        raise InputError(f"{what}: index.json has no manifests list")
    out = []
    for i, entry in enumerate(entries):
        try:
            out.append(Descriptor.from_json(entry))
        except InvalidImage as e:  # the user's file: exit 2
            raise InputError(f"{what}: index.json manifests[{i}]: {e}") from None
    return out


def read_verified(blobs: BlobReader, desc: Descriptor, *, what: str) -> bytes:
    """A small blob (manifest, index, config), checked against its digest."""
    with blobs.open_blob(desc.digest) as f:
        data = f.read()
    if sha256_digest(data) != desc.digest:
        raise InputError(f"{what}: blob {desc.digest} does not match its digest (a damaged copy)")
    return data


def resolve_image(blobs: BlobReader, desc: Descriptor, platform: Platform, *, what: str) -> tuple[Image, str | None]:
    """Follow a descriptor through indexes (nested ones too) down to ``platform``'s image;
    the image and the digest of the outermost index (None when ``desc`` is a manifest)."""
    index_digest = None
    for _ in range(4):
        body = read_verified(blobs, desc, what=what)
        try:
            if parse_manifest_or_index(body) == "index":
                index = Index(body)
                index_digest = index_digest or index.digest
                chosen = pick_manifest(index, platform, what=what)
                desc = next(d for d in index.manifests if d.digest == chosen)
                continue
            config = manifest_config(body)
            return Image(body, read_verified(blobs, config, what=what)), index_digest
        except InvalidImage as e:  # the user's file: exit 2
            raise InputError(f"{what}: manifest {desc.digest} is malformed ({e})") from None
    raise InputError(f"{what}: indexes nested too deep")


def pick_manifest(index: Index, platform: Platform, *, what: str) -> str:
    """The digest of ``platform``'s manifest in an index; NotFound saying what there is."""
    try:
        return index.select(platform).digest
    except NotFound as e:
        raise NotFound(f"{what}: {e}", hint=e.hint) from e
