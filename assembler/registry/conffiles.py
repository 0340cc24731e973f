"""Reading registries.conf and its drop-ins, as containers/image does (part of the registry
client; what the result means: :mod:`assembler.registry.conf`).

Which files, in order (``load``):

1. the main file: ``--registries-conf FILE``, else ``$CONTAINERS_REGISTRIES_CONF`` (either
   must exist), else ``$XDG_CONFIG_HOME/containers/registries.conf``
   (``~/.config/containers/``) when it exists, else ``/etc/containers/registries.conf``
   (when it exists);
2. the drop-ins, ``*.conf`` in name order: those of ``/etc/containers/registries.conf.d``,
   then those of the user's ``registries.conf.d``; only the user's when the main file is
   the user's. A drop-in replaces the ``[[registry]]`` tables of the prefixes it names,
   the ``unqualified-search-registries`` when it sets them, and adds ``[aliases]`` (an
   empty value removes one).

The version 1 format (``[registries.search]``, ``[registries.insecure]``,
``[registries.block]``) is converted as containers/image converts it; a drop-in must be
version 2, and a file may not mix both. Keys this client has no use for
(``short-name-mode``, ``credential-helpers``...) are accepted and ignored. Every mistake
is an InputError naming the file.

A prefix's host is read as :func:`~assembler.registry.conf.canonical_prefix` reads it
(Docker Hub's other names are ``docker.io``), so a drop-in's table for ``index.docker.io``
replaces the one for ``docker.io``. Two tables of one file for one registry (the same
location, however spelled) that disagree on ``blocked`` or ``insecure`` are refused, as
containers/image refuses them; a prefix that does not start with a registry host (which
containers/image would never match) is refused too.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler.errors import InputError
from assembler.registry.conf import PULL_FROM, Endpoint, RegistriesConf, RegistryTable, canonical_prefix

SYSTEM_DIR = Path("/etc/containers")
ENV = "CONTAINERS_REGISTRIES_CONF"
_V2_KEYS = ("registry", "unqualified-search-registries", "aliases")
_HINT = "see containers-registries.conf(5); pass --registries-conf FILE to read another file"


@dataclass
class _Layer:
    """What one file says."""

    tables: list[RegistryTable] = field(default_factory=list)
    search: tuple[str, ...] | None = None
    aliases: dict[str, str] = field(default_factory=dict)


def config_files(
    explicit: Path | None, environ: Mapping[str, str], *, system: Path = SYSTEM_DIR
) -> tuple[Path, bool, list[Path]]:
    """The main file, whether it must exist, and the drop-in folders, in order."""
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    user = Path(environ.get("XDG_CONFIG_HOME") or home / ".config") / "containers"
    dirs = [system / "registries.conf.d", user / "registries.conf.d"]
    named = explicit or (Path(environ[ENV]) if environ.get(ENV) else None)
    if named is not None:
        return named, True, dirs
    if (user / "registries.conf").is_file():
        return user / "registries.conf", False, dirs[1:]
    return system / "registries.conf", False, dirs


def load(
    explicit: Path | None = None, *, environ: Mapping[str, str] | None = None, system: Path = SYSTEM_DIR
) -> RegistriesConf:
    """The registries.conf in effect (``explicit``: ``--registries-conf``); InputError for
    a file that cannot be read or says something wrong."""
    main, required, dirs = config_files(explicit, os.environ if environ is None else environ, system=system)
    layers: list[tuple[Path, _Layer]] = []
    if required or main.exists():
        layers.append((main, _read(main, drop_in=False)))
    for folder in dirs:
        layers += [(path, _read(path, drop_in=True)) for path in _drop_ins(folder)]
    return _merge(layers)


def _drop_ins(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.name.endswith(".conf") and p.is_file())
    except FileNotFoundError:
        return []
    except OSError as e:
        raise InputError(f"{folder}: cannot list the registries.conf drop-ins: {e.strerror}") from None


def _merge(layers: list[tuple[Path, _Layer]]) -> RegistriesConf:
    tables: dict[str, RegistryTable] = {}
    search: tuple[str, ...] = ()
    aliases: dict[str, str] = {}
    for _, layer in layers:
        tables.update((t.prefix, t) for t in layer.tables)
        if layer.search is not None:
            search = layer.search
        for short, full in layer.aliases.items():
            if full:
                aliases[short] = full
            else:
                aliases.pop(short, None)
    return RegistriesConf(
        tables=tuple(tables[p] for p in sorted(tables)),
        search=search,
        aliases=tuple(sorted(aliases.items())),
        files=tuple(str(path) for path, _ in layers),
    )


def _read(path: Path, *, drop_in: bool) -> _Layer:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"{path}: cannot read registries.conf: {e.strerror}", hint=_HINT) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a TOML file: {e}", hint=_HINT) from None
    return parse(data, str(path), drop_in=drop_in)


def parse(data: Mapping[str, Any], origin: str, *, drop_in: bool = False) -> _Layer:
    """What one file's TOML says (``origin`` names it in errors)."""
    if "registries" in data:
        if drop_in:
            raise InputError(f"{origin}: a drop-in must be in the version 2 format ([[registry]] tables)", hint=_HINT)
        if any(key in data for key in _V2_KEYS):
            raise InputError(f"{origin}: mixes the version 1 ([registries.*]) and 2 formats", hint=_HINT)
        data = _from_v1(data["registries"], origin)
    layer = _Layer()
    raw_tables = data.get("registry", [])
    if not isinstance(raw_tables, list) or not all(isinstance(t, dict) for t in raw_tables):
        raise InputError(f"{origin}: `registry` must be [[registry]] tables", hint=_HINT)
    seen: list[RegistryTable] = []
    for i, raw in enumerate(raw_tables):
        where = f"{origin}: [[registry]] #{i + 1}"
        table = _table(raw, where, origin)
        _no_conflict(table, seen, where)
        seen.append(table)
        if all(t.prefix != table.prefix for t in layer.tables):  # the first of a prefix wins
            layer.tables.append(table)
    if "unqualified-search-registries" in data:
        search = _strings(data, "unqualified-search-registries", origin)
        layer.search = tuple(_location(s, f"{origin}: unqualified-search-registries") for s in search)
        if any("/" in s or not s for s in layer.search):
            raise InputError(f"{origin}: unqualified-search-registries are HOST[:PORT] names", hint=_HINT)
    layer.aliases = _aliases(data.get("aliases", {}), origin)
    return layer


