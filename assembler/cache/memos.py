"""Keys of what is read from an image and remembered: the facts a dependency check, an SBOM
and the image's labels read from layers. Such a key names the bytes read (the image's
config digest or its layers' diff_ids) and the code that read them (the digest of its
source files), so a reader that changed never answers from what an older one remembered,
and a rebuild that changed nothing reads no layer again.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from assembler.cache.entries import Cache
from assembler.cache.store import key_of

T = TypeVar("T")

_PACKAGE = Path(__file__).resolve().parent.parent  # assembler/


@functools.cache
def code_digest(*files: str) -> str:
    """The digest of these source files' bytes (paths in the package: ``deps/check.py``)."""
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0" + (_PACKAGE / name).read_bytes())
    return h.hexdigest()


def facts_key(kind: str, read_from: Mapping[str, Any], code: tuple[str, ...]) -> str:
    """The memo key of ``kind`` facts read from ``read_from`` by the code in ``code``
    (source files, as :func:`code_digest` names them)."""
    return f"{kind}-" + key_of({"from": read_from, "code": code_digest(*code)})


def remembered(
    cache: Cache | None,
    key: str,
    make: Callable[[], T],
    *,
    read: Callable[[Mapping[str, Any]], T],
    write: Callable[[T], Mapping[str, Any]],
) -> T:
    """What ``make`` gives, kept in ``cache`` under ``key`` (a memo ``write`` makes and
    ``read`` reads back; one ``read`` cannot make is dropped and made again)."""
    if cache is None:
        return make()
    hit = cache.memo_as(key, read)
    if hit is not None:
        return hit
    value = make()
    cache.put_memo(key, write(value))
    return value
