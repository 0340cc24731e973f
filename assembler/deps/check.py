"""Check that the ELF files of chosen layers can be loaded in the final image.

For each executable and shared object those layers add (for a build: its ``artifact:``
and ``copy:`` layers), as glibc's ld.so would:

- its loader (``PT_INTERP``) exists in the image;
- each ``DT_NEEDED`` resolves, searching DT_RPATH (when there is no DT_RUNPATH),
  ``LD_LIBRARY_PATH`` from the image's ``Env``, DT_RUNPATH (``$ORIGIN``, ``$LIB`` and
  ``$PLATFORM`` expanded), the image's ``/etc/ld.so.cache``, then the trusted folders
  (``/lib``, ``/usr/lib``, ``lib64`` and the multiarch ones); symlinks are followed inside
  the image; a library of another ELF class or machine is passed over, as ld.so does.
  The folders ``/etc/ld.so.conf`` names are not searched: ld.so knows their libraries only
  through the cache ``ldconfig`` writes, so a library found only there, not in the cache
  (a layer added it and ran no ``ldconfig``), is a miss saying so (under Docker on a GPU host
  the NVIDIA Container Toolkit's update-ldcache hook runs ldconfig at start and hides it;
  Apptainer, CPU-only runs and other runtimes do not). For a file whose loader
  is musl's (``/lib/ld-musl-ARCH.so.1``; for a shared object, in an image with that loader
  and no ld.so.cache), as musl does: ``LD_LIBRARY_PATH``, DT_RUNPATH (else DT_RPATH), then
  the folders of ``/etc/ld-musl-ARCH.path``, without it ``/lib:/usr/local/lib:/usr/lib``;
- each version it needs from a library (``GLIBC_2.38``, ``GLIBCXX_3.4.30``:
  ``.gnu.version_r``) is defined by the library found (``.gnu.version_d``).

GPU driver libraries are the host's: the NVIDIA container runtime mounts them into the
container, so an image must not need to ship them (:data:`HOST_LIBRARIES`).

A shared object (no ``PT_INTERP``) needing a library that is in the image but not on its
search path is a note, not a miss: it loads when the program loading it has loaded that
library first (a PyTorch extension needs ``libc10.so`` from torch's folder).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from assembler.cache import Cache
from assembler.cache.memos import SharedFacts, facts_key, remembered
from assembler.deps import ldcache
from assembler.deps.elf import ElfFacts
from assembler.deps.files import BlobOpener, FactReader, ImageFiles
from assembler.deps.searchpath import MACHINES, SearchPaths, default_dirs, expand, ld_library_path, read_libraries
from assembler.oci.image import Image

# The code a report is made by (its memo's key names it).
_CODE = ("deps/check.py", "deps/elf.py", "deps/files.py", "deps/ldcache.py", "deps/searchpath.py")

# The driver libraries the NVIDIA Container Toolkit mounts from the host: the lists
# utility_libs, compute_libs, video_libs, graphics_libs, graphics_libs_glvnd, ngx_libs and
# dxcore_libs (WSL) of libnvidia-container's src/nvc_info.c (NVIDIA/libnvidia-container).
# Its graphics_libs_compat (libGL.so, libEGL.so...) are left out: those are mounted only
# when the driver ships them instead of GLVND, so an image that needs them ships GLVND's.
HOST_LIBRARIES = (
    "libnvidia-ml.so",
    "libnvidia-cfg.so",
    "libnvidia-nscq.so",
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-opencl.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-allocator.so",
    "libnvidia-compiler.so",
    "libnvidia-pkcs11.so",
    "libnvidia-pkcs11-openssl3.so",
    "libnvidia-nvvm.so",
    "libnvidia-tileiras.so",
    "libvdpau_nvidia.so",
    "libnvidia-encode.so",
    "libnvidia-opticalflow.so",
    "libnvcuvid.so",
    "libnvidia-eglcore.so",
    "libnvidia-glcore.so",
    "libnvidia-tls.so",
    "libnvidia-glsi.so",
    "libnvidia-fbc.so",
    "libnvidia-ifr.so",
    "libnvidia-rtcore.so",
    "libnvoptix.so",
    "libGLX_nvidia.so",
    "libEGL_nvidia.so",
    "libGLESv2_nvidia.so",
    "libGLESv1_CM_nvidia.so",
    "libnvidia-glvkspirv.so",
    "libnvidia-cbl.so",
    "libnvidia-ngx.so",
    "libdxcore.so",
)


def host_provided(name: str) -> bool:
    """Whether ``name`` (``libcuda.so.1``) is a driver library the host provides."""
    return any(name == lib or name.startswith(lib + ".") for lib in HOST_LIBRARIES)


@dataclass(frozen=True)
class Miss:
    """Something an ELF file needs that the image does not have."""

    file: str  # /usr/bin/curl
    layer: int
    layer_what: str
    kind: str  # library | version | interpreter
    library: str  # libcurl.so.4, or the loader's path
    version: str = ""  # GLIBC_2.99 (kind version)
    provider: str = ""  # the library found, which lacks ``version``
    reason: str = ""  # why a library in the image is not found (kind library)

    def __str__(self) -> str:
        where = f"(layer {self.layer}: {self.layer_what})"
        if self.kind == "version":
            lacks = f"{self.provider} does not define it"
            return f"{self.file}: needs {self.version} from {self.library}, {lacks} {where}"
        if self.kind == "interpreter":
            return f"{self.file}: its loader {self.library} is not in the image {where}"
        if self.reason:
            return f"{self.file}: needs {self.library}, {self.reason} {where}"
        return f"{self.file}: needs {self.library}, not found in the image {where}"


@dataclass(frozen=True)
class Note:
    """A library that loads only under a condition: for a shared object, found in the image
    but not on its search path (``elsewhere``); for any file, found only through a relative
    RPATH/RUNPATH entry, that is from the image's working directory (``workdir``)."""

    file: str
    layer: int
    library: str
    elsewhere: tuple[str, ...]
    workdir: str = ""

    def __str__(self) -> str:
        if self.workdir:
            return (
                f"{self.file} (layer {self.layer}) finds {self.library} at {', '.join(self.elsewhere)} only "
                f"through a relative RPATH/RUNPATH entry: it loads when started in {self.workdir} (the image's "
                "working directory), not from another folder (Apptainer starts in the caller's)"
            )
        return (
            f"{self.file} (layer {self.layer}) needs {self.library}, not on its search path but at "
            f"{', '.join(self.elsewhere)}: it loads only if the program loaded that one first"
        )


