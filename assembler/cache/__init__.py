"""The cache: one schema (:mod:`.entries`) over a content-addressed store (:mod:`.store`),
listed, verified and pruned by :mod:`.maintain`."""

from __future__ import annotations

from assembler.cache.entries import KINDS, Cache, Kind, Origin, StepResult, built_on
from assembler.cache.store import BlobWriter, Store, copy_verified, default_root, key_of, reflink
from assembler.cache.temps import ABANDONED_SECONDS, STALE_SECONDS, locked_temp, reclaim, temp_prefix

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
    "built_on",
    "copy_verified",
    "default_root",
    "key_of",
    "locked_temp",
    "reclaim",
    "reflink",
    "temp_prefix",
]
