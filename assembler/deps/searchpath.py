"""Where glibc's and musl's loaders look for a library in an image.

The folders ``/etc/ld.so.conf`` names and the entries of ``/etc/ld.so.cache``, musl's
``/etc/ld-musl-ARCH.path`` files, ``LD_LIBRARY_PATH`` from the image's ``Env``, a file's
RPATH/RUNPATH with ``$ORIGIN``, ``$LIB`` and ``$PLATFORM`` expanded, and the trusted folders
ld.so searches last. :mod:`assembler.deps.check` walks them in the loader's order.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assembler.deps import ldcache
from assembler.deps.elf import ElfFacts
from assembler.deps.files import FactReader, ImageFiles
from assembler.errors import InvalidImage
from assembler.oci.image import Image

# OCI architecture -> ELF machine and the Debian multiarch triplet of its default folders.
MACHINES = {
    "amd64": "EM_X86_64",
    "arm64": "EM_AARCH64",
    "386": "EM_386",
    "ppc64le": "EM_PPC64",
    "s390x": "EM_S390",
    "riscv64": "EM_RISCV",
    "arm": "EM_ARM",
}
_TRIPLETS = {
    "EM_X86_64": "x86_64-linux-gnu",
    "EM_AARCH64": "aarch64-linux-gnu",
    "EM_386": "i386-linux-gnu",
    "EM_PPC64": "powerpc64le-linux-gnu",
    "EM_S390": "s390x-linux-gnu",
    "EM_RISCV": "riscv64-linux-gnu",
    "EM_ARM": "arm-linux-gnueabihf",
}
_PLATFORMS = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_386": "i686", "EM_PPC64": "ppc64le"}
LDCONF = "etc/ld.so.conf"
LDCACHE = "etc/ld.so.cache"
_MUSL_LOADER = re.compile(r"(usr/)?lib/ld-musl-[^/]+\.so\.1")


@dataclass(frozen=True)
class SearchPaths:
    """Where the image's loaders look, besides a file's own RPATH/RUNPATH and LD_LIBRARY_PATH."""

    conf_dirs: list[tuple[str, str]]  # the folders ld.so.conf names, each with the file naming it
    cache: dict[str, list[str]] | None  # ld.so.cache's entries; None: the image has none
    musl: dict[str, list[str]]  # musl's loaders in /lib (ld-musl-x86_64.so.1) -> their search path


def read_libraries(reader: FactReader, files: ImageFiles, named: Mapping[str, list[str]]) -> SearchPaths:
    """Reads the facts of every library a needed name may resolve to, the ld.so.conf and
    ld-musl-*.path files and ld.so.cache (one pass per layer holding any)."""
    wanted: dict[int, set[str]] = {}
    texts: dict[int, set[str]] = {}
    for paths in named.values():
        for path in paths:
            real = files.realpath(path)
            loc = files.data_of(real) if real is not None else None
            if loc is not None and loc not in reader.facts:
                wanted.setdefault(loc[0], set()).add(loc[1])
    real = files.realpath(LDCACHE)
    cache_at = files.data_of(real) if real is not None else None
    confs = [
        p
        for p in files.records
        if p == LDCONF or p.startswith("etc/ld.so.conf.d/") or (p.startswith("etc/ld-musl-") and p.endswith(".path"))
    ]
    located: dict[str, tuple[int, str]] = {}
    for path in confs:
        real = files.realpath(path)
        loc = files.data_of(real) if real is not None else None
        if loc is not None:
            located[path] = loc
            texts.setdefault(loc[0], set()).add(loc[1])
    for index in sorted(set(wanted) | set(texts) | ({cache_at[0]} if cache_at else set())):
        raw = frozenset([cache_at[1]] if cache_at is not None and cache_at[0] == index else [])
        reader.read(index, wanted.get(index, set()), frozenset(texts.get(index, set())), raw)
    text = {path: reader.texts.get(loc, "") for path, loc in located.items()}
    cache = None
    if cache_at is not None:
        try:
            cache = ldcache.parse(reader.raw.get(cache_at, b""))
        except InvalidImage:
            cache = {}  # ld.so ignores a cache it cannot read
    loaders = {posixpath.basename(p) for p in files.records if _MUSL_LOADER.fullmatch(p)}
    musl = {loader: ldcache.musl_path(text.get(f"etc/{loader[:-5]}.path")) for loader in sorted(loaders)}
    return SearchPaths(ldcache.conf_dirs(LDCONF, text), cache, musl)


def ld_library_path(image: Image) -> list[str]:
    for item in image.container_config.get("Env") or []:
        key, _, value = str(item).partition("=")
        if key == "LD_LIBRARY_PATH":
            # An empty entry is the working directory: not a place an image can promise.
            return [d for d in value.replace(";", ":").split(":") if d.startswith("/")]
    return []


def default_dirs(facts: ElfFacts) -> list[str]:
    """The folders ld.so searches last (Debian's multiarch ones, then Red Hat's lib64, then /lib, /usr/lib)."""
    triplet = _TRIPLETS.get(facts.machine)
    multiarch = [f"/lib/{triplet}", f"/usr/lib/{triplet}"] if triplet else []
    lib64 = ["/lib64", "/usr/lib64"] if facts.elfclass == 64 else ["/lib32", "/usr/lib32"]
    return [*multiarch, *lib64, "/lib", "/usr/lib"]


def expand(entries: Sequence[str], origin: str, facts: ElfFacts, workdir: str) -> list[tuple[str, bool]]:
    """RPATH/RUNPATH entries with $ORIGIN, $LIB and $PLATFORM expanded, each with whether it
    was relative: those (an empty one is ".") are joined to ``workdir``, where the container starts."""
    triplet = _TRIPLETS.get(facts.machine, "")
    libs = ["lib64" if facts.elfclass == 64 else "lib", "lib", *([f"lib/{triplet}"] if triplet else [])]
    out: list[tuple[str, bool]] = []
    for entry in entries:
        text = entry.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", origin)
        text = text.replace("${PLATFORM}", "$PLATFORM").replace("$PLATFORM", _PLATFORMS.get(facts.machine, ""))
        variants = [text.replace("${LIB}", lib).replace("$LIB", lib) for lib in libs] if "LIB" in text else [text]
        out += [
            (v, False) if v.startswith("/") else (posixpath.normpath(posixpath.join(workdir, v or ".")), True)
            for v in variants
        ]
    return out
