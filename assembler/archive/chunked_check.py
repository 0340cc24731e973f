"""A zstd:chunked layer's TOC and tar-split held against its tar: what a partial pull makes
of a layer must be what every reader of its tar sees.

podman and CRI-O with partial pulls (c/storage's pkg/chunked) never read a zstd:chunked
layer's tar: they make its files from its TOC (each regular file from the frames the TOC
points at, checked against the TOC's digest, or from a file of the same digest already
pulled) and keep its tar-split to give the tar back (``podman push``, ``save``). The diff_id
checks neither, so a TOC that swaps two files' offsets and digests passes every check of
the layer while a partial pull really swaps the files; skopeo, umoci, our SBOM and tests,
which read the tar, see the honest content. :func:`check_toc` refuses such a layer:
``assemble validate`` reports it, and a build does not ship a base's layer as it is with
its TOC unchecked (:mod:`assembler.pipeline.layers.setup`).

Which TOC a reader takes (each one is checked; they must be one and the same):

- c/storage >= 1.50 (podman >= 5.1): the annotation ``io.github.containers.zstd-chunked.
  manifest-position`` (or, before 1.54, the 64-byte footer when it is missing), the TOC's
  digest in ``...manifest-checksum``; the tar-split where ``...tarsplit-position`` (or the
  footer) says, its digest in the TOC (``tarSplitDigest``) or, 1.47 to 1.53, in
  ``...tarsplit-checksum``.
- c/storage 1.43 to 1.46 (podman 4.3): the same under ``io.containers.zstd-chunked.*``, or
  the 40-byte footer (1.47 to 1.49 wrote a 56-byte one); no tar-split.

So: every position the annotations and any footer give for the TOC (and the tar-split) is
the same; the TOC digest annotations agree and are the TOC's; the TOC is a skippable frame's
payload, no bigger than :data:`MAX_TOC` (c/storage: 50 MiB before 1.54, 150 MiB since), the
tar-split no bigger than :data:`MAX_SPLIT`; every entry says what the tar says
(:mod:`assembler.archive.chunked_entries`); and the tar-split rebuilds the tar as tar-split's
``WriteOutputTarStream`` does: its segments, and each file's content taken from the file of
its name, with its CRC-64/ISO checked.

JSON as Go decodes it: Go matches a key to a field whatever its case (and K to the Kelvin
sign, s to the long s), so a key that is not a field's name but folds to one is refused, as
is a key given twice; null leaves a field as it was; a number that is no 64-bit integer is
refused. The bytes are UTF-8 or refused.

Cost: one pass over the blob (:mod:`assembler.archive.chunked_scan`), a record per tar
entry and per frame, and the TOC and tar-split in memory, both bounded before they are read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
import struct
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, NamedTuple

import zstandard

from assembler.archive.chunked_entries import ENTRY_FIELDS, check_entries
from assembler.archive.chunked_scan import TAIL, Limits, Scan, bad, scan
from assembler.archive.chunked_toc import (
    OLD_TOC_CHECKSUM,
    OLD_TOC_POSITION,
    TARSPLIT_CHECKSUM,
    TARSPLIT_POSITION,
    TOC_CHECKSUM,
    TOC_POSITION,
    TOC_TYPE_CRFS,
)
from assembler.oci.descriptor import Descriptor
from assembler.oci.validate import BlobReader

MAX_TOC = 64 << 20  # bytes of TOC, compressed or not
MAX_SPLIT = 128 << 20  # bytes of compressed tar-split (one line at most _MAX_LINE)
_MAX_LINE = 64 << 20
_MAX_FRAMES = 4_000_000
_MIN_ENTRY = 22  # the shortest TOC entry's JSON, {"type":"x","name":""} and its comma
_READ = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TOC_FIELDS: Mapping[str, type] = {"version": int, "entries": list, "tarSplitDigest": str}
_SPLIT_FIELDS: Mapping[str, type] = {
    "type": int,
    "name": str,
    "name_raw": str,
    "size": int,
    "payload": str,
    "position": int,
}
_SEGMENT, _FILE = 2, 1  # tar-split's entry types


class _Where(NamedTuple):
    """Where a skippable frame's payload is in the blob, and how big it is decompressed."""

    offset: int
    length: int
    raw: int


