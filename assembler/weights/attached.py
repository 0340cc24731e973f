"""The weights that go with an image, found where the image is (its referrers in a
registry or an OCI layout whose ``artifactType`` is ModelPack's) and unpacked into the
cache, for ``assemble run``/``test`` to bind at the path each names. What a registry
sends is checked before it is used: layer types, plain relative paths, regular files and
folders only, sizes as the tar headers say."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from assembler.cache import Cache, temp_prefix
from assembler.errors import InputError
from assembler.oci.digest import digest_hex
from assembler.oci.reference import Ref
from assembler.spec.weights import WeightsSpec
from assembler.transports.common import BlobReader, SourceImage
from assembler.transports.context import Context, registry_options
from assembler.transports.referrers import Referrer
from assembler.weights.files import plain_path
from assembler.weights.pack import ANNOTATION_AT, ANNOTATION_NAME, ARTIFACT_TYPE, WEIGHT_CONFIG_TAR, WEIGHT_TAR

Mount = tuple[str, str, bool]
_DONE = ".assemble-complete"


def mounts(ref: Ref, source: SourceImage, ctx: Context) -> tuple[Mount, ...]:
    """A read-only bind for each model attached to ``source`` (read from ``ref``); none where
    ``ref`` keeps no referrers as manifests."""
    from assembler.transports.formats import attached_to  # the registry client, only here

    listing = attached_to(ref, source, options=registry_options(ctx))
    if listing is None:
        return ()
    out = []
    for r in listing.referrers:
        if r.descriptor.artifact_type != ARTIFACT_TYPE:
            continue
        notes = r.manifest.get("annotations")
        notes = notes if isinstance(notes, dict) else {}
        name, at = str(notes.get(ANNOTATION_NAME, r.descriptor.digest[:19])), notes.get(ANNOTATION_AT)
        if not isinstance(at, str):
            continue  # not ours: nothing says where it goes
        at = WeightsSpec(source="x", at=at).at  # the same check a manifest's gets
        what = f"weights {name}"
        if ref.name is None:  # a layout or an archive: the listing reads its blobs
            out.append((str(unpack(r, listing.blobs, ctx.cache, what=what)), at, True))
            continue
        from assembler.registry.client import Registry, RemoteBlobs

        with Registry(ref.name.registry, options=registry_options(ctx)) as reg:
            sizes = {d.digest: d.size for d in r.blobs}
            blobs = RemoteBlobs(reg, ref.name.repository, sizes)
            out.append((str(unpack(r, blobs, ctx.cache, what=what)), at, True))
    return tuple(out)


def unpack(referrer: Referrer, blobs: BlobReader, cache: Cache, *, what: str) -> Path:
    """The model's layers unpacked into one folder of the cache (once per manifest)."""
    final = cache.path("weights", "attached") / digest_hex(referrer.descriptor.digest)[:32]
    if (final / _DONE).is_file():
        cache.mark_used(final)
        return final
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("weights-"), dir=cache.root / "tmp"))
    try:
        for desc in referrer.blobs:
            if desc.media_type not in (WEIGHT_TAR, WEIGHT_CONFIG_TAR):
                raise InputError(f"{what}: layer {desc.digest} is {desc.media_type}, not an uncompressed tar")
            with blobs.open_blob(desc.digest) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    _extract(tar, member, tmp, what)
        (tmp / _DONE).touch()
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, root: Path, what: str) -> None:
    name = member.name.rstrip("/")
    if plain_path(name) is None or name == _DONE:
        raise InputError(f"{what}: a layer holds {member.name!r}, not a plain relative path")
    dest = root / name
    if member.isdir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    if not member.isreg():
        raise InputError(f"{what}: {name} is neither a file nor a folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    assert src is not None
    try:
        with src, open(dest, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except FileExistsError:
        raise InputError(f"{what}: {name} is in the layers twice") from None
    os.chmod(dest, 0o644)
