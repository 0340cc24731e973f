"""OCI image layout directories (``oci:DIR[:TAG]``): read and write.

Writing is additive, as skopeo does: blobs already there are kept, the index gains
(or replaces) the entry for the tag, and ``index.json`` is replaced last and
atomically, so a failed write never leaves an index naming missing blobs. Its read,
change and replace happen under :func:`index_lock`, so two builds writing one folder
each keep the other's tag. A layout is never written through a symlink at its path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from assembler.cache import copy_verified, locked_temp, reclaim
from assembler.errors import InputError, InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact, FilesArtifact
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.trace import housekeeping
from assembler.transports.common import BlobReader, DirBlobs, SourceImage, descriptors, resolve_image

_CHUNK = 1 << 20
_SIGNATURE_TAG = re.compile(r"^sha256-([0-9a-f]{64})\.(?:sig|att)$")


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
    # Referrers (an SBOM, a provenance) are listed untagged, typed by artifactType: not images.
    descs = [d for d in descriptors(index["manifests"], what) if tag or not d.artifact_type]
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


def _place_blob(blobs: BlobReader, digest: str, dest: Path, *, linked: bool = False) -> None:
    """A verified copy (a reflink where possible) of a blob at ``dest``; with ``linked``, a
    hard link to the blob's file once it is read through and checked, where it can be."""
    if dest.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if linked and _link_verified(blobs, digest, dest):
        return
    fd, tmp = _create_temp(dest.parent, ".tmp-")
    try:
        with blobs.open_blob(digest) as blob:
            copy_verified(blob, tmp, src=blobs.blob_file(digest))
        os.replace(tmp, dest)
    finally:
        os.close(fd)
        tmp.unlink(missing_ok=True)


def _link_verified(blobs: BlobReader, digest: str, dest: Path) -> bool:
    """Hard-link the blob's file at ``dest`` after reading it through (its digest checked);
    False where it has no file or the link cannot be made (another file system)."""
    src = blobs.blob_file(digest)
    if src is None:
        return False
    with blobs.open_blob(digest) as blob:
        while blob.read(_CHUNK):
            pass
    try:
        os.link(src, dest)
    except OSError:
        return False
    return True


def read_blob(path: Path, digest: str, *, limit: int) -> bytes:
    """A small blob of the layout at ``path``, verified; InvalidImage past ``limit`` bytes."""
    with DirBlobs(path / "blobs", what=f"oci:{path}").open_blob(digest) as f:
        data = f.read(limit + 1)
        if len(data) > limit:
            raise InvalidImage(f"oci:{path}: blob {digest} is over {limit} bytes")
        f.read()  # to the end: the digest is checked there
    return data


def _create_temp(folder: Path, prefix: str) -> tuple[int, Path]:
    """A temp file of the layout (see :func:`assembler.cache.locked_temp`), made as ``open()``
    makes files (0666 less the umask), not 0600 as ``mkstemp``: a layout's index, config and
    manifests are read as its layer blobs are, by whoever the user's umask lets read them."""
    return locked_temp(folder, prefix, mode=0o666)


def _reclaim(path: Path) -> None:
    """Remove the temp files killed writes left in the layout at ``path`` (their lock free,
    their pid gone); a concurrent writer's are kept."""
    with housekeeping():  # no input of the build (assembler.trace)
        reclaim(path / "blobs" / "sha256", ".tmp-*", locked=True)
        for name in ("oci-layout", "index.json"):
            reclaim(path, f".{name}-*", locked=True)


def write_blob_bytes(path: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    dest = path / "blobs" / "sha256" / digest.split(":", 1)[1]
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(dest.parent, ".tmp-")
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
    referrers: Iterable[Artifact] = (),
    linked: bool = False,
) -> Descriptor:
    """Add ``image`` (tagged ``tag``) to the layout at ``path``; returns its index entry.

    ``referrers`` (artifacts whose subject is ``image``: its SBOM, its provenance) are
    added untagged, with their ``artifactType``. Referrers of an image the layout no
    longer lists (its tag now names another) leave the index; blobs stay, as skopeo leaves them.
    Layers are copies, never hard links to ``blobs``' files (a user's output is theirs to
    change), unless ``linked``: a layout of the cache's own that lives for one read.
    """
    _start(path)
    for desc in image.layers:
        dest = path / "blobs" / "sha256" / desc.digest.split(":", 1)[1]
        _place_blob(blobs, desc.digest, dest, linked=linked)
    write_blob_bytes(path, image.config_bytes)
    write_blob_bytes(path, image.manifest_bytes)
    for artifact in referrers:
        for data in artifact.blobs().values():
            write_blob_bytes(path, data)
        write_blob_bytes(path, artifact.manifest_bytes)
    with index_lock(path):
        return _add_image(path, image, tag, referrers)


def _add_image(path: Path, image: Image, tag: str, referrers: Iterable[Artifact]) -> Descriptor:
    existing = _index(path)
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
    for artifact in referrers:
        manifests = [d for d in manifests if d.get("digest") != artifact.digest] + [artifact.descriptor.to_json()]
    write_index(path, manifests, existing)
    return entry