def carries_toc(annotations: Mapping[str, str]) -> bool:
    """Whether a partial pull would read the layer's TOC: it has a TOC digest annotation
    under either name (c/storage reads none without one)."""
    return TOC_CHECKSUM in annotations or OLD_TOC_CHECKSUM in annotations


def check_toc(blob: BinaryIO, annotations: Mapping[str, str], *, what: str) -> None:
    """Hold the TOC and tar-split of the layer ``blob`` (read once, to its end) against its
    tar (see the module's doc); nothing is read when no TOC digest annotation names a TOC.
    Raises BadToc (``what`` naming the layer) naming the member at fault."""
    if not carries_toc(annotations):
        return
    digest = _toc_digest(annotations, what)
    named = [w for key in (TOC_POSITION, OLD_TOC_POSITION) if (w := _position(annotations, key, 4, what)) is not None]
    for where in named:
        if where.length > MAX_TOC or where.raw > MAX_TOC:
            raise bad(
                what, f"its TOC is too big to check ({where.length} bytes, {where.raw} decompressed; at most {MAX_TOC})"
            )
    entries = (max(w.raw for w in named) if named else MAX_TOC) // _MIN_ENTRY + 1
    found = scan(blob, Limits(entries, _MAX_FRAMES, MAX_TOC + MAX_SPLIT + TAIL), what=what)
    footers = _footers(found.tail)
    toc_at = _one(named + [toc for toc, _ in footers], "TOC", what)
    if toc_at is None:
        raise bad(what, "no annotation and no footer says where its TOC is")
    toc = _read_toc(found, toc_at, digest, what)
    check_entries(toc["entries"], found, what=what)
    split_named = _position(annotations, TARSPLIT_POSITION, 3, what)
    split_at = _one([*([split_named] if split_named else []), *(s for _, s in footers if s)], "tar-split", what)
    if split_at is not None:
        digests = [d for d in (toc.get("tarSplitDigest"), annotations.get(TARSPLIT_CHECKSUM)) if d]
        _check_split(_payload(found, split_at, "tar-split", MAX_SPLIT, what), split_at, digests, found, what)


def check_layer_toc(layer: Descriptor, blobs: BlobReader, what: str) -> None:
    """:func:`check_toc` of the layer ``layer`` read from ``blobs`` (when it carries a TOC):
    :func:`assembler.oci.validate.validate`'s check of each layer."""
    if carries_toc(layer.annotations):
        with blobs.open_blob(layer.digest) as blob:
            check_toc(blob, layer.annotations, what=what)


def _toc_digest(annotations: Mapping[str, str], what: str) -> str:
    digests = {annotations[key] for key in (TOC_CHECKSUM, OLD_TOC_CHECKSUM) if key in annotations}
    if len(digests) > 1:
        raise bad(what, f"its annotations give two TOC digests: {' and '.join(sorted(digests))}")
    (digest,) = digests
    if not _DIGEST.fullmatch(digest):
        raise bad(what, f"its TOC digest annotation {digest!r} is no sha256 digest")
    return digest


def _position(annotations: Mapping[str, str], key: str, fields: int, what: str) -> _Where | None:
    """The position annotation ``key`` (offset:length:raw length, and the type for a TOC's)."""
    text = annotations.get(key)
    if text is None:
        return None
    parts = text.split(":")
    if len(parts) != fields or not all(p.isascii() and p.isdigit() for p in parts):
        raise bad(what, f"its annotation {key} is {text!r}, no position of {fields} numbers")
    numbers = [int(p) for p in parts]
    if fields == 4 and numbers[3] != TOC_TYPE_CRFS:
        raise bad(what, f"its annotation {key} gives the TOC type {numbers[3]}, not {TOC_TYPE_CRFS}")
    return _Where(*numbers[:3])