@dataclass(frozen=True)
class Report:
    layers: tuple[int, ...]  # the layers whose files were checked
    files: int  # ELF files checked
    misses: tuple[Miss, ...]
    notes: tuple[Note, ...]
    host: tuple[str, ...]  # driver libraries needed, left to the host

    @property
    def ok(self) -> bool:
        return not self.misses

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "layers": list(self.layers),
            "files": self.files,
            "misses": [asdict(m) for m in self.misses],
            "notes": [{**asdict(n), "elsewhere": list(n.elsewhere)} for n in self.notes],
            "host": list(self.host),
        }


def check_image(
    image: Image,
    open_blob: BlobOpener,
    *,
    layers: Sequence[int],
    names: Sequence[str],
    cache: Cache | None,
    workdir: Path,
    shared: SharedFacts | None = None,
) -> Report:
    """Check the ELF files ``layers`` (indexes into ``image.layers``; ``names``: what each
    layer of the image is) add, in the final image. Reads layers' headers, the files of
    ``layers`` and the libraries they resolve to, never the whole image's data; remembered
    (in ``cache``, and ``shared`` beyond it) by the image's config (its layers, env and
    working folder), ``layers`` and ``names``."""
    read_from = {"config": image.config_descriptor.digest, "layers": sorted(set(layers)), "names": list(names)}
    key = facts_key("deps-report", read_from, _CODE)
    return remembered(
        cache,
        key,
        lambda: _check_image(image, open_blob, layers=layers, names=names, cache=cache, workdir=workdir),
        read=_report_of,
        write=Report.to_json,
        shared=shared,
    )


