"""``url:`` layers: one pinned file fetched, placed as it is or its tar unpacked under
``to``, by our own tar writer. Cached by a key of the file's sha256 and where it goes; what
``pip:`` and ``url:`` layers share is :class:`~assembler.pipeline.layers.prebuilt_layers.Prebuilt`.
"""

from __future__ import annotations

import bz2
import lzma
import posixpath
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.archive.compress import DECOMPRESS_ERRORS, decompressed
from assembler.archive.layer import Member
from assembler.archive.tar import TarEntry, clean_path
from assembler.archive.tarread import copy_bounded, opener, reading, unpack_limit
from assembler.archive.tree import parents
from assembler.cache import key_of
from assembler.cache.entries import StepResult
from assembler.errors import InputError, UnsafePath
from assembler.fetch.pinned import download
from assembler.manifest.schema import model as m
from assembler.manifest.schema.prebuilt import size_bytes
from assembler.manifest.text.urls import redacted
from assembler.pipeline.layers.kinds.base import Kind, Stacking, Starting
from assembler.pipeline.layers.placed import Placed
from assembler.pipeline.layers.prebuilt_layers import Prebuilt, file_opener, prebuilt_of
from assembler.pipeline.store import prebuilt_checks as checks
from assembler.pipeline.store.prebuilt_checks import Paths
from assembler.sbom.facts import DownloadFact
from assembler.transports import registry_options

if TYPE_CHECKING:
    from assembler.cache import Cache
    from assembler.oci.layer import Layer

# What decompressing a url: layer's file raises when it is no (compressed) tar.
_NOT_A_TAR: tuple[type[Exception], ...] = (OSError, EOFError, ValueError, *DECOMPRESS_ERRORS)


def file_name(spec: m.UrlLayer) -> str:
    """The name of the file a ``url:`` layer fetches (its URL's last part)."""
    return posixpath.basename(spec.url.split("?", 1)[0].split("#", 1)[0]) or "download"


def _unpack_to(path: Path, plain: Path, what: str) -> None:
    """The tar inside ``path`` (gzip, zstd, xz, bzip2 or none) written to ``plain``: the
    layer writer reads members out of order, which a compressed stream cannot do cheaply.
    Bounded as a ``rootfs:`` is: InputError for a decompression bomb."""
    limit = unpack_limit(path.stat().st_size)
    with open(path, "rb") as raw:
        head = raw.read(6)
    with open(path, "rb") as raw, open(plain, "wb") as out:
        if head.startswith(b"\xfd7zXZ"):
            with lzma.LZMAFile(raw) as xz:
                copy_bounded(xz, out, limit, what)
        elif head.startswith(b"BZh"):
            with bz2.BZ2File(raw) as bz:
                copy_bounded(bz, out, limit, what)
        else:
            with decompressed(raw) as data:
                copy_bounded(data, out, limit, what)


def url_layer(prebuilt: Prebuilt, spec: m.UrlLayer) -> Layer | None:
    """The layer of ``spec`` (None: a plan, and it is not made yet)."""
    pinned = key_of(
        {
            "sha256": spec.sha256,
            "to": spec.to,
            "extract": spec.extract,
            "mode": spec.mode,
            "name": file_name(spec),
            **prebuilt.settings(),
            **({"owner": spec.owner} if spec.owner else {}),
        }
    )
    key, shared, what = "url-layer-" + pinned, "url-shared-" + pinned, f"url {file_name(spec)}"
    layer = prebuilt.cache.layer(key) or prebuilt.shared(shared, what, partial(_check_url, prebuilt, spec))
    if layer is not None:
        prebuilt.share(shared, layer, what)
        return layer
    return prebuilt.maker.missing(lambda: _fetch_url(prebuilt, spec, key, shared, what))


def _check_url(prebuilt: Prebuilt, spec: m.UrlLayer, result: StepResult, paths: Paths) -> str | None:
    """Why a ``url:`` layer from a step cache is not the one its pinned file makes."""
    return checks.url_layer(spec, result, paths, cache=prebuilt.cache, remake=partial(_url_layer, prebuilt, spec))