def write_artifact(
    path: Path,
    artifact: FilesArtifact,
    *,
    tag: str,
    blobs: BlobReader,
    annotations: Mapping[str, str] | None = None,
    replaces: Callable[[dict[str, Any]], bool] | None = None,
) -> Descriptor:
    """Add ``artifact`` (an artifact of its own, or a referrer of an image) tagged ``tag``
    to the layout at ``path``; returns its index entry (with its ``artifactType``, and
    ``annotations``). An entry ``replaces`` says yes to leaves the index."""
    write_artifact_blobs(path, artifact, blobs=blobs)
    entry = artifact.descriptor({**(annotations or {}), **({mt.ANNOTATION_REF_NAME: tag} if tag else {})})

    def replaced(d: Any) -> bool:  # the same manifest, or what the tag named before, or what the caller says
        named = (d.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME)
        return bool(d.get("digest") == entry.digest or (tag and named == tag) or (replaces and replaces(d)))

    with index_lock(path):
        existing = _index(path)
        manifests = [d for d in existing.get("manifests", []) if not replaced(d)]
        write_index(path, [*manifests, entry.to_json()], existing)
    return entry


def write_artifact_blobs(path: Path, artifact: FilesArtifact, *, blobs: BlobReader) -> None:
    """``artifact``'s blobs and manifest in the layout at ``path``, not listed in its
    ``index.json`` (an index blob names it)."""
    _start(path)
    for desc in artifact.layers:
        _place_blob(blobs, desc.digest, path / "blobs" / "sha256" / desc.digest.split(":", 1)[1])
    write_blob_bytes(path, artifact.config_bytes)
    write_blob_bytes(path, artifact.manifest_bytes)


@contextlib.contextmanager
def index_lock(path: Path) -> Iterator[None]:
    """Hold the layout at ``path`` for a read, change and replace of its ``index.json``:
    another process (or thread) doing the same waits. The lock is ``flock`` on the folder
    itself, so nothing is written for it, and it goes with the process. Not re-entrant:
    a holder that takes it again through another descriptor waits for itself."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _start(path: Path) -> None:
    """The layout at ``path`` made if new. A symlink there is replaced by a new layout,
    never written through (the writer's check refuses one unless ``--force``)."""
    if path.is_symlink():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    _reclaim(path)
    layout_file = path / "oci-layout"
    if not layout_file.exists():
        write_atomically(layout_file, canonical_json({"imageLayoutVersion": mt.OCI_LAYOUT_VERSION}))


def _index(path: Path) -> dict[str, Any]:
    """The layout's index as it is (read under :func:`index_lock`)."""
    return read_index(path) if (path / "index.json").exists() else {"schemaVersion": 2}


def write_atomically(dest: Path, data: bytes) -> None:
    """``data`` into ``dest`` through a temporary file beside it and a rename."""
    fd, tmp = _create_temp(dest.parent, "." + dest.name + "-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_index(path: Path, manifests: list[Any], existing: dict[str, Any]) -> None:
    """Replace the index of the layout at ``path`` (read as ``existing`` under
    :func:`index_lock`, still held) by one of ``manifests``, less the referrers and cosign
    signatures of the images it no longer lists."""
    manifests = _without_orphans(path, manifests, existing.get("manifests", []))
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    data, target = canonical_json(index), path / "index.json"
    with contextlib.suppress(OSError):
        if target.read_bytes() == data:
            return  # the same index: left as it is (a rebuild with nothing changed writes nothing)
    write_atomically(target, data)


def subject_of(path: Path, entry: Any) -> str | None:
    """The subject digest of the manifest an index entry names, for a referrer (an entry
    with ``artifactType``) whose manifest is in the layout; else None."""
    if not isinstance(entry, dict) or not entry.get("artifactType"):
        return None
    digest = str(entry.get("digest", ""))
    try:
        body = (path / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
        if sha256_digest(body) != digest:
            return None
        subject = json.loads(body).get("subject") or {}
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    named = subject.get("digest") if isinstance(subject, dict) else None
    return str(named) if named else None


def signed_by_tag(entry: Any) -> str | None:
    """The digest a cosign signature or attestation entry (tagged ``sha256-<hex>.sig`` or
    ``.att``) is about; else None."""
    tag = (entry.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME, "") if isinstance(entry, dict) else ""
    found = _SIGNATURE_TAG.match(str(tag))
    return f"sha256:{found.group(1)}" if found else None


def _without_orphans(path: Path, manifests: list[Any], before: list[Any]) -> list[Any]:
    """``manifests`` less the referrers and signatures of the images that were in ``before``
    and are not now."""
    listed = {d.get("digest") for d in manifests if isinstance(d, dict)}
    gone = {d.get("digest") for d in before if isinstance(d, dict)} - listed
    if not gone:
        return manifests
    return [d for d in manifests if subject_of(path, d) not in gone and signed_by_tag(d) not in gone]