def _report_of(data: Mapping[str, Any]) -> Report:
    misses = tuple(Miss(**m) for m in data["misses"])
    notes = tuple(Note(**{**n, "elsewhere": tuple(n["elsewhere"])}) for n in data["notes"])
    return Report(tuple(data["layers"]), int(data["files"]), misses, notes, tuple(data["host"]))


def _check_image(
    image: Image,
    open_blob: BlobOpener,
    *,
    layers: Sequence[int],
    names: Sequence[str],
    cache: Cache | None,
    workdir: Path,
) -> Report:
    reader = FactReader(image, open_blob, cache=cache, workdir=workdir)
    files = ImageFiles(len(image.layers), reader.entries)
    checked = sorted(set(layers))
    own: dict[int, list[str]] = {i: [] for i in checked}
    for path, rec in files.records.items():
        if rec.layer in own and rec.kind == "file":
            own[rec.layer].append(path)
    machine = MACHINES.get(image.platform.architecture)
    objects: list[tuple[str, int, ElfFacts]] = []
    for index in checked:
        if own[index]:
            reader.read(index, None)
        for path in sorted(own[index]):
            facts = reader.facts.get((index, path))
            if facts is not None and facts.loadable and (machine is None or facts.machine == machine):
                objects.append((path, index, facts))
    named = files.named({n for _, _, f in objects for n in f.needed if "/" not in n and not host_provided(n)})
    paths = read_libraries(reader, files, named)
    env = ld_library_path(image)
    start = str(image.container_config.get("WorkingDir") or "/")
    checker = _Checker(files, reader, named, [*env], paths, names, start)
    for path, index, facts in objects:
        checker.check(path, index, facts)
    return Report(
        tuple(checked), len(objects), tuple(checker.misses), tuple(checker.notes), tuple(sorted(checker.host))
    )


