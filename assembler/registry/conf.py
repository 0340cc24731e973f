"""registries.conf as podman, buildah and skopeo apply it: where a pull reads from (part
of the registry client; the files are read by :mod:`assembler.registry.conffiles`).

containers-registries.conf(5), as containers/image's ``pkg/sysregistriesv2`` and
``docker/reference`` implement it:

- names are compared in their normalised form (:func:`canonical_name`): ``index.docker.io``
  is ``docker.io`` and a single Docker Hub name is under ``library/`` (containers/image
  folds these two); here ``registry-1.docker.io`` (Docker Hub's API host, where a
  ``docker.io`` name is sent) is ``docker.io`` too, and a host is compared without case
  or a trailing dot (DNS names them so), so no spelling reaches Docker Hub past a table
  for ``docker.io``. A table's ``prefix`` is read the same way (:func:`canonical_prefix`).
- a ``[[registry]]`` table applies to the names its ``prefix`` starts (ending there, or at
  ``/``, ``:`` or ``@``; so ``example.com`` also covers ``example.com:5000``, as
  containers/image does); ``*.example.com`` matches any subdomain, not ``example.com``
  (and ``*.docker.io`` covers Docker Hub, whose other names are subdomains); the longest
  prefix wins. A pull tries the table's ``[[registry.mirror]]`` locations in order, then
  its ``location`` (the prefix, by default), each with the prefix replaced by the
  location, and reads the whole image from the first that has it.
  ``mirror-by-digest-only`` (and a mirror's ``pull-from-mirror``) keeps a mirror out of
  pulls by tag (or by digest).
- ``blocked``: pulls of the names it matches are refused, and so is every mirror or
  location whose own name it matches (containers/image checks each endpoint it opens;
  it would still read a blocked table's mirrors, which this client does not); so are
  pushes to them (the client refuses to write to a blocked name).
- ``insecure``: the endpoint it is set on is spoken to over plain HTTP, as
  ``--tls-verify=false`` means here (containers tools also accept an unverified TLS
  certificate): a mirror's only when a pull reads from that mirror; a table's when a
  pull reads from its location, and for every other request to the host the table
  covers (:meth:`RegistriesConf.insecure`).
- a short name (``ubuntu:24.04``, no registry) is an ``[aliases]`` entry's name if there
  is one, else looked for in each ``unqualified-search-registries`` in order (as podman
  does without a terminal to ask on); with neither, it is Docker Hub's, as before.

Mirrors are for reading (a build's bases, ``inspect``): a push goes to the registry its
name says, over plain HTTP only when that registry's own table says ``insecure`` (or
``--tls-verify=false``), never because some table lists its host as an insecure mirror.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from assembler.errors import InputError
from assembler.oci.reference import DEFAULT_REGISTRY, ImageName

PULL_FROM = ("all", "digest-only", "tag-only")
# Docker Hub's other names, all ``docker.io`` here: containers/image folds index.docker.io
# into docker.io, and registry-1.docker.io is where this client sends docker.io's requests.
DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")
_HTTPS_PORT = "443"


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
        """The table with the longest prefix matching ``ref`` (``host[/repo][:tag]``, its
        host read as :func:`canonical_prefix` reads it), if any."""
        ref = canonical_prefix(ref)
        best: RegistryTable | None = None
        for table in self.tables:
            if match_length(ref, table.prefix) >= 0 and (best is None or len(table.prefix) > len(best.prefix)):
                best = table
        return best

    def insecure(self, host: str) -> bool:
        """Whether requests to ``host`` that are not a pull from a mirror or a location
        (pushes, signatures, step caches...) go over plain HTTP: the table ``host`` itself
        falls under (its own, or a ``*.`` domain's) says ``insecure``.

        A mirror's ``insecure`` is not asked: it is that mirror's, for pulls through it
        (:meth:`pull_sources`), and never makes a push to the same host plain HTTP.
        """
        table = self.find(host)
        return table is not None and table.insecure

    def candidates(self, name: ImageName) -> list[ImageName]:
        """The full names a pull of ``name`` may mean, each normalised (:func:`canonical_name`):
        itself, unless it is a short name (then its alias, else the name in each search
        registry, else Docker Hub's)."""
        if not name.short:
            return [canonical_name(name)]
        alias = dict(self.aliases).get(name.short)
        if alias:
            full = ImageName.parse(alias)
            return [canonical_name(ImageName(full.registry, full.repository, name.tag, name.digest))]
        return [canonical_name(_under(r, name.short, name)) for r in self.search or (DEFAULT_REGISTRY,)]

    def pull_sources(self, name: ImageName) -> list[PullSource]:
        """Where a pull of ``name`` reads from, in the order to try: for each candidate
        name, its table's mirrors that serve this pull, then its location; a source whose
        own name a blocked table covers is left out (containers/image refuses to open it).

        Raises InputError when every candidate is blocked.
        """
        sources: list[PullSource] = []
        blocked: list[RegistryTable] = []
        for candidate in self.candidates(name):
            table = self.find(str(candidate))
            if table is not None and table.blocked:
                blocked.append(table)
                continue
            for source in [PullSource(candidate)] if table is None else _table_sources(table, candidate):
                covering = self.find(str(source.name))
                if covering is not None and covering.blocked:
                    blocked.append(covering)
                else:
                    sources.append(source)
        if not sources:
            where = "; ".join(dict.fromkeys(f"{t.prefix} in {t.origin}" for t in blocked))
            raise InputError(
                f"docker://{name}: pulls from this registry are blocked ({where})",
                hint="remove `blocked = true` there, or pass --base NAME=REF to read the base from elsewhere",
            )
        return sources


def canonical_host(host: str) -> str:
    """``host[:port]`` as registries.conf compares it: the name in lower case without a
    trailing dot, the port as a number and without HTTPS's 443, and Docker Hub's other
    names ``docker.io`` (``Registry-1.Docker.IO.:0443`` is ``docker.io``)."""
    if host.startswith("["):  # an IPv6 address: [::1]:5000
        name, _, port = host.partition("]")
        name, port = name + "]", port.removeprefix(":")
    else:
        name, _, port = host.partition(":")
    name = name.lower().rstrip(".")
    if port.isdigit():
        port = str(int(port))  # the connection reads it as a number: 0443 is 443
    if port == _HTTPS_PORT:
        port = ""  # registries are spoken to over HTTPS: host:443 is host
    if name in DOCKER_HUB_ALIASES and not port:
        name = DEFAULT_REGISTRY
    return f"{name}:{port}" if port else name


def canonical_prefix(text: str) -> str:
    """A prefix, location or name (``host[/path]``) with its host read by :func:`canonical_host`
    (a ``*.`` domain in lower case without a trailing dot); the path as written."""
    host, slash, path = text.partition("/")
    host = host.lower().rstrip(".") if host.startswith("*.") else canonical_host(host)
    return host + slash + path


def canonical_name(name: ImageName) -> ImageName:
    """``name`` as containers/image normalises it: its registry read by :func:`canonical_host`,
    a single Docker Hub name under ``library/`` (``index.docker.io/x`` is ``docker.io/library/x``)."""
    registry = canonical_host(name.registry)
    single = registry == DEFAULT_REGISTRY and "/" not in name.repository
    return replace(name, registry=registry, repository=f"library/{name.repository}" if single else name.repository)


def match_length(ref: str, prefix: str) -> int:
    """How much of ``ref`` a table's ``prefix`` matches (what a location replaces), or -1;
    both as :func:`canonical_prefix` gives them.

    A prefix matches where it ends ``ref`` or is followed by ``/``, ``:`` or ``@`` (so
    ``example.com`` also matches ``example.com:5000/x``, as containers/image's
    ``refMatchingPrefix`` does). ``*.example.com`` matches a host ending in
    ``.example.com`` (not ``example.com`` itself), up to the end of that domain.
    """
    if prefix.startswith("*."):
        end = _subdomain_end(ref, prefix[1:])
    elif ref.startswith(prefix):
        end = len(prefix)
    else:
        return -1
    return end if end == len(ref) or ref[end] in ":/@" else -1


def _subdomain_end(ref: str, domain: str) -> int:
    """Where ``ref``'s host ends when it is a subdomain of ``domain`` (``.example.com``),
    else -1 (containers/image's ``refMatchingSubdomainPrefix``, on the first occurrence)."""
    at = ref.find(domain)
    if at >= 0 and "/" not in ref[:at]:
        return at + len(domain)
    # docker.io stands for its other names, which are docker.io's subdomains: *.docker.io
    # covers it, as it covered registry-1.docker.io/x before names were normalised.
    host = ref.split("/", 1)[0]
    if host.split(":", 1)[0] == DEFAULT_REGISTRY and any(a.endswith(domain) for a in DOCKER_HUB_ALIASES):
        return len(DEFAULT_REGISTRY)
    return -1


def _table_sources(table: RegistryTable, name: ImageName) -> list[PullSource]:
    mirrors = [m for m in table.mirrors if (bool(name.digest) or not table.by_digest_only) and m.serves(name)]
    sources = [PullSource(_rewrite(name, table, m.location), m.insecure, mirror=True) for m in mirrors]
    return [*sources, PullSource(_rewrite(name, table, table.location), table.insecure)]


def _rewrite(name: ImageName, table: RegistryTable, location: str) -> ImageName:
    """``name`` (normalised) with ``table``'s prefix replaced by ``location`` (as is,
    without one), normalised."""
    if not location:
        return name
    ref = str(name)
    text = location + ref[match_length(ref, table.prefix) :]
    try:
        return canonical_name(ImageName.parse(text))
    except InputError as e:
        raise InputError(
            f"{table.origin}: [[registry]] {table.prefix!r}: {name} read from {location!r} is {text!r}: {e}",
            hint="a location is HOST[:PORT][/NAMESPACE...], like the prefix it replaces",
        ) from None


def _under(registry: str, path: str, name: ImageName) -> ImageName:
    """The short name ``path`` in ``registry`` (Docker Hub's single names under ``library/``)."""
    repository = f"library/{path}" if registry == DEFAULT_REGISTRY and "/" not in path else path
    return ImageName(registry, repository, name.tag, name.digest)
