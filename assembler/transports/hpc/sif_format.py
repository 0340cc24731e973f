"""The SIF container format (Singularity Image Format): header and descriptor structs.

Field layout taken from the Sylabs reference implementation (sylabs/sif ``pkg/sif``:
``sif.go``, ``descriptor.go``, ``create.go``, ``arch.go``), which ``siftool`` uses. All
integers are little-endian and the structs are packed (Go ``encoding/binary``)::

    0      global header, 128 bytes
             launch[32] "#!/usr/bin/env run-singularity\\n", magic[10] "SIF_MAGIC\\0",
             version[3] "01\\0", arch[3] ("02\\0" = amd64), uuid[16],
             int64 created, modified, descriptors free, descriptors total,
             descriptors offset, descriptors size, data offset, data size
    4096   48 descriptors of 585 bytes
             int32 type, bool used, uint32 id, group (| 0xf0000000), link,
             int64 offset, size, size with padding, created, modified, uid, gid,
             name[128], extra[384] (a partition's extra: int32 fstype, int32 parttype, arch[3];
             an SBOM's: int32 format, ``type sbom struct { Format SBOMFormat }`` in descriptor.go)
    32176  data objects, one after the other; partitions aligned to 4096

This module only packs and unpacks bytes; :mod:`assembler.transports.hpc.sif` decides what
goes where.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from assembler.errors import InputError, InvalidImage, NotFound

LAUNCH_SCRIPT = b"#!/usr/bin/env run-singularity\n"
MAGIC = b"SIF_MAGIC\x00"
VERSION = b"01\x00"

HEADER = struct.Struct("<32s10s3s3s16s8q")
DESCRIPTOR = struct.Struct("<iBIIIqqqqqqq128s384s")
PARTITION_EXTRA = struct.Struct("<ii3s")

DESCRIPTORS_OFFSET = 4096
DESCRIPTOR_CAPACITY = 48
DESCRIPTORS_SIZE = DESCRIPTOR_CAPACITY * DESCRIPTOR.size  # 28080
DATA_OFFSET = DESCRIPTORS_OFFSET + DESCRIPTORS_SIZE  # 32176
PARTITION_ALIGNMENT = 4096
GROUP_MASK = 0xF0000000
DEFAULT_GROUP = 1

# Data object types (Datatype, iota + 0x4001 in sif.go).
DATA_DEFFILE = 0x4001
DATA_ENVVAR = 0x4002
DATA_LABELS = 0x4003
DATA_PARTITION = 0x4004
DATA_SIGNATURE = 0x4005
DATA_GENERIC_JSON = 0x4006
DATA_GENERIC = 0x4007
DATA_CRYPTO_MESSAGE = 0x4008
DATA_SBOM = 0x4009  # "SBOM" in siftool list; added in sylabs/sif v2 (siftool add --datatype 9)

# SBOM formats (SBOMFormat, iota + 1 in sif.go): cyclonedx-json, cyclonedx-xml, github-json,
# spdx-json, spdx-rdf, spdx-tag-value, spdx-yaml, syft-json.
SBOM_FORMATS = (
    "cyclonedx-json",
    "cyclonedx-xml",
    "github-json",
    "spdx-json",
    "spdx-rdf",
    "spdx-tag-value",
    "spdx-yaml",
    "syft-json",
)
SBOM_FORMAT_SPDX_JSON = SBOM_FORMATS.index("spdx-json") + 1  # 4
SBOM_EXTRA = struct.Struct("<i")

# Partition metadata (FSType and PartType, iota + 1).
FS_SQUASHFS = 1
PART_SYSTEM = 1
PART_PRIMSYS = 2

# OCI/Go architecture names -> SIF header arch codes (arch.go).
ARCH_CODES: dict[str, bytes] = {
    "386": b"01\x00",
    "amd64": b"02\x00",
    "arm": b"03\x00",
    "arm64": b"04\x00",
    "ppc64": b"05\x00",
    "ppc64le": b"06\x00",
    "mips": b"07\x00",
    "mipsle": b"08\x00",
    "mips64": b"09\x00",
    "mips64le": b"10\x00",
    "s390x": b"11\x00",
    "riscv64": b"12\x00",
}
ARCH_UNKNOWN = b"00\x00"

assert HEADER.size == 128 and DESCRIPTOR.size == 585


def sif_arch(architecture: str) -> bytes:
    """The 3-byte SIF arch code for an OCI architecture; InvalidImage for one SIF cannot name."""
    try:
        return ARCH_CODES[architecture]
    except KeyError:
        raise InvalidImage(
            f"architecture {architecture!r} has no SIF arch code (SIF knows {', '.join(sorted(ARCH_CODES))})"
        ) from None


def align(offset: int, alignment: int) -> int:
    """``offset`` rounded up to a multiple of ``alignment``."""
    return -(-offset // alignment) * alignment


@dataclass(frozen=True)
class SifObject:
    """One data object as written: its descriptor fields (the data itself lives in the file)."""

    data_type: int
    id: int
    offset: int
    size: int
    size_with_padding: int
    created: int
    modified: int
    group: int = DEFAULT_GROUP
    link: int = 0
    name: str = ""
    extra: bytes = b""

    @property
    def fs_type(self) -> int | None:
        return self._partition()[0] if self.data_type == DATA_PARTITION else None

    @property
    def part_type(self) -> int | None:
        return self._partition()[1] if self.data_type == DATA_PARTITION else None

    @property
    def arch(self) -> str | None:
        """The Go/OCI architecture name of a partition (``None`` for other objects)."""
        if self.data_type != DATA_PARTITION:
            return None
        code = self._partition()[2]
        return next((name for name, c in ARCH_CODES.items() if c == code), "unknown")

    @property
    def sbom_format(self) -> str | None:
        """The format name of an SBOM object (``spdx-json``...; ``None`` for other objects)."""
        if self.data_type != DATA_SBOM:
            return None
        (code,) = SBOM_EXTRA.unpack_from(self.extra.ljust(SBOM_EXTRA.size, b"\x00"))
        return SBOM_FORMATS[code - 1] if 0 < code <= len(SBOM_FORMATS) else "unknown"

    def _partition(self) -> tuple[int, int, bytes]:
        fs_type, part_type, arch = PARTITION_EXTRA.unpack_from(self.extra.ljust(PARTITION_EXTRA.size, b"\x00"))
        return int(fs_type), int(part_type), bytes(arch)

    def pack(self) -> bytes:
        """The 585-byte descriptor; ValueError when the name or extra do not fit."""
        name = self.name.encode("utf-8")
        if len(name) > 128 or len(self.extra) > 384:
            raise ValueError(f"SIF descriptor {self.id}: name or extra too long")
        return DESCRIPTOR.pack(
            self.data_type,
            1,
            self.id,
            self.group | GROUP_MASK,
            self.link,
            self.offset,
            self.size,
            self.size_with_padding,
            self.created,
            self.modified,
            0,  # uid and gid are deprecated in libsif and always written as 0
            0,
            name.ljust(128, b"\x00"),
            self.extra.ljust(384, b"\x00"),
        )


def partition_extra(*, fs_type: int, part_type: int, arch: bytes) -> bytes:
    return PARTITION_EXTRA.pack(fs_type, part_type, arch)


def sbom_extra(sbom_format: int) -> bytes:
    """An SBOM object's extra: its format (:data:`SBOM_FORMAT_SPDX_JSON`...)."""
    return SBOM_EXTRA.pack(sbom_format)


