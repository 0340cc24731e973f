"""Putting a SIF file's front (global header, descriptor table, small data objects) before
the squashfs that tar2sqfs already wrote into the same file, in place.

``fallocate(FALLOC_FL_INSERT_RANGE)`` shifts the squashfs by a block-aligned amount
without copying (ext4, xfs); where the filesystem cannot, the squashfs is moved up inside
the same file (read and written once more, still no second copy on disk).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import uuid
from pathlib import Path

from assembler.errors import ToolError
from assembler.transports.hpc.sif_format import (
    DATA_PARTITION,
    FS_SQUASHFS,
    PART_PRIMSYS,
    PARTITION_ALIGNMENT,
    SifObject,
    build_header,
    pack_descriptors,
    partition_extra,
)

log = logging.getLogger(__name__)

_FALLOC_FL_INSERT_RANGE = 0x20
_SHIFT_CHUNK = 8 << 20


def put_front(
    tmp: Path,
    objects: list[SifObject],
    datas: list[bytes],
    part_offset: int,
    *,
    arch_code: bytes,
    sif_uuid: uuid.UUID,
    epoch: int,
) -> int:
    """Move the squashfs in ``tmp`` to ``part_offset`` and write the header, the descriptor
    table and the small objects in front of it; the squashfs size."""
    with open(tmp, "r+b") as f:
        squashfs_size = os.fstat(f.fileno()).st_size
        if os.pread(f.fileno(), 4, 0) != b"hsqs":
            raise ToolError(f"tar2sqfs wrote {tmp}, but it is not a squashfs image", argv=["tar2sqfs"])
        prev_end = objects[-1].offset + objects[-1].size
        partition = SifObject(
            DATA_PARTITION,
            len(objects) + 1,
            part_offset,
            squashfs_size,
            part_offset - prev_end + squashfs_size,
            epoch,
            epoch,
            extra=partition_extra(fs_type=FS_SQUASHFS, part_type=PART_PRIMSYS, arch=arch_code),
        )
        objects = [*objects, partition]
        header = build_header(objects, arch_code=arch_code, image_uuid=sif_uuid, epoch=epoch)
        _make_room(f.fileno(), squashfs_size, part_offset, tmp)
        front = bytearray(part_offset)
        front[: len(header.pack())] = header.pack()
        table = pack_descriptors(objects)
        front[header.descriptors_offset : header.descriptors_offset + len(table)] = table
        for obj, data in zip(objects, datas, strict=False):
            front[obj.offset : obj.offset + obj.size] = data
        _pwrite_all(f.fileno(), bytes(front), 0)
    return squashfs_size


def _insert_range(fd: int, length: int) -> bool:
    """Shift the whole file up by ``length`` bytes in place; False where unsupported."""
    libc = ctypes.CDLL(None, use_errno=True)
    fallocate = getattr(libc, "fallocate64", None) or libc.fallocate
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    if fallocate(fd, _FALLOC_FL_INSERT_RANGE, 0, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(err, f"fallocate(INSERT_RANGE): {os.strerror(err)}")


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _shift_in_place(fd: int, size: int, length: int) -> None:
    """Move ``size`` bytes at 0 up to ``length`` inside the same file, from the end down
    (a write never lands on bytes not yet moved), then zero the front."""
    os.ftruncate(fd, size + length)
    pos = size
    while pos > 0:
        n = min(_SHIFT_CHUNK, pos)
        pos -= n
        data = os.pread(fd, n, pos)
        if len(data) != n:
            raise OSError(errno.EIO, "short read while moving the squashfs")
        _pwrite_all(fd, data, pos + length)
    zeros = bytes(min(_SHIFT_CHUNK, length))
    for start in range(0, length, len(zeros)):
        _pwrite_all(fd, zeros[: min(len(zeros), length - start)], start)


def _make_room(fd: int, size: int, length: int, path: Path) -> None:
    """Put ``length`` zero bytes in front of the ``size`` bytes of the file, in place."""
    block = os.fstatvfs(fd).f_bsize or PARTITION_ALIGNMENT
    if length % block == 0 and _insert_range(fd, length):
        log.debug("%s: inserted %d bytes in front of the squashfs (FALLOC_FL_INSERT_RANGE)", path, length)
        return
    log.warning(
        "%s: the filesystem cannot insert a range (FALLOC_FL_INSERT_RANGE); moving the %d-byte squashfs "
        "inside the file instead (slower; no extra disk space)",
        path,
        size,
    )
    _shift_in_place(fd, size, length)