def _from_v1(v1: Any, origin: str) -> dict[str, Any]:
    """A version 1 file's lists as version 2 tables (blocked first, then insecure)."""
    if not isinstance(v1, dict):
        raise InputError(f"{origin}: [registries] must hold search, insecure and block tables", hint=_HINT)
    lists: dict[str, list[str]] = {}
    for kind, entries in v1.items():
        if not isinstance(entries, dict):
            raise InputError(f"{origin}: [registries.{kind}] must be a table with a registries list", hint=_HINT)
        lists[kind] = _strings(entries, "registries", f"{origin}: [registries.{kind}]")
    tables: dict[str, dict[str, Any]] = {}
    for kind, flag in (("block", "blocked"), ("insecure", "insecure")):
        for location in lists.get(kind, []):
            # one table per registry, however it is spelled (docker.io, index.docker.io)
            tables.setdefault(canonical_prefix(location.rstrip("/")), {"location": location})[flag] = True
    out: dict[str, Any] = {"registry": list(tables.values())}
    if lists.get("search"):
        out["unqualified-search-registries"] = lists["search"]
    return out


def _table(raw: dict[str, Any], where: str, origin: str) -> RegistryTable:
    location = _location(_string(raw, "location", where), where)
    prefix = _location(_string(raw, "prefix", where), where) or location
    if not prefix:
        raise InputError(f"{where}: sets neither prefix nor location", hint=_HINT)
    wildcard = prefix.startswith("*.")
    if "*" in prefix and (not wildcard or any(c in prefix[1:] for c in "*/@:")):
        raise InputError(f"{where}: a wildcard prefix is *.DOMAIN only, not {prefix!r}", hint=_HINT)
    if not location and not wildcard:
        raise InputError(f"{where}: prefix {prefix!r} has no location (only a *.DOMAIN prefix may)", hint=_HINT)
    if not wildcard:  # containers/image matches names that start with a host: another prefix matches none
        _host_of(prefix, where)
    if "pull-from-mirror" in raw:
        raise InputError(f"{where}: pull-from-mirror is a [[registry.mirror]] setting", hint=_HINT)
    by_digest = _flag(raw, "mirror-by-digest-only", where)
    mirrors = raw.get("mirror", [])
    if not isinstance(mirrors, list) or not all(isinstance(m, dict) for m in mirrors):
        raise InputError(f"{where}: `mirror` must be [[registry.mirror]] tables", hint=_HINT)
    endpoints = tuple(_mirror(m, f"{where} mirror #{j + 1}", by_digest) for j, m in enumerate(mirrors))
    if location:
        _host_of(location, where)
    return RegistryTable(
        prefix=canonical_prefix(prefix),
        location=location,
        insecure=_flag(raw, "insecure", where),
        blocked=_flag(raw, "blocked", where),
        mirrors=endpoints,
        by_digest_only=by_digest,
        origin=origin,
    )