@dataclass(frozen=True)
class SifHeader:
    """The global header and the used descriptors of a SIF file."""

    launch: bytes
    magic: bytes
    version: bytes
    arch_code: bytes
    uuid: uuid.UUID
    created: int
    modified: int
    descriptors_free: int
    descriptors_total: int
    descriptors_offset: int
    descriptors_size: int
    data_offset: int
    data_size: int
    objects: tuple[SifObject, ...] = ()

    @property
    def arch(self) -> str:
        return next((name for name, c in ARCH_CODES.items() if c == self.arch_code), "unknown")

    def primary_partition(self) -> SifObject:
        """The primary system partition; InvalidImage when there is none."""
        for obj in self.objects:
            if obj.data_type == DATA_PARTITION and obj.part_type == PART_PRIMSYS:
                return obj
        raise InvalidImage("SIF file has no primary system partition")

    def pack(self) -> bytes:
        return HEADER.pack(
            self.launch.ljust(32, b"\x00"),
            self.magic,
            self.version,
            self.arch_code,
            self.uuid.bytes,
            self.created,
            self.modified,
            self.descriptors_free,
            self.descriptors_total,
            self.descriptors_offset,
            self.descriptors_size,
            self.data_offset,
            self.data_size,
        )


def build_header(objects: Sequence[SifObject], *, arch_code: bytes, image_uuid: uuid.UUID, epoch: int) -> SifHeader:
    """The global header describing ``objects`` (written from :data:`DATA_OFFSET` on)."""
    end = max((o.offset + o.size for o in objects), default=DATA_OFFSET)
    return SifHeader(
        launch=LAUNCH_SCRIPT,
        magic=MAGIC,
        version=VERSION,
        arch_code=arch_code,
        uuid=image_uuid,
        created=epoch,
        modified=epoch,
        descriptors_free=DESCRIPTOR_CAPACITY - len(objects),
        descriptors_total=DESCRIPTOR_CAPACITY,
        descriptors_offset=DESCRIPTORS_OFFSET,
        descriptors_size=DESCRIPTORS_SIZE,
        data_offset=DATA_OFFSET,
        data_size=end - DATA_OFFSET,
        objects=tuple(objects),
    )


