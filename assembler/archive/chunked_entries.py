"""A zstd:chunked TOC's entries held against the tar they describe
(:mod:`assembler.archive.chunked_check` finds and reads the TOC;
:mod:`assembler.archive.chunked_scan` reads the tar and its frames).

A partial pull (c/storage's pkg/chunked) makes every file from its TOC entry and never reads
the tar: the entry's metadata becomes the file's, a regular file's content is the bytes its
frames decompress to (``offset`` to ``endOffset``, or chunk by chunk), or a file found in
a layer already pulled with the same ``digest`` (or chunk with the same ``chunkDigest``).
So each entry must say what the tar's entry at its place says, field by field as c/storage
compares them (``ensureFileMetadataAttributesMatch``); each regular file's digest must be
its content's; and each chunk of it (``mergeTocEntries``: a "reg" entry then its "chunk"
entries, each ``chunkSize`` bytes, or what is left when that is 0, from ``offset`` to the
next chunk's ``offset``, the last to the file's ``endOffset``) must be whole frames holding
exactly those bytes of the tar, its ``chunkDigest`` theirs, a chunk of type "zeros" (which
c/storage makes a hole, unread) zeros. An entry with no content carries no digest: c/storage
would find it by that digest for a later layer's file.

The TOC lists the tar's entries in the tar's order, as c/storage's writer and ours write
them: an entry out of place is refused.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

from assembler.archive.chunked_scan import Frames, Member, Scan, bad
from assembler.archive.chunked_toc import Header, go_time

ENTRY_FIELDS: Mapping[str, type] = {
    "type": str,
    "name": str,
    "linkName": str,
    "mode": int,
    "size": int,
    "uid": int,
    "gid": int,
    "modtime": str,
    "accesstime": str,
    "changetime": str,
    "devMajor": int,
    "devMinor": int,
    "xattrs": dict,
    "digest": str,
    "offset": int,
    "endOffset": int,
    "chunkSize": int,
    "chunkOffset": int,
    "chunkDigest": str,
    "chunkType": str,
}
_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")
_GO_ZERO_TIME = -62135596800  # 0001-01-01T00:00:00Z, Go's zero time, in Unix seconds
_CHUNK_TYPES = ("", "zeros")

Entry = dict[str, Any]  # a TOC entry's fields as Go decodes them (chunked_check.go_fields)


def _when(text: str) -> tuple[int, int] | None:
    """An RFC 3339 time as (seconds, nanoseconds); None for Go's zero time or the Unix epoch,
    which c/storage takes for no time at all. ValueError when it is no such time."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is no RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    zone = match.group(8)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    nanos = int((match.group(7) or "").ljust(9, "0"))
    return _no_zero((seconds, nanos))


def _no_zero(when: tuple[int, int] | None) -> tuple[int, int] | None:
    return None if when in ((0, 0), (_GO_ZERO_TIME, 0)) else when


def _expected(h: Header) -> dict[str, object]:
    """What c/storage's ``minimal.NewFileMetadata`` makes of the tar's header: the fields a
    TOC entry must have (``ensureFileMetadataAttributesMatch``)."""
    return {
        "type": h.kind,
        "name": h.name.decode("utf-8", "replace"),
        "linkName": h.linkname.decode("utf-8", "replace"),
        "mode": h.mode,
        "size": h.size,
        "uid": h.uid,
        "gid": h.gid,
        "modtime": _no_zero(h.mtime),
        "accesstime": _no_zero(h.atime),
        "changetime": _no_zero(h.ctime),
        "devMajor": h.devmajor,
        "devMinor": h.devminor,
        "xattrs": {key: base64.b64encode(value).decode() for key, value in h.xattrs},
    }


def _said(entry: Entry, what: str) -> dict[str, object]:
    """The same fields as the TOC entry gives them."""
    said: dict[str, object] = {key: entry.get(key, "") for key in ("type", "name", "linkName")}
    said.update({key: entry.get(key, 0) for key in ("mode", "size", "uid", "gid", "devMajor", "devMinor")})
    for key in ("modtime", "accesstime", "changetime"):
        try:
            said[key] = _when(entry[key]) if key in entry else None
        except ValueError as e:
            raise bad(what, f"its TOC gives {entry.get('name', '')!r} the {key} {e}", entry.get("name")) from None
    xattrs = entry.get("xattrs", {})
    if not all(isinstance(v, str) for v in xattrs.values()):
        raise bad(what, f"its TOC gives {entry.get('name', '')!r} an xattr that is no string", entry.get("name"))
    said["xattrs"] = xattrs
    return said


def _shown(key: str, value: object) -> str:
    if key == "mode" and isinstance(value, int):
        return oct(value)
    if key.endswith("time"):
        return go_time(value) if isinstance(value, tuple) else "none"
    return repr(value)


def _groups(entries: list[Entry], what: str) -> Iterator[list[Entry]]:
    """Each entry with the "chunk" entries after it (c/storage's ``mergeTocEntries``)."""
    group: list[Entry] = []
    for entry in entries:
        if entry.get("type") != "chunk":
            if group:
                yield group
            group = [entry]
            continue
        if not group or group[0].get("type") != "reg":
            raise bad(
                what, f"its TOC has a chunk of {entry.get('name', '')!r} after no regular file", entry.get("name")
            )
        if entry.get("name") != group[0].get("name"):
            raise bad(
                what,
                f"its TOC has a chunk of {entry.get('name')!r} among {group[0].get('name')!r}'s",
                group[0].get("name"),
            )
        group.append(entry)
    if group:
        yield group


