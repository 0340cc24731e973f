"""What the registry client is configured with and reads pushed blobs from.

Shared by every part of the client (:mod:`assembler.registry`), it imports none of them
but :mod:`~assembler.registry.conf` (the registries.conf the options carry);
:mod:`assembler.transports.common` names both too, for the transports and their callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from assembler.registry.conf import RegistriesConf


@dataclass(frozen=True)
class NetworkLimits:
    """How long a network read may take (the CLI's ``--network-timeout`` and
    ``--network-deadline``): the registry client's (:attr:`RegistryOptions.limits`) and
    pinned downloads' (``fetch.pinned``)."""

    idle: float = 60.0  # seconds without a byte that end a try (then retried)
    # Seconds one operation may take, its retries included: a registry request, a download
    # (a blob or a file of known size gets more, at a minimum rate, see RegistryOptions.min_rate).
    deadline: float = 300.0
    min_rate: int = 256 << 10  # bytes/s: a download gets deadline + its size / min_rate
    # ... but never more than this many seconds (or the deadline, when that is longer): a
    # server that announces a huge size and trickles cannot hold a build for weeks.
    longest: float = 24 * 3600.0

    def allowed(self, size: int) -> float:
        """Seconds a download of ``size`` bytes (announced or sent) may take, retries
        included: the deadline plus a second per ``min_rate`` bytes, at most ``longest``."""
        return min(self.deadline + size / self.min_rate, max(self.deadline, self.longest))


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to a registry (the CLI's ``--tls-verify``, ``--authfile``, retry flags,
    ``--network-timeout``, ``--network-deadline``, ``--registries-conf``)."""

    tls_verify: bool = True  # False: plain HTTP (for loopback registries), like skopeo --tls-verify=false
    auth_file: Path | None = None  # explicit auth file; else the lookup order of registry.login
    # Failed tries in a row, with no request getting through, before giving up: a registry
    # that is down is reported in about 15 s, one that fails 30% of requests is survived.
    retries: int = 10
    backoff: float = 0.25  # first wait (s), doubled each try without progress, capped at max_backoff
    max_backoff: float = 2.0
    max_retry_after: float = 60.0  # cap on a server's Retry-After
    timeout: float = NetworkLimits.idle  # per request, connect and each read: no byte for this long ends a try
    # One operation (a request with its retries; a blob download with its resumes) ends in
    # this many seconds, a blob's plus size / min_rate: a peer that trickles cannot hold it longer.
    deadline: float = NetworkLimits.deadline
    # The first request to a host (GET /v2/, which every registry answers at once): a host
    # silent this long is tried twice more, then reported unreachable (in about 16 s).
    ping_timeout: float = 5.0
    min_rate: int = 16 << 10  # bytes/s: a blob download or upload may take deadline + size / min_rate, no more
    # ... and never more than this (or the deadline, when that is longer): a manifest naming a
    # petabyte blob, from a registry that trickles it, cannot hold a build for years.
    longest: float = NetworkLimits.longest
    chunk_size: int = 32 << 20  # PATCH chunk size for big blobs (memory bound)
    monolithic_max: int = 32 << 20  # blobs up to this size: one streamed PUT
    # Mirrors, insecure and blocked registries, short names: registries.conf as the CLI read
    # it (registry.conffiles.load); the empty default reads nothing.
    conf: RegistriesConf = field(default_factory=RegistriesConf)

    @property
    def limits(self) -> NetworkLimits:
        """The idle timeout and deadline, for the downloads of a build that talks to registries."""
        return NetworkLimits(idle=self.timeout, deadline=self.deadline, longest=self.longest)

    def allowed(self, size: int) -> float:
        """Seconds an operation moving a blob of ``size`` bytes may take, retries included:
        the deadline plus a second per ``min_rate`` bytes, at most ``longest``."""
        return min(self.deadline + size / max(1, self.min_rate), max(self.deadline, self.longest))


class BlobReader(Protocol):
    """Opens blobs by digest. ``blob_file`` gives a path when the blob is a plain file
    (so it can be hard-linked instead of copied), else None."""

    def open_blob(self, digest: str) -> BinaryIO: ...

    def blob_file(self, digest: str) -> Path | None: ...