class _Checker:
    def __init__(
        self,
        files: ImageFiles,
        reader: FactReader,
        named: Mapping[str, list[str]],
        env: list[str],
        paths: SearchPaths,
        names: Sequence[str],
        workdir: str,
    ) -> None:
        self.workdir = workdir
        self.files = files
        self.reader = reader
        self.named = named
        self.env = env
        self.conf_dirs = paths.conf_dirs
        self.cache = paths.cache
        self.musl = paths.musl
        self.names = names
        self.misses: list[Miss] = []
        self.notes: list[Note] = []
        self.host: set[str] = set()

    def _miss(self, path: str, index: int, kind: str, library: str, **extra: str) -> None:
        what = self.names[index] if index < len(self.names) else ""
        self.misses.append(Miss("/" + path, index, what, kind, library, **extra))

    def check(self, path: str, index: int, facts: ElfFacts) -> None:
        if facts.interp is not None and self._found(facts.interp.lstrip("/")) is None:
            self._miss(path, index, "interpreter", facts.interp)
        origin = "/" + posixpath.dirname(path)
        musl = self._musl_path(facts)
        if musl is not None:
            own = expand(facts.runpath or facts.rpath, origin, facts, self.workdir)
            dirs, trusted = [*[(d, False) for d in self.env], *own, *[(d, False) for d in musl]], []
        else:
            dirs = [
                *expand(facts.rpath if not facts.runpath else (), origin, facts, self.workdir),
                *[(d, False) for d in self.env],
                *expand(facts.runpath, origin, facts, self.workdir),
            ]
            trusted = [(d, False) for d in default_dirs(facts)]
        for name in facts.needed:
            if host_provided(name):
                self.host.add(name)
                continue
            found = self._resolve(name, dirs, facts)
            if found is None and musl is None:
                found = self._cached(name, facts) or self._resolve(name, trusted, facts)
            if found is not None and found[2]:
                # Found only through a relative entry (CMake's build-tree RUNPATH ends in an empty
                # one): it loads when the program starts in the working directory.
                self.notes.append(Note("/" + path, index, name, ("/" + found[0],), self.workdir))
            if found is None:
                self._not_found(path, index, facts, name, glibc=musl is None)
                continue
            provider, lib, _ = found
            for version in facts.verneed.get(name, ()):
                if lib is not None and lib.verdef and version not in lib.verdef:
                    self._miss(path, index, "version", name, version=version, provider="/" + provider)

    def _musl_path(self, facts: ElfFacts) -> list[str] | None:
        """musl's search path for a file (None: glibc's loader loads it)."""
        loader = posixpath.basename(facts.interp or "")
        if loader.startswith("ld-musl-"):
            return self.musl.get(loader, ldcache.musl_path(None))
        if facts.interp is None and self.cache is None and len(self.musl) == 1:
            return next(iter(self.musl.values()))  # a shared object in a musl image
        return None

    def _not_found(self, path: str, index: int, facts: ElfFacts, name: str, *, glibc: bool) -> None:
        elsewhere = tuple(sorted("/" + p for p in self.named.get(name, [])))
        reason = self._unlisted(name, facts) if glibc else None
        if reason is not None:
            self._miss(path, index, "library", name, reason=reason)
        elif facts.interp is None and elsewhere:
            self.notes.append(Note("/" + path, index, name, elsewhere))
        else:
            self._miss(path, index, "library", name)

    def _unlisted(self, name: str, facts: ElfFacts) -> str | None:
        """Why ``name``, in a folder ld.so.conf names, is not found: the classic "run ldconfig
        after make install" (ld.so reads no ld.so.conf; ldconfig also makes the soname link)."""
        where = "not in /etc/ld.so.cache" if self.cache is not None else "the image has no /etc/ld.so.cache"
        records = self.files.records
        for folder, conf in self.conf_dirs:
            # A folder only implied by its files' paths has no record to resolve.
            real = self.files.realpath(folder.lstrip("/")) or folder.strip("/")
            prefix, link = f"{real}/" if real else "", ""
            file: str | None = prefix + name
            if self._resolve(name, [(folder, False)], facts) is None:  # libfoo.so.1.2.3 without libfoo.so.1
                file = next(
                    (
                        p
                        for p in sorted(records)
                        if p.startswith(f"{prefix}{name}.") and "/" not in p[len(prefix) :] and records[p].kind != "dir"
                    ),
                    None,
                )
                link = f" and there is no {name} link"
            if file is not None and file in records:
                return (
                    f"in {folder} (listed in {conf}) but {where}{link}: the layer that adds /{file} "
                    f"(layer {records[file].layer}) should run ldconfig"
                )
        return None

    def _cached(self, name: str, facts: ElfFacts) -> tuple[str, ElfFacts | None, bool] | None:
        """The library the image's ld.so.cache lists for ``name``; entries whose file a later
        layer deleted (or replaced by one of another ELF class) are passed over."""
        for path in (self.cache or {}).get(name, []):
            found = self._resolve(posixpath.basename(path), [(posixpath.dirname(path), False)], facts)
            if found is not None:
                return found
        return None

    def _found(self, path: str) -> tuple[int, str] | None:
        real = self.files.realpath(path)
        return self.files.data_of(real) if real is not None else None

    def _resolve(
        self, name: str, dirs: Sequence[tuple[str, bool]], facts: ElfFacts
    ) -> tuple[str, ElfFacts | None, bool] | None:
        """The library ld.so loads for ``name``: its path, facts and whether a relative entry found it."""
        if "/" in name:  # a path: used as it is (relative ones from the working directory: the root here)
            loc = self._found(name.lstrip("/"))
            return (name, self.reader.facts.get(loc), False) if loc is not None else None
        for folder, relative in dict.fromkeys(dirs):
            real = self.files.realpath(f"{folder}/{name}")
            loc = self.files.data_of(real) if real is not None else None
            lib = self.reader.facts.get(loc) if loc is not None else None
            if real is not None and lib is not None and (lib.elfclass, lib.machine) == (facts.elfclass, facts.machine):
                return real, lib, relative
        return None
