"""The package databases' text formats, read into :class:`Package` values.

dpkg's status stanzas (and distroless ``status.d`` files), apk's ``installed``, a Python
distribution's ``METADATA`` headers and ``os-release``; :mod:`assembler.sbom.packages`
finds these files in an image's layers, :mod:`assembler.sbom.rpmdb` reads rpm's.
"""

from __future__ import annotations

import email.parser
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from assembler.sbom.licenses import deb822_paragraphs, python_license


@dataclass(frozen=True)
class Package:
    """One installed package: ``ecosystem`` deb, apk, rpm or pypi."""

    ecosystem: str
    name: str
    version: str
    layer: int  # the layer that installed it
    arch: str = ""
    source: str = ""  # deb: its source package; apk: its origin; rpm: its source rpm
    supplier: str = ""  # Maintainer (deb, apk), Author (pypi) or Vendor (rpm), as written
    summary: str = ""
    homepage: str = ""
    license: str = ""  # as declared (see the module's doc); "" when nothing declares it
    path: str = ""  # pypi: the folder it is installed in
    epoch: str = ""  # rpm: its epoch, when its header has one (``version`` is version-release)


Listing = Mapping[tuple[str, str], str]  # (name, arch) -> version, as one layer's database lists it


def lowest_layer(ident: tuple[str, str], version: str, versions: Sequence[tuple[int, Listing]]) -> int:
    """The lowest layer of ``versions`` (layer, what its database lists, lowest first) from
    which every one lists ``ident`` at ``version`` (an empty listing: one not known)."""
    layer = versions[-1][0] if versions else 0
    for i, listed in reversed(versions):
        if listed and listed.get(ident) != version:
            break
        layer = i
    return layer


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    return deb822_paragraphs(text.splitlines())


def _installed(fields: Mapping[str, str]) -> bool:
    # status.d files (distroless) have no Status: every stanza there is installed.
    status = fields.get("Status")
    return bool(fields.get("Package")) and (status is None or status.split()[-1:] == ["installed"])


def installed_versions(text: str) -> dict[tuple[str, str], str]:
    return {(f["Package"], f.get("Architecture", "")): f.get("Version", "") for f in _stanzas(text) if _installed(f)}


def debs(text: str, versions: list[tuple[int, dict[tuple[str, str], str]]]) -> list[Package]:
    """The installed packages of a status file; each attributed to the lowest layer of
    ``versions`` (layer, what its status lists) from which every one lists it as it is."""
    out = []
    for f in _stanzas(text):
        if not _installed(f):
            continue
        ident, version = (f["Package"], f.get("Architecture", "")), f.get("Version", "")
        layer = lowest_layer(ident, version, versions)
        source = f.get("Source", "").split(" ")[0]
        out.append(
            Package(
                "deb",
                ident[0],
                version,
                layer,
                arch=ident[1],
                source=source,
                supplier=f.get("Maintainer", ""),
                summary=f.get("Description", ""),
                homepage=f.get("Homepage", ""),
            )
        )
    return out


def apks(text: str, layer: int) -> list[Package]:
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep and len(key) == 1:
                fields.setdefault(key, value)
        if fields.get("P"):
            out.append(
                Package(
                    "apk",
                    fields["P"],
                    fields.get("V", ""),
                    layer,
                    arch=fields.get("A", ""),
                    source=fields.get("o", ""),
                    supplier=fields.get("m", ""),
                    summary=fields.get("T", ""),
                    homepage=fields.get("U", ""),
                    license=fields.get("L", ""),
                )
            )
    return out


def python_dist(text: str, path: str, layer: int) -> Package | None:
    headers = email.parser.HeaderParser().parsestr(text)
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    classifiers = [str(c) for c in headers.get_all("Classifier") or []]
    expression, field = str(headers.get("License-Expression") or ""), str(headers.get("License") or "")
    license_ = python_license(expression, classifiers, field)
    folder = "/" + path.rsplit("/", 2)[0]
    return Package(
        "pypi",
        str(name).strip(),
        str(version).strip(),
        layer,
        supplier=str(headers.get("Author") or ""),
        summary=str(headers.get("Summary") or ""),
        homepage=str(headers.get("Home-page") or ""),
        license=" ".join(str(license_).split())[:200],
        path=folder,
    )


def os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out
