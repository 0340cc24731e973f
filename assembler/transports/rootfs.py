"""Filesystem tarballs as one-layer bases (``rootfs:FILE.tar[.gz|.zst]``).

The tarball is rewritten through the deterministic writer (sorted, clamped mtimes),
so the same tarball always gives the same base image. Results are cached by the
tarball's digest.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from assembler.archive.compress import DECOMPRESS_ERRORS, Compression, decompressed, sniff
from assembler.archive.layer import Member
from assembler.archive.tar import TarEntry
from assembler.archive.tarread import copy_bounded, opener, reading, unpack_limit
from assembler.cache import Cache, key_of
from assembler.cache.memos import write_remembered
from assembler.cache.programs import remembered_file_digest
from assembler.errors import InputError, InvalidArchive
from assembler.oci import mutate
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.layer import Layer

# Bump when the conversion changes its output, so old cache entries are not reused.
FORMAT = 3  # 3: a hard link's header says what its target's does
_CHUNK = 1 << 20


def layer_from_tar(
    tar_path: Path,
    *,
    cache: Cache,
    compression: Compression,
    epoch: int,
    what: str,
    adjust: Callable[[TarEntry], TarEntry] | None = None,
) -> Layer:
    """Rewrite a (possibly compressed) tarball as a deterministic layer in the cache, each
    member's header through ``adjust`` when given.

    Compressed input is first decompressed to a work file so members can be read in
    sorted order. Raises InputError for a file that is not a tar archive and UnsafePath
    for members that climb out of the root.
    """
    with cache.workdir("rootfs-") as work:
        plain = tar_path
        with open(tar_path, "rb") as raw:
            kind = sniff(raw.read(4))
            raw.seek(0)
            if kind != "none":
                plain = work / "plain.tar"
                limit = unpack_limit(os.fstat(raw.fileno()).st_size)
                try:
                    with decompressed(raw, kind) as stream, open(plain, "wb") as out:
                        copy_bounded(stream, out, limit, what)
                except DECOMPRESS_ERRORS as e:
                    raise InputError(f"{what}: cannot decompress {kind} data ({e})") from e
        with open(plain, "rb") as f, reading(f, what=what, stream=False) as (tf, entries):
            members: list[Member] = [
                (adjust(entry) if adjust else entry, opener(tf, info, what=what) if entry.kind == "file" else None)
                for entry, info in entries  # the one reader: damage, bounds, UnsafePath for '..'
                if entry.path
            ]
            try:
                return write_remembered(cache, members, compression=compression, epoch=epoch)
            except InvalidArchive as e:  # e.g. a hard link to a file the archive does not have
                raise InvalidArchive(str(e) if str(e).startswith(what) else f"{what}: {e}") from None


# What Debian's and Ubuntu's own images set: a root filesystem needs a PATH to be usable.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_from_layer(blob: Layer, *, platform: Platform, epoch: int, created_by: str) -> Image:
    """A one-layer image of a root filesystem, with the standard PATH in its config."""
    base = mutate.set_config(
        mutate.scratch(platform, epoch=epoch), mutate.ConfigChanges(env={"PATH": DEFAULT_PATH}), epoch=epoch
    )
    return mutate.append_layers(base, [blob.made_by(created_by)], epoch=epoch)


def _key(
    path: Path, platform: Platform, epoch: int, compression: Compression, *, cache: Cache, record: bool
) -> tuple[str, str]:
    """The cache key of the base made of the tarball at ``path``, and the tarball's digest:
    read once, then remembered by the file's identity (a tarball of gigabytes is not read
    again by a rebuild); ``record``: remember it (a plan writes nothing)."""
    what = f"rootfs:{path}"
    if not path.is_file():
        raise InputError(f"{what}: file does not exist")
    try:
        digest = remembered_file_digest(cache, path, record=record)
    except OSError as e:
        raise InputError(f"{what}: cannot read ({e.strerror})") from e
    parts = {
        "kind": "rootfs",
        "format": FORMAT,
        "file": digest,
        "platform": str(platform),
        "epoch": epoch,
        "compression": compression,
    }
    return key_of(parts), digest


def cached(path: Path, *, cache: Cache, platform: Platform, epoch: int, compression: Compression) -> Image | None:
    """The converted image if the cache has it (nothing is written)."""
    key, _ = _key(path, platform, epoch, compression, cache=cache, record=False)
    return cache.base_image(key)


def read(path: Path, *, cache: Cache, platform: Platform, epoch: int, compression: Compression) -> Image:
    """The one-layer image of the tarball at ``path`` (cached by its digest, which is
    remembered by the file's identity: an unchanged tarball is not read again)."""
    what = f"rootfs:{path}"
    key, digest = _key(path, platform, epoch, compression, cache=cache, record=True)
    image = cache.base_image(key)
    if image is not None:
        return image
    blob = layer_from_tar(path, cache=cache, compression=compression, epoch=epoch, what=what)
    image = image_from_layer(blob, platform=platform, epoch=epoch, created_by=f"rootfs {path.name} ({digest})")
    cache.put_base_image(key, image)
    return image
