"""``pip:`` layers: wheels from a package index, unpacked as pip installs them into a
prefix (pypa/installer: :mod:`assembler.archive.wheel`), or placed as files (``files_to``).

Each layer is cached by a key of the wheels' pinned sha256s and where they go, so a plan
finds it without the network, and a layer whose wheels did not change is not made (nor
pushed) again: with ``split:``, a vLLM bump leaves the torch and nvidia layers as they
were. What ``pip:`` and ``url:`` layers share (the registry step cache, the writer) is
:class:`~assembler.pipeline.layers.prebuilt_layers.Prebuilt`.
"""

from __future__ import annotations

import fnmatch
import posixpath
import zipfile
from contextlib import ExitStack
from functools import partial
from typing import TYPE_CHECKING

from assembler.archive.layer import Member
from assembler.archive.view import TreeView
from assembler.cache import key_of
from assembler.cache.entries import StepResult
from assembler.manifest.schema import model as m
from assembler.manifest.schema.pinned import Requirement, parse_requirement
from assembler.manifest.text.urls import redacted, scrubbed
from assembler.pipeline.layers.kinds.base import Kind, Stacking, Starting
from assembler.pipeline.layers.placed import Placed
from assembler.pipeline.layers.prebuilt_layers import Prebuilt, prebuilt_of
from assembler.pipeline.store import prebuilt_checks as checks
from assembler.pipeline.store.prebuilt_checks import Paths
from assembler.python import index as pypi
from assembler.sbom.facts import DownloadFact
from assembler.transports import registry_options

if TYPE_CHECKING:
    from assembler.archive.wheel import Scheme
    from assembler.cache import Cache
    from assembler.oci.layer import Layer


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


def pip_layers(prebuilt: Prebuilt, spec: m.PipLayer) -> list[tuple[Layer, str]] | None:
    """The layers of ``spec`` (None: a plan, and one is not made yet)."""
    scheme = scheme_of(spec)
    arch = pypi.machine(prebuilt.ctx.platform.architecture)
    out = []
    for group in groups(spec):
        layer = _pip_group(prebuilt, spec, group, scheme, arch)
        if layer is None:
            return None
        out.append((layer, describe(group)))
    return out


def _pip_group(
    prebuilt: Prebuilt, spec: m.PipLayer, group: list[Requirement], scheme: Scheme, arch: str
) -> Layer | None:
    """The layer of one group of ``spec``'s wheels (None: a plan, and it is not made yet)."""
    shas = [pypi.chosen(r, python=spec.python, arch=arch, cache=prebuilt.cache) for r in group]
    key = _pip_key(prebuilt, shas, scheme, spec.files_to) if None not in shas else None
    shared = "pip-group-" + key_of(
        {
            "requirements": [scrubbed(r.text) for r in group],  # a password changed is the same layer
            "index": redacted(spec.index),
            "python": spec.python,
            "arch": arch,
            "scheme": scheme.__dict__,
            **prebuilt.settings(),
            **({"files_to": spec.files_to} if spec.files_to else {}),
        }
    )
    check = partial(_check_wheels, prebuilt, spec, group, scheme, arch)
    layer = (prebuilt.cache.layer(key) if key is not None else None) or prebuilt.shared(shared, describe(group), check)
    if layer is None:
        layer = prebuilt.maker.missing(lambda: _fetch_wheels(prebuilt, spec, group, scheme, arch))
    if layer is not None:
        prebuilt.share(shared, layer, describe(group))
    return layer


def _fetch_wheels(prebuilt: Prebuilt, spec: m.PipLayer, group: list[Requirement], scheme: Scheme, arch: str) -> Layer:
    """The layer of ``group``'s wheels, fetched (pinned) and installed into it."""
    wheels = [
        pypi.fetch(
            r,
            index=spec.index,
            python=spec.python,
            arch=arch,
            cache=prebuilt.cache,
            what="pip layer",
            limits=registry_options(prebuilt.ctx).limits,
        )
        for r in group
    ]
    key = _pip_key(prebuilt, [w.sha256 for w in wheels], scheme, spec.files_to)
    layer = prebuilt.cache.layer(key)
    if layer is None:
        layer = _wheels_layer(prebuilt, wheels, scheme, spec.files_to)
        prebuilt.cache.put_layer(key, layer)
        prebuilt.made_one()
    return layer


def _check_wheels(
    prebuilt: Prebuilt,
    spec: m.PipLayer,
    group: list[Requirement],
    scheme: Scheme,
    arch: str,
    result: StepResult,
    paths: Paths,
) -> str | None:
    """Why a ``pip:`` layer from a step cache is not the one its wheels make (checked when
    the wheels are here)."""
    wheels = [pypi.here(r, python=spec.python, arch=arch, cache=prebuilt.cache) for r in group]
    here = [w for w in wheels if w is not None]
    remake = partial(_wheels_layer, prebuilt, here, scheme, spec.files_to)
    return checks.remade(result, paths, remake, if_=len(here) == len(wheels))


def _pip_key(prebuilt: Prebuilt, shas: list[str | None], scheme: Scheme, files_to: str | None) -> str:
    files = {"files_to": files_to} if files_to else {}
    return "pip-layer-" + key_of({"wheels": shas, "scheme": scheme.__dict__, **prebuilt.settings(), **files})


def _wheels_layer(prebuilt: Prebuilt, wheels: list[pypi.Wheel], scheme: Scheme, files_to: str | None) -> Layer:
    """The layer of ``wheels`` (in the cache), installed as ``scheme`` says, or the files
    themselves in ``files_to``."""
    from assembler.archive.wheel import wheel_file, wheel_members

    epoch = prebuilt.ctx.epoch
    if files_to:
        return prebuilt.write(
            [wheel_file(prebuilt.verified(w.sha256), files_to, filename=w.filename, epoch=epoch) for w in wheels]
        )
    with ExitStack() as stack:
        members: list[Member] = []
        for wheel in wheels:
            zf = stack.enter_context(zipfile.ZipFile(prebuilt.verified(wheel.sha256)))
            what = f"wheel {wheel.filename} (sha256:{wheel.sha256})"
            members += wheel_members(zf, scheme, filename=wheel.filename, epoch=epoch, what=what)
        return prebuilt.write(members)


class PipKind(Kind[m.PipLayer]):
    model = m.PipLayer

    def start(self, starting: Starting) -> Prebuilt:
        return prebuilt_of(starting)

    def place(self, spec: m.PipLayer, at: Stacking) -> Placed:
        prebuilt: Prebuilt = at.state
        what = describe([parse_requirement(text) for text in spec.pip])
        return prebuilt.place(what, partial(pip_layers, prebuilt, spec))

    def warning(self, spec: m.PipLayer, at: Stacking) -> str | None:
        return no_python_below(spec, at.view) if at.view is not None else None

    def downloads(self, spec: m.PipLayer, architecture: str, cache: Cache) -> list[DownloadFact]:
        """The wheels this build's platform took (one pinned by several hashes: the one
        chosen); one whose layer came from a registry step cache, never fetched here, is
        not known and left out."""
        out = []
        for req in map(parse_requirement, spec.pip):
            sha = pypi.chosen(req, python=spec.python, arch=pypi.machine(architecture), cache=cache)
            uri = req.url or f"pkg:pypi/{req.name}@{req.version}"
            out += [DownloadFact(f"pip:{req.pin}", uri, sha)] if sha else []
        return out

    def reports(self, spec: m.PipLayer) -> int:
        return len(groups(spec))  # one layer per group of wheels
