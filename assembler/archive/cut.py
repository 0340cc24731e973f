"""Layers cut for transfer: a big layer of packages (Python's, Debian's) split along their boundaries.

A pull fetches several layers at once (podman six, containerd three) and unpacks each as
soon as the ones below it are in, but one layer is one connection and one decompression:
a 3 GB layer of CUDA libraries serialises both, and a vLLM bump that changes one package of
it moves all of it. :func:`plan_cut` says how to cut one layer, from its entries and the
listings of the packages in it (Python's RECORDs, dpkg's lists); the pipeline writes each part
(:mod:`assembler.pipeline.layers.cutlayers`). The design, and why:

- **Units.** A package, as the layer's own package databases say:
  - Each Python distribution whose ``NAME-VERSION.dist-info/RECORD`` is in the layer
    claims the paths its RECORD names (relative to the folder holding the dist-info, as
    pip, uv and pypa/installer write them: ``../../../bin/x`` included), everything under
    its dist-info, and the ``__pycache__/*.pyc`` of a ``.py`` it claims (pip lists them,
    uv does not compile them).
  - Each Debian package whose ``var/lib/dpkg/info/PACKAGE[:ARCH].list`` is in the layer
    (an ``apt-get install`` in a runtime step: the CUDA or ROCm libraries of a runtime
    image are gigabytes of them) claims the paths its list names, and under the name
    ``/lib/x`` also ``usr/lib/x`` (Debian 12 and Ubuntu 22.04 merge ``/bin``, ``/sbin``
    and ``/lib*`` into ``/usr``, and the file is there), and its own
    ``var/lib/dpkg/info/PACKAGE[:ARCH].*`` files (its list, md5sums, maintainer scripts).
    Its unit's name is ``deb:PACKAGE``, apart from Python's.
  - A Debian package of Python code (``python3-pip``) ships its dist-info's RECORD, which
    names the files its dpkg list does: they are the Debian package's.
  - A path two packages claim (a namespace package's ``__init__.py``), a whiteout, and
    what no package names (a venv's own files; dpkg's ``status``, apt's lists and what a
    maintainer script made, such as ``ld.so.cache``) are the *rest*. A hard link goes with
    the file it links to.
- **A part depends only on its packages' files.** It holds their entries and the folders
  above them as this layer has them (no folder is made up: a mode the layer does not set
  would override the image's), in the layer's order. Entries are normalised by the build's
  epoch, so the part of ``nvidia-cublas-cu12`` is the same bytes whatever else the step
  installed: a neighbour that changes (vLLM 0.11.0 -> 0.11.1 moves torch and NCCL) leaves
  it, and its digest, as it was, and a node that has it pulls nothing of it.
- **The budget.** A unit of at least a quarter of the budget (files' bytes) is a part of
  its own: it is a download and a decompression big enough to be worth a connection. The
  smaller ones go to one of :data:`BUCKETS` buckets by the first byte of the sha256 of
  their name; a bucket over the budget is split the same way by the next byte, and so on.
  Where a package lands depends on its name alone, and a bucket's bytes on the packages in
  it: a change to a small package moves its bucket only. A number of buckets that grew
  with the layer would move every package when one crossed a threshold: the count is
  fixed, and the split is local to the bucket that needs it. A unit bigger than the budget
  stays whole: a package is never split.
- **Order.** What changes least comes first, so that a node re-applies the fewest layers
  after a bump: ``nvidia-*`` (the CUDA libraries, which move with the CUDA release), then
  torch and triton (with the torch release), then the GPU libraries of NVIDIA's and AMD's
  apt repositories (``cuda-*``, ``libcublas*``, ``rocm-*``, ``hip*``...), then the other
  packages of their own by name, the buckets, and the rest last. The rank is the name's
  alone: deterministic.
- **Not cut:** a layer within the budget, or with no package database in it. Small images
  keep their layers and digests.
"""

from __future__ import annotations

import csv
import hashlib
import io
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from assembler.archive.tar import OPAQUE_MARKER, TarEntry

BUCKETS = 4
DEB = "deb:"  # a Debian package's unit: deb:NAME (Python's canonical names hold no colon)
# The part of each of these names comes first (they change least), in this order.
_STABLE = (
    re.compile(r"nvidia-.*"),
    re.compile(r"(torch|triton|pytorch-triton)"),
    re.compile(
        DEB + r"(cuda-|libcu(blas|dnn|fft|file|rand|solver|sparse)|libnpp|libnv(jitlink|jpeg|rtc|infer)|libnccl"
        r"|rocm|roc(blas|fft|rand|solver|sparse|prim|thrust|alution|wmma)|hip|miopen|rccl).*"
    ),
)
_DIST_INFO = re.compile(r"(?:^|/)([^/]+)\.dist-info/RECORD$")
_DPKG_INFO = "var/lib/dpkg/info"
_DPKG_LIST = re.compile(r"var/lib/dpkg/info/([^/]+)\.list")
_MERGED = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32"})  # usrmerge: links into usr/
REST = "rest"


