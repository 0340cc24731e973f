"""The weights that go with an image, found where the image is (its referrers in a
registry or an OCI layout whose ``artifactType`` is ModelPack's) and unpacked into the
cache, for ``assemble run``/``test`` to bind at the path each names. What a registry
sends is checked before it is used: layer types, plain relative paths, regular files and
folders only, sizes as the tar headers say."""

from __future__ import annotations

import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from assembler.cache import Cache
from assembler.errors import InputError
from assembler.manifest.schema.weights import PLAIN_FOLDER, plain_folder
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import digest_hex
from assembler.oci.reference import Ref
from assembler.transports.beside import ANNOTATION_AT, ANNOTATION_NAME
from assembler.transports.common import BlobReader, DirBlobs, SourceImage
from assembler.transports.context import Context, registry_options
from assembler.transports.referrers import Referrer
from assembler.weights.files import plain_path
from assembler.weights.pack import ARTIFACT_TYPE, WEIGHT_CONFIG_TAR, WEIGHT_TAR
from assembler.weights.tree import DONE, made_once

if TYPE_CHECKING:
    pass

Mount = tuple[str, str, bool]
MAX_MANIFEST = 4 << 20  # a manifest or an index read from a layout


def mounts(ref: Ref, source: SourceImage, ctx: Context) -> tuple[Mount, ...]:
    """A read-only bind for each model that goes with ``source`` (read from ``ref``): the
    models a registry tag's index names with the image (exactly the ones pushed with it),
    else the image's referrers of ModelPack's type (one of each name, else InputError);
    none where ``ref`` keeps no referrers as manifests."""
    from assembler.registry.client import Registry, RemoteBlobs  # the registry client, only here
    from assembler.transports.formats import attached_to, format_of

    name, options = ref.name, registry_options(ctx)
    if name is not None and name.tag and not name.digest:
        with Registry(name.registry, options=options) as reg:
            indexed = _indexed(lambda d: reg.fetch_manifest(name.repository, d), name.reference)
            if indexed is not None:
                return tuple(_mount(r, RemoteBlobs(reg, name.repository, _sizes(r)), ctx.cache, ref) for r in indexed)
    folder = format_of(ref).layout_folder(ref, ctx)
    if folder is not None:
        blobs = DirBlobs(folder / "blobs", what=f"oci:{folder}")
        indexed = _indexed(lambda d: _layout_manifest(folder, blobs, d), ref.tag)
        if indexed is not None:
            return tuple(_mount(r, blobs, ctx.cache, ref) for r in indexed)
    listing = attached_to(ref, source, options=options)
    if listing is None:
        return ()
    found = [r for r in listing.referrers if r.descriptor.artifact_type == ARTIFACT_TYPE]
    names = [_notes(r).get(ANNOTATION_NAME, r.descriptor.digest) for r in found]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise InputError(
            f"{ref}: the image has more than one model named {', '.join(twice)} beside it (pushed with other weights)",
            hint="run it by the tag it was pushed to: the tag's index names the one that goes with it",
        )
    if name is None:  # a layout or an archive: the listing reads its blobs
        return tuple(_mount(r, listing.blobs, ctx.cache, ref) for r in found)
    with Registry(name.registry, options=options) as reg:
        return tuple(_mount(r, RemoteBlobs(reg, name.repository, _sizes(r)), ctx.cache, ref) for r in found)


def _layout_manifest(folder: Path, blobs: DirBlobs, reference: str) -> tuple[bytes, str]:
    """A manifest of the layout at ``folder`` by digest, or what its tag ``reference`` names."""
    from assembler.transports import layout

    digest = reference
    if not reference.startswith("sha256:"):
        named = [
            d
            for d in layout.read_index(folder).get("manifests", [])
            if (d.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME) == reference
        ]
        if not named:
            raise InputError(f"oci:{folder}: no tag {reference}")
        digest = str(named[-1].get("digest"))
    with blobs.open_blob(digest) as f:
        body = f.read(MAX_MANIFEST + 1)
    if len(body) > MAX_MANIFEST:
        raise InputError(f"oci:{folder}: {digest} is larger than a manifest may be")
    data = _json(body, digest)
    return body, str(data.get("mediaType", "")) if isinstance(data, dict) else ""


def _json(body: bytes, what: str) -> object:
    try:
        return json.loads(body)
    except ValueError as e:
        raise InputError(f"{what}: not JSON: {e}") from None


