"""Pinned wheels from a Python package index (PEP 503 HTML or PEP 691 JSON simple API).

A requirement names its files by sha256; the index only says where each file is. Of the
pinned files, the one whose tags fit the image's Python and platform is taken (as pip
would pick among them); which one is remembered in the cache, so a plan knows it offline.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from urllib.parse import urljoin

from assembler.cache import Cache, key_of
from assembler.errors import InputError
from assembler.spec.prebuilt import Requirement, normalize_name
from assembler.transports.download import download, fetch_page

_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x", "386": "i686"}
_ANCHOR = re.compile(r"<a\s[^>]*href=\"([^\"]+)\"[^>]*>([^<]+)</a>", re.IGNORECASE)
_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
# A wheel (the biggest, torch's and nvidia's, are a few GB) is refused beyond this.
MAX_WHEEL_BYTES = 16 << 30


@dataclass(frozen=True)
class Wheel:
    sha256: str
    filename: str


def machine(architecture: str) -> str:
    """The wheel platform tag's machine of an OCI architecture (amd64 -> x86_64)."""
    return _ARCH.get(architecture, architecture)


def _python_fits(py: str, abi: str, minor: int) -> bool:
    if py.startswith("py3"):
        return abi == "none" and (py == "py3" or int(py[3:] or 0) <= minor)
    if py.startswith("cp3") and py[3:].isdigit():
        version = int(py[3:])
        if abi == "abi3":
            return version <= minor
        return version == minor and abi in ("none", f"cp3{minor}")
    return False


def _platform_fits(plat: str, arch: str) -> bool:
    # glibc bases: manylinux and plain linux wheels; musllinux ones need musl.
    return plat == "any" or (plat.endswith("_" + arch) and plat.startswith(("manylinux", "linux_")))


def fits(filename: str, *, python: str, arch: str) -> bool:
    """Whether the wheel ``filename`` installs on CPython ``python`` (X.Y) on ``arch``."""
    if not filename.endswith(".whl"):
        return False
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return False
    minor = int(python.split(".")[1])
    pys, abis, plats = (p.split(".") for p in parts[-3:])
    return any(_python_fits(p, a, minor) for p in pys for a in abis) and any(_platform_fits(p, arch) for p in plats)


def _files(index: str, name: str, what: str) -> dict[str, tuple[str, str]]:
    """sha256 -> (file name, URL) of every file the index lists for project ``name``."""
    page = urljoin(index.rstrip("/") + "/", name + "/")
    kind, body = fetch_page(page, accept=_ACCEPT, what=what)
    out: dict[str, tuple[str, str]] = {}
    if "json" in kind:
        try:
            for f in json.loads(body)["files"]:
                sha = f.get("hashes", {}).get("sha256")
                if sha:
                    out[sha] = (f["filename"], urljoin(page, f["url"]))
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{what}: {page} is not a PEP 691 index page: {e}") from None
        return out
    for href, text in _ANCHOR.findall(body.decode("utf-8", "replace")):
        href = html.unescape(href)
        url, _, fragment = href.partition("#")
        if fragment.startswith("sha256="):
            out[fragment[7:]] = (html.unescape(text).strip(), urljoin(page, url))
    return out


def _memo_key(req: Requirement, python: str, arch: str) -> str:
    return "wheel-pick-" + key_of({"hashes": sorted(req.hashes), "python": python, "arch": arch})


def chosen(req: Requirement, *, python: str, arch: str, cache: Cache) -> str | None:
    """The sha256 of the file ``req`` installs, when known without the index: its only
    hash, or the one an earlier build picked."""
    if len(req.hashes) == 1:
        return req.hashes[0]
    hit = cache.memo(_memo_key(req, python, arch))
    return str(hit["sha256"]) if hit and hit.get("sha256") in req.hashes else None


def fetch(req: Requirement, *, index: str, python: str, arch: str, cache: Cache, what: str) -> Wheel:
    """The wheel of ``req`` for CPython ``python`` on ``arch``, in the cache (downloaded
    and checked if it is not there yet).

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
        download(req.url, sha256=req.hashes[0], cache=cache, max_bytes=MAX_WHEEL_BYTES, what=what)
        return Wheel(req.hashes[0], filename)
    files = _files(index, req.name, what)
    pinned = {sha: files[sha] for sha in req.hashes if sha in files}
    if not pinned:
        listed = sorted(f"{fn} sha256:{sha}" for sha, (fn, _) in files.items() if _version_of(fn) == req.version)
        raise InputError(
            f"{what}: no file on {index} has the pinned sha256 ({', '.join(h[:12] + '...' for h in req.hashes)})",
            hint="files of this version: " + ("; ".join(listed[:6]) or "none (is the version right?)"),
        )
    if not any(fn.endswith(".whl") for fn, _ in pinned.values()):
        wheels = sorted(f"{fn} sha256:{sha}" for sha, (fn, _) in files.items()
                        if fn.endswith(".whl") and _version_of(fn) == req.version)  # fmt: skip
        hint = "no wheel of this version: build it in a compile step (and take it as an artifact)"
        raise InputError(
            f"{what}: the pinned file {', '.join(sorted(fn for fn, _ in pinned.values()))} is a source "
            "distribution: a pip: layer installs wheels and never builds one",
            hint=("pin a wheel: " + "; ".join(wheels[:6])) if wheels else hint,
        )
    for sha, (filename, _) in pinned.items():
        if not filename.endswith(".whl"):
            continue  # a source distribution pinned besides wheels: never picked (fits() takes wheels)
        if normalize_name(filename.split("-", 1)[0]) != req.name or _version_of(filename) != req.version:
            raise InputError(f"{what}: the pinned sha256 {sha[:12]}... is the file {filename}, not {req.pin}")
    fitting = sorted((fn, sha, url) for sha, (fn, url) in pinned.items() if fits(fn, python=python, arch=arch))
    if not fitting:
        raise InputError(f"{what}: no pinned wheel installs on CPython {python} on {arch}: "
                         f"{', '.join(sorted(fn for fn, _ in pinned.values()))}")  # fmt: skip
    filename, sha, url = fitting[0]
    download(url, sha256=sha, cache=cache, max_bytes=MAX_WHEEL_BYTES, what=what)
    cache.put_memo(_memo_key(req, python, arch), {"sha256": sha, "filename": filename})
    return Wheel(sha, filename)


def _version_of(filename: str) -> str:
    parts = filename.split("-")
    return parts[1] if len(parts) > 1 else ""
