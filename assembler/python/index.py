"""Pinned wheels from a Python package index (PEP 503 HTML or PEP 691 JSON simple API).

A requirement names its files by sha256; the index only says where each file is. Of the
pinned files, the one whose tags fit the image's Python and platform is taken (as pip
would pick among them); which one is remembered in the cache, so a plan knows it offline.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import IO, cast
from urllib.parse import urljoin

from packaging import tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from assembler.cache import Cache, key_of
from assembler.errors import InputError
from assembler.fetch.pinned import DEFAULT_LIMITS, download, fetch_page
from assembler.manifest.schema.pinned import Requirement
from assembler.manifest.text.urls import redacted, with_credentials
from assembler.registry.types import NetworkLimits

_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x", "386": "i686"}
_JSON = "application/vnd.pypi.simple.v1+json"
_ACCEPT = f"{_JSON}, text/html;q=0.1"
# A wheel (the biggest, torch's and nvidia's, are a few GB) is refused beyond this.
MAX_WHEEL_BYTES = 16 << 30
# The image's glibc is not known when wheels are picked: any manylinux_2_N is taken (as
# before tags were read by packaging), up to a glibc far beyond today's 2.4x.
_GLIBC_MINORS = range(99, 4, -1)
# PEP 600's names for the first manylinux glibcs, and the machines each was defined for.
_LEGACY = {
    "manylinux2014": ("x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"),
    "manylinux2010": ("x86_64", "i686"),
    "manylinux1": ("x86_64", "i686"),
}


@dataclass(frozen=True)
class Wheel:
    sha256: str
    filename: str


def machine(architecture: str) -> str:
    """The wheel platform tag's machine of an OCI architecture (amd64 -> x86_64)."""
    return _ARCH.get(architecture, architecture)


@functools.cache
def _supported(python: str, arch: str) -> frozenset[tags.Tag]:
    """The tags a wheel for CPython ``python`` (X.Y) on a glibc Linux on ``arch`` may carry,
    as ``pip install --python-version X.Y --platform ...`` takes them: musllinux ones need
    musl, so are not among them."""
    version = (3, int(python.split(".")[1]))
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in _GLIBC_MINORS]
    platforms += [f"{name}_{arch}" for name, archs in _LEGACY.items() if arch in archs] + [f"linux_{arch}"]
    interpreter = f"cp{version[0]}{version[1]}"
    return frozenset(
        [
            *tags.cpython_tags(version, abis=[interpreter], platforms=platforms),
            *tags.compatible_tags(version, interpreter, platforms=platforms),
        ]
    )


def fits(filename: str, *, python: str, arch: str) -> bool:
    """Whether the wheel ``filename`` installs on CPython ``python`` (X.Y) on ``arch``."""
    try:
        wheel_tags = parse_wheel_filename(filename)[3]
    except (InvalidWheelFilename, InvalidVersion):
        return False
    return not wheel_tags.isdisjoint(_supported(python, arch))


def _project_and_version(filename: str) -> tuple[str, Version] | None:
    """The (normalised) project and version a wheel's or sdist's file name says, if it says."""
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[:2]
        return parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None


def _version_of(filename: str) -> Version | None:
    named = _project_and_version(filename)
    return named[1] if named else None


