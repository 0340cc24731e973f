"""Which GPU architectures the device code embedded in an ELF file is for.

Read from the bytes, not from what a build was asked for: a flag such as llama.cpp's
``CUDA_DOCKER_ARCH=default`` or a merged list of several steps says nothing exact, the
code objects do. Two containers are understood:

**CUDA fat binaries** (sections ``.nv_fatbin`` and ``__nv_relfatbin``, written by nvcc's
``fatbinary``). NVIDIA does not document the format; this is the layout cuobjdump reads
(cross-checked against cuobjdump 13.2 in tests/test_gpucode.py), all little-endian:

- a fat binary header of 16 bytes: ``u32 magic 0xBA55ED50, u16 version (1), u16 header
  size (16), u64 size of the entries that follow``; a section holds one or more fat
  binaries (one per translation unit, and one from the device link), each padded to 8 bytes;
- each entry starts with ``u16 kind (1 PTX, 2 ELF cubin), u16 version, u32 entry header
  size, u64 payload size``, then at offset 28 ``u32 arch`` (80 for sm_80) and at offset
  40 ``u64 flags``; the payload follows the entry header. Flags ``0x100000`` and
  ``0x200000`` mark the arch-specific (``sm_90a``) and family (``sm_100f``) variants.

A cubin is reported as ``sm_NN[a|f]``, PTX as ``compute_NN[a|f]`` (the virtual
architecture the driver JIT-compiles for newer GPUs), as nvcc's ``-gencode`` names them.
(cuobjdump 13.2 prints a family cubin without its ``f``; the header's flag has it.)

**Clang offload bundles** (section ``.hip_fatbin``, written by hipcc/clang for AMD GPUs;
LLVM's ``clang/lib/Driver/OffloadBundler.cpp``). An uncompressed bundle is the magic
``__CLANG_OFFLOAD_BUNDLE__`` (24 bytes), ``u64`` entry count, then per entry ``u64
offset, u64 size, u64 id length`` and the id, e.g. ``hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-``.
A compressed bundle (``clang-offload-bundler -compress``, hipcc ``--offload-compress``)
starts ``CCOB``, ``u16 version, u16 method (0 zlib, 1 zstd)``, then sizes (version 1:
``u32 uncompressed``; 2: ``u32 total, u32 uncompressed``; 3: ``u64 total, u64
uncompressed``) and a ``u64`` hash; the compressed data is an uncompressed bundle. Only its
first bytes (the entry table) are decompressed. The target id after ``--`` is reported
(``gfx90a``, ``gfx90a:xnack-``); the host entry is not a GPU.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from assembler.archive.compress import DECOMPRESS_ERRORS, decompressed

CUDA_SECTIONS = (".nv_fatbin", "__nv_relfatbin")
HIP_SECTIONS = (".hip_fatbin",)
FATBIN_MAGIC = 0xBA55ED50
BUNDLE_MAGIC = b"__CLANG_OFFLOAD_BUNDLE__"
COMPRESSED_MAGIC = b"CCOB"
_KIND_PTX, _KIND_CUBIN = 1, 2
_FLAG_ARCH_SPECIFIC, _FLAG_FAMILY = 0x100000, 0x200000
_FLAG_OLD_COMPRESSION, _FLAG_ZSTD = 0x2000, 0x8000  # how a payload is compressed: nvcc's own (before 12.8), zstd
_CUBIN_MAX = 64 << 20  # a cubin read for its release note is at most this big
_NOTE_CUINFO = 1000  # NVIDIA's note type in .note.nv.cuinfo: u16 2, u16 arch, u32 CUDA release * 10
_ENTRY_MIN = 48  # the fields read, up to and including flags
_MAX_ENTRIES = 4096  # a bundle's entry count beyond this is damage, not a GPU list
_TABLE_BYTES = 64 << 10  # what is read and decompressed of a compressed bundle: its entry table
_CHUNK = 1 << 20  # a section is searched for bundles this much at a time


@dataclass(frozen=True)
class GpuCode:
    """The device code found: its architectures (each a set of canonical names), the PTX
    ISA version of each PTX architecture (``compute_90=9.2``) and the CUDA releases that
    compiled the cubins (``13.2``, from a cubin's ``.note.nv.cuinfo``): what the driver
    needs (:mod:`assembler.deps.driver`)."""

    cuda: frozenset[str] = frozenset()
    rocm: frozenset[str] = frozenset()
    ptx: frozenset[str] = frozenset()
    toolkits: frozenset[str] = frozenset()

    def __or__(self, other: GpuCode) -> GpuCode:
        return GpuCode(
            self.cuda | other.cuda, self.rocm | other.rocm, self.ptx | other.ptx, self.toolkits | other.toolkits
        )

    def __bool__(self) -> bool:
        return bool(self.cuda or self.rocm)


class Region:
    """A section of a seekable file: bounded reads at offsets inside it."""

    def __init__(self, stream: IO[bytes], offset: int, size: int) -> None:
        self.stream = stream
        self.offset = offset
        self.size = size

    @classmethod
    def of(cls, data: bytes) -> Region:
        return cls(io.BytesIO(data), 0, len(data))

    def read(self, at: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``at`` (fewer at the section's end)."""
        n = max(0, min(n, self.size - at))
        if n == 0:
            return b""
        self.stream.seek(self.offset + at)
        return self.stream.read(n)

    def find(self, needles: tuple[bytes, ...]) -> Iterator[int]:
        """Offsets where one of ``needles`` starts, reading the section in chunks."""
        overlap = max(len(n) for n in needles) - 1
        base = 0
        while base < self.size:
            chunk = self.read(base, _CHUNK + overlap)
            hits = sorted({m.start() for n in needles for m in re.finditer(re.escape(n), chunk)})
            yield from (base + h for h in hits if h < _CHUNK)
            base += _CHUNK


def fatbin_archs(region: Region) -> set[str]:
    """``sm_NN`` (cubins) and ``compute_NN`` (PTX) of every fat binary in a section: only
    the headers are read, payloads are skipped."""
    return set(fatbin_code(region, toolkit=False).cuda)


def fatbin_code(region: Region, *, toolkit: bool = True) -> GpuCode:
    """The architectures of every fat binary in a section, each PTX's ISA version (its
    entry header: minor at 24, major at 26, as ``.version`` in the PTX text says) and, with
    ``toolkit``, the CUDA release of the section's first cubin that says it (one payload
    read: a section's cubins come from one toolkit)."""
    found: set[str] = set()
    ptx: set[str] = set()
    toolkits: set[str] = set()
    done = 0  # the end of the last fat binary read: a magic inside it is payload
    for pos in region.find((struct.pack("<I", FATBIN_MAGIC),)):
        if pos < done or pos % 8:
            continue  # fat binaries are 8-byte aligned
        _, _, header, size = struct.unpack("<IHHQ", region.read(pos, 16).ljust(16, b"\0"))
        if header < 16:
            continue
        done = min(pos + header + size, region.size)
        entry = pos + header
        while entry + _ENTRY_MIN <= done:
            head = region.read(entry, _ENTRY_MIN)
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", head)
            minor, major, arch = struct.unpack_from("<HHI", head, 24)
            (flags,) = struct.unpack_from("<Q", head, 40)
            if kind in (_KIND_PTX, _KIND_CUBIN) and arch:
                suffix = "a" if flags & _FLAG_ARCH_SPECIFIC else "f" if flags & _FLAG_FAMILY else ""
                name = f"{'sm' if kind == _KIND_CUBIN else 'compute'}_{arch}{suffix}"
                found.add(name)
                if kind == _KIND_PTX and major:
                    ptx.add(f"{name}={major}.{minor}")
                elif kind == _KIND_CUBIN and toolkit and not toolkits and entry_header >= 16:
                    toolkits.update(_cubin_toolkit(region, entry, entry_header, payload, flags))
            if entry_header < 16:
                break  # damaged: an entry cannot be shorter than its own first fields
            entry += entry_header + payload
    return GpuCode(frozenset(found), ptx=frozenset(ptx), toolkits=frozenset(toolkits))


def _cubin_toolkit(region: Region, entry: int, entry_header: int, payload: int, flags: int) -> set[str]:
    """The CUDA release that compiled the cubin of this entry (``13.2``), from its
    ``.note.nv.cuinfo`` note (``u16 2, u16 arch, u32 release * 10``); empty when the payload
    is compressed a way not read here, too big, or has no such note."""
    if payload > _CUBIN_MAX or flags & _FLAG_OLD_COMPRESSION:
        return set()
    data = region.read(entry + entry_header, payload)
    if flags & _FLAG_ZSTD:
        try:
            with decompressed(io.BytesIO(data), "zstd") as plain:
                data = plain.read(_CUBIN_MAX)
        except DECOMPRESS_ERRORS:
            return set()
    release = _cuinfo_release(data)
    return {f"{release // 10}.{release % 10}"} if release else set()


def _cuinfo_release(elf: bytes) -> int:
    """The release a cubin's NVIDIA ``cuinfo`` note (type 1000) names, 0 if none: its
    section headers read as ELF64 little-endian, each SHT_NOTE section's notes walked."""
    if len(elf) < 64 or not elf.startswith(b"\x7fELF\x02\x01"):
        return 0
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    for i in range(min(shnum, 4096)):
        at = shoff + i * shentsize
        if shentsize < 40 or at + 40 > len(elf):
            return 0
        (kind,) = struct.unpack_from("<I", elf, at + 4)
        offset, size = struct.unpack_from("<QQ", elf, at + 0x18)
        if kind == 7:  # SHT_NOTE
            release = _note_release(elf[offset : offset + size])
            if release:
                return release
    return 0


def _note_release(notes: bytes) -> int:
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, pos)
        name_at = pos + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        if kind == _NOTE_CUINFO and notes[name_at : name_at + namesz].rstrip(b"\0") == b"NVIDIA Corp" and descsz >= 8:
            return int(struct.unpack_from("<I", notes, desc_at + 4)[0])
        pos = desc_at + (descsz + 3) // 4 * 4
    return 0


