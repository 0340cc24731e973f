"""Image archives: ``oci-archive:FILE[:TAG]`` and ``docker-archive:FILE[:REF]``, read and write.

An oci-archive is an OCI layout in a tar; a tagged one holds the image's referrers (its
SBOM, its provenance) as a tagged ``oci:`` layout does: untagged ``index.json`` entries
with an ``artifactType``, whose manifest's ``subject`` is the image. A docker-archive is what ``docker save``
writes and ``docker load``/``podman load`` read: ``manifest.json``, the config, and one
*uncompressed* tar per layer (zstd is unknown to Docker, so layers are converted).
Both are written as deterministic tars (sorted, epoch mtimes) to a temp name next to
the output and renamed at the end: a failed write leaves no partial archive.
"""

from __future__ import annotations

import glob
import json
import os
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from assembler.archive.compress import decompressed, sniff
from assembler.archive.layer import HashingSink
from assembler.archive.tar import TarEntry, TarWriter, sort_key
from assembler.archive.tarread import reading
from assembler.cache import locked_temp, reclaim
from assembler.errors import InputError, InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json, digest_hex, is_digest, sha256_digest
from assembler.oci.image import Image
from assembler.oci.reference import ImageName
from assembler.transports.common import BlobReader, SourceImage, descriptors, resolve_image, verified

_CHUNK = 1 << 20


# -- reading ---------------------------------------------------------------------------


class TarBlobs:
    """Blobs that are members of an uncompressed tar file (random access by offset)."""

    def __init__(self, path: Path, members: dict[str, tarfile.TarInfo], by_digest: dict[str, str], what: str) -> None:
        self.path = path
        self.members = members
        self.by_digest = by_digest  # digest -> member name
        self.what = what

    def blob_file(self, digest: str) -> Path | None:
        return None

    def member(self, name: str) -> BinaryIO:
        info = self.members.get(name)
        if info is None or not info.isfile():
            raise InputError(f"{self.what}: no file {name!r} in the archive")
        f = open(self.path, "rb")  # noqa: SIM115 - wrapped and returned
        f.seek(info.offset_data)
        return cast(BinaryIO, _Slice(f, info.size))

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob, verified as it is read: InputError when its bytes are not ``digest``."""
        if not is_digest(digest):  # never a member name built from a malformed digest
            raise InputError(f"{self.what}: malformed digest {digest!r}")
        name = self.by_digest.get(digest) or f"blobs/sha256/{digest_hex(digest)}"
        return verified(self.member(name), digest, what=self.what)

    def read_member(self, name: str) -> bytes:
        with self.member(name) as f:
            return f.read()


class _Slice:
    """A read-only window of ``size`` bytes of an open file, closing it when done."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._left = size

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n)
        self._left -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> _Slice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _index_tar(path: Path, what: str) -> dict[str, tarfile.TarInfo]:
    if not path.is_file():
        raise InputError(f"{what}: file does not exist")
    with open(path, "rb") as f:
        if sniff(f.read(4)) != "none":
            raise InputError(f"{what}: compressed archives are not supported; decompress it first")
    with open(path, "rb") as f, reading(f, what=what, stream=False) as (_, entries):
        return {entry.path: info for entry, info in entries}  # the one reader: damage is InvalidArchive


def is_image_archive(path: Path) -> bool:
    """Whether ``path`` is an uncompressed tar holding an OCI layout or a ``docker save``
    image (only the headers are read: members are skipped by seeking)."""
    names = {"index.json", "oci-layout", "manifest.json"}
    try:
        with tarfile.open(path, mode="r:") as tf:
            for info in tf:
                if info.name.removeprefix("./") in names:
                    return True
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False


