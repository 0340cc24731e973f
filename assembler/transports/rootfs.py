"""Filesystem tarballs as one-layer bases (``rootfs:FILE.tar[.gz|.zst]``).

The tarball is rewritten through the deterministic writer (sorted, clamped mtimes),
so the same tarball always gives the same base image. Results are cached by the
tarball's digest.
"""

from __future__ import annotations

import os
import tarfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from assembler.archive.compress import DECOMPRESS_ERRORS, Compression, decompressed, sniff
from assembler.archive.headers import LayerHeaders
from assembler.archive.layer import Member, Opener, write_layer
from assembler.archive.tar import entry_from_tarinfo
from assembler.cache import Cache, key_of
from assembler.cache.memos import remember_headers
from assembler.errors import InputError, InvalidArchive
from assembler.oci import mutate
from assembler.oci.descriptor import Platform
from assembler.oci.digest import file_digest
from assembler.oci.image import Image
from assembler.oci.layer import Layer

# Bump when the conversion changes its output, so old cache entries are not reused.
FORMAT = 2
_CHUNK = 1 << 20


def layer_from_tar(tar_path: Path, *, cache: Cache, compression: Compression, epoch: int, what: str) -> Layer:
    """Rewrite a (possibly compressed) tarball as a deterministic layer in the cache.

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
        try:
            tf = tarfile.open(plain, mode="r:", errorlevel=2)  # noqa: SIM115 - closed by the with below
        except (tarfile.TarError, OSError) as e:
            raise InputError(f"{what}: not a readable tar archive ({e})") from e
        with tf:
            members: list[Member] = []
            try:
                infos = tf.getmembers()
            except TAR_DAMAGE as e:
                raise InputError(f"{what}: damaged tar archive ({damage(e)})") from e
            for info in infos:
                entry = entry_from_tarinfo(info, what=what)  # UnsafePath for '..'
                if entry is None or not entry.path:
                    continue
                opener = None
                if entry.kind == "file":
                    opener = _member_opener(tf, info)
                members.append((entry, opener))
            headers = LayerHeaders()
            try:
                with cache.blob_writer() as w:
                    blob = write_layer(members, w, compression=compression, epoch=epoch, headers=headers)
            except InvalidArchive as e:  # e.g. a hard link to a file the archive does not have
                raise InvalidArchive(f"{what}: {e}") from None
    remember_headers(cache, headers, digest=blob.digest, diff_id=blob.diff_id)
    return blob


# A decompressed rootfs may be this many times its compressed size (at least MIN_UNPACK
# bytes): real ones stay far below, a "zip bomb" does not. ASSEMBLE_ROOTFS_MAX_BYTES sets it.
MAX_RATIO = 32
MIN_UNPACK = 1 << 30


def unpack_limit(compressed: int) -> int:
    """How many bytes a compressed rootfs of ``compressed`` bytes may unpack to."""
    env = os.environ.get("ASSEMBLE_ROOTFS_MAX_BYTES", "").strip()
    if env:
        if not env.isdigit():
            raise InputError(f"ASSEMBLE_ROOTFS_MAX_BYTES must be a number of bytes, got {env!r}")
        return int(env)
    return max(MIN_UNPACK, MAX_RATIO * compressed)


# What reading a damaged tar raises: tarfile's own errors, and for a member whose (pax)
# size points past the end, ValueError/OverflowError or OSError (EINVAL from the seek).
TAR_DAMAGE: tuple[type[Exception], ...] = (tarfile.TarError, EOFError, ValueError, OverflowError, OSError)


def damage(e: Exception) -> str:
    """What a TAR_DAMAGE error says, for a person."""
    if isinstance(e, OSError) and not isinstance(e, EOFError):
        return "a member's size points past the end of the archive"
    return str(e) or type(e).__name__


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def copy_bounded(stream: Readable, out: BinaryIO, limit: int, what: str) -> None:
    """``stream`` into ``out``; InputError once more than ``limit`` bytes came."""
    written = 0
    while chunk := stream.read(_CHUNK):
        written += len(chunk)
        if written > limit:
            raise InputError(
                f"{what}: unpacks to more than {limit} bytes (a decompression bomb?)",
                hint="set ASSEMBLE_ROOTFS_MAX_BYTES to a larger number of bytes if this tarball is genuine",
            )
        out.write(chunk)


def _member_opener(tf: tarfile.TarFile, info: tarfile.TarInfo) -> Opener:
    def opener() -> AbstractContextManager[BinaryIO]:
        f = tf.extractfile(info)
        if f is None:
            raise InputError(f"cannot read member {info.name}")
        return cast(AbstractContextManager[BinaryIO], f)

    return opener


# What Debian's and Ubuntu's own images set: a root filesystem needs a PATH to be usable.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_from_layer(blob: Layer, *, platform: Platform, epoch: int, created_by: str) -> Image:
    """A one-layer image of a root filesystem, with the standard PATH in its config."""
    base = mutate.set_config(
        mutate.scratch(platform, epoch=epoch), mutate.ConfigChanges(env={"PATH": DEFAULT_PATH}), epoch=epoch
    )
    return mutate.append_layers(base, [blob.made_by(created_by)], epoch=epoch)


def _key(path: Path, platform: Platform, epoch: int, compression: Compression) -> tuple[str, str]:
    what = f"rootfs:{path}"
    if not path.is_file():
        raise InputError(f"{what}: file does not exist")
    try:
        digest = file_digest(path)
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
    key, _ = _key(path, platform, epoch, compression)
    return cache.base_image(key)


def read(path: Path, *, cache: Cache, platform: Platform, epoch: int, compression: Compression) -> Image:
    """The one-layer image of the tarball at ``path`` (cached by its digest)."""
    what = f"rootfs:{path}"
    key, digest = _key(path, platform, epoch, compression)
    image = cache.base_image(key)
    if image is not None:
        return image
    blob = layer_from_tar(path, cache=cache, compression=compression, epoch=epoch, what=what)
    image = image_from_layer(blob, platform=platform, epoch=epoch, created_by=f"rootfs {path.name} ({digest})")
    cache.put_base_image(key, image)
    return image
