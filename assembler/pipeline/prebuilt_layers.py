"""Layers of prebuilt things: ``pip:`` wheels and ``url:`` files (:mod:`assembler.spec.prebuilt`).

No container runs: a wheel is installed by pypa/installer into layer members
(:mod:`assembler.archive.wheel`) and a file is placed (or its tar unpacked) by our own
tar writer. Each layer is cached by
a key of the pinned sha256s and where they go, so a plan finds it without the network,
and a layer whose wheels did not change is not made (nor pushed) again: with ``split:``, a
vLLM bump leaves the torch and nvidia layers as they were.
"""

from __future__ import annotations

import bz2
import fnmatch
import hashlib
import lzma
import posixpath
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from assembler.archive.compress import DECOMPRESS_ERRORS, decompressed
from assembler.archive.headers import LayerHeaders
from assembler.archive.layer import Member, Opener, with_parents, write_layer
from assembler.archive.tar import TarEntry, clean_path
from assembler.archive.tarread import copy_bounded, opener, reading, unpack_limit
from assembler.archive.tree import parents
from assembler.archive.view import TreeView
from assembler.cache import key_of
from assembler.cache.entries import StepResult
from assembler.cache.memos import remember_headers
from assembler.errors import CorruptBlob, InputError, UnsafePath
from assembler.oci.layer import Layer
from assembler.pipeline import prebuilt_checks as checks
from assembler.pipeline.maker import Maker
from assembler.pipeline.origins import Origins
from assembler.pipeline.prebuilt_checks import Check, Paths
from assembler.pipeline.stepstore import StepStore, note_taken
from assembler.python import index as pypi
from assembler.python.download import download
from assembler.sbom.packages import DATABASE_TEXTS, remember_kept_texts
from assembler.spec import model as m
from assembler.spec.prebuilt import Requirement, parse_requirement, size_bytes
from assembler.transports import Context, registry_options

if TYPE_CHECKING:
    from assembler.archive.wheel import Scheme

# What decompressing a url: layer's file raises when it is no (compressed) tar.
_NOT_A_TAR: tuple[type[Exception], ...] = (OSError, EOFError, ValueError, *DECOMPRESS_ERRORS)
_FORMAT = 1  # bump when the way a layer is made changes: every pip/url layer is made again


def _file_opener(path: Path) -> Opener:
    return lambda: cast(AbstractContextManager[BinaryIO], open(path, "rb"))  # the writer closes it


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


def scheme_of(spec: m.PipLayer) -> Scheme:
    from assembler.archive.wheel import Scheme  # pypa/installer: for manifests that install wheels

    return Scheme(spec.prefix, spec.site, spec.interpreter or f"{spec.prefix}/bin/python", spec.python)


def no_python_below(spec: m.PipLayer, view: TreeView) -> str | None:
    """Why the wheels of ``spec`` would land where no Python reads them, if they would:
    the image below has no PREFIX/lib/pythonX.Y (no venv there, or another Python)."""
    if spec.files_to:
        return None  # the files themselves: no Python reads them
    folder = posixpath.dirname(spec.site.rstrip("/"))
    if posixpath.dirname(view.resolve(folder.strip("/") + "/site-packages")) in view.dirs:
        return None
    return (
        f"{describe([parse_requirement(t) for t in spec.pip])}: the image below has no {folder}, so no "
        f"Python {spec.python} reads {spec.site} (make the venv first, or set python:, prefix: or "
        "site_packages: to the image's)"
    )


def below(spec: m.PipLayer | m.UrlLayer, view: TreeView, error: Callable[..., InputError]) -> str | None:
    """A warning about where ``spec`` lands on the image ``view`` describes, if it needs one.
    Raises ``error(message, hint=...)`` (the layer's file:line) for a file that would
    replace a folder of that image."""
    if isinstance(spec, m.PipLayer):
        return no_python_below(spec, view)
    if not spec.extract and not spec.to.endswith("/") and view.resolve(spec.to.strip("/")) in view.dirs:
        raise error(
            f"{spec.to} is a folder in the image below: the file would replace it and all it holds",
            hint=f"to: {spec.to}/ puts the file into it",
        )
    return None