@dataclass(frozen=True)
class Part:
    """One layer of a cut: a label (a package's name, ``bucket N``, or ``rest``), the
    packages in it, and the paths of the source layer's entries it holds."""

    label: str
    names: tuple[str, ...]
    paths: tuple[str, ...]


def canonical_name(name: str) -> str:
    """A distribution name as PEP 503 normalises it (``Foo_Bar`` -> ``foo-bar``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_listing(path: str) -> bool:
    """Whether the file ``path`` says what a package owns: Python's ``*.dist-info/RECORD``,
    dpkg's ``var/lib/dpkg/info/*.list``."""
    return bool(_DIST_INFO.search(path) or _DPKG_LIST.fullmatch(path))


def listings(entries: Iterable[TarEntry]) -> list[str]:
    """The paths of the listings (:func:`is_listing`) among ``entries``."""
    return [e.path for e in entries if e.kind == "file" and is_listing(e.path)]


def _claims(record_path: str, text: str) -> tuple[str, set[str], str]:
    """The distribution a RECORD belongs to, the paths it names, and its dist-info folder."""
    dist_info = posixpath.dirname(record_path)
    folder = posixpath.dirname(dist_info)
    name = canonical_name(posixpath.basename(dist_info).split("-", 1)[0])
    paths: set[str] = set()
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0]:
            continue
        path = posixpath.normpath(posixpath.join(folder, row[0]))
        if not path.startswith("../") and path != "..":
            paths.add(path)
    return name, paths, dist_info


def _dpkg_claims(package_file: str, text: str) -> tuple[str, set[str]]:
    """The unit of the Debian package whose list is ``info/PACKAGE_FILE.list``, and the
    paths the list names (absolute, one a line; those under a merged ``/lib`` also under
    ``usr/``)."""
    name = DEB + package_file.split(":", 1)[0]
    paths: set[str] = set()
    for line in text.splitlines():
        path = posixpath.normpath(line.strip("/") or ".")
        if path in (".", "..") or path.startswith("../"):
            continue
        paths.add(path)
        if path.split("/", 1)[0] in _MERGED:
            paths.add("usr/" + path)
    return name, paths


def owners(entries: Sequence[TarEntry], texts: Mapping[str, str]) -> dict[str, str]:
    """The unit of each entry that belongs to exactly one package (path -> name).

    ``texts``: the text of each listing (RECORD or dpkg list; path -> text). Entries left
    out are the rest's.
    """
    claimed: dict[str, set[str]] = {}
    folders: dict[str, str] = {}  # dist-info folder -> its distribution
    debs: dict[str, str] = {}  # PACKAGE[:ARCH] of a dpkg list -> its unit
    for path, text in texts.items():
        if (listed := _DPKG_LIST.fullmatch(path)) is not None:
            name, paths = _dpkg_claims(listed.group(1), text)
            debs[listed.group(1)] = name
        else:
            name, paths, dist_info = _claims(path, text)
            folders[dist_info] = name
        for p in paths:
            claimed.setdefault(p, set()).add(name)
    out: dict[str, str] = {}
    for entry in entries:
        if entry.kind == "dir" or posixpath.basename(entry.path).startswith(".wh."):
            continue
        names = (
            claimed.get(entry.path)
            or _under_dist_info(entry.path, folders)
            or _dpkg_info_owner(entry.path, debs)
            or _pyc_owner(entry.path, claimed)
        )
        if names is not None and (unit := _single(names)) is not None:
            out[entry.path] = unit
    for entry in entries:  # a hard link goes with its file (which the layer writes before it)
        if entry.kind == "hardlink":
            target = out.get(entry.linkname)
            if target is None:
                out.pop(entry.path, None)
            else:
                out[entry.path] = target
    return out


def _single(names: set[str]) -> str | None:
    """The one package of a path, or the one Debian package among its claimants: a Debian
    package of Python code (python3-pip) ships its dist-info's RECORD, which names the same
    files its dpkg list does, and dpkg is what installed them. None: two packages."""
    if len(names) == 1:
        return next(iter(names))
    debs = [name for name in names if name.startswith(DEB)]
    return debs[0] if len(debs) == 1 else None


def _under_dist_info(path: str, folders: Mapping[str, str]) -> set[str] | None:
    parent = posixpath.dirname(path)
    while parent:
        if parent in folders:
            return {folders[parent]}
        if parent.endswith(".dist-info"):
            return None
        parent = posixpath.dirname(parent)
    return None


def _dpkg_info_owner(path: str, debs: Mapping[str, str]) -> set[str] | None:
    """The package of ``var/lib/dpkg/info/PACKAGE[:ARCH].EXT`` (its list, md5sums, scripts:
    EXT holds no dot, a package's name may)."""
    folder, file = posixpath.split(path)
    if folder != _DPKG_INFO:
        return None
    name = debs.get(file.rpartition(".")[0])
    return {name} if name is not None else None


def _pyc_owner(path: str, claimed: Mapping[str, set[str]]) -> set[str] | None:
    """The owner of ``d/m.py`` for ``d/__pycache__/m.cpython-311.pyc`` (uv compiles
    without listing them in RECORD)."""
    folder, file = posixpath.split(path)
    if posixpath.basename(folder) != "__pycache__" or not file.endswith(".pyc"):
        return None
    source = posixpath.join(posixpath.dirname(folder), file.split(".", 1)[0] + ".py")
    return claimed.get(source)


