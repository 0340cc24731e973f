"""The GPU architectures a layer's compiled code is for, read from its files.

Every ELF file of the layer, and every ELF file inside a wheel (``*.whl``) of the layer,
is spooled to a bounded temporary file (pyelftools needs to seek) and its fat binary and
offload bundle sections are read (:mod:`assembler.deps.gpucode`): only their headers, so a
gigabyte of kernels costs one pass over the layer and little memory. The result is memoised
in the cache by the layer's diff_id: a layer is read once. A layer the export agent writes
is not read at all: :class:`CodeAsWritten`, one of its observers, reads each ELF file as it
goes by (from the container's file, headers and sections only) and records the memo.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

from assembler.archive.layer_reader import LayerSource, tar_members
from assembler.cache import Cache
from assembler.deps.elf import ELF_MAGIC, find_sections
from assembler.deps.gpucode import CUDA_SECTIONS, HIP_SECTIONS, GpuCode, code_of

_MEMO = "gpucode-v2-"  # v2: PTX ISA versions and cubins' CUDA releases too
_SPOOL_IN_MEMORY = 4 << 20
_ZIP_MAGIC = b"PK\x03\x04"
_SECTIONS = (*CUDA_SECTIONS, *HIP_SECTIONS)


def _elf_code(data: IO[bytes], head: bytes, workdir: Path) -> GpuCode:
    with tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=str(workdir)) as spool:
        spool.write(head)
        shutil.copyfileobj(data, spool, 1 << 20)
        spool.seek(0)
        return code_of(spool, find_sections(spool, _SECTIONS))


def _wheel_code(data: IO[bytes], head: bytes, workdir: Path) -> GpuCode:
    found = GpuCode()
    with tempfile.TemporaryFile(dir=str(workdir)) as spool:
        spool.write(head)
        shutil.copyfileobj(data, spool, 1 << 20)
        spool.seek(0)
        try:
            wheel = zipfile.ZipFile(spool)
        except (zipfile.BadZipFile, OSError):
            return found  # not a wheel after all: nothing to read in it
        with wheel:
            for info in wheel.infolist():
                if info.is_dir():
                    continue
                with wheel.open(info) as member:
                    first = member.read(len(ELF_MAGIC))
                    if first == ELF_MAGIC:
                        found |= _elf_code(member, first, workdir)
    return found


def file_code(data: IO[bytes], name: str, workdir: Path) -> GpuCode:
    """The architectures of one file's device code (an ELF file, or a wheel of them)."""
    head = data.read(len(ELF_MAGIC))
    if head == ELF_MAGIC:
        return _elf_code(data, head, workdir)
    if head == _ZIP_MAGIC and name.endswith(".whl"):
        return _wheel_code(data, head, workdir)
    return GpuCode()


class CodeAsWritten:
    """The device code of each ELF file of a layer as the layer is written (a layer
    observer, :class:`~assembler.archive.headers.ElfReader`), kept under the memo
    :func:`layer_code` reads: the labels then do not read the layer back. A wheel in the
    layer is looked into by :func:`layer_code` only, which then reads the blob."""

    reads: Final = "elf"

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.workdir = cache.tmp  # where a file not read from the host is spooled

    def facts(self, stream: IO[bytes]) -> dict[str, Any]:
        code = code_of(stream, find_sections(stream, _SECTIONS))
        return _to_memo(code)

    def reads_inside(self, path: str, head: bytes) -> bool:
        return head == _ZIP_MAGIC and path.endswith(".whl")

    def remember(self, found: Mapping[str, Any], diff_id: str) -> None:
        """What was read of every ELF file as the layer ``diff_id`` was written: what reading
        the whole layer would record. A memo already there is left as it is."""
        key = _MEMO + diff_id.split(":", 1)[-1]
        if self.cache.memo(key) is None:
            code = GpuCode()
            for facts in found.values():
                code |= _from_memo(facts)
            self.cache.put_memo(key, _to_memo(code))


_FIELDS = ("cuda", "rocm", "ptx", "toolkits")


def _to_memo(code: GpuCode) -> dict[str, Any]:
    """``code`` as its memo holds it (:func:`_from_memo` reads it back)."""
    return {name: sorted(getattr(code, name)) for name in _FIELDS}


def _from_memo(data: Mapping[str, Any]) -> GpuCode:
    values = [data[name] for name in _FIELDS]
    if not all(isinstance(v, list) for v in values):
        raise TypeError(f"one of {_FIELDS} is not a list")
    return GpuCode(*(frozenset(map(str, v)) for v in values))


def layer_code(
    diff_id: str,
    opener: Callable[[], AbstractContextManager[BinaryIO]],
    *,
    what: str,
    cache: Cache | None,
    workdir: Path,
    record: bool = True,
) -> GpuCode:
    """The architectures of the device code in the layer ``opener`` opens (its blob,
    compressed or not); memoised under ``diff_id`` (looked up only, unless ``record``: a
    plan writes nothing). InvalidImage for a damaged layer."""
    key = _MEMO + diff_id.split(":", 1)[-1]
    if cache is not None:
        hit = cache.memo_as(key, _from_memo)
        if hit is not None:
            return hit
    found = GpuCode()
    for entry, open_data in tar_members(LayerSource(what, opener)):
        if open_data is not None:
            with open_data() as data:
                found |= file_code(data, entry.path, workdir)
    if cache is not None and record:
        cache.put_memo(key, _to_memo(found))
    return found
