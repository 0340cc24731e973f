"""What the dynamic loader needs to know about one ELF file, read with pyelftools.

Only the headers, the dynamic segment and the GNU version sections are read; the file
must be seekable (a layer member is spooled to a bounded temporary file first).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Final

from assembler.archive.headers import ELF_MAGIC as ELF_MAGIC  # a layer's writer tells ELF files by it too
from assembler.cache import Cache
from assembler.cache.memos import NO_ELF_FACTS, elf_facts_key

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

_VER_FLG_WEAK = 0x2  # a weak version need: ld.so only warns when it is missing


def _damaged() -> tuple[type[BaseException], ...]:
    """What a damaged or truncated file raises while it is parsed. pyelftools is imported
    only when an ELF file is read (a rebuild that remembers every fact reads none)."""
    from elftools.common.exceptions import ELFError
    from elftools.construct.core import ConstructError

    return (ELFError, ConstructError, struct.error, ValueError, IndexError, UnicodeDecodeError)


@dataclass(frozen=True)
class ElfFacts:
    """An ELF file as the dynamic loader sees it."""

    elfclass: int  # 32 | 64
    machine: str  # EM_X86_64...
    type: str  # ET_EXEC | ET_DYN | ET_REL...
    interp: str | None = None  # PT_INTERP: the program's dynamic loader
    soname: str | None = None
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()
    runpath: tuple[str, ...] = ()
    verneed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # library -> versions it must define
    verdef: tuple[str, ...] = ()  # the versions this file defines

    @property
    def loadable(self) -> bool:
        return self.type in ("ET_EXEC", "ET_DYN")

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.elfclass,
            "machine": self.machine,
            "type": self.type,
            "interp": self.interp,
            "soname": self.soname,
            "needed": list(self.needed),
            "rpath": list(self.rpath),
            "runpath": list(self.runpath),
            "verneed": {k: list(v) for k, v in self.verneed.items()},
            "verdef": list(self.verdef),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ElfFacts:
        """From :meth:`to_json`; KeyError/TypeError/ValueError for any other shape."""
        return cls(
            elfclass=int(data["class"]),
            machine=str(data["machine"]),
            type=str(data["type"]),
            interp=None if data["interp"] is None else str(data["interp"]),
            soname=None if data["soname"] is None else str(data["soname"]),
            needed=tuple(str(x) for x in data["needed"]),
            rpath=tuple(str(x) for x in data["rpath"]),
            runpath=tuple(str(x) for x in data["runpath"]),
            verneed={str(k): tuple(str(x) for x in v) for k, v in data["verneed"].items()},
            verdef=tuple(str(x) for x in data["verdef"]),
        )


def _string(tag: Any, name: str) -> str:
    # pyelftools sets the tag's string as an attribute named after it (needed, rpath...).
    return str(getattr(tag, name[3:].lower()))


def _dynamic(elf: ELFFile) -> dict[str, list[str]]:
    from elftools.elf.dynamic import DynamicSegment

    found: dict[str, list[str]] = {"DT_NEEDED": [], "DT_RPATH": [], "DT_RUNPATH": [], "DT_SONAME": []}
    # The segment, not the section: a loader reads segments, and some files have no section headers.
    for seg in elf.iter_segments():
        if not isinstance(seg, DynamicSegment) or seg["p_filesz"] == 0:
            continue
        for tag in seg.iter_tags():
            name = tag.entry.d_tag
            if name in ("DT_NEEDED", "DT_SONAME"):
                found[name].append(_string(tag, name))
            elif name in ("DT_RPATH", "DT_RUNPATH"):
                # Empty entries are kept: ld.so reads one as the working directory (CMake's
                # build-tree RUNPATH "/build/bin:" ends in one, and images rely on it).
                found[name] += _string(tag, name).split(":")
        break
    return found


def _versions(elf: ELFFile) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection

    need: dict[str, list[str]] = {}
    define: list[str] = []
    for section in elf.iter_sections():
        if isinstance(section, GNUVerNeedSection):
            for verneed, auxes in section.iter_versions():
                names = need.setdefault(str(verneed.name), [])
                names += [str(a.name) for a in auxes if not a["vna_flags"] & _VER_FLG_WEAK]
        elif isinstance(section, GNUVerDefSection):
            for _verdef, auxes in section.iter_versions():
                first = next(iter(auxes), None)
                if first is not None:
                    define.append(str(first.name))
    return {k: tuple(v) for k, v in need.items()}, tuple(define)


def read_facts(stream: IO[bytes]) -> ElfFacts | None:
    """The facts of the ELF file in ``stream`` (seekable); None when it is not one or
    cannot be parsed (a damaged or truncated file is no library ld.so would load)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import InterpSegment

    try:
        elf = ELFFile(stream)
        interp = next((s.get_interp_name() for s in elf.iter_segments() if isinstance(s, InterpSegment)), None)
        dyn = _dynamic(elf)
        verneed, verdef = _versions(elf)
        return ElfFacts(
            elfclass=int(elf.elfclass),
            machine=str(elf["e_machine"]),
            type=str(elf["e_type"]),
            interp=interp,
            soname=dyn["DT_SONAME"][0] if dyn["DT_SONAME"] else None,
            needed=tuple(dyn["DT_NEEDED"]),
            rpath=tuple(dyn["DT_RPATH"]),
            runpath=tuple(dyn["DT_RUNPATH"]),
            verneed=verneed,
            verdef=verdef,
        )
    except _damaged():
        return None


class FactsAsWritten:
    """The dependency check's reading of each ELF file of a layer as the layer is written
    (a layer observer, :class:`~assembler.archive.headers.ElfReader`): the facts a reader of
    the blob would memoise, kept under its memo (:func:`assembler.cache.memos.elf_facts_key`),
    a file that is not read from the host spooled in the cache's ``tmp``."""

    reads: Final = "elf"

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.workdir = cache.tmp  # where a file not read from the host is spooled

    def facts(self, stream: IO[bytes]) -> dict[str, Any] | None:
        found = read_facts(stream)
        return None if found is None else found.to_json()

    def reads_inside(self, path: str, head: bytes) -> bool:
        return False  # the check reads ELF files of the image's tree only

    def remember(self, found: Mapping[str, Any], diff_id: str) -> None:
        """Every ELF file's facts, read as the layer ``diff_id`` was written. A memo
        already there (the same layer written before) is left as it is."""
        key = elf_facts_key(diff_id)
        if self.cache.memo(key) is None:
            self.cache.put_memo(key, {**NO_ELF_FACTS, "files": dict(found)})


def find_sections(stream: IO[bytes], names: Collection[str]) -> list[tuple[str, int, int]]:
    """(name, file offset, size) of the sections of the ELF file in ``stream`` (seekable)
    named in ``names``; empty when it is not an ELF file or cannot be parsed. Nothing of
    the sections' data is read: a fat binary section can be a gigabyte (libtorch_cuda)."""
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(stream)
        return [
            (str(sec.name), int(sec["sh_offset"]), int(sec["sh_size"]))
            for sec in elf.iter_sections()
            if sec.name in names and sec["sh_type"] != "SHT_NOBITS"
        ]
    except _damaged():
        return []
