"""The packages installed in an image, from its package databases, read from its layers.

- Debian packages: ``var/lib/dpkg/status`` (installed stanzas), and the files of
  ``var/lib/dpkg/status.d/`` that distroless-style bases ship instead;
- Alpine packages: ``lib/apk/db/installed``;
- rpm packages: ``rpmdb.sqlite`` or the Berkeley DB ``Packages`` under ``var/lib/rpm`` or
  ``usr/lib/sysimage/rpm`` (see :mod:`assembler.sbom.rpmdb`); SUSE's ``Packages.db`` (ndb),
  a database over its size limit or one that cannot be read is noted, not listed; imported
  signing keys (``gpg-pubkey``) are not packages; a database is spooled from its layer to a
  temporary file under ``workdir`` (sqlite needs a file) and only its packages are memoised;
- Python distributions: every ``*.dist-info/METADATA`` and ``*.egg-info/PKG-INFO`` (their
  headers; the description after them is not read).

Licenses (see :mod:`assembler.sbom.licenses`): a Debian package's from its machine-readable
``usr/share/doc/<package>/copyright`` (only its ``Files: *`` license is kept), a Python
distribution's from its metadata, apk's and rpm's as their databases write them.

The formats of those files are read in :mod:`assembler.sbom.databases`. The final view of
the image's paths comes from the dependency check's :class:`~assembler.deps.files.ImageFiles`
over the layers' headers (memoised by diff_id); only the few database files are read, each
from the layer that holds its final version, streaming that layer until they are found.
What was read is memoised by the layer's diff_id, so a second build reads only its new
layers. A Debian or rpm package is attributed to the lowest layer from which every layer's
database lists it with that version: the base, or the runtime step that installed it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Final

from assembler.archive.layer_reader import tar_members
from assembler.cache import Cache
from assembler.cache.memos import SharedFacts, facts_key, remembered
from assembler.deps.files import BlobOpener, Entry, FactReader, ImageFiles
from assembler.errors import InvalidImage
from assembler.oci.image import Image
from assembler.sbom import rpmdb
from assembler.sbom.databases import Package, apks, debs, installed_versions, lowest_layer, os_release, python_dist
from assembler.sbom.licenses import dep5_license

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
RPM_DATABASES = tuple(
    f"{folder}/{name}"
    for folder in ("var/lib/rpm", "usr/lib/sysimage/rpm")
    for name in ("rpmdb.sqlite", "Packages", "Packages.db")
)
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_PY_METADATA = (".dist-info/METADATA", ".egg-info/PKG-INFO")
_DB_LIMIT = 64 << 20  # a package database bigger than this is not one
_HEADERS_LIMIT = 1 << 20  # METADATA headers; the description after them is skipped
_CHUNK = 64 << 10
_COPYRIGHT = re.compile(r"^usr/share/doc/[^/]+/copyright$")
_MEMO = "sbom-texts-v2-"  # v2: a copyright file's entry is its DEP-5 license, not its text
_RPM_MEMO = "sbom-rpm-v1-"
# The code an inventory is read with (its memo's key names it; so do those that use it).
CODE = ("sbom/packages.py", "sbom/rpmdb.py", "sbom/databases.py", "deps/files.py")


@dataclass(frozen=True)
class Inventory:
    packages: tuple[Package, ...]
    os_release: Mapping[str, str]  # ID, VERSION_ID, ... (empty: none in the image)
    notes: tuple[str, ...]  # what is in the image but not listed


def _wanted(path: str) -> bool:
    return (
        path in (DPKG_STATUS, APK_INSTALLED, *RPM_DATABASES, *OS_RELEASE)
        or path.startswith(DPKG_STATUS_D)
        or path.endswith(_PY_METADATA)
        or _COPYRIGHT.match(path) is not None
    )


def is_database_text(path: str) -> bool:
    """Whether :meth:`PackageReader.texts_of` reads ``path`` (a package database, an
    os-release, Python metadata, a Debian copyright file; rpm databases are read apart)."""
    return _wanted(path) and path not in RPM_DATABASES


def database_text(path: str, data: BinaryIO) -> str:
    """What :meth:`PackageReader.texts_of` keeps of the file ``path`` (see :func:`_read_member`)."""
    return _read_member(path, data)


class DatabaseTexts:
    """What :meth:`PackageReader.texts_of` keeps of a layer's files, kept as a layer writer
    writes them (a layer observer, :class:`assembler.archive.headers.TextKeeper`), under
    the memo it reads: a new layer is not streamed again for its package databases and
    Python metadata."""

    reads: Final = "texts"

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def wanted(self, path: str) -> bool:
        return is_database_text(path)

    def read(self, path: str, data: BinaryIO) -> str:
        return database_text(path, data)

    def remember(self, found: Mapping[str, Any], diff_id: str) -> None:
        remember_texts(self.cache, diff_id, found)


def remember_texts(cache: Cache, diff_id: str, texts: Mapping[str, str]) -> None:
    """The texts of every database file of a layer (:func:`is_database_text`), gathered by
    a pass over it made for something else: this layer is not read again for them. A
    memo already there is left as it is."""
    key = _MEMO + diff_id.split(":", 1)[1]
    if cache.memo(key) is None:
        cache.put_memo(key, {"texts": dict(texts)})


class PackageReader(FactReader):
    """Reads chosen members' text from layers, memoised by the layer's diff_id."""

    def texts_of(self, index: int, paths: set[str]) -> dict[str, str]:
        """The text of ``paths`` (regular files of layer ``index``); Python metadata: its
        headers; a Debian copyright file: its DEP-5 license ("" for none)."""
        key = _MEMO + self.image.diff_ids[index].split(":", 1)[1]
        memo = (self.cache.memo_as(key, _check_texts) if self.cache is not None else None) or {}
        known: dict[str, str] = dict(memo)
        missing = {p for p in paths if p not in known}
        if missing:
            for entry, opener in tar_members(self._source(index)):
                if not missing:
                    break
                if opener is None or entry.path not in missing:
                    continue
                missing.discard(entry.path)
                with opener() as data:
                    known[entry.path] = _read_member(entry.path, data)
            if self.cache is not None:
                self.cache.put_memo(key, {"texts": known})
        return {p: known[p] for p in paths if p in known}

    def rpm_headers(self, index: int, member: str) -> list[rpmdb.RpmHeader] | str:
        """The packages of the rpm database ``member`` of layer ``index``, or why they cannot
        be read (memoised by the layer's diff_id and the member's path)."""
        tag = hashlib.sha256(member.encode()).hexdigest()[:16]
        key = f"{_RPM_MEMO}{self.image.diff_ids[index].split(':', 1)[1]}-{tag}"
        hit = self.cache.memo_as(key, _check_rpm) if self.cache is not None else None
        if hit is not None:
            return hit
        try:
            found: list[rpmdb.RpmHeader] | str = rpmdb.read_from_layer(
                self._source(index), member, workdir=self.workdir
            )
        except InvalidImage as e:
            found = str(e)
        if self.cache is not None:
            record = {"note": found} if isinstance(found, str) else {"packages": [asdict(h) for h in found]}
            self.cache.put_memo(key, record)
        return found


def _check_rpm(data: Mapping[str, Any]) -> list[rpmdb.RpmHeader] | str:
    if "note" in data:
        return str(data["note"])
    return [rpmdb.RpmHeader(**{k: str(v) for k, v in h.items()}) for h in data["packages"]]


def _check_texts(data: Mapping[str, Any]) -> dict[str, str]:
    texts = data["texts"]
    if not isinstance(texts, Mapping) or not all(isinstance(v, str) for v in texts.values()):
        raise TypeError("texts is not a mapping of strings")
    return dict(texts)


def _read_member(path: str, data: BinaryIO) -> str:
    """A database file whole; a METADATA file up to the blank line that ends its headers; a
    copyright file: its DEP-5 license."""
    if _COPYRIGHT.match(path):
        return dep5_license(data)
    if not path.endswith(_PY_METADATA):
        return data.read(_DB_LIMIT).decode("utf-8", "replace")
    got = b""
    while len(got) < _HEADERS_LIMIT:
        chunk = data.read(_CHUNK)
        if not chunk:
            break
        got += chunk
        end = got.find(b"\n\n")
        if end >= 0:
            got = got[: end + 1]
            break
    return got.decode("utf-8", "replace")


def _inventory_of(data: Mapping[str, Any]) -> Inventory:
    packages = tuple(Package(**p) for p in data["packages"])
    return Inventory(packages, {str(k): str(v) for k, v in data["os_release"].items()}, tuple(data["notes"]))


def read_packages(
    image: Image, open_blob: BlobOpener, *, cache: Cache | None, workdir: Path, shared: SharedFacts | None = None
) -> Inventory:
    """The packages of ``image`` (see the module's doc), remembered by its layers' diff_ids
    (in ``cache``, and ``shared`` beyond it).
    Raises InvalidImage for a damaged layer; a package database that cannot be read is a
    note of the inventory."""
    key = facts_key("sbom-inventory", {"diff_ids": list(image.diff_ids)}, CODE)
    return remembered(
        cache,
        key,
        lambda: _read_packages(image, open_blob, cache=cache, workdir=workdir),
        read=_inventory_of,
        write=_inventory_json,
        shared=shared,
    )


def _inventory_json(inventory: Inventory) -> dict[str, Any]:
    packages = [asdict(p) for p in inventory.packages]
    return {"packages": packages, "os_release": dict(inventory.os_release), "notes": list(inventory.notes)}


def _read_packages(image: Image, open_blob: BlobOpener, *, cache: Cache | None, workdir: Path) -> Inventory:
    reader = PackageReader(image, open_blob, cache=cache, workdir=workdir)
    interesting: dict[int, list[str]] = {}

    def entries(index: int) -> list[Entry]:
        found = reader.entries(index)
        interesting[index] = [p for p, kind, _ in found if kind in ("file", "hardlink") and _wanted(p)]
        return found

    files = ImageFiles(len(image.layers), entries)
    final = _final_paths(files, interesting)
    by_layer: dict[int, set[str]] = {}
    for path, (layer, member) in final.items():
        if path not in RPM_DATABASES:  # read by rpm_headers, not as text
            by_layer.setdefault(layer, set()).add(member)
    status_layers = sorted(i for i, paths in interesting.items() if DPKG_STATUS in paths)
    for i in status_layers:  # every version of the status file: who installed each package
        by_layer.setdefault(i, set()).add(DPKG_STATUS)
    texts = {i: reader.texts_of(i, paths) for i, paths in sorted(by_layer.items())}

    def text(path: str) -> tuple[int, str] | None:
        where = final.get(path)
        return (where[0], texts[where[0]].get(where[1], "")) if where is not None else None

    release = next((os_release(t[1]) for name in OS_RELEASE if (t := text(name)) is not None), {})
    packages: list[Package] = []
    status = text(DPKG_STATUS)
    if status is not None:
        versions = [(i, installed_versions(texts[i].get(DPKG_STATUS, ""))) for i in status_layers]
        packages += debs(status[1], versions)
    for path in sorted(p for p in final if p.startswith(DPKG_STATUS_D)):
        found = text(path)
        assert found is not None
        packages += [p for p in debs(found[1], [(found[0], {})]) if p.layer == found[0]]
    packages = [_with_copyright(p, files, text) for p in packages]
    apk = text(APK_INSTALLED)
    if apk is not None:
        packages += apks(apk[1], apk[0])
    rpms, notes = _rpms(reader, final, interesting)
    packages += rpms
    for path in sorted(p for p in final if p.endswith(_PY_METADATA)):
        found = text(path)
        assert found is not None
        dist = python_dist(found[1], path, found[0])
        if dist is not None:
            packages.append(dist)
    return Inventory(tuple(packages), release, tuple(notes))


def _final_paths(files: ImageFiles, interesting: Mapping[int, list[str]]) -> dict[str, tuple[int, str]]:
    """path -> (layer, member holding its data) of each wanted path in the final view."""
    final: dict[str, tuple[int, str]] = {}
    for paths in interesting.values():
        for path in paths:
            where = files.data_of(path)
            if where is not None:
                final[path] = where
    for name in OS_RELEASE:
        real = files.realpath(name)
        where = files.data_of(real) if real is not None else None
        if where is not None:
            final.setdefault(name, where)
            break
    return final


def _with_copyright(pkg: Package, files: ImageFiles, text: Callable[[str], tuple[int, str] | None]) -> Package:
    """``pkg`` with the license its copyright file declares (its doc folder may be a link)."""
    real = files.realpath(f"usr/share/doc/{pkg.name}/copyright")
    found = text(real) if real is not None else None
    return replace(pkg, license=found[1]) if found is not None and found[1] else pkg


def _rpms(
    reader: PackageReader, final: Mapping[str, tuple[int, str]], interesting: Mapping[int, list[str]]
) -> tuple[list[Package], list[str]]:
    """The packages of each rpm database in the final view, each attributed like Debian's;
    notes for those that are not read."""
    packages: list[Package] = []
    notes: list[str] = []
    seen: set[tuple[str, str, str]] = set()
    for path in (p for p in RPM_DATABASES if p in final):
        if rpmdb.kind_of(path) is None:
            notes.append(f"/{path}: an ndb rpm database, not read; its packages are not listed")
            continue
        top, member = final[path]
        headers = reader.rpm_headers(top, member)
        if isinstance(headers, str):
            notes.append(f"/{path}: an rpm database that cannot be read ({headers}); its packages are not listed")
            continue
        versions = []
        for i in sorted(i for i, paths in interesting.items() if path in paths and i < top):
            below = reader.rpm_headers(i, path)
            versions.append((i, {} if isinstance(below, str) else {(h.name, h.arch): _evr(h) for h in below}))
        versions.append((top, {(h.name, h.arch): _evr(h) for h in headers}))
        for h in headers:
            if h.name == "gpg-pubkey" or (h.name, h.arch, _evr(h)) in seen:
                continue  # an imported signing key, not software; or listed by another database
            seen.add((h.name, h.arch, _evr(h)))
            layer = lowest_layer((h.name, h.arch), _evr(h), versions)
            packages.append(
                Package(
                    "rpm",
                    h.name,
                    f"{h.version}-{h.release}" if h.release else h.version,
                    layer,
                    arch=h.arch,
                    source=h.sourcerpm,
                    supplier=h.vendor,
                    summary=h.summary,
                    homepage=h.url,
                    license=h.license,
                    epoch=h.epoch,
                )
            )
    return packages, notes


def _evr(h: rpmdb.RpmHeader) -> str:
    return f"{h.epoch}:{h.version}-{h.release}"