def _footers(tail: bytes) -> list[tuple[_Where, _Where | None]]:
    """Where each footer a reader may take from the blob's end says the TOC (and the
    tar-split) is; a footer of another TOC type, which no reader takes, says -1 bytes."""
    found: list[tuple[_Where, _Where | None]] = []
    if len(tail) >= 64 and tail[-8:] == b"GNUlInUx":  # c/storage >= 1.50
        offset, length, raw, kind, s_offset, s_length, s_raw = struct.unpack("<7Q", tail[-64:-8])
        split = _Where(s_offset, s_length, s_raw) if s_offset else None
        found.append((_Where(offset, length, raw if kind == TOC_TYPE_CRFS else -1), split))
    for size, magic_at in ((40, -8), (56, -24)):  # c/storage 1.43 to 1.46, 1.47 to 1.49
        if len(tail) >= size and tail[magic_at : magic_at + 8 or None] == b"GnUlInUx":
            offset, length, raw, kind = struct.unpack("<4Q", tail[-size : -size + 32])
            found.append((_Where(offset, length, raw if kind == TOC_TYPE_CRFS else -1), None))
    return found


def _one(places: list[_Where], what_of: str, what: str) -> _Where | None:
    """The one place every annotation and footer give for the ``what_of``."""
    if len(set(places)) > 1:
        listed = ", ".join(f"{p.offset}:{p.length}:{p.raw}" for p in dict.fromkeys(places))
        raise bad(what, f"its annotations and footer put its {what_of} in different places ({listed})")
    return places[0] if places else None


def _payload(found: Scan, where: _Where, what_of: str, limit: int, what: str) -> bytes:
    if where.length > limit:
        raise bad(what, f"its {what_of} is too big to check ({where.length} bytes; at most {limit})")
    payload = found.kept.get(where.offset)
    if payload is None or len(payload) != where.length:
        if where.offset in found.not_kept:
            raise bad(what, f"its {what_of} is in a skippable frame too big to keep")
        raise bad(
            what,
            f"no skippable frame of {where.length} bytes starts at byte {where.offset}, "
            f"where its {what_of} is said to be",
        )
    return payload


def _inflate(payload: bytes, limit: int, what_of: str, what: str) -> Iterator[bytes]:
    """``payload`` decompressed, piece by piece; BadToc past ``limit`` bytes or when damaged."""
    made = 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=True)
        while piece := reader.read(_READ):
            made += len(piece)
            if made > limit:
                raise bad(what, f"its {what_of} decompresses to more than the {limit} bytes said")
            yield piece
    except zstandard.ZstdError as e:
        raise bad(what, f"its {what_of} does not decompress: {e}") from None


def _read_toc(found: Scan, where: _Where, digest: str, what: str) -> dict[str, Any]:
    payload = _payload(found, where, "TOC", MAX_TOC, what)
    if "sha256:" + hashlib.sha256(payload).hexdigest() != digest:
        raise bad(what, f"its TOC does not match its digest annotation {digest}")
    text = b"".join(_inflate(payload, where.raw, "TOC", what))
    if len(text) != where.raw:
        raise bad(what, f"its TOC is {len(text)} bytes decompressed, {where.raw} said")
    try:
        toc = go_fields(go_json(text), _TOC_FIELDS, "the TOC")
        toc["entries"] = [
            go_fields(e, ENTRY_FIELDS, f"TOC entry {i + 1}") for i, e in enumerate(toc.get("entries", []))
        ]
    except ValueError as e:
        raise bad(what, f"its TOC does not read as c/storage reads it: {e}") from None
    return toc


