"""The packages installed in an image, from its package databases, read from its layers.

- Debian packages: ``var/lib/dpkg/status`` (installed stanzas), and the files of
  ``var/lib/dpkg/status.d/`` that distroless-style bases ship instead;
- Alpine packages: ``lib/apk/db/installed``;
- Python distributions: every ``*.dist-info/METADATA`` and ``*.egg-info/PKG-INFO`` (their
  headers; the description after them is not read);
- an rpm database (``rpmdb.sqlite``, ``Packages``) is only noted: its packages are not listed.

The final view of the image's paths comes from the dependency check's
:class:`~assembler.deps.files.ImageFiles` over the layers' headers (memoised by diff_id);
only the few database files are read, each from the layer that holds its final version,
streaming that layer until they are found. What was read is memoised by the layer's
diff_id, so a second build reads only its new layers. A Debian package is attributed to
the lowest layer from which every layer's ``status`` lists it with that version: the
base, or the runtime step that installed it.
"""

from __future__ import annotations

import email.parser
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from assembler.archive.layer_reader import tar_members
from assembler.cache import Cache
from assembler.deps.files import BlobOpener, Entry, FactReader, ImageFiles
from assembler.oci.image import Image

DPKG_STATUS = "var/lib/dpkg/status"
DPKG_STATUS_D = "var/lib/dpkg/status.d/"
APK_INSTALLED = "lib/apk/db/installed"
RPM_DATABASES = tuple(f"{folder}/{name}" for folder in ("var/lib/rpm", "usr/lib/sysimage/rpm")
                      for name in ("rpmdb.sqlite", "Packages", "Packages.db"))  # fmt: skip
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_PY_METADATA = (".dist-info/METADATA", ".egg-info/PKG-INFO")
_DB_LIMIT = 64 << 20  # a package database bigger than this is not one
_HEADERS_LIMIT = 1 << 20  # METADATA headers; the description after them is skipped
_CHUNK = 64 << 10
_MEMO = "sbom-texts-v1-"


@dataclass(frozen=True)
class Package:
    """One installed package: ``ecosystem`` deb, apk or pypi."""

    ecosystem: str
    name: str
    version: str
    layer: int  # the layer that installed it
    arch: str = ""
    source: str = ""  # deb: its source package; apk: its origin
    supplier: str = ""  # Maintainer (deb, apk) or Author (pypi), as written
    summary: str = ""
    homepage: str = ""
    license: str = ""  # as the database writes it (apk, pypi); Debian's status has none
    path: str = ""  # pypi: the folder it is installed in


@dataclass(frozen=True)
class Inventory:
    packages: tuple[Package, ...]
    os_release: Mapping[str, str]  # ID, VERSION_ID, ... (empty: none in the image)
    notes: tuple[str, ...]  # what is in the image but not listed


def _wanted(path: str) -> bool:
    return (path in (DPKG_STATUS, APK_INSTALLED, *RPM_DATABASES, *OS_RELEASE) or path.startswith(DPKG_STATUS_D)
            or path.endswith(_PY_METADATA))  # fmt: skip


class PackageReader(FactReader):
    """Reads chosen members' text from layers, memoised by the layer's diff_id."""

    def texts_of(self, index: int, paths: set[str]) -> dict[str, str]:
        """The text of ``paths`` (regular files of layer ``index``); Python metadata: its headers."""
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
                    known[entry.path] = _read_text(data, headers=entry.path.endswith(_PY_METADATA))
            if self.cache is not None:
                self.cache.put_memo(key, {"texts": known})
        return {p: known[p] for p in paths if p in known}


def _check_texts(data: Mapping[str, Any]) -> dict[str, str]:
    texts = data["texts"]
    if not isinstance(texts, Mapping) or not all(isinstance(v, str) for v in texts.values()):
        raise TypeError("texts is not a mapping of strings")
    return dict(texts)


def _read_text(data: BinaryIO, *, headers: bool) -> str:
    """A database file whole; a METADATA file up to the blank line that ends its headers."""
    if not headers:
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


