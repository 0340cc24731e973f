"""Reading a blob while checking it is what its digest promises, in the same pass.

Every blob read from the cache, an OCI layout or an archive goes through
:class:`VerifiedReader`: consumers read as usual (copy, decompress, upload) and the
bytes are hashed on the way. The check happens when the declared size is reached, at
EOF, or, for a consumer that stops early (a tar reader at its end marker), when the
reader is closed: the rest is drained and hashed then. When a consumer fails on the
bytes (a decompressor on damaged data), the reader leaving its ``with`` block drains
too, so the error says which blob is damaged rather than "invalid zstd frame".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO

_CHUNK = 1 << 20

# (expected digest, actual digest or a reason) -> the exception to raise
OnMismatch = Callable[[str, str], Exception]


class VerifiedReader:
    """``raw`` read through, hashed; ``on_mismatch`` raised when the bytes are not ``digest``
    (or more than ``size`` bytes arrive)."""

    def __init__(self, raw: BinaryIO, digest: str, *, on_mismatch: OnMismatch, size: int | None = None) -> None:
        self._raw = raw
        self._digest = digest
        self._size = size
        self._on_mismatch = on_mismatch
        self._sha = hashlib.sha256()
        self.count = 0
        self._checked = False
        self._failed = False

    def read(self, n: int | None = -1) -> bytes:
        if self._checked and self._size is not None and self.count >= self._size:
            # Declared size reached and verified: anything more is a lie about the size.
            extra = self._raw.read(1)
            if extra:
                self._fail("sha256:? (more bytes than declared)")
            return b""
        data = self._raw.read(-1 if n is None else n)
        if data:
            self._sha.update(data)
            self.count += len(data)
            if self._size is not None and self.count > self._size:
                self._fail(f"sha256:? (more than the declared {self._size} bytes)")
            if self._size is not None and self.count == self._size:
                self._check()
        elif not self._checked:
            self._check()
        return data

    def readable(self) -> bool:
        return True

    def _fail(self, actual: str) -> None:
        self._failed = True
        raise self._on_mismatch(self._digest, actual)

    def _check(self) -> None:
        self._checked = True
        actual = "sha256:" + self._sha.hexdigest()
        if actual != self._digest:
            self._fail(actual)

    def drain(self) -> None:
        """Read (and hash) whatever is left, so the digest is checked."""
        while not self._checked and not self._failed and self.read(_CHUNK):
            pass

    def close(self) -> None:
        try:
            if not self._failed:
                self.drain()
        finally:
            self._raw.close()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self._failed = True  # Ctrl-C and friends: just let go
        if exc_type is not None and not self._failed:
            try:
                self.drain()  # a mismatch found here replaces (and chains) the consumer's error
            except OSError:
                pass
            self._failed = True
        self.close()