class _Anchors(HTMLParser):
    """The ``<a href>`` links of a PEP 503 page and their text (the file name)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href, self._text = dict(attrs).get("href"), []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _json_files(page: str, body: bytes, what: str) -> dict[str, tuple[str, str]]:
    """sha256 -> (file name, URL) of a PEP 691 project page (API version 1.x)."""
    try:
        data = json.loads(body)
        major = str(data["meta"]["api-version"]).split(".")[0]
        files = {
            f["hashes"]["sha256"]: (f["filename"], urljoin(page, f["url"]))
            for f in data["files"]
            if f.get("hashes", {}).get("sha256")
        }
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{what}: {redacted(page)} is not a PEP 691 index page: {e!r}") from None
    if major != "1":
        raise InputError(f"{what}: {redacted(page)} speaks PEP 691 API version {data['meta']['api-version']}, not 1.x")
    return files


def project_files(index: str, name: str, what: str, limits: NetworkLimits) -> dict[str, tuple[str, str]]:
    """sha256 -> (file name, URL) of every file the index lists for project ``name``: from
    its JSON page (PEP 691), else its HTML one (PEP 503: a plain folder of pages serves no JSON).
    A file on the index's host gets the index's credentials, as pip gives them: a link
    relative to the page keeps them already, a full one is given them (:func:`with_credentials`);
    a URL so made is for the fetch, and recorded only :func:`redacted`."""
    page = urljoin(index.rstrip("/") + "/", name + "/")
    kind, body = fetch_page(page, accept=_ACCEPT, what=what, limits=limits)
    if kind.split(";")[0].strip() == _JSON:
        files = _json_files(page, body, what)
    else:
        parser = _Anchors()
        parser.feed(body.decode("utf-8", "replace"))
        parser.close()
        files = {}
        for href, text in parser.links:
            url, _, fragment = href.partition("#")
            if fragment.startswith("sha256="):
                files[fragment[7:]] = (text, urljoin(page, url))
    return {sha: (file, with_credentials(url, [index])) for sha, (file, url) in files.items()}


def _memo_key(req: Requirement, python: str, arch: str) -> str:
    return "wheel-pick-" + key_of({"hashes": sorted(req.hashes), "python": python, "arch": arch})


def chosen(req: Requirement, *, python: str, arch: str, cache: Cache) -> str | None:
    """The sha256 of the file ``req`` installs, when known without the index: its only
    hash, or the one an earlier build picked."""
    if len(req.hashes) == 1:
        return req.hashes[0]
    hit = cache.memo(_memo_key(req, python, arch))
    return str(hit["sha256"]) if hit and hit.get("sha256") in req.hashes else None


def here(req: Requirement, *, python: str, arch: str, cache: Cache) -> Wheel | None:
    """The wheel of ``req`` when the cache holds it already (None: it would be fetched)."""
    hit = cache.memo(_memo_key(req, python, arch))
    if hit and hit.get("sha256") in req.hashes and cache.has_blob("sha256:" + str(hit["sha256"])):
        return Wheel(str(hit["sha256"]), str(hit["filename"]))
    filename = req.url.rsplit("/", 1)[-1]
    if req.url and fits(filename, python=python, arch=arch) and cache.has_blob("sha256:" + req.hashes[0]):
        return Wheel(req.hashes[0], filename)
    return None


def fetch(
    req: Requirement,
    *,
    index: str,
    python: str,
    arch: str,
    cache: Cache,
    what: str,
    limits: NetworkLimits = DEFAULT_LIMITS,
) -> Wheel:
    """The wheel of ``req`` for CPython ``python`` on ``arch``, in the cache (downloaded
    and checked if it is not there yet; the index and the download under ``limits``).

    Raises InputError when no pinned file is on the index or none fits, or the download is
    not the pinned file; NotFound when the index cannot be reached."""
    what = f"{what}: {req.pin}"
    hit = cache.memo(_memo_key(req, python, arch))
    if hit and hit.get("sha256") in req.hashes and cache.has_blob("sha256:" + str(hit["sha256"])):
        return Wheel(str(hit["sha256"]), str(hit["filename"]))
    if req.url:  # a direct reference: that file, if it fits
        filename = req.url.rsplit("/", 1)[-1]
        if not fits(filename, python=python, arch=arch):
            raise InputError(f"{what}: {filename} does not install on CPython {python} on {arch}")
        download(req.url, sha256=req.hashes[0], cache=cache, max_bytes=MAX_WHEEL_BYTES, what=what, limits=limits)
        return Wheel(req.hashes[0], filename)
    files = project_files(index, req.name, what, limits)
    pinned = {sha: files[sha] for sha in req.hashes if sha in files}
    version = Version(req.version)
    if not pinned:
        listed = sorted(f"{fn} sha256:{sha}" for sha, (fn, _) in files.items() if _version_of(fn) == version)
        raise InputError(
            f"{what}: no file on {redacted(index)} has the pinned sha256 "
            f"({', '.join(h[:12] + '...' for h in req.hashes)})",
            hint="files of this version: " + ("; ".join(listed[:6]) or "none (is the version right?)"),
        )
    if not any(fn.endswith(".whl") for fn, _ in pinned.values()):
        of_version = [(fn, sha) for sha, (fn, _) in files.items() if _version_of(fn) == version]
        wheels = sorted(f"{fn} sha256:{sha}" for fn, sha in of_version if fn.endswith(".whl"))
        hint = "no wheel of this version: build it in a compile step (and take it as an artifact)"
        raise InputError(
            f"{what}: the pinned file {', '.join(sorted(fn for fn, _ in pinned.values()))} is a source "
            "distribution: a pip: layer installs wheels and never builds one",
            hint=("pin a wheel: " + "; ".join(wheels[:6])) if wheels else hint,
        )
    for sha, (filename, _) in pinned.items():
        if not filename.endswith(".whl"):
            continue  # a source distribution pinned besides wheels: never picked (fits() takes wheels)
        if _project_and_version(filename) != (req.name, version):
            raise InputError(f"{what}: the pinned sha256 {sha[:12]}... is the file {filename}, not {req.pin}")
    fitting = sorted((fn, sha, url) for sha, (fn, url) in pinned.items() if fits(fn, python=python, arch=arch))
    if not fitting:
        raise InputError(
            f"{what}: no pinned wheel installs on CPython {python} on {arch}: "
            f"{', '.join(sorted(fn for fn, _ in pinned.values()))}"
        )
    filename, sha, url = fitting[0]
    download(url, sha256=sha, cache=cache, max_bytes=MAX_WHEEL_BYTES, what=what, limits=limits)
    cache.put_memo(_memo_key(req, python, arch), {"sha256": sha, "filename": filename})
    return Wheel(sha, filename)


def release_day(index: str, name: str, version: str, *, limits: NetworkLimits = DEFAULT_LIMITS) -> str:
    """The day (YYYY-MM-DD, UTC) the index published release ``name==version``: its first
    file's ``upload-time`` (PEP 700). InputError when the index lists no such release or
    gives no upload times; NotFound when it cannot be reached."""
    what = f"resolve_as_of {name}=={version}"
    page = urljoin(index.rstrip("/") + "/", canonicalize_name(name) + "/")
    _, body = fetch_page(page, accept=_JSON, what=what, limits=limits)
    wanted = Version(version)
    times = []
    try:
        for f in json.loads(body)["files"]:
            if _version_of(f["filename"]) == wanted and f.get("upload-time"):
                times.append(str(f["upload-time"]))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{what}: {redacted(page)} is not a PEP 691 index page: {e!r}") from None
    if not times:
        raise InputError(f"{what}: {redacted(index)} lists no file of that release with its upload time")
    return min(times)[:10]


@dataclass(frozen=True)
class SdistMetadata:
    """What a release's source distribution says it requires, read without building it."""

    requires_dist: tuple[str, ...]
    requires_python: str | None


