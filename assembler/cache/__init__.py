"""The cache: one schema (:mod:`.entries`) over a content-addressed store (:mod:`.store`),
listed, verified and pruned by :mod:`.maintain`."""

from __future__ import annotations

from assembler.cache.entries import KINDS, Cache, Kind, Origin, StepResult
from assembler.cache.store import (
    ABANDONED_SECONDS,
    STALE_SECONDS,
    BlobWriter,
    Store,
    copy_verified,
    default_root,
    key_of,
    reclaim,
    reflink,
    temp_prefix,
)

__all__ = [
    "ABANDONED_SECONDS",
    "KINDS",
    "STALE_SECONDS",
    "BlobWriter",
    "Cache",
    "Kind",
    "Origin",
    "StepResult",
    "Store",
    "copy_verified",
    "default_root",
    "key_of",
    "reclaim",
    "reflink",
    "temp_prefix",
]