def _fetch_url(prebuilt: Prebuilt, spec: m.UrlLayer, key: str, shared: str, what: str) -> Layer:
    """The layer of ``spec``'s file, downloaded (pinned) and placed or unpacked."""
    download(
        spec.url,
        sha256=spec.sha256,
        cache=prebuilt.cache,
        max_bytes=size_bytes(spec.max_size),
        what=f"url layer {redacted(spec.url)}",
        cap_hint="raise the layer's max_size if the file is so big",
        limits=registry_options(prebuilt.ctx).limits,  # --network-timeout, --network-deadline
    )
    layer = _url_layer(prebuilt, spec)
    prebuilt.cache.put_layer(key, layer)
    prebuilt.share(shared, layer, what)
    prebuilt.made_one()
    return layer


def _url_layer(prebuilt: Prebuilt, spec: m.UrlLayer) -> Layer:
    """The layer of ``spec``'s pinned file (in the cache): placed, or its tar unpacked."""
    path = prebuilt.verified(spec.sha256)
    with prebuilt.cache.workdir("url-") as work:
        if spec.extract:
            layer = _write_tar(prebuilt, path, spec, work / "plain.tar")
        else:
            dest = spec.to + file_name(spec) if spec.to.endswith("/") else spec.to
            uid, _, gid = (spec.owner or "0").partition(":")
            entry = TarEntry(
                clean_path(dest),
                "file",
                mode=spec.mode if spec.mode is not None else 0o644,
                uid=int(uid),
                gid=int(gid or uid),
                size=path.stat().st_size,
                mtime=prebuilt.ctx.epoch,
            )
            layer = prebuilt.write([(entry, file_opener(path))])
    return layer


def _write_tar(prebuilt: Prebuilt, path: Path, spec: m.UrlLayer, plain: Path) -> Layer:
    """The tar ``path`` (compressed or not) unpacked under ``spec.to``."""
    what = f"url layer {redacted(spec.url)}"
    try:
        _unpack_to(path, plain, what)
    except _NOT_A_TAR as e:
        raise InputError(f"{what}: extract: true, but the file is not a tar archive ({e})") from None
    root = spec.to.strip("/")
    with open(plain, "rb") as f, reading(f, what=what, stream=False) as (tf, entries):
        members: list[Member] = []
        for entry, info in entries:  # the one reader: damage, bounds, UnsafePath for '..'
            if not entry.path:
                continue
            moved = replace(entry, path=posixpath.join(root, entry.path))
            if entry.kind == "hardlink":
                moved = replace(moved, linkname=posixpath.join(root, entry.linkname))
            members.append((moved, opener(tf, info, what=what) if entry.kind == "file" else None))
        # A member below one of the archive's own symlinks would be written through it
        # (l -> /etc, then l/passwd): wherever the image is unpacked, not under 'to'.
        links = {x.path for x, _ in members if x.kind == "symlink"}
        for member, _ in members:
            if any(p in links for p in parents(member.path)):
                raise UnsafePath(f"{what}: member {member.path!r} goes through the archive's own symlink")
        return prebuilt.write(members)


def _layers(prebuilt: Prebuilt, spec: m.UrlLayer, what: str) -> list[tuple[Layer, str]] | None:
    layer = url_layer(prebuilt, spec)
    return [(layer, what)] if layer is not None else None


class UrlKind(Kind[m.UrlLayer]):
    model = m.UrlLayer

    def start(self, starting: Starting) -> Prebuilt:
        return prebuilt_of(starting)

    def place(self, spec: m.UrlLayer, at: Stacking) -> Placed:
        prebuilt: Prebuilt = at.state
        what = f"url {file_name(spec)} {spec.to}"
        return prebuilt.place(what, partial(_layers, prebuilt, spec, what))

    def warning(self, spec: m.UrlLayer, at: Stacking) -> str | None:
        """Raises the layer's ManifestError (file:line) for a file that would replace a
        folder of the image below."""
        view = at.view
        if view is None or spec.extract or spec.to.endswith("/") or view.resolve(spec.to.strip("/")) not in view.dirs:
            return None
        raise at.loaded.error(
            (*at.path, "to"),
            f"{spec.to} is a folder in the image below: the file would replace it and all it holds",
            hint=f"to: {spec.to}/ puts the file into it",
        )

    def downloads(self, spec: m.UrlLayer, architecture: str, cache: Cache) -> list[DownloadFact]:
        return [DownloadFact(f"url:{file_name(spec)}", spec.url, spec.sha256)]

    def reports(self, spec: m.UrlLayer) -> int:
        return 1