def sdist_metadata(index: str, name: str, version: str) -> SdistMetadata | None:
    """The requirements release ``name==version``'s sdist on ``index`` records: its
    PKG-INFO's ``Requires-Dist``, else its ``*.egg-info/requires.txt`` (older setuptools
    wrote them only there). None when the index has no sdist of it. Raises NotFound when
    the index cannot be read, InvalidArchive when the sdist is not a tar it can read."""
    from assembler.archive.tarread import data_of, reading

    what = f"the sdist of {name}=={version}"
    files = project_files(index, canonicalize_name(name), what, DEFAULT_LIMITS)
    wanted = (canonicalize_name(name), Version(version))
    urls = [url for fn, url in files.values() if fn.endswith(".tar.gz") and _project_and_version(fn) == wanted]
    if not urls:
        return None
    _, body = fetch_page(urls[0], accept="*/*", what=what, max_bytes=256 << 20)
    texts: dict[str, str] = {}
    with (
        gzip.GzipFile(fileobj=io.BytesIO(body)) as unzipped,
        reading(cast(IO[bytes], unzipped), what=what) as (tf, entries),
    ):
        for entry, info in entries:
            depth = entry.path.count("/")
            if info.isfile() and depth <= 2 and entry.path.endswith(("/PKG-INFO", ".egg-info/requires.txt")):
                texts[entry.path.rsplit("/", 1)[-1] if depth == 1 else entry.path] = (
                    data_of(tf, info, what=what).read(1 << 20).decode("utf-8", "replace")
                )
    return _sdist_metadata(texts)


def _sdist_metadata(texts: dict[str, str]) -> SdistMetadata:
    pkg_info = texts.get("PKG-INFO", "")
    requires = [
        line[len("Requires-Dist:") :].strip() for line in pkg_info.splitlines() if line.startswith("Requires-Dist:")
    ]
    python = next(
        (line.split(":", 1)[1].strip() for line in pkg_info.splitlines() if line.startswith("Requires-Python:")), None
    )
    if not requires:
        listed = next((text for path, text in texts.items() if path.endswith("requires.txt")), "")
        requires = _requires_txt(listed)
    return SdistMetadata(tuple(requires), python)


def _requires_txt(text: str) -> list[str]:
    """setuptools' ``requires.txt``: requirements, then ``[extra]`` or ``[:marker]`` sections."""
    out, marker = [], ""
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            extra, _, condition = line.strip("[]").partition(":")
            parts = ([f'extra == "{extra}"'] if extra else []) + ([f"({condition})"] if condition else [])
            marker = " and ".join(parts)
            continue
        out.append(f"{line}; {marker}" if marker else line)
    return out
