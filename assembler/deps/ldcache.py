"""What the loaders read in ``/etc``: glibc's ``ld.so.cache`` and ``ld.so.conf``, musl's
``ld-musl-ARCH.path``.

glibc's ld.so does not search the folders of ``/etc/ld.so.conf`` itself: ``ldconfig``
lists their libraries in ``ld.so.cache``, and after DT_RPATH, ``LD_LIBRARY_PATH`` and
DT_RUNPATH ld.so looks only here and then in its built-in folders. The layout is
glibc's (``sysdeps/generic/dl-cache.h``, written by ``elf/cache.c``):

- the new format: ``"glibc-ld.so.cache1.1"``, ``nlibs``, ``len_strings``, an endianness
  byte, then ``nlibs`` entries of (flags, key, value, osversion, hwcap), key and value
  being offsets of NUL-terminated strings from the start of this header;
- the old format (``"ld.so-1.7.0"``, ``nlibs``, entries of (flags, key, value)), which
  older glibc writes with the new one following its entries (aligned to 8): then the new
  one's offsets are still from its own header.
"""

from __future__ import annotations

import fnmatch
import posixpath
import struct
from collections.abc import Mapping

from assembler.errors import InvalidImage

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_HEADER = 16  # magic[11], padding to 4, nlibs
_OLD_ENTRY = 12  # flags, key, value
_NEW_HEADER = 48  # magic+version[20], nlibs, len_strings, flags, padding[3], extension_offset, unused[3]
_NEW_ENTRY = 24  # flags, key, value, osversion, hwcap
_ALIGN = 8  # __alignof__ (struct cache_file_new)
MUSL_DEFAULT = ("/lib", "/usr/local/lib", "/usr/lib")  # musl's ldso/dynlink.c, without a .path file
_BIG_ENDIAN = 3  # cache_file_new_flags_endian_big; 0 (old writers) and 2 are the writer's: little here


def parse(data: bytes) -> dict[str, list[str]]:
    """Library name -> the paths the cache lists for it, in the cache's order (ld.so
    takes the first that suits). Entries for a glibc-hwcaps subfolder (``hwcap`` set) are
    left out: ld.so uses them only on CPUs that have the features, and falls back to the
    plain entry. InvalidImage when ``data`` is not a cache of a known format."""
    start = 0
    if data.startswith(OLD_MAGIC):
        if len(data) < _OLD_HEADER:
            raise InvalidImage("ld.so.cache: truncated header")
        (old_count,) = struct.unpack_from("<I", data, 12)
        start = -(-(_OLD_HEADER + old_count * _OLD_ENTRY) // _ALIGN) * _ALIGN
        if not data.startswith(NEW_MAGIC, start):
            return _old_entries(data, old_count)  # only the old format (ldconfig -c old)
    elif not data.startswith(NEW_MAGIC):
        raise InvalidImage(f"ld.so.cache: unknown format {data[:20]!r}")
    if len(data) < start + _NEW_HEADER:
        raise InvalidImage("ld.so.cache: truncated header")
    order = ">" if data[start + 28] == _BIG_ENDIAN else "<"
    (count,) = struct.unpack_from(order + "I", data, start + 20)
    if start + _NEW_HEADER + count * _NEW_ENTRY > len(data):
        raise InvalidImage(f"ld.so.cache: {count} entries do not fit in {len(data)} bytes")
    found: dict[str, list[str]] = {}
    for index in range(count):
        _, key, value, _, hwcap = struct.unpack_from(order + "iIIIQ", data, start + _NEW_HEADER + index * _NEW_ENTRY)
        if hwcap == 0:
            found.setdefault(_string(data, start + key), []).append(_string(data, start + value))
    return found


def _string(data: bytes, at: int) -> str:
    end = data.find(b"\0", at)
    if at >= len(data) or end < 0:
        raise InvalidImage(f"ld.so.cache: a string offset {at} is outside the file")
    return data[at:end].decode("utf-8", "surrogateescape")


def _old_entries(data: bytes, count: int) -> dict[str, list[str]]:
    """The old format's entries: its strings' offsets are from the end of its entries."""
    strings = _OLD_HEADER + count * _OLD_ENTRY
    if strings > len(data):
        raise InvalidImage(f"ld.so.cache: {count} entries do not fit in {len(data)} bytes")
    found: dict[str, list[str]] = {}
    for index in range(count):
        _, key, value = struct.unpack_from("<iII", data, _OLD_HEADER + index * _OLD_ENTRY)
        found.setdefault(_string(data, strings + key), []).append(_string(data, strings + value))
    return found


def conf_dirs(path: str, text: Mapping[str, str], seen: set[str] | None = None) -> list[tuple[str, str]]:
    """The folders ld.so.conf at ``path`` names, each with the file naming it, ``include``
    globs followed (within what was read)."""
    seen = set() if seen is None else seen
    if path in seen or path not in text:
        return []
    seen.add(path)
    dirs: list[tuple[str, str]] = []
    for raw in text[path].splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("hwcap "):
            continue
        if line.startswith("include "):
            for pattern in line.split()[1:]:
                pattern = posixpath.join(posixpath.dirname("/" + path), pattern).lstrip("/")
                for match in sorted(p for p in text if fnmatch.fnmatchcase(p, pattern)):
                    dirs += conf_dirs(match, text, seen)
            continue
        dirs += [(d.rstrip("/") or "/", "/" + path) for d in line.replace(",", " ").split() if d.startswith("/")]
    return dirs


def musl_path(text: str | None) -> list[str]:
    """musl's search path from the text of its /etc/ld-musl-ARCH.path (None: there is none):
    folders split by colons and newlines."""
    entries = text.replace("\n", ":").split(":") if text is not None else MUSL_DEFAULT
    return [d for d in entries if d.startswith("/")]
