"""Debian packages as a lock names them (``name:arch=version sha256:HEX``): a lock's entry
for one bootstrapped base, ``packages:`` layer or compile step's ``packages:``, read and
written here for :mod:`assembler.manifest.lock.file`, and what the lock says one installs, for
the build (:mod:`assembler.pipeline.lock.aptpins`)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from assembler.errors import InputError

LINE = re.compile(r"(?P<name>[a-z0-9][a-z0-9+.-]*):(?P<arch>[a-z0-9-]+)=(?P<version>\S+) sha256:(?P<sha>[0-9a-f]{64})")


@dataclass(frozen=True, order=True)
class Deb:
    """One Debian package file: name, architecture, version and its sha256."""

    name: str
    arch: str
    version: str
    sha256: str

    def line(self) -> str:
        return f"{self.name}:{self.arch}={self.version} sha256:{self.sha256}"

    @property
    def ident(self) -> str:
        return f"{self.name}:{self.arch}={self.version}"

    @classmethod
    def parse(cls, line: str) -> Deb:
        found = LINE.fullmatch(line.strip())
        if found is None:
            raise ValueError(f"not name:arch=version sha256:HEX: {line!r}")
        return cls(found["name"], found["arch"], found["version"], found["sha"])


@dataclass(frozen=True)
class DebEntry:
    """The Debian packages a bootstrapped base or a ``packages:`` layer on one installs
    (:mod:`assembler.debian.aptlock`): ``name:arch=version sha256:HEX`` each (a layer:
    those it adds), when they were resolved and the date of the mirror's index then; or why
    they could not be."""

    definition: Mapping[str, object]
    installed: tuple[str, ...] = ()
    locked_at: str = ""
    mirror_date: str = ""
    mirror: str = ""  # the mirror it was resolved from (the manifest's, this host's or Debian's)
    error: str | None = None


DEB_FIELDS = ("installed", "locked_at", "mirror_date", "resolved_from", "error")  # beside the definition


def deb_entry(definition: Mapping[str, object], got: Mapping[str, Any], what: str) -> DebEntry:
    """An entry as read (``got``: its ``DEB_FIELDS``); InputError naming ``what`` for a line
    that is not ``name:arch=version sha256:HEX``."""
    installed = tuple(str(line) for line in got.get("installed") or ())
    if not all(LINE.fullmatch(line) for line in installed):
        raise InputError(f"{what}: a line is not name:arch=version sha256:HEX", hint="write it anew with assemble lock")
    error = got.get("error")
    return DebEntry(
        definition,
        installed,
        str(got.get("locked_at") or ""),
        str(got.get("mirror_date") or ""),
        str(got.get("resolved_from") or ""),
        str(error) if error is not None else None,
    )


def deb_data(entry: DebEntry) -> dict[str, Any]:
    """An entry as written: its definition's keys sorted, then what was resolved."""
    item: dict[str, Any] = {k: entry.definition[k] for k in sorted(entry.definition)}
    item["locked_at"] = entry.locked_at
    item["mirror_date"] = entry.mirror_date
    item["resolved_from"] = entry.mirror
    if entry.error is not None:
        item["error"] = entry.error
    item["installed"] = list(entry.installed)
    return item


@dataclass(frozen=True)
class DebLocked:
    """What the lock says one base or layer installs (a layer: what it adds), for the build."""

    where: str
    key: str
    debs: tuple[Deb, ...]
    locked_at: str
    packages: tuple[str, ...]  # what the manifest asks for

    @property
    def digest(self) -> str:
        """The sha256 of what it installs: part of the key of the base or step made from it
        (a lock moved to other versions makes it again)."""
        return hashlib.sha256("".join(d.line() + "\n" for d in sorted(self.debs)).encode()).hexdigest()