def _rank(name: str) -> tuple[int, str]:
    for i, pattern in enumerate(_STABLE):
        if pattern.fullmatch(name):
            return i, name
    return len(_STABLE), name


def _bucket(name: str, level: int) -> int:
    return hashlib.sha256(name.encode()).digest()[level % 32] % BUCKETS


def _buckets(
    sizes: Mapping[str, int], budget: int, label: str = "bucket ", level: int = 0
) -> list[tuple[str, list[str]]]:
    """The small units in buckets by their name's hash (labelled ``bucket 2``, and ``bucket
    2.0`` within it); a bucket over ``budget`` is split again by the hash's next byte."""
    groups: dict[int, list[str]] = {}
    for name in sorted(sizes):
        groups.setdefault(_bucket(name, level), []).append(name)
    out: list[tuple[str, list[str]]] = []
    for index in sorted(groups):
        names, here = groups[index], f"{label}{index}"
        if len(names) > 1 and level < 31 and sum(sizes[n] for n in names) > budget:
            out += _buckets({n: sizes[n] for n in names}, budget, here + ".", level + 1)
        else:
            out.append((here, names))
    return out


def plan_cut(entries: Sequence[TarEntry], texts: Mapping[str, str], *, budget: int) -> list[Part]:
    """How to cut the layer of ``entries`` (in its order) whose listings (:func:`listings`)
    say ``texts``: its parts in layer order, or ``[]`` when it is not cut (within ``budget``
    bytes of files, or no package database in it, or one part only). See the module's doc
    for the design."""
    size = sum(e.size for e in entries if e.kind == "file")
    if budget <= 0 or size <= budget or not texts:
        return []
    owner = owners(entries, texts)
    sizes: dict[str, int] = {}
    for entry in entries:
        if entry.path in owner:
            sizes[owner[entry.path]] = sizes.get(owner[entry.path], 0) + (entry.size if entry.kind == "file" else 0)
    alone = sorted((n for n, s in sizes.items() if s * 4 >= budget), key=_rank)
    small = {n: s for n, s in sizes.items() if s * 4 < budget}
    groups = [(n, [n]) for n in alone] + _buckets(small, budget)
    unit_of = {name: i for i, (_, names) in enumerate(groups) for name in names}
    chosen: list[list[str]] = [[] for _ in range(len(groups) + 1)]  # the last: the rest
    index = {e.path: unit_of[owner[e.path]] if e.path in owner else len(groups) for e in entries if e.kind != "dir"}
    index.update(_opaque_markers_first(entries, index, len(groups)))
    for entry in entries:
        if entry.kind != "dir":
            chosen[index[entry.path]].append(entry.path)
    parts = [
        Part(label, tuple(names), _with_folders(paths, entries))
        for (label, names), paths in zip([*groups, (REST, [])], chosen, strict=True)
        if paths
    ]
    rest_dirs = _unneeded_folders(entries, parts)
    if rest_dirs:
        if parts and parts[-1].label == REST:
            parts[-1] = Part(REST, (), _with_folders([*parts[-1].paths, *rest_dirs], entries))
        else:
            parts.append(Part(REST, (), _with_folders(rest_dirs, entries)))
    return parts if len(parts) > 1 else []


def _opaque_markers_first(entries: Sequence[TarEntry], index: Mapping[str, int], rest: int) -> dict[str, int]:
    """The part of each opaque marker (``F/.wh..wh..opq``): the first that holds anything
    in its folder F. It hides what the layers below hold in F, and the parts before it are
    layers below: its folder's entries there would be hidden too, so none may be."""
    markers = {posixpath.dirname(e.path): e.path for e in entries if posixpath.basename(e.path) == OPAQUE_MARKER}
    if not markers:
        return {}
    first = dict.fromkeys(markers, rest)
    for path, part in index.items():
        folder = posixpath.dirname(path)
        while True:  # up to the root's own folder, "" (a marker at the top hides all below)
            if folder in first and path != markers[folder] and part < first[folder]:
                first[folder] = part
            if not folder:
                break
            folder = posixpath.dirname(folder)
    return {markers[folder]: part for folder, part in first.items()}


def _with_folders(paths: Iterable[str], entries: Sequence[TarEntry]) -> tuple[str, ...]:
    """``paths`` and the folders above them that the layer has, in the layer's order."""
    wanted = set(paths)
    for path in list(wanted):
        parent = posixpath.dirname(path)
        while parent and parent not in wanted:
            wanted.add(parent)
            parent = posixpath.dirname(parent)
    return tuple(e.path for e in entries if e.path in wanted)


def _unneeded_folders(entries: Sequence[TarEntry], parts: Sequence[Part]) -> list[str]:
    """The layer's folders no part holds (an empty folder the step made): the rest's."""
    held = {p for part in parts for p in part.paths}
    return [e.path for e in entries if e.kind == "dir" and e.path not in held]