def _bundle_ids(region: Region, pos: int) -> list[str]:
    """The entry ids of the uncompressed bundle at ``pos`` (empty when damaged)."""
    at = pos + len(BUNDLE_MAGIC)
    count_bytes = region.read(at, 8)
    if len(count_bytes) < 8:
        return []
    (count,) = struct.unpack("<Q", count_bytes)
    if count > _MAX_ENTRIES:
        return []
    ids: list[str] = []
    at += 8
    for _ in range(count):
        fields = region.read(at, 24)
        if len(fields) < 24:
            break
        _, _, length = struct.unpack("<QQQ", fields)
        name = region.read(at + 24, min(length, 4096))
        if len(name) < length:
            break
        ids.append(name.decode("ascii", "replace"))
        at += 24 + length
    return ids


def _decompressed_table(region: Region, pos: int) -> bytes:
    """The first bytes of the compressed bundle at ``pos`` decompressed (empty: unknown)."""
    head = region.read(pos, 8)
    if len(head) < 8:
        return b""
    version, method = struct.unpack_from("<HH", head, 4)
    header = {1: 4 + 4 + 4 + 8, 2: 4 + 4 + 4 + 4 + 8, 3: 4 + 4 + 8 + 8 + 8}.get(version)
    if header is None:
        return b""
    # The entry table is at the start of the bundle: a few compressed KiB hold it.
    body = region.read(pos + header, _TABLE_BYTES)
    try:
        if method == 0:
            return zlib.decompressobj().decompress(body, _TABLE_BYTES)
        if method == 1:
            with decompressed(io.BytesIO(body), "zstd") as plain:
                return plain.read(_TABLE_BYTES)
    except DECOMPRESS_ERRORS:
        return b""
    return b""