def check_entries(entries: list[Entry], found: Scan, *, what: str) -> None:
    """Each TOC entry (with its chunks) against the tar's entry at its place. Raises BadToc
    naming the member at fault."""
    groups = list(_groups(entries, what))
    members = found.members
    for i in range(max(len(groups), len(members))):
        if i >= len(members) or i >= len(groups) or groups[i][0].get("name") != members[i].name:
            _misplaced(groups, members, i, what)
        member, group = members[i], groups[i]
        said, expected = _said(group[0], what), _expected(member.header)
        for key, value in expected.items():
            if said[key] != value:
                toc, tar = _shown(key, said[key]), _shown(key, value)
                raise bad(what, f"its TOC gives {member.name!r} the {key} {toc}, its tar {tar}", member.name)
        _check_content(group, member, found.frames, what)


def _misplaced(groups: list[list[Entry]], members: list[Member], i: int, what: str) -> None:
    listed = {g[0].get("name") for g in groups}
    held = {m.name for m in members}
    if i < len(groups) and groups[i][0].get("name") not in held:
        name = groups[i][0].get("name")
        raise bad(what, f"its TOC lists {name!r}, which its tar does not hold", name)
    if i < len(members) and members[i].name not in listed:
        raise bad(what, f"its TOC leaves out {members[i].name!r}, which its tar holds", members[i].name)
    name = members[i].name if i < len(members) else groups[i][0].get("name")
    raise bad(what, f"its TOC does not list {name!r} where its tar holds it (entry {i + 1})", name)


def _check_content(group: list[Entry], member: Member, frames: Frames, what: str) -> None:
    """A regular file's digest and chunks; no digest where there is no content."""
    main, name = group[0], member.name
    if member.digest is None:
        if len(group) > 1 or main.get("digest", "") or main.get("chunkDigest", ""):
            raise bad(what, f"its TOC gives {name!r}, which has no content, a digest or chunks", name)
        return
    actual = "sha256:" + member.digest.hex()
    if main.get("digest") != actual:
        raise bad(
            what, f"its TOC gives {name!r} the digest {main.get('digest')!r}, its content in the tar is {actual}", name
        )
    left, at = member.header.size, 0
    for j, chunk in enumerate(group):
        size = chunk.get("chunkSize", 0) if chunk.get("chunkSize", 0) > 0 else left
        if not 0 < size <= left or chunk.get("chunkOffset", 0) != at:
            said = f"{size} bytes at byte {chunk.get('chunkOffset', 0)}"
            raise bad(
                what, f"its TOC's chunk {j + 1} of {name!r} ({said}) is not the next {left} bytes at byte {at}", name
            )
        end = group[j + 1].get("offset", 0) if j + 1 < len(group) else main.get("endOffset", 0)
        which = f"chunk {j + 1} of {name!r}" if len(group) > 1 else f"content of {name!r}"
        _check_chunk(chunk, (chunk.get("offset", 0), end), (member.start + at, size), frames, which, what)
        left, at = left - size, at + size
    if left:
        raise bad(what, f"its TOC's chunks of {name!r} leave its last {left} bytes out", name)


def _check_chunk(
    chunk: Entry, span: tuple[int, int], content: tuple[int, int], frames: Frames, which: str, what: str
) -> None:
    """One chunk: whole frames from ``span[0]`` to ``span[1]`` of the blob holding the tar's
    bytes ``content`` (start, size), and its type and digest what they hold."""
    name = chunk.get("name")
    kind, digest = chunk.get("chunkType", ""), chunk.get("chunkDigest", "")
    if kind not in _CHUNK_TYPES:
        raise bad(what, f"its TOC gives {which} the chunk type {kind!r}", name)
    held = _frames_between(frames, span, content, which, what, name)
    if held is None and (digest or kind):
        raise bad(what, f"its TOC's {which} spans frames whose digests cannot be told apart", name)
    if kind == "zeros" and held != _zeros_digest(content[1]):
        raise bad(what, f"its TOC's {which} is a chunk of zeros, but its tar does not hold zeros there", name)
    if digest and digest != "sha256:" + (held or b"").hex():
        raise bad(
            what,
            f"its TOC gives {which} the chunk digest {digest!r}, what it holds is sha256:{(held or b'').hex()}",
            name,
        )


def _frames_between(
    frames: Frames, span: tuple[int, int], content: tuple[int, int], which: str, what: str, name: str | None
) -> bytes | None:
    """The sha256 of what the frames from ``span[0]`` to ``span[1]`` hold, when they are
    whole frames holding the tar's bytes ``content`` (None: several frames hold some, and
    no one digest is known); BadToc otherwise."""
    start, end = span
    first, last = frames.starting_at(start), frames.ending_at(end)
    if first is None or last is None or last < first:
        raise bad(
            what, f"its TOC's {which} is bytes {start} to {end} of the blob, which are not whole zstd frames", name
        )
    tar_start, tar_end = frames.tar_starts[first], frames.tar_ends[last]
    if (tar_start, tar_end) != (content[0], content[0] + content[1]):
        raise bad(
            what,
            f"its TOC's {which} is the frames from byte {start} to {end} of the blob, which hold bytes "
            f"{tar_start} to {tar_end} of its tar, not {content[0]} to {content[0] + content[1]}",
            name,
        )
    holding = [i for i in range(first, last + 1) if frames.tar_ends[i] > frames.tar_starts[i]]
    if len(holding) > 1:
        return None
    return frames.digest(holding[0]) if holding else hashlib.sha256().digest()


@lru_cache(maxsize=64)
def _zeros_digest(size: int) -> bytes:
    sha = hashlib.sha256()
    block = bytes(min(size, 1 << 20))
    left = size
    while left:
        sha.update(block[: min(left, len(block))])
        left -= min(left, len(block))
    return sha.digest()