def _indexed(fetch: Callable[[str], tuple[bytes, str]], reference: str) -> list[Referrer] | None:
    """The models the index at ``reference`` names (None: it is no index); ``fetch``
    reads a manifest (its bytes, its media type) by tag or digest."""
    body, media_type = fetch(reference)
    if media_type not in mt.INDEX_TYPES:
        return None
    data = _json(body, reference)
    entries = data.get("manifests") if isinstance(data, dict) else None
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("artifactType") != ARTIFACT_TYPE:
            continue
        desc = Descriptor.from_json(entry)
        body, _ = fetch(desc.digest)
        manifest = _json(body, desc.digest)
        if not isinstance(manifest, dict):
            raise InputError(f"{reference}: the model {desc.digest}'s manifest is not a JSON object")
        out.append(Referrer(desc, manifest))
    return out


def _notes(r: Referrer) -> dict[str, str]:
    notes = r.manifest.get("annotations")
    return {str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {}


def _sizes(r: Referrer) -> dict[str, int]:
    return {d.digest: d.size for d in r.blobs}


def _mount(r: Referrer, blobs: BlobReader, cache: Cache, ref: Ref | str) -> Mount:
    """The model's folder in the cache, bound read-only where its manifest says."""
    notes = _notes(r)
    name = notes.get(ANNOTATION_NAME, r.descriptor.digest[:19])
    what = f"{ref}: weights {name!r} ({r.descriptor.digest})"
    at = bound_at(notes.get(ANNOTATION_AT), what)  # before a byte of it is read
    return str(unpack(r, blobs, cache, what=what)), at, True


def bound_at(at: str | None, what: str) -> str:
    """Where the model ``what`` (an image's, named) is bound, from its manifest's
    ``ANNOTATION_AT``: data from whoever pushed the image, never options. It reaches
    buildah's ``--volume HOST:AT:ro,...`` (``/x:rw`` would make the read-only bind of the
    cache's folder a writable one), so it is exactly a folder a manifest's ``at:`` may
    be, as written (absolute, normalized), or InputError naming the image and the annotation."""
    if at is None:
        raise InputError(f"{what}: its manifest says nowhere to bind it ({ANNOTATION_AT})")
    if plain_folder(at) != at:
        raise InputError(
            f"{what}: its annotation {ANNOTATION_AT} is {at!r}, not a folder to bind it at ({PLAIN_FOLDER})",
            hint="the image's weights were pushed by another tool, or altered: push them again with assemble",
        )
    return at


def unpack(referrer: Referrer, blobs: BlobReader, cache: Cache, *, what: str) -> Path:
    """The model's layers unpacked into one folder of the cache (once per manifest)."""

    def fill(tmp: Path) -> None:
        kinds: dict[str, bool] = {}  # each path unpacked: a folder (True) or a file
        for desc in referrer.blobs:
            if desc.media_type not in (WEIGHT_TAR, WEIGHT_CONFIG_TAR):
                raise InputError(f"{what}: layer {desc.digest} is {desc.media_type}, not an uncompressed tar")
            try:
                with blobs.open_blob(desc.digest) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                    for member in tar:
                        _extract(tar, member, tmp, f"{what}: layer {desc.digest}", kinds)
            except tarfile.TarError as e:
                raise InputError(f"{what}: layer {desc.digest} is not a tar that reads: {e}") from None

    final = cache.path("weights", "attached") / digest_hex(referrer.descriptor.digest)[:32]
    return made_once(cache, final, fill)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, what: str, kinds: dict[str, bool]) -> None:
    """One entry of a layer unpacked under ``root``: a plain relative path, a folder or a
    regular file, in no file and never twice (``kinds``: what the layers gave so far), so
    what a layer holds is said, never a traceback of the unpacking."""
    name = member.name.rstrip("/")
    if plain_path(name) is None or name == DONE:
        raise InputError(f"{what}: holds {member.name!r}, not a plain relative path")
    if not member.isdir() and not member.isreg():
        raise InputError(f"{what}: {name} is neither a file nor a folder")
    for parent in (str(p) for p in PurePosixPath(name).parents if str(p) != "."):
        if kinds.get(parent) is False:
            raise InputError(f"{what}: holds {name}, in {parent}, a file of the layers, not a folder")
        kinds[parent] = True
    was = kinds.get(name)
    if was is not None and not (was and member.isdir()):
        raise InputError(f"{what}: {name} is in the layers twice")
    kinds[name] = member.isdir()
    dest = root / name
    if member.isdir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    assert src is not None
    with src, open(dest, "xb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.chmod(dest, 0o644)
