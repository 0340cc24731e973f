"""Apptainer/Singularity SIF files (``sif:FILE``), written straight from an image's layers.

No root filesystem is unpacked and no intermediate tar is stored: the layers are merged
as a stream (:func:`assembler.transports.hpc.squashfs.write_squashfs`, with Apptainer's
``/.singularity.d`` laid over them) into ``tar2sqfs``, which writes the squashfs into
the output's temp file. The SIF header, descriptors and small metadata objects are then
put *in front* of it: ``fallocate(FALLOC_FL_INSERT_RANGE)`` shifts the squashfs by a
block-aligned amount without copying (ext4, xfs); where the filesystem cannot, the
squashfs is moved up inside the same file (read and written once more, still no second
copy on disk). The temp file is renamed into place at the end and removed on failure.

The SIF objects, as ``apptainer build`` makes them (sylabs/sif layout, see
:mod:`assembler.transports.hpc.sif_format`), all in group 1:

1. definition file (0x4001) describing the image's source, labels, environment, runscript;
2. JSON labels (0x4003): the image's labels;
3. generic JSON (0x4006) ``inspect-metadata.json``: labels, environment scripts,
   runscript, startscript and definition file in Apptainer's ``inspect.Metadata`` shape,
   which ``apptainer inspect`` reads instead of starting a container;
4. generic JSON (0x4006) ``oci-config.json``: the config's runtime part (Env, Cmd...),
   which Apptainer reads back for ``--oci`` runs and ``inspect``
   (generic JSON objects sorted by name, as Apptainer adds them);
5. with ``attached`` (a build's referrers, :func:`write_sif`): the SPDX SBOM as an SBOM
   object (0x4009, format ``spdx-json``: what ``siftool add --datatype 9 --sbomformat
   spdx-json`` writes) and the SLSA provenance as generic JSON (0x4006; SIF has no type for
   an attestation, and in-toto statements are JSON), each named by its title
   (``NAME.spdx.json``, ``NAME.provenance.intoto.json``, as ``assemble referrers --save``
   names them), the same bytes as the referrers pushed with the image;
6. the squashfs as the primary system partition (0x4004, Squashfs, PrimSys, image arch),
   aligned to 4096.

Reproducible: the UUID is derived from the image digest, compressor, epoch and the
attached objects' digests, every time field is ``epoch``, and tar2sqfs runs with
``SOURCE_DATE_EPOCH`` and ``--defaults mtime=epoch`` (its superblock time), so the same
image gives the same bytes.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.archive.compress import usable_cores
from assembler.errors import InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.digest import digest_hex, file_digest
from assembler.proc import Runner
from assembler.transports.common import SourceImage
from assembler.transports.hpc import apptainer
from assembler.transports.hpc import squash as squashing
from assembler.transports.hpc.sif_format import (
    DATA_DEFFILE,
    DATA_GENERIC_JSON,
    DATA_LABELS,
    DATA_OFFSET,
    DATA_SBOM,
    PARTITION_ALIGNMENT,
    SBOM_FORMAT_SPDX_JSON,
    SifObject,
    align,
    read_object,
    read_sif_header,
    sbom_extra,
    sif_arch,
)
from assembler.transports.hpc.sif_front import put_front
from assembler.transports.hpc.squash import COMPRESSORS, Squash
from assembler.transports.hpc.squashfs import check_writable, replacing, write_squashfs

if TYPE_CHECKING:
    from assembler.sign import Signer

__all__ = ["COMPRESSORS", "SifInfo", "read_attached", "read_sif_header", "write_sif"]

log = logging.getLogger(__name__)

OCI_CONFIG_NAME = "oci-config.json"
INSPECT_METADATA_NAME = "inspect-metadata.json"
# Bump when the same image would give other SIF bytes (it feeds the UUID).
FORMAT = 2
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/assemble/sif")


@dataclass(frozen=True)
class SifInfo:
    """What :func:`write_sif` wrote."""

    path: Path
    size: int
    digest: str  # sha256 of the whole file, for publishing
    uuid: str
    arch: str  # OCI architecture of the primary partition
    image_digest: str
    compressor: str
    block_size: int
    squashfs_offset: int
    squashfs_size: int
    entries: int  # entries in the root filesystem (metadata included)
    file_bytes: int
    level: int | None = None  # the compressor's (None: tar2sqfs's default; what memos of before say)


def image_uuid(image_digest: str, squash: Squash, epoch: int, attached: Sequence[str] = ()) -> uuid.UUID:
    """The SIF UUID: an RFC 4122 version 5 UUID of what decides the file's bytes
    (``attached``: the digests of the attached objects; none, and the default block size
    and level, keep the UUIDs of before)."""
    more = "".join(f"/{d}" for d in attached) + squash.uuid_part()
    return uuid.uuid5(_UUID_NAMESPACE, f"sif/{FORMAT}/{image_digest}/{squash.compressor}/{epoch}{more}")


_PROVENANCE_SUFFIX = ".intoto.json"


def _attached_kind(artifact: Artifact) -> tuple[int, str, bytes]:
    """The SIF type, name and extra of an attached artifact (the SBOM, the provenance)."""
    name = artifact.title
    if len(name.encode()) > 128:  # a descriptor's name field; a very long manifest name
        name = digest_hex(artifact.blob.digest)[:32] + (
            ".spdx.json" if artifact.artifact_type == mt.SPDX_JSON else _PROVENANCE_SUFFIX
        )
    if artifact.artifact_type == mt.SPDX_JSON:
        return DATA_SBOM, name, sbom_extra(SBOM_FORMAT_SPDX_JSON)
    if artifact.artifact_type == mt.IN_TOTO_JSON:
        return DATA_GENERIC_JSON, name, b""
    raise InvalidImage(
        f"{artifact.title}: a SIF holds an SPDX SBOM or an in-toto statement, not {artifact.artifact_type}"
    )


def read_attached(path: Path) -> list[tuple[str, str, bytes]]:
    """What :func:`write_sif` attached to the SIF at ``path``: (media type, name, bytes) of
    each SPDX SBOM object and each generic JSON object named ``*.intoto.json``.

    Raises NotFound and InputError as :func:`read_sif_header` does."""
    found = []
    for obj in read_sif_header(path).objects:
        if obj.data_type == DATA_SBOM and obj.sbom_format == "spdx-json":
            found.append((mt.SPDX_JSON, obj.name, read_object(path, obj)))
        elif obj.data_type == DATA_GENERIC_JSON and obj.name.endswith(_PROVENANCE_SUFFIX):
            found.append((mt.IN_TOTO_JSON, obj.name, read_object(path, obj)))
    return found


def _objects(
    meta: apptainer.Metadata, attached: Sequence[Artifact], *, epoch: int
) -> tuple[list[SifObject], list[bytes], int]:
    """Descriptors of the metadata objects, their bytes, and where the partition starts."""
    datas = [meta.deffile, meta.labels, meta.inspect_metadata, meta.oci_config]
    kinds = [
        (DATA_DEFFILE, "", b""),
        (DATA_LABELS, "", b""),
        (DATA_GENERIC_JSON, INSPECT_METADATA_NAME, b""),
        (DATA_GENERIC_JSON, OCI_CONFIG_NAME, b""),
    ]
    for artifact in attached:
        datas.append(artifact.data)
        kinds.append(_attached_kind(artifact))
    objects = []
    offset = DATA_OFFSET
    for i, (data, (kind, name, extra)) in enumerate(zip(datas, kinds, strict=True), start=1):
        objects.append(SifObject(kind, i, offset, len(data), len(data), epoch, epoch, name=name, extra=extra))
        offset += len(data)
    # libsif's alignment, whatever the filesystem's block size: the bytes must not depend
    # on where the file is written (_make_room copes when INSERT_RANGE cannot do it).
    return objects, datas, align(offset, PARTITION_ALIGNMENT)


def _finish(tmp: Path, signer: Signer | None, *, epoch: int) -> tuple[int, str]:
    """The written SIF signed (with ``signer``) and made runnable; its size and digest."""
    if signer is not None:
        from assembler.transports.hpc.sif_sign import sign_sif  # cryptography: only when signing

        sign_sif(tmp, signer, epoch=epoch)
    os.chmod(tmp, 0o755)  # a SIF file starts with a #! line: runnable, as libsif makes it
    return tmp.stat().st_size, file_digest(tmp)


def _check(source: SourceImage, out: Path, squash: Squash) -> bytes:
    """:func:`check_writable`, and a warning for a compressor some Apptainers refuse; the
    SIF's code of the image's architecture (InvalidImage for one SIF has none)."""
    check_writable(source, squash, holds="SIF holds")
    arch_code = sif_arch(source.image.platform.architecture)
    if squash.compressor == "zstd":  # pkg/image/squashfs.go's CheckSquashfsHeader knows zstd from v1.4.0
        log.warning("%s: a SIF of zstd runs on Apptainer 1.4 or later; 1.3 refuses it (unknown compression 6)", out)
    return arch_code


def write_sif(
    source: SourceImage,
    out: Path,
    *,
    runner: Runner,
    epoch: int,
    squash: Squash = squashing.DEFAULT,
    progress: Callable[[int], None] | None = None,
    jobs: int | None = None,
    attached: Sequence[Artifact] = (),
    signer: Signer | None = None,
) -> SifInfo:
    """Write ``source``'s image as the SIF file ``out`` (replaced atomically), with
    ``attached`` (its SBOM, its provenance: referrers of the image) as data objects.

    ``progress`` is called with the number of uncompressed bytes just handed to the
    squashfs writer; ``jobs`` is the number of compressor threads (default: all CPUs,
    the bytes do not depend on it). Raises InputError for an unknown compressor, block
    size or level, InvalidImage for an image SIF cannot hold (architecture, unreadable layers,
    broken hard links) or an attached artifact that is neither an SPDX SBOM nor an in-toto
    statement, UnsafePath for layer members escaping the root, ToolError when tar2sqfs
    fails or is missing, OSError for the output file. With ``signer``, signed as
    ``apptainer sign --key`` signs (:mod:`.sif_sign`) before the rename."""
    arch_code = _check(source, out, squash)
    image, out = source.image, Path(out)
    meta = apptainer.metadata(image, source_name=source.name, epoch=epoch)
    with replacing(out) as tmp:
        objects, datas, part_offset = _objects(meta, attached, epoch=epoch)
        stats = write_squashfs(
            source,
            tmp,
            overlay=meta.overlay,
            underlay=meta.underlay,
            runner=runner,
            epoch=epoch,
            squash=squash,
            jobs=jobs or usable_cores(),
            progress=progress,
        )
        sif_uuid = image_uuid(image.digest, squash, epoch, [a.blob.digest for a in attached])
        squashfs_size = put_front(tmp, objects, datas, part_offset, arch_code=arch_code, sif_uuid=sif_uuid, epoch=epoch)
        size, digest = _finish(tmp, signer, epoch=epoch)
    info = SifInfo(
        path=out,
        size=size,
        digest=digest,
        uuid=str(sif_uuid),
        arch=image.platform.architecture,
        image_digest=image.digest,
        compressor=squash.compressor,
        block_size=squash.block_size,
        level=squash.level,
        squashfs_offset=part_offset,
        squashfs_size=squashfs_size,
        entries=stats.entries,
        file_bytes=stats.file_bytes,
    )
    log.info("wrote %s: %d bytes, %s", out, info.size, info.digest)
    return info