class _Twice(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Twice(f"the key {key!r} is there twice")
        out[key] = value
    return out


def _constant(name: str) -> None:
    raise ValueError(f"{name} is no JSON number")


def go_json(text: bytes) -> Any:
    """JSON as Go reads it, or ValueError: UTF-8 only, no key twice in an object."""
    return json.loads(text.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_constant)


def go_fields(value: object, fields: Mapping[str, type], what_of: str) -> dict[str, Any]:
    """The fields of the JSON object ``value`` that Go would decode into a struct of
    ``fields``; ValueError for a key Go would take for another one, or a value of the wrong type."""
    if not isinstance(value, dict):
        raise ValueError(f"{what_of} is no JSON object")
    out: dict[str, Any] = {}
    for key, item in value.items():
        kind = fields.get(key)
        if kind is None:
            if (known := _folded(fields).get(key.casefold())) is not None:
                raise ValueError(f"{what_of} has the key {key!r}, which Go reads as {known!r}")
            continue  # a field Go does not know: ignored there too
        if item is None:
            continue  # null: Go leaves the field as it was
        if kind is int and (not isinstance(item, int) or isinstance(item, bool) or not -(1 << 63) <= item < 1 << 63):
            raise ValueError(f"{what_of} has {key} {item!r}, no 64-bit integer")
        if not isinstance(item, kind):
            raise ValueError(f"{what_of} has {key} {item!r}, no {kind.__name__}")
        out[key] = item
    return out


_FOLDED: dict[int, tuple[Mapping[str, type], dict[str, str]]] = {}


def _folded(fields: Mapping[str, type]) -> dict[str, str]:
    """``fields``' names by their case-folded form (Go's matching, and some more: ß is ss)."""
    hit = _FOLDED.get(id(fields))
    if hit is None or hit[0] is not fields:
        hit = _FOLDED[id(fields)] = (fields, {key.casefold(): key for key in fields})
    return hit[1]


def _lines(payload: bytes, where: _Where, what: str) -> Iterator[bytes]:
    """The tar-split's lines, decompressed as they are read; BadToc when it is not ``where.raw`` bytes."""
    buf, made = bytearray(), 0
    for piece in _inflate(payload, where.raw, "tar-split", what):
        made += len(piece)
        buf += piece
        end = buf.rfind(b"\n")
        if end < 0:
            if len(buf) > _MAX_LINE:
                raise bad(what, f"its tar-split has a line over {_MAX_LINE} bytes")
            continue
        yield from (line for line in bytes(buf[:end]).split(b"\n") if line)
        del buf[: end + 1]
    if buf:
        yield bytes(buf)
    if made != where.raw:
        raise bad(what, f"its tar-split is {made} bytes decompressed, {where.raw} said")


def _split_entry(line: bytes, number: int, what: str) -> tuple[int, bytes, int, bytes | None]:
    """A tar-split line as (type, name, size, payload), read as tar-split's Go reads it."""
    try:
        entry = go_fields(go_json(line), _SPLIT_FIELDS, f"tar-split line {number}")
        name = (
            base64.b64decode(entry["name_raw"], validate=True)
            if entry.get("name_raw")
            else entry.get("name", "").encode()
        )
        payload = base64.b64decode(entry["payload"], validate=True) if "payload" in entry else None
    except (ValueError, binascii.Error, UnicodeEncodeError) as e:
        raise bad(what, f"its tar-split line {number} does not read: {e}") from None
    if entry.get("type") not in (_SEGMENT, _FILE):
        raise bad(what, f"its tar-split line {number} has the type {entry.get('type')!r}")
    return entry["type"], name, entry.get("size", 0), payload


def _check_split(payload: bytes, where: _Where, digests: list[str], found: Scan, what: str) -> None:
    """The tar-split rebuilds the tar: between contents its segments are the tar's bytes,
    and each content is the next content of the tar, named, sized and CRC'd as it is."""
    actual = "sha256:" + hashlib.sha256(payload).hexdigest()
    for digest in digests:
        if digest != actual:
            raise bad(what, f"its tar-split is {actual}, its TOC or annotation says {digest}")
    contents = [m for m in found.members if m.digest is not None]
    region, n = hashlib.sha256(), 0
    for number, line in enumerate(_lines(payload, where, what), 1):
        kind, name, size, data = _split_entry(line, number, what)
        if kind == _SEGMENT:
            region.update(data or b"")
            continue
        if not size:
            continue  # tar-split writes no content for it
        if n >= len(contents):
            said = name.decode("utf-8", "replace")
            raise bad(what, f"its tar-split gives {said!r} content after the last content of its tar", said)
        member = contents[n]
        if region.digest() != found.regions[n]:
            raise bad(
                what,
                f"its tar-split does not rebuild its tar: the bytes before {member.name!r}'s content differ",
                member.name,
            )
        if name != member.header.name or size != member.header.size:
            said = f"{name.decode('utf-8', 'replace')!r} ({size} bytes)"
            raise bad(
                what,
                f"its tar-split puts {said} where its tar holds {member.name!r} ({member.header.size} bytes)",
                member.name,
            )
        if data != struct.pack(">Q", member.crc):
            raise bad(what, f"its tar-split gives {member.name!r} a CRC that is not its content's", member.name)
        region, n = hashlib.sha256(), n + 1
    if n < len(contents):
        raise bad(what, f"its tar-split leaves out the content of {contents[n].name!r}", contents[n].name)
    if region.digest() != found.regions[-1]:
        raise bad(what, "its tar-split does not rebuild its tar: the bytes after the last content differ")