def groups(spec: m.PipLayer) -> list[list[Requirement]]:
    """The requirements of each layer: one layer, or one per wheel (``split: true``), or
    one per wheel ``split`` names and one for the rest (in the order written)."""
    reqs = [parse_requirement(text) for text in spec.pip]
    if spec.split is True:
        return [[r] for r in reqs]
    if not spec.split:
        return [reqs]
    patterns = spec.split
    alone = [[r] for r in reqs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
    rest = [r for r in reqs if not any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
    return alone + ([rest] if rest else [])


def describe(group: list[Requirement]) -> str:
    text = "pip " + " ".join(r.pin for r in group)
    return text if len(text) <= 120 else text[:100] + f"... ({len(group)} wheels)"


class Prebuilt:
    """Makes (a build's ``maker``) or looks up (a plan's) ``pip:`` and ``url:`` layers."""

    def __init__(self, ctx: Context, *, maker: Maker, steps: StepStore, origins: Origins, checks: bool) -> None:
        self.ctx = ctx
        self.cache = ctx.cache
        self.maker = maker
        self.made = False  # whether the last place() made a layer (else all were cached)
        # Where layers are recorded and shared (a layer is a step cache entry too), and where
        # each entry used came from (for the provenance, and what is built on it).
        self.steps = steps
        self.origins = origins
        # Whether a layer from a registry step cache is checked against its pins (a build's);
        # a plan takes its record alone.
        self.checks = checks

    def place(self, spec: m.PipLayer | m.UrlLayer) -> tuple[list[tuple[Layer, str]], str, str]:
        """The layers of ``spec`` with what each is, what the spec is, and their origin
        (cached, built, or will-build: a plan, and they are not made yet)."""
        self.made = False
        if isinstance(spec, m.PipLayer):
            what = describe([parse_requirement(text) for text in spec.pip])
            layers = self.pip(spec)
        else:
            what = f"url {self._file_name(spec)} {spec.to}"
            layer = self.url(spec)
            layers = [(layer, what)] if layer is not None else None
        if layers is None:
            return [], what, "will-build"
        return layers, what, "built" if self.made else "cached"

    # -- pip -------------------------------------------------------------------------------

    def pip(self, spec: m.PipLayer) -> list[tuple[Layer, str]] | None:
        """The layers of ``spec`` (None: a plan, and one is not made yet)."""
        scheme = scheme_of(spec)
        arch = pypi.machine(self.ctx.platform.architecture)
        out = []
        for group in groups(spec):
            layer = self._pip_group(spec, group, scheme, arch)
            if layer is None:
                return None
            out.append((layer, describe(group)))
        return out

    def _pip_group(self, spec: m.PipLayer, group: list[Requirement], scheme: Scheme, arch: str) -> Layer | None:
        """The layer of one group of ``spec``'s wheels (None: a plan, and it is not made yet)."""
        shas = [pypi.chosen(r, python=spec.python, arch=arch, cache=self.cache) for r in group]
        key = self._pip_key(shas, scheme, spec.files_to) if None not in shas else None
        shared = "pip-group-" + key_of(
            {
                "requirements": [r.text for r in group],
                "index": spec.index,
                "python": spec.python,
                "arch": arch,
                "scheme": scheme.__dict__,
                **self._settings(),
                **({"files_to": spec.files_to} if spec.files_to else {}),
            }
        )
        check = partial(self._check_wheels, spec, group, scheme, arch)
        layer = (self.cache.layer(key) if key is not None else None) or self._shared(shared, describe(group), check)
        if layer is None:
            layer = self.maker.missing(lambda: self._fetch_wheels(spec, group, scheme, arch))
        if layer is not None:
            self._share(shared, layer, describe(group))
        return layer

    def _fetch_wheels(self, spec: m.PipLayer, group: list[Requirement], scheme: Scheme, arch: str) -> Layer:
        """The layer of ``group``'s wheels, fetched (pinned) and installed into it."""
        wheels = [
            pypi.fetch(
                r,
                index=spec.index,
                python=spec.python,
                arch=arch,
                cache=self.cache,
                what="pip layer",
                limits=registry_options(self.ctx).limits,
            )
            for r in group
        ]
        key = self._pip_key([w.sha256 for w in wheels], scheme, spec.files_to)
        layer = self.cache.layer(key)
        if layer is None:
            layer = self._wheels_layer(wheels, scheme, spec.files_to)
            self.cache.put_layer(key, layer)
            self.made = True
        return layer

    def _settings(self) -> dict[str, object]:
        return {"epoch": self.ctx.epoch, "compression": self.ctx.compression, "format": _FORMAT}

    def _shared(self, key: str, what: str, check: Check) -> Layer | None:
        """The layer recorded under ``key`` here, else in the registry step cache: a build's
        is checked against the pins there (``check``), a plan's is its record alone."""
        hit = self.steps.fetch(key, what, check=check if self.checks else None)
        if hit is not None:
            note_taken(self.steps, self.origins, key, what, [b.diff_id for b in hit.layers()])
        return hit.layer if hit is not None else None

    def _check_wheels(
        self, spec: m.PipLayer, group: list[Requirement], scheme: Scheme, arch: str, result: StepResult, paths: Paths
    ) -> str | None:
        """Why a ``pip:`` layer from a step cache is not the one its wheels make (checked when
        the wheels are here)."""
        wheels = [pypi.here(r, python=spec.python, arch=arch, cache=self.cache) for r in group]
        here = [w for w in wheels if w is not None]
        remake = partial(self._wheels_layer, here, scheme, spec.files_to)
        return checks.remade(result, paths, remake, if_=len(here) == len(wheels))

    def _check_url(self, spec: m.UrlLayer, result: StepResult, paths: Paths) -> str | None:
        """Why a ``url:`` layer from a step cache is not the one its pinned file makes."""
        return checks.url_layer(spec, result, paths, cache=self.cache, remake=partial(self._url_layer, spec))

    def _share(self, key: str, layer: Layer, what: str) -> None:
        """``layer`` recorded under ``key`` here and in the registry step cache (a build's)."""
        self.maker.keep(lambda: self._record_shared(key, layer, what))

    def _record_shared(self, key: str, layer: Layer, what: str) -> None:
        if self.cache.step_result(key) is None:
            self.cache.put_step_result(key, StepResult(what, layer=layer))
        self.steps.export(key, StepResult(what, layer=layer))

    def _pip_key(self, shas: list[str | None], scheme: Scheme, files_to: str | None) -> str:
        files = {"files_to": files_to} if files_to else {}
        return "pip-layer-" + key_of({"wheels": shas, "scheme": scheme.__dict__, **self._settings(), **files})

    def _wheels_layer(self, wheels: list[pypi.Wheel], scheme: Scheme, files_to: str | None) -> Layer:
        """The layer of ``wheels`` (in the cache), installed as ``scheme`` says, or the files
        themselves in ``files_to``."""
        from assembler.archive.wheel import wheel_file, wheel_members

        epoch = self.ctx.epoch
        if files_to:
            return self._write(
                [wheel_file(self._verified(w.sha256), files_to, filename=w.filename, epoch=epoch) for w in wheels]
            )
        with ExitStack() as stack:
            members: list[Member] = []
            for wheel in wheels:
                zf = stack.enter_context(zipfile.ZipFile(self._verified(wheel.sha256)))
                what = f"wheel {wheel.filename} (sha256:{wheel.sha256})"
                members += wheel_members(zf, scheme, filename=wheel.filename, epoch=epoch, what=what)
            return self._write(members)

    def _verified(self, sha: str) -> Path:
        """The cached file ``sha256:sha``, its bytes checked first (a zip is read out of order)."""
        path = self.cache.blob_path("sha256:" + sha)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if h.hexdigest() != sha:
            self.cache.drop_blob("sha256:" + sha)
            raise CorruptBlob(f"cached file {path}", expected="sha256:" + sha, actual="sha256:" + h.hexdigest())
        return path

    # -- url -------------------------------------------------------------------------------

    def url(self, spec: m.UrlLayer) -> Layer | None:
        """The layer of ``spec`` (None: a plan, and it is not made yet)."""
        pinned = key_of(
            {
                "sha256": spec.sha256,
                "to": spec.to,
                "extract": spec.extract,
                "mode": spec.mode,
                "name": self._file_name(spec),
                **self._settings(),
                **({"owner": spec.owner} if spec.owner else {}),
            }
        )
        key, shared, what = "url-layer-" + pinned, "url-shared-" + pinned, f"url {self._file_name(spec)}"
        layer = self.cache.layer(key) or self._shared(shared, what, partial(self._check_url, spec))
        if layer is not None:
            self._share(shared, layer, what)
            return layer
        return self.maker.missing(lambda: self._fetch_url(spec, key, shared, what))

    def _fetch_url(self, spec: m.UrlLayer, key: str, shared: str, what: str) -> Layer:
        """The layer of ``spec``'s file, downloaded (pinned) and placed or unpacked."""
        download(
            spec.url,
            sha256=spec.sha256,
            cache=self.cache,
            max_bytes=size_bytes(spec.max_size),
            what=f"url layer {spec.url}",
            cap_hint="raise the layer's max_size if the file is so big",
            limits=registry_options(self.ctx).limits,  # --network-timeout, --network-deadline
        )
        layer = self._url_layer(spec)
        self.cache.put_layer(key, layer)
        self._share(shared, layer, what)
        self.made = True
        return layer

    def _url_layer(self, spec: m.UrlLayer) -> Layer:
        """The layer of ``spec``'s pinned file (in the cache): placed, or its tar unpacked."""
        path = self._verified(spec.sha256)
        with self.cache.workdir("url-") as work:
            if spec.extract:
                layer = self._write_tar(path, spec, work / "plain.tar")
            else:
                dest = spec.to + self._file_name(spec) if spec.to.endswith("/") else spec.to
                uid, _, gid = (spec.owner or "0").partition(":")
                entry = TarEntry(
                    clean_path(dest),
                    "file",
                    mode=spec.mode if spec.mode is not None else 0o644,
                    uid=int(uid),
                    gid=int(gid or uid),
                    size=path.stat().st_size,
                    mtime=self.ctx.epoch,
                )
                layer = self._write([(entry, _file_opener(path))])
        return layer

    @staticmethod
    def _file_name(spec: m.UrlLayer) -> str:
        return posixpath.basename(spec.url.split("?", 1)[0].split("#", 1)[0]) or "download"

    def _write(self, members: list[Member]) -> Layer:
        """The layer of ``members`` (and their parents) in the cache, its headers remembered."""
        headers = LayerHeaders(texts=DATABASE_TEXTS, elf=self.ctx.elf)
        with self.cache.blob_writer() as w:
            layer = write_layer(
                with_parents(members, epoch=self.ctx.epoch),
                w,
                compression=self.ctx.compression,
                epoch=self.ctx.epoch,
                progress=self.ctx.progress,
                headers=headers,
            )
        remember_headers(self.cache, headers, digest=layer.digest, diff_id=layer.diff_id)
        remember_kept_texts(self.cache, headers, layer.diff_id)
        return layer

    def _write_tar(self, path: Path, spec: m.UrlLayer, plain: Path) -> Layer:
        """The tar ``path`` (compressed or not) unpacked under ``spec.to``."""
        what = f"url layer {spec.url}"
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
            return self._write(members)