def pack_descriptors(objects: Sequence[SifObject]) -> bytes:
    """All 48 descriptor slots: the used ones first, the rest zero."""
    if len(objects) > DESCRIPTOR_CAPACITY:
        raise ValueError(f"a SIF file holds at most {DESCRIPTOR_CAPACITY} objects")
    body = b"".join(o.pack() for o in objects)
    return body.ljust(DESCRIPTORS_SIZE, b"\x00")


def _used_objects(table: bytes, count: int) -> list[SifObject]:
    """The used descriptors of a descriptor table."""
    objects = []
    for i in range(count):
        (dtype, used, oid, group, link, offset, size, padded, ctime, mtime, _uid, _gid, name, extra) = (
            DESCRIPTOR.unpack_from(table, i * DESCRIPTOR.size)
        )
        if not used:
            continue
        objects.append(
            SifObject(
                data_type=dtype,
                id=oid,
                offset=offset,
                size=size,
                size_with_padding=padded,
                created=ctime,
                modified=mtime,
                group=group & ~GROUP_MASK,
                link=link,
                name=name.rstrip(b"\x00").decode("utf-8", "replace"),
                extra=bytes(extra),
            )
        )
    return objects


def read_sif_header(path: Path) -> SifHeader:
    """The header and used descriptors of the SIF file at ``path``.

    Raises NotFound when there is no such file and InputError when it is not a SIF
    file (short, wrong magic or version, descriptor table outside the file).
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError as e:
        raise NotFound(f"SIF file {path} does not exist") from e
    with f:
        head = f.read(HEADER.size)
        if len(head) < HEADER.size:
            raise InputError(f"{path}: not a SIF file (only {len(head)} bytes)")
        fields = HEADER.unpack(head)
        launch, magic, version, arch_code, raw_uuid = fields[:5]
        (created, modified, dfree, dtotal, doffset, dsize, data_offset, data_size) = fields[5:]
        if magic != MAGIC:
            raise InputError(f"{path}: not a SIF file (magic {magic!r})")
        if version != VERSION:
            raise InputError(f"{path}: unsupported SIF version {version!r}")
        if dtotal < 0 or dsize != dtotal * DESCRIPTOR.size:
            raise InputError(f"{path}: SIF header has {dtotal} descriptors in {dsize} bytes")
        f.seek(doffset)
        table = f.read(dsize)
        if len(table) != dsize:
            raise InputError(f"{path}: SIF descriptor table is cut short")
    objects = _used_objects(table, dtotal)
    return SifHeader(
        launch=launch.rstrip(b"\x00"),
        magic=magic,
        version=version,
        arch_code=arch_code,
        uuid=uuid.UUID(bytes=raw_uuid),
        created=created,
        modified=modified,
        descriptors_free=dfree,
        descriptors_total=dtotal,
        descriptors_offset=doffset,
        descriptors_size=dsize,
        data_offset=data_offset,
        data_size=data_size,
        objects=tuple(objects),
    )


def read_object(path: Path, obj: SifObject) -> bytes:
    """The bytes of a (small) data object, e.g. the definition file or JSON labels."""
    with open(path, "rb") as f:
        f.seek(obj.offset)
        data = f.read(obj.size)
    if len(data) != obj.size:
        raise InputError(f"{path}: SIF object {obj.id} is cut short")
    return data
