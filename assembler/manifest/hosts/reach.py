"""Which hosts a build reaches, read from the manifest (``plan`` shows them, a build checks
them first: :mod:`assembler.pipeline.checks.preflight`): registries of the bases and outputs, the
apt mirror a base is bootstrapped from, git and URL sources, package indexes of Python sets
and ``pip:`` layers (PyPI's files host too), files of ``url:`` layers, and what steps'
commands reach: URLs and PPAs written in them and the indexes of the package tools they run
(:mod:`assembler.manifest.hosts.toolhosts`: pip, uv, cargo with the git hosts of its lock, go, npm,
conda, apt). A step's ``reaches:`` adds hosts its commands hide and says what avoids each
(:mod:`assembler.manifest.schema.hostuse`). A user behind a proxy or on an air-gapped node learns
before a build what it will ask for.

Each host comes with the part that reaches it (``base:NAME``, ``step:NAME``, ``layer:I``,
``source:NAME``, ``output:I``), so that a build checks only what its parts not yet made
will reach."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from assembler.manifest.hosts import toolhosts
from assembler.manifest.schema import model as m
from assembler.manifest.schema.hostuse import HostUse
from assembler.manifest.schema.pysets import PythonSet

APT = "(the base's apt mirror)"  # a base whose mirror is not known before it is read
_PYPI_FILES = ("files.pythonhosted.org", "https")


@dataclass(frozen=True)
class Need:
    """One part of a build that reaches one host."""

    host: str  # host[:port]; or, in parentheses, one not known before the build (a base's apt mirror)
    scheme: str  # how it is asked: https, http, ssh, git ("" for one in parentheses)
    where: str  # the part as plan names it: bases.NAME, STEP, layers.NAME, sources.NAME, outputs.N
    part: str  # what must be made for the host to be reached: base:NAME, step:NAME, layer:I, source:NAME, output:I
    avoid: tuple[tuple[str, str], ...] = ()  # --set K=V that leave the part out
    only: str | None = None  # reached only sometimes (why): a warning when it does not answer

    @property
    def known(self) -> bool:
        """Whether the host is named (not a mirror only the base itself knows)."""
        return not self.host.startswith("(")


def apt_mirror(base: str) -> str:
    """What a base's apt mirror is called before the base is read."""
    return f"(the apt mirror of bases.{base})" if base else APT


def _docker_host(ref: str) -> str | None:
    for scheme in ("docker://", "oras://"):
        if ref.startswith(scheme):
            first = ref.removeprefix(scheme).split("/", 1)
            if len(first) == 2 and ("." in first[0] or ":" in first[0] or first[0] == "localhost"):
                return first[0]
            return "registry-1.docker.io"
    return None


def _url_host(url: str) -> toolhosts.Host:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2], parts.scheme or "https"


def _index_hosts(indexes: Iterable[str]) -> set[toolhosts.Host]:
    """The hosts of package indexes, PyPI's files host with PyPI's."""
    found = {_url_host(i) for i in indexes if not i.startswith("file:")}
    return found | {_PYPI_FILES} if any(h == "pypi.org" for h, _ in found) else found


@dataclass(frozen=True)
class _Commands:
    """What a step or run layer says that reaches hosts."""

    run: Sequence[str]
    env: Mapping[str, str]
    sets: Sequence[PythonSet]
    declared: Mapping[str, HostUse]
    packages: bool = False
    cargo_git: Collection[toolhosts.Host] = ()

    def hosts(self, mirror: tuple[str, str]) -> dict[toolhosts.Host, HostUse]:
        """Each host (``mirror`` for apt) with what the step says of it."""
        found: set[toolhosts.Host] = toolhosts.urls([*self.run, *self.env.values()])
        for host in toolhosts.tools(self.run, self.env, cargo_git=self.cargo_git):
            found.add(mirror if host == toolhosts.APT else host)  # type: ignore[arg-type]
        found |= _index_hosts(i for s in self.sets for i in s.indexes())
        if self.packages:
            found.add(mirror)
        out = {host: self.declared.get(host[0], HostUse()) for host in found}
        for name, use in self.declared.items():
            if not any(h == name for h, _ in out):
                out[(name, "https")] = use
        return out