def read_packages(image: Image, open_blob: BlobOpener, *, cache: Cache | None, workdir: Path) -> Inventory:
    """The packages of ``image`` (see the module's doc). Raises InvalidImage for a damaged layer."""
    reader = PackageReader(image, open_blob, cache=cache, workdir=workdir)
    interesting: dict[int, list[str]] = {}

    def entries(index: int) -> list[Entry]:
        found = reader.entries(index)
        interesting[index] = [p for p, kind, _ in found if kind in ("file", "hardlink") and _wanted(p)]
        return found

    files = ImageFiles(len(image.layers), entries)
    final: dict[str, tuple[int, str]] = {}  # path -> (layer, member holding its data)
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
    by_layer: dict[int, set[str]] = {}
    for layer, member in final.values():
        by_layer.setdefault(layer, set()).add(member)
    status_layers = sorted(i for i, paths in interesting.items() if DPKG_STATUS in paths)
    for i in status_layers:  # every version of the status file: who installed each package
        by_layer.setdefault(i, set()).add(DPKG_STATUS)
    texts = {i: reader.texts_of(i, paths) for i, paths in sorted(by_layer.items())}

    def text(path: str) -> tuple[int, str] | None:
        where = final.get(path)
        return (where[0], texts[where[0]].get(where[1], "")) if where is not None else None

    os_release = next((_os_release(t[1]) for name in OS_RELEASE if (t := text(name)) is not None), {})
    packages: list[Package] = []
    status = text(DPKG_STATUS)
    if status is not None:
        versions = [(i, _installed_versions(texts[i].get(DPKG_STATUS, ""))) for i in status_layers]
        packages += _debs(status[1], versions)
    for path in sorted(p for p in final if p.startswith(DPKG_STATUS_D)):
        found = text(path)
        assert found is not None
        packages += [p for p in _debs(found[1], [(found[0], {})]) if p.layer == found[0]]
    apk = text(APK_INSTALLED)
    if apk is not None:
        packages += _apks(apk[1], apk[0])
    for path in sorted(p for p in final if p.endswith(_PY_METADATA)):
        found = text(path)
        assert found is not None
        dist = _python_dist(found[1], path, found[0])
        if dist is not None:
            packages.append(dist)
    notes = tuple(f"/{p}: an rpm database, not read; its packages are not listed" for p in RPM_DATABASES
                  if p in final)  # fmt: skip
    return Inventory(tuple(packages), os_release, notes)


# -- the databases -------------------------------------------------------------------------


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs: the first line of each field (continuations are dropped)."""
    fields: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if fields:
                yield fields
            fields = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()


def _installed(fields: Mapping[str, str]) -> bool:
    # status.d files (distroless) have no Status: every stanza there is installed.
    status = fields.get("Status")
    return bool(fields.get("Package")) and (status is None or status.split()[-1:] == ["installed"])


def _installed_versions(text: str) -> dict[tuple[str, str], str]:
    return {(f["Package"], f.get("Architecture", "")): f.get("Version", "") for f in _stanzas(text) if _installed(f)}


def _debs(text: str, versions: list[tuple[int, dict[tuple[str, str], str]]]) -> list[Package]:
    """The installed packages of a status file; each attributed to the lowest layer of
    ``versions`` (layer, what its status lists) from which every one lists it as it is."""
    out = []
    for f in _stanzas(text):
        if not _installed(f):
            continue
        ident, version = (f["Package"], f.get("Architecture", "")), f.get("Version", "")
        layer = versions[-1][0] if versions else 0
        for i, listed in reversed(versions):
            if listed and listed.get(ident) != version:
                break
            layer = i
        source = f.get("Source", "").split(" ")[0]
        out.append(Package("deb", ident[0], version, layer, arch=ident[1], source=source,
                           supplier=f.get("Maintainer", ""), summary=f.get("Description", ""),
                           homepage=f.get("Homepage", "")))  # fmt: skip
    return out


def _apks(text: str, layer: int) -> list[Package]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and len(key) == 1:
                fields.setdefault(key, value)
        if fields.get("P"):
            out.append(Package("apk", fields["P"], fields.get("V", ""), layer, arch=fields.get("A", ""),
                               source=fields.get("o", ""), supplier=fields.get("m", ""), summary=fields.get("T", ""),
                               homepage=fields.get("U", ""), license=fields.get("L", "")))  # fmt: skip
    return out


def _python_dist(text: str, path: str, layer: int) -> Package | None:
    headers = email.parser.HeaderParser().parsestr(text)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    license_ = headers.get("License-Expression") or headers.get("License") or ""
    folder = "/" + path.rsplit("/", 2)[0]
    return Package("pypi", str(name).strip(), str(version).strip(), layer, supplier=str(headers.get("Author") or ""),
                   summary=str(headers.get("Summary") or ""), homepage=str(headers.get("Home-page") or ""),
                   license=" ".join(str(license_).split())[:200], path=folder)  # fmt: skip


def _os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out