def _no_conflict(table: RegistryTable, seen: list[RegistryTable], where: str) -> None:
    """InputError when ``table`` and an earlier table of the same file are one registry
    (their locations, or wildcard prefixes, the same however spelled) but disagree on
    ``blocked`` or ``insecure``, as containers/image refuses them."""
    mine = _registry_of(table)
    for other in seen:
        if _registry_of(other) == mine and (other.blocked, other.insecure) != (table.blocked, table.insecure):
            raise InputError(
                f"{where}: {mine!r} is also [[registry]] {other.prefix!r}, with another blocked or insecure setting",
                hint="give one registry one setting: " + _HINT,
            )


def _registry_of(table: RegistryTable) -> str:
    return canonical_prefix(table.location) if table.location else table.prefix


def _mirror(raw: dict[str, Any], where: str, by_digest: bool) -> Endpoint:
    location = _location(_string(raw, "location", where), where)
    if not location:
        raise InputError(f"{where}: has no location", hint=_HINT)
    _host_of(location, where)
    pull_from = _string(raw, "pull-from-mirror", where) or "all"
    if pull_from not in PULL_FROM:
        raise InputError(f"{where}: pull-from-mirror is one of {', '.join(PULL_FROM)}, not {pull_from!r}", hint=_HINT)
    if by_digest and "pull-from-mirror" in raw:
        raise InputError(f"{where}: pull-from-mirror and the registry's mirror-by-digest-only exclude each other")
    return Endpoint(location, _flag(raw, "insecure", where), pull_from)


def _aliases(raw: Any, origin: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise InputError(f'{origin}: [aliases] maps short names to full names ("name" = "host/repo")', hint=_HINT)
    for short, full in raw.items():
        first, _, path = full.partition("/")
        if full and not (_is_host(first) and path and "@" not in path and ":" not in path.rsplit("/", 1)[-1]):
            raise InputError(f"{origin}: [aliases] {short!r}: {full!r} is not a HOST/REPO name without a tag")
    return dict(raw)


def _location(text: str, where: str) -> str:
    if text.startswith(("http://", "https://")):
        raise InputError(f"{where}: {text!r}: a location names no scheme (insecure = true for plain HTTP)", hint=_HINT)
    return text.rstrip("/")


def _host_of(location: str, where: str) -> str:
    """The registry host ``location`` starts with; InputError unless it is one."""
    first = location.split("/", 1)[0]
    if not _is_host(first):
        raise InputError(
            f"{where}: {location!r} does not start with a registry host (a name with a dot or a port, or localhost)",
            hint=_HINT,
        )
    return first


def _is_host(text: str) -> bool:
    """Whether ``text`` reads as a registry host, as containers/image requires of a location."""
    return "." in text or ":" in text or text == "localhost"


def _string(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise InputError(f"{where}: {key} must be a string", hint=_HINT)
    return value


def _flag(raw: Mapping[str, Any], key: str, where: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise InputError(f"{where}: {key} must be true or false", hint=_HINT)
    return value


def _strings(raw: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: {key} must be a list of strings", hint=_HINT)
    return list(value)