def read_oci_archive(path: Path, tag: str = "", *, platform: Platform) -> SourceImage:
    """The image tagged ``tag`` (or the only one) in an oci-archive."""
    what = f"oci-archive:{path}" + (f":{tag}" if tag else "")
    members = _index_tar(path, what)
    blobs = TarBlobs(path, members, {}, what)
    try:
        index = json.loads(blobs.read_member("index.json"))
    except InputError as e:
        raise InputError(f"{what}: no index.json: not an oci-archive") from e
    except ValueError as e:
        raise InputError(f"{what}: index.json is not JSON") from e
    if not isinstance(index, dict):
        raise InputError(f"{what}: index.json is not an object")
    descs = descriptors(index.get("manifests", []), what)
    if tag:
        descs = [d for d in descs if d.annotations.get(mt.ANNOTATION_REF_NAME) == tag]
    else:  # referrers (an SBOM, a provenance) are listed untagged, typed by artifactType: not images
        descs = [d for d in descs if not d.artifact_type]
    if len(descs) != 1:
        tags = sorted({d.annotations.get(mt.ANNOTATION_REF_NAME, "?") for d in descs})
        raise InputError(f"{what}: {'no' if not descs else 'more than one'} image matches", hint=f"tags: {tags}")
    image, index_digest = resolve_image(blobs, descs[0], platform, what=what)
    return SourceImage(image, blobs, what, index_digest)


def read_docker_archive(path: Path, ref: str = "", *, platform: Platform) -> SourceImage:
    """An image from a ``docker save`` archive. Layers are hashed once to describe them."""
    what = f"docker-archive:{path}" + (f":{ref}" if ref else "")
    members = _index_tar(path, what)
    blobs = TarBlobs(path, members, {}, what)
    try:
        entries = json.loads(blobs.read_member("manifest.json"))
    except InputError as e:
        raise InputError(f"{what}: no manifest.json: not a docker-archive") from e
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{what}: manifest.json lists no image")
    entry = entries[0]
    if ref:
        want = str(ImageName.parse(ref))
        matches = [e for e in entries if any(str(ImageName.parse(t)) == want for t in e.get("RepoTags") or [])]
        if not matches:
            raise InputError(f"{what}: no image tagged {ref!r}")
        entry = matches[0]
    config_bytes = blobs.read_member(str(entry["Config"]))
    config = json.loads(config_bytes)
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    layers: list[Descriptor] = []
    for name in entry.get("Layers") or []:
        sha = HashingSink(None)
        with blobs.member(name) as f:
            head = f.read(4)
            sha.write(head)
            while chunk := f.read(_CHUNK):
                sha.write(chunk)
        kind = sniff(head)
        blobs.by_digest[sha.digest] = name
        layers.append(Descriptor(mt.oci_layer_type(kind), sha.digest, sha.count))
    if len(layers) != len(diff_ids):
        raise InvalidImage(f"{what}: {len(layers)} layers but {len(diff_ids)} diff_ids in the config")
    cfg_desc = Descriptor(mt.OCI_CONFIG, sha256_digest(config_bytes), len(config_bytes))
    blobs.by_digest[cfg_desc.digest] = str(entry["Config"])
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": cfg_desc.to_json(),
        "layers": [d.to_json() for d in layers],
    }
    image = Image(canonical_json(manifest), config_bytes)
    if image.platform.architecture != platform.architecture:
        raise InputError(f"{what}: the image is {image.platform}, not {platform}")
    return SourceImage(image, blobs, what)


# -- writing ---------------------------------------------------------------------------


@contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A killed write's temp (its lock free, its pid gone) goes now, however recent.
    reclaim(path.parent, f".{glob.escape(path.name)}.*", locked=True)
    fd, tmp = locked_temp(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:  # its lock held while it is written
            yield f
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _dir(path: str, epoch: int) -> TarEntry:
    return TarEntry(path=path, kind="dir", mode=0o755, mtime=epoch)


def _file(path: str, size: int, epoch: int) -> TarEntry:
    return TarEntry(path=path, kind="file", mode=0o644, size=size, mtime=epoch)


def write_oci_archive(
    path: Path, image: Image, *, tag: str, blobs: BlobReader, epoch: int, referrers: Sequence[Artifact] = ()
) -> Descriptor:
    """Write ``image`` as an oci-archive (replacing the file), with ``referrers`` (artifacts
    whose subject is ``image``) as untagged entries after it; returns its index entry."""
    entry = Descriptor(
        image.media_type,
        image.digest,
        len(image.manifest_bytes),
        {mt.ANNOTATION_REF_NAME: tag} if tag else {},
        platform=image.platform,
    )
    entries = [entry.to_json(), *(a.descriptor.to_json() for a in referrers)]
    index = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    layout = canonical_json({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION})
    small: dict[str, bytes] = {
        "index.json": index,
        "oci-layout": layout,
        f"blobs/sha256/{digest_hex(image.config_descriptor.digest)}": image.config_bytes,
        f"blobs/sha256/{digest_hex(image.digest)}": image.manifest_bytes,
    }
    for artifact in referrers:
        for digest, body in [*artifact.blobs().items(), (artifact.digest, artifact.manifest_bytes)]:
            small[f"blobs/sha256/{digest_hex(digest)}"] = body
    big = {f"blobs/sha256/{digest_hex(d.digest)}": d for d in image.layers}
    names = sorted({*small, *big, "blobs", "blobs/sha256"}, key=sort_key)
    with _atomic(path) as out:
        writer = TarWriter(out)
        for name in names:
            if name in ("blobs", "blobs/sha256"):
                writer.add(_dir(name, epoch))
            elif name in small:
                writer.add(_file(name, len(small[name]), epoch), _bytes_reader(small[name]))
            else:
                desc = big[name]
                with blobs.open_blob(desc.digest) as data:
                    writer.add(_file(name, desc.size, epoch), data)
        writer.close()
    return entry


def _bytes_reader(data: bytes) -> BinaryIO:
    import io

    return io.BytesIO(data)


@dataclass(frozen=True)
class DockerLayer:
    diff_id: str
    size: int  # uncompressed


def uncompressed_sizes(image: Image, blobs: BlobReader, *, known: Callable[[str], int | None]) -> list[DockerLayer]:
    """Each layer's diff_id and uncompressed size (counted by decompressing when unknown).

    Raises InvalidImage when a layer does not decompress to its diff_id.
    """
    out = []
    for desc, diff_id in zip(image.layers, image.diff_ids, strict=True):
        size = known(diff_id)
        if size is None:
            sha = HashingSink(None)
            with (
                blobs.open_blob(desc.digest) as raw,
                decompressed(raw, cast(Any, mt.compression_of(desc.media_type))) as plain,
            ):
                while chunk := plain.read(_CHUNK):
                    sha.write(chunk)
            if sha.digest != diff_id:
                raise InvalidImage(f"layer {desc.digest} decompresses to {sha.digest}, not its diff_id {diff_id}")
            size = sha.count
        out.append(DockerLayer(diff_id, size))
    return out


def write_docker_archive(
    path: Path, image: Image, *, ref: str, blobs: BlobReader, epoch: int, sizes: list[DockerLayer]
) -> None:
    """Write a ``docker save``-style archive that ``podman load``/``docker load`` accept.

    Layers are stored uncompressed (Docker cannot read zstd), named by diff_id.
    """
    repo_tags = [_docker_tag(ref)] if ref else []
    config_name = f"{digest_hex(image.config_descriptor.digest)}.json"
    config_bytes = image.config_bytes
    if image.config.get("rootfs", {}).get("type") != "layers":
        raise InvalidImage("docker-archive: the config has no layers rootfs")
    layer_names = [f"{digest_hex(layer.diff_id)}/layer.tar" for layer in sizes]
    manifest = canonical_json([{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}])
    files: dict[str, bytes] = {"manifest.json": manifest, config_name: config_bytes}
    if repo_tags:
        name, _, tag = repo_tags[0].rpartition(":")
        files["repositories"] = canonical_json({name: {tag: digest_hex(sizes[-1].diff_id)}}) if sizes else b"{}"
    dirs = {n.split("/")[0] for n in layer_names}
    layers = dict(zip(layer_names, zip(image.layers, sizes, strict=True), strict=True))
    with _atomic(path) as out:
        writer = TarWriter(out)
        for name in sorted({*files, *dirs, *layers}, key=sort_key):
            if name in dirs:
                writer.add(_dir(name, epoch))
            elif name in files:
                writer.add(_file(name, len(files[name]), epoch), _bytes_reader(files[name]))
            else:
                desc, info = layers[name]
                comp = cast(Any, mt.compression_of(desc.media_type))
                with blobs.open_blob(desc.digest) as raw, decompressed(raw, comp) as plain:
                    writer.add(_file(name, info.size, epoch), plain)
        writer.close()


def _docker_tag(ref: str) -> str:
    name = ImageName.parse(ref)
    repo = name.repository
    if name.registry == "docker.io":
        repo = repo.removeprefix("library/")
        return f"{repo}:{name.tag or 'latest'}"
    return f"{name.registry}/{repo}:{name.tag or 'latest'}"
