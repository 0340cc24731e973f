"""Debian packages as a lock names them (``name:arch=version sha256:HEX``), and what the lock
says one bootstrapped base or ``packages:`` layer installs (:mod:`assembler.pipeline.aptpins`)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

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
