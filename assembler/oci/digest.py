"""Digests and canonical JSON: the two functions every byte we write goes through."""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from assembler.errors import InvalidImage

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """``sha256:<hex>`` of a file, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def is_digest(value: str) -> bool:
    """True for a well-formed ``sha256:<64 hex>`` digest (the only algorithm we accept)."""
    return bool(_DIGEST_RE.match(value))


def digest_hex(digest: str) -> str:
    """The hex part of a digest; InvalidImage if it is not a sha256 digest."""
    if not is_digest(digest):
        raise InvalidImage(f"not a sha256 digest: {digest!r}")
    return digest[len("sha256:") :]


def canonical_json(value: Any) -> bytes:
    """The one JSON serialisation we write: sorted keys, compact, UTF-8, newline-free."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
