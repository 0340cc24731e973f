"""OCI image layout directories (``oci:DIR[:TAG]``): read and write.

Writing is additive, as skopeo does: blobs already there are kept, the index gains
(or replaces) the entry for the tag, and ``index.json`` is replaced last and
atomically, so a failed write never leaves an index naming missing blobs.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from assembler.cache import copy_verified, temp_prefix
from assembler.errors import InputError
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.transports.common import BlobReader, DirBlobs, SourceImage, descriptors, resolve_image

_CHUNK = 1 << 20


def read_index(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / "index.json").read_bytes())
    except FileNotFoundError as e:
        raise InputError(f"reading OCI layout {path}: no index.json", hint="is this an OCI layout directory?") from e
    except ValueError as e:
        raise InputError(f"reading OCI layout {path}: index.json is not JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("manifests"), list):
        raise InputError(f"reading OCI layout {path}: index.json has no manifests list")
    return data


def read(path: Path, tag: str = "", *, platform: Platform) -> SourceImage:
    """The image tagged ``tag`` (or the only one) in the layout at ``path``."""
    what = f"oci:{path}" + (f":{tag}" if tag else "")
    index = read_index(path)
    blobs = DirBlobs(path / "blobs", what=what)
    descs = descriptors(index["manifests"], what)
    if tag:
        matches = [d for d in descs if d.annotations.get(mt.ANNOTATION_REF_NAME) == tag]
        if not matches:
            tags = sorted({d.annotations.get(mt.ANNOTATION_REF_NAME, "") for d in descs} - {""})
            raise InputError(
                f"{what}: no image tagged {tag!r}", hint=f"tags in the layout: {', '.join(tags) or 'none'}"
            )
        desc = matches[-1]
    elif len(descs) == 1:
        desc = descs[0]
    else:
        tags = sorted({d.annotations.get(mt.ANNOTATION_REF_NAME, "") for d in descs} - {""})
        raise InputError(f"{what}: the layout holds {len(descs)} images; name one", hint=f"tags: {', '.join(tags)}")
    image, index_digest = resolve_image(blobs, desc, platform, what=what)
    return SourceImage(image, blobs, what, index_digest)


def _place_blob(blobs: BlobReader, digest: str, dest: Path) -> None:
    """A verified copy (a reflink where possible, never a hard link) of a blob at ``dest``."""
    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{temp_prefix('.tmp-')}{dest.name}")
    try:
        with blobs.open_blob(digest) as blob:
            copy_verified(blob, tmp, src=blobs.blob_file(digest))
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_blob_bytes(path: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    dest = path / "blobs" / "sha256" / digest.split(":", 1)[1]
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=temp_prefix(".tmp-"))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    return digest


def write(
    path: Path,
    image: Image,
    *,
    tag: str,
    blobs: BlobReader,
    extra: Iterable[tuple[Descriptor, bytes]] = (),
) -> Descriptor:
    """Add ``image`` (tagged ``tag``) to the layout at ``path``; returns its index entry.

    ``extra`` adds more manifests with their bytes (e.g. a SIF artifact) untagged.
    """
    path.mkdir(parents=True, exist_ok=True)
    layout_file = path / "oci-layout"
    if not layout_file.exists():
        layout_file.write_bytes(canonical_json({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}))
    existing: dict[str, Any] = read_index(path) if (path / "index.json").exists() else {"schemaVersion": 2}
    for desc in image.layers:
        _place_blob(blobs, desc.digest, path / "blobs" / "sha256" / desc.digest.split(":", 1)[1])
    write_blob_bytes(path, image.config_bytes)
    write_blob_bytes(path, image.manifest_bytes)
    entry = image.descriptor
    annotations = {mt.ANNOTATION_REF_NAME: tag} if tag else {}
    entry = Descriptor(entry.media_type, entry.digest, entry.size, annotations, platform=image.platform)
    manifests = [
        d
        for d in existing.get("manifests", [])
        if not (tag and (d.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) == tag)
        and not (not tag and d.get("digest") == entry.digest)
    ]
    manifests.append(entry.to_json())
    for desc, body in extra:
        write_blob_bytes(path, body)
        manifests = [d for d in manifests if d.get("digest") != desc.digest] + [desc.to_json()]
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    fd, tmp = tempfile.mkstemp(dir=path, prefix=temp_prefix(".index-"))
    with os.fdopen(fd, "wb") as f:
        f.write(canonical_json(index))
    os.replace(tmp, path / "index.json")
    return entry
