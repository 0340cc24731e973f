"""Which hosts a build reaches, read from the manifest (``plan`` shows them): registries of
the bases, git and URL sources, package indexes of Python sets and ``pip:`` layers, files of
``url:`` layers, and the URLs and PPAs written in steps' commands and env. apt installs reach
the base's own mirror, named as such. A user behind a proxy or on an air-gapped node learns
before a build what it will ask for."""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit

from assembler.spec import model as m
from assembler.spec.pysets import PythonSet

_URL = re.compile(r"\b(?:https?|git|ssh)://([A-Za-z0-9.-]+(?::[0-9]+)?)")
_PPA = re.compile(r"\bppa:[A-Za-z0-9._-]+/[A-Za-z0-9._-]+")
APT = "(the base's apt mirror)"


def _docker_host(ref: str) -> str | None:
    if not ref.startswith("docker://"):
        return None
    first = ref.removeprefix("docker://").split("/", 1)
    if len(first) == 2 and ("." in first[0] or ":" in first[0] or first[0] == "localhost"):
        return first[0]
    return "registry-1.docker.io"


def _in_text(texts: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for text in texts:
        found.update(match.group(1) for match in _URL.finditer(text))
        if _PPA.search(text):
            found.add("ppa.launchpadcontent.net")
    return found


def _step_hosts(run: Iterable[str], env: dict[str, str], sets: Iterable[PythonSet], packages: bool) -> set[str]:
    hosts = _in_text([*run, *env.values()])
    for pyset in sets:
        hosts.update(urlsplit(index).netloc for index in pyset.indexes())
    if packages:
        hosts.add(APT)
    return hosts


def reaches(manifest: m.Manifest, steps: Collection[str], bases: Collection[str]) -> dict[str, list[str]]:
    """host -> the parts of the manifest that reach it (sorted), for the bases, compile
    ``steps`` (the plan's), their sources and the sources labels name, and the layers."""
    found: dict[str, set[str]] = {}

    def add(hosts: Iterable[str], where: str) -> None:
        for host in hosts:
            if host:
                found.setdefault(host, set()).add(where)

    used = [step for step in manifest.compile if step.name in steps]
    named = repr(manifest.annotations) + repr(manifest.image.config.labels)
    sources = {s for step in used for s in step.sources} | {s for s in manifest.sources if f"sources.{s}." in named}
    for name, spec in manifest.bases.items():
        if name in bases:
            add(_base_hosts(spec), f"bases.{name}")
    for name, src in manifest.sources.items():
        if name in sources and isinstance(src, m.GitSource | m.UrlSource):
            add([urlsplit(src.git if isinstance(src, m.GitSource) else src.url).netloc], f"sources.{name}")
    for step in used:
        add(_step_hosts(step.run, step.env, step.python_sets, bool(step.packages)), step.name)
    for i, layer in enumerate(manifest.image.layers):
        add(_layer_hosts(layer), f"layers.{getattr(layer, 'name', None) or i}")
    return {host: sorted(wheres) for host, wheres in sorted(found.items())}


def _base_hosts(spec: m.BaseSpec) -> list[str]:
    """The host a base is pulled from (a registry) or bootstrapped from (an apt mirror)."""
    ref = spec if isinstance(spec, str) else spec.ref if isinstance(spec, m.RefBase) else None
    if ref is None and isinstance(spec, m.BootstrapBase):
        return [urlsplit(spec.bootstrap.mirror).netloc if spec.bootstrap.mirror else APT]
    return [h for h in [_docker_host(ref)] if h] if ref is not None else []


def _layer_hosts(layer: m.LayerSpec) -> Collection[str]:
    """The hosts a layer of the image reaches while it is made."""
    if isinstance(layer, m.RunLayer):
        return _step_hosts(layer.run, layer.env, layer.python_sets, False)
    if isinstance(layer, m.PackagesLayer):
        return [APT]
    if isinstance(layer, m.PipLayer):
        return [urlsplit(layer.index).netloc]
    if isinstance(layer, m.UrlLayer):
        return [urlsplit(layer.url).netloc]
    return []
