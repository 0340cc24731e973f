"""registries.conf as podman, buildah and skopeo apply it: where a pull reads from (part
of the registry client; the files are read by :mod:`assembler.registry.conffiles`).

containers-registries.conf(5):

- a ``[[registry]]`` table applies to the names its ``prefix`` starts (ending there, or at
  ``/``, ``:`` or ``@``; ``*.example.com`` matches any subdomain): the longest prefix
  wins. A pull tries the table's ``[[registry.mirror]]`` locations in order, then its
  ``location`` (the prefix, by default), each with the prefix replaced by the location,
  and reads the whole image from the first that has it. ``mirror-by-digest-only`` (and a
  mirror's ``pull-from-mirror``) keeps a mirror out of pulls by tag (or by digest).
- ``blocked``: pulls of the names it matches are refused.
- ``insecure``: the registry is spoken to over plain HTTP, as ``--tls-verify=false``
  means here (containers tools also accept an unverified TLS certificate).
- a short name (``ubuntu:24.04``, no registry) is an ``[aliases]`` entry's name if there
  is one, else looked for in each ``unqualified-search-registries`` in order (as podman
  does without a terminal to ask on); with neither, it is Docker Hub's, as before.

Mirrors are for reading (a build's bases, ``inspect``): a push goes to the registry its
name says, over plain HTTP when registries.conf marks that registry insecure.
"""

from __future__ import annotations

from dataclasses import dataclass

from assembler.errors import InputError
from assembler.oci.reference import DEFAULT_REGISTRY, ImageName

PULL_FROM = ("all", "digest-only", "tag-only")


@dataclass(frozen=True)
class Endpoint:
    """A mirror: where to read, and when (``pull_from``: one of :data:`PULL_FROM`)."""

    location: str
    insecure: bool = False
    pull_from: str = "all"

    def serves(self, name: ImageName) -> bool:
        """Whether a pull of ``name`` (by digest or by tag) may use this mirror."""
        return self.pull_from == "all" or (self.pull_from == "digest-only") == bool(name.digest)


@dataclass(frozen=True)
class RegistryTable:
    """One ``[[registry]]`` table. ``location`` is empty only for a ``*.`` prefix (no
    rewrite); ``origin`` is the file it comes from, for messages."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirrors: tuple[Endpoint, ...] = ()
    by_digest_only: bool = False
    origin: str = ""


@dataclass(frozen=True)
class PullSource:
    """One place a pull may read an image from: a mirror, or the name's location."""

    name: ImageName
    insecure: bool = False
    mirror: bool = False

    def __str__(self) -> str:
        return f"{'mirror ' if self.mirror else ''}{self.name}"


@dataclass(frozen=True)
class RegistriesConf:
    """The merged registries.conf: tables by prefix, the short-name search list, aliases
    (``(short name, full name)`` pairs) and the files read (for messages)."""

    tables: tuple[RegistryTable, ...] = ()
    search: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()

    def find(self, ref: str) -> RegistryTable | None:
        """The table with the longest prefix matching ``ref`` (``host[/repo][:tag]``), if any."""
        best: RegistryTable | None = None
        for table in self.tables:
            if match_length(ref, table.prefix) >= 0 and (best is None or len(table.prefix) > len(best.prefix)):
                best = table
        return best

    def insecure(self, host: str) -> bool:
        """Whether ``host`` is to be spoken to over plain HTTP: a table for it (or for a
        ``*.`` domain of it) says ``insecure``, or an insecure mirror is there."""
        table = self.find(host)
        if table is not None and table.insecure:
            return True
        return any(m.insecure and _host(m.location) == host for t in self.tables for m in t.mirrors)

    def candidates(self, name: ImageName) -> list[ImageName]:
        """The full names a pull of ``name`` may mean: itself, unless it is a short name
        (then its alias, else the name in each search registry, else Docker Hub's)."""
        if not name.short:
            return [name]
        alias = dict(self.aliases).get(name.short)
        if alias:
            full = ImageName.parse(alias)
            return [ImageName(full.registry, full.repository, name.tag, name.digest)]
        return [_under(registry, name.short, name) for registry in self.search or (DEFAULT_REGISTRY,)]

    def pull_sources(self, name: ImageName) -> list[PullSource]:
        """Where a pull of ``name`` reads from, in the order to try: for each candidate
        name, its table's mirrors that serve this pull, then its location.

        Raises InputError when every candidate is blocked.
        """
        sources: list[PullSource] = []
        blocked: list[RegistryTable] = []
        for candidate in self.candidates(name):
            table = self.find(str(candidate))
            if table is None:
                sources.append(PullSource(candidate))
            elif table.blocked:
                blocked.append(table)
            else:
                sources += _table_sources(table, candidate)
        if not sources:
            where = "; ".join(f"{t.prefix} in {t.origin}" for t in blocked)
            raise InputError(
                f"docker://{name}: pulls from this registry are blocked ({where})",
                hint="remove `blocked = true` there, or pass --base NAME=REF to read the base from elsewhere",
            )
        return sources


def match_length(ref: str, prefix: str) -> int:
    """How much of ``ref`` a table's ``prefix`` matches (what a location replaces), or -1.

    A prefix matches where it ends ``ref`` or is followed by ``/``, ``:`` or ``@``;
    ``*.example.com`` matches a host ending in ``.example.com``.
    """
    if prefix.startswith("*."):
        at = ref.find(prefix[1:])
        if at < 0 or "/" in ref[:at]:
            return -1
        end = at + len(prefix) - 1
    elif ref.startswith(prefix):
        end = len(prefix)
    else:
        return -1
    return end if end == len(ref) or ref[end] in ":/@" else -1


def _table_sources(table: RegistryTable, name: ImageName) -> list[PullSource]:
    mirrors = [m for m in table.mirrors if (bool(name.digest) or not table.by_digest_only) and m.serves(name)]
    sources = [PullSource(_rewrite(name, table, m.location), m.insecure, mirror=True) for m in mirrors]
    return [*sources, PullSource(_rewrite(name, table, table.location), table.insecure)]


def _rewrite(name: ImageName, table: RegistryTable, location: str) -> ImageName:
    """``name`` with ``table``'s prefix replaced by ``location`` (as is, without one)."""
    if not location:
        return name
    ref = str(name)
    text = location + ref[match_length(ref, table.prefix) :]
    try:
        return ImageName.parse(text)
    except InputError as e:
        raise InputError(
            f"{table.origin}: [[registry]] {table.prefix!r}: {name} read from {location!r} is {text!r}: {e}",
            hint="a location is HOST[:PORT][/NAMESPACE...], like the prefix it replaces",
        ) from None


def _under(registry: str, path: str, name: ImageName) -> ImageName:
    """The short name ``path`` in ``registry`` (Docker Hub's single names under ``library/``)."""
    repository = f"library/{path}" if registry == DEFAULT_REGISTRY and "/" not in path else path
    return ImageName(registry, repository, name.tag, name.digest)


def _host(location: str) -> str:
    return location.split("/", 1)[0]