def needs(
    manifest: m.Manifest,
    steps: Collection[str],
    bases: Collection[str],
    *,
    outputs: Sequence[str] = (),
    caches: Sequence[str] = (),
    mirrors: Mapping[str, str] | None = None,
    folder: Path | None = None,
) -> list[Need]:
    """Every host the bases, compile ``steps`` (the plan's) and their sources, the layers and
    ``outputs`` reach. ``mirrors``: the apt mirror URL of each
    base whose mirror is known before it is read (bootstrapped ones); ``folder``: where the
    manifest's path sources are (their Cargo.lock names the git hosts cargo fetches from);
    ``caches``: the registry step caches (``--cache-to``, ``--cache-from``)."""
    mirrors = mirrors or {}
    found: list[Need] = []
    for name, spec in manifest.bases.items():
        if name in bases:
            found += [Need(h, s, f"bases.{name}", f"base:{name}") for h, s in _base_hosts(spec, mirrors.get(name))]
    found += _source_needs(manifest, steps)
    for step in (s for s in manifest.compile if s.name in steps):
        commands = (
            _Commands(
                step.run,
                step.env,
                step.python_sets,
                step.reaches,
                bool(step.packages),
                _cargo_git(manifest, step, folder),
            )
            if step.network
            else _Commands((), {}, (), {}, bool(step.packages), set())  # its packages: come from the mirror
        )
        found += _step_needs(commands, step.name, f"step:{step.name}", _mirror(step.base or "", mirrors))
    image_mirror = _mirror(manifest.image.base, mirrors)
    for i, layer in enumerate(manifest.image.layers):
        found += _layer_needs(layer, i, image_mirror)
    for i, ref in enumerate(outputs):
        if (host := _docker_host(ref)) is not None:
            found.append(Need(host, "https", f"outputs.{i}", f"output:{i}"))
    for ref in caches:
        if (host := _docker_host(ref)) is not None:
            # a step cache that fails is a warning: the build goes on without it (stepcache/steps.py)
            found.append(Need(host, "https", "step cache", "cache:", only="a build goes on without it"))
    return found


def reaches(
    manifest: m.Manifest,
    steps: Collection[str],
    bases: Collection[str],
    *,
    outputs: Sequence[str] = (),
    mirrors: Mapping[str, str] | None = None,
    folder: Path | None = None,
) -> dict[str, list[str]]:
    """host -> the parts that reach it (sorted): :func:`needs`, as plan shows it."""
    found: dict[str, set[str]] = {}
    for need in needs(manifest, steps, bases, outputs=outputs, mirrors=mirrors, folder=folder):
        found.setdefault(need.host, set()).add(need.where)
    return {host: sorted(wheres) for host, wheres in sorted(found.items())}


def _mirror(base: str, mirrors: Mapping[str, str]) -> tuple[str, str]:
    url = mirrors.get(base)
    return _url_host(url) if url else (apt_mirror(base), "")


def _source_needs(manifest: m.Manifest, steps: Collection[str]) -> list[Need]:
    """The git and URL sources of ``steps`` (a label naming a source never fetches it:
    ``pipeline.image.labels.source_facts``)."""
    used = {s for step in manifest.compile if step.name in steps for s in step.sources}
    out = []
    for name, src in manifest.sources.items():
        if name in used and isinstance(src, m.GitSource | m.UrlSource):
            host, scheme = _url_host(src.git if isinstance(src, m.GitSource) else src.url)
            if host:
                out.append(Need(host, scheme, f"sources.{name}", f"source:{name}"))
            elif isinstance(src, m.GitSource) and (scp := toolhosts.urls([src.git])):
                out += [Need(h, s, f"sources.{name}", f"source:{name}") for h, s in scp]
    return out


def _step_needs(commands: _Commands, where: str, part: str, mirror: tuple[str, str]) -> list[Need]:
    return [
        Need(host, scheme, where, part, tuple(sorted(use.avoid.items())), use.only)
        for (host, scheme), use in sorted(commands.hosts(mirror).items())
    ]


def _cargo_git(manifest: m.Manifest, step: m.CompileStep, folder: Path | None) -> set[toolhosts.Host]:
    """The git hosts the Cargo.lock of ``step``'s path sources name (none without ``folder``)."""
    if folder is None:
        return set()
    trees = [folder / s.path for n in step.sources if isinstance(s := manifest.sources.get(n), m.PathSource)]
    # a crate the step is given as a tree of its own is not fetched (rust-binaries: git_deps)
    given = {c for tree in trees if (c := toolhosts.crate_name(tree)) is not None}
    found: set[toolhosts.Host] = set()
    for tree in trees:
        found |= toolhosts.cargo_git_hosts(tree, given)
    return found


def _base_hosts(spec: m.BaseSpec, mirror: str | None) -> list[toolhosts.Host]:
    """The host a base is pulled from (a registry) or bootstrapped from (an apt mirror)."""
    ref = spec if isinstance(spec, str) else spec.ref if isinstance(spec, m.RefBase) else None
    if ref is None and isinstance(spec, m.BootstrapBase):
        url = spec.bootstrap.mirror or mirror
        return [_url_host(url)] if url else [(APT, "")]
    return [(h, "https") for h in [_docker_host(ref)] if h] if ref is not None else []


def _layer_needs(layer: m.LayerSpec, index: int, mirror: tuple[str, str]) -> list[Need]:
    """What a layer of the image reaches while it is made."""
    where = f"layers.{layer.label() or index}"
    fetches = layer.fetches(index)  # the layer's kind says what it reaches
    if fetches is None:
        return []
    part = fetches.part
    found = []
    if fetches.run is not None:
        commands = _Commands(fetches.run, fetches.env, fetches.sets, fetches.declared)
        found += _step_needs(commands, where, part, mirror)
    if fetches.apt:
        found.append(Need(mirror[0], mirror[1], where, part))
    found += [Need(h, s, where, part) for h, s in sorted(_index_hosts(fetches.indexes))]
    found += [Need(*_url_host(url), where, part) for url in fetches.urls]
    return found