_TARGET_ID = re.compile(r"(?:hip|hipv4|openmp)-amdgcn-amd-amdhsa-[A-Za-z0-9_]*-(gfx[0-9a-f]+(?::[A-Za-z]+[+-])*)")


def _target(bundle_id: str) -> str | None:
    """``gfx90a:xnack-`` of ``hipv4-amdgcn-amd-amdhsa--gfx90a:xnack-``; None for the host."""
    match = _TARGET_ID.fullmatch(bundle_id)
    return match.group(1) if match else None


def bundle_archs(region: Region) -> set[str]:
    """The AMD GPU target ids of every offload bundle (compressed or not) in a section."""
    ids: list[str] = []
    for pos in region.find((BUNDLE_MAGIC, COMPRESSED_MAGIC)):
        if region.read(pos, len(BUNDLE_MAGIC)) == BUNDLE_MAGIC:
            ids += _bundle_ids(region, pos)
        else:
            table = _decompressed_table(region, pos)
            if table.startswith(BUNDLE_MAGIC):
                ids += _bundle_ids(Region.of(table), 0)
    return {t for t in map(_target, ids) if t is not None}


def code_of(stream: IO[bytes], sections: Iterable[tuple[str, int, int]]) -> GpuCode:
    """The device code in an ELF file's GPU sections, given as (name, offset, size)."""
    rocm: set[str] = set()
    code = GpuCode()
    for name, offset, size in sections:
        if name in CUDA_SECTIONS:
            code |= fatbin_code(Region(stream, offset, size))
        elif name in HIP_SECTIONS:
            rocm |= bundle_archs(Region(stream, offset, size))
    return code | GpuCode(rocm=frozenset(rocm))


def _cuda_order(name: str) -> tuple[int, int, str]:
    kind, _, arch = name.partition("_")
    digits = re.match(r"\d*", arch)
    number = digits.group(0) if digits else ""
    return (0 if kind == "sm" else 1, int(number or 0), arch[len(number) :])


def _rocm_order(name: str) -> tuple[int, int, int, str]:
    # gfxMMms: the last two characters are minor and stepping (hex), the rest the major.
    target, _, features = name.partition(":")
    proc = target.removeprefix("gfx")
    if len(proc) < 3 or not proc[:-2].isdigit():
        return (1 << 30, 0, 0, name)
    return (int(proc[:-2]), int(proc[-2], 16), int(proc[-1], 16), features)


def canonical(names: Iterable[str], *, rocm: bool = False) -> str:
    """One label value: cubins before PTX, each by architecture number (gfx targets by
    major, minor, stepping), separated by ``;``; the same set always gives the same text."""
    unique = set(names)
    if rocm:
        return ";".join(sorted(unique, key=lambda n: (_rocm_order(n), n)))
    return ";".join(sorted(unique, key=lambda n: (_cuda_order(n), n)))
