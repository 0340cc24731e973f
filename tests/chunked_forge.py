"""zstd:chunked blobs made the way containers/storage's compressor makes them
(pkg/chunked/compressor/compressor.go, internal/minimal/compression.go), from a tar made in
the test, written here from c/storage's code and not from our writer, so that the checker
(assembler/archive/chunked_check.py) is held against a second writer, and then made to lie.

c/storage's layout: a frame of the tar bytes up to a file's content, then the content cut
into chunks (a frame each; a run of zeros is a chunk of type "zeros"), ..., a frame of the
rest; then three skippable frames: the TOC, the tar-split, the footer. A file of several
chunks is its "reg" entry (the whole file's digest, the first chunk's size and digest,
``offset`` its first frame's start, ``endOffset`` its last frame's end) followed by an entry
of type "chunk" for each other chunk (its ``offset``, ``chunkOffset``, ``chunkSize``,
``chunkDigest``). Times are RFC 3339 as Go writes them; the access and change times that
Go's reader leaves at zero are written as Go's zero time, as c/storage 1.43 does.

Headers are read with Python's tarfile, which reads the tars these tests make as Go's reader
does, but for the odd ones a test says (tests/test_chunked_check.py: two PAX headers).

A :class:`Forged` holds the parts (the data frames, the TOC as a dict, the tar-split as
dicts, the annotations' names): a test changes what it lies about and calls
:meth:`Forged.blob`, which puts the blob together with every digest and position right
for what it holds, so that only the lie is left to find.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import struct
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import zstandard

from tests.zstd_chunked import KEYS, SKIPPABLE, crc64_iso

GO_ZERO_TIME = "0001-01-01T00:00:00Z"
_TYPES = {tarfile.REGTYPE: "reg", tarfile.LNKTYPE: "hardlink", tarfile.SYMTYPE: "symlink", tarfile.DIRTYPE: "dir"}
_TYPES.update({tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"})


def tar_of(members: list[tuple[tarfile.TarInfo, bytes | None]], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def member(
    name: str, data: bytes | None = None, *, kind: bytes = tarfile.REGTYPE, **fields: Any
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.mtime, info.mode = kind, fields.pop("mtime", 1_600_000_000), fields.pop("mode", 0o644)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data if kind == tarfile.REGTYPE else None


def _frame(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def _go_time(seconds: float) -> str:
    whole = int(seconds)
    text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    nanos = round((seconds - whole) * 1e9)
    return text + (f".{nanos:09d}".rstrip("0") if nanos else "") + "Z"


def _skippable(payload: bytes) -> bytes:
    return SKIPPABLE + struct.pack("<I", len(payload)) + payload


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Forged:
    """The parts of a zstd:chunked blob, to change before :meth:`blob` puts them together."""

    tar: bytes
    frames: list[bytes]  # the data frames, in order
    toc: dict[str, Any]  # entries' ``offset``/``endOffset`` are frame numbers until blob() (``_frame_of``)
    split: list[dict[str, Any]]
    names: str = "both"  # the annotations: "new" (c/storage >= 1.50), "old" (1.43), "both" (our writer)
    footer: str = "64"  # "64" (c/storage >= 1.50), "40" (1.43), "none"
    tarsplit_checksum: bool = True  # the tar-split's digest as an annotation too (c/storage 1.47-1.53)
    extra: list[bytes] = field(default_factory=list)  # more skippable frames, after the data

    def copy(self) -> Forged:
        return copy.deepcopy(self)

    def entries(self, name: str) -> list[dict[str, Any]]:
        """The TOC entries of ``name``: its own, then its chunks'."""
        return [e for e in self.toc["entries"] if e["name"] == name]

    def _starts(self) -> list[int]:
        starts, at = [], 0
        for frame in self.frames:
            starts.append(at)
            at += len(frame)
        return [*starts, at]

    def _split(self) -> tuple[bytes, bytes]:
        """The tar-split's JSON lines, and compressed."""
        raw = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in self.split)
        return raw, zstandard.ZstdCompressor(level=3).compress(raw)

    def resolved_toc(self) -> dict[str, Any]:
        """The TOC as the blob holds it: frame numbers made offsets, the tar-split's digest in."""
        starts = self._starts()
        toc = copy.deepcopy(self.toc)
        for entry in toc["entries"]:
            for key in ("offset", "endOffset"):
                if isinstance(entry.get(key), _FrameAt):
                    entry[key] = starts[entry[key].number]
        toc.setdefault("tarSplitDigest", sha(self._split()[1]))
        return toc

    def blob(self, *, toc_bytes: bytes | None = None) -> tuple[bytes, dict[str, str]]:
        """The blob and its annotations; ``toc_bytes``: this TOC instead of the TOC dict's JSON."""
        split_raw, split_z = self._split()
        toc_raw = (
            toc_bytes if toc_bytes is not None else json.dumps(self.resolved_toc(), separators=(",", ":")).encode()
        )
        toc_z = zstandard.ZstdCompressor(level=3).compress(toc_raw)
        blob = b"".join(self.frames) + b"".join(_skippable(x) for x in self.extra)
        toc_at = len(blob) + 8
        blob += _skippable(toc_z)
        split_at = len(blob) + 8
        blob += _skippable(split_z)
        toc_position = f"{toc_at}:{len(toc_z)}:{len(toc_raw)}:1"
        if self.footer == "64":
            values = (toc_at, len(toc_z), len(toc_raw), 1, split_at, len(split_z), len(split_raw))
            blob += _skippable(struct.pack("<7Q", *values) + b"GNUlInUx")
        elif self.footer == "40":
            blob += _skippable(struct.pack("<4Q", toc_at, len(toc_z), len(toc_raw), 1) + b"GnUlInUx")
        annotations = {}
        if self.names in ("new", "both"):
            annotations[KEYS["toc"]] = sha(toc_z)
            annotations[KEYS["toc_at"]] = toc_position
            annotations[KEYS["split_at"]] = f"{split_at}:{len(split_z)}:{len(split_raw)}"
            if self.tarsplit_checksum:
                annotations[KEYS["split_digest"]] = sha(split_z)
        if self.names in ("old", "both"):
            annotations[KEYS["old_toc"]] = sha(toc_z)
            annotations[KEYS["old_toc_at"]] = toc_position
        return blob, annotations


@dataclass(frozen=True)
class _FrameAt:
    """Where frame ``number`` starts in the blob (known once the blob is put together)."""

    number: int


def frame_at(number: int) -> _FrameAt:
    return _FrameAt(number)


def _chunks(content: bytes, chunk: int) -> list[tuple[int, bytes, bool]]:
    """The content cut every ``chunk`` bytes, as (offset, bytes, all zeros)."""
    return [
        (i, content[i : i + chunk], not content[i : i + chunk].strip(b"\x00")) for i in range(0, len(content), chunk)
    ]


def forge(tar: bytes, *, chunk: int = 1 << 20) -> Forged:
    """``tar`` as c/storage writes it zstd:chunked, each file's content cut every ``chunk`` bytes."""
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        infos = tf.getmembers()
    frames: list[bytes] = []
    entries: list[dict[str, Any]] = []
    split: list[dict[str, Any]] = []
    raw_from = 0  # tar bytes not yet in a frame
    for info in infos:
        end_of_header = info.offset_data
        data = tar[info.offset_data : info.offset_data + info.size] if info.isreg() else b""
        split.append({"type": 2, "payload": base64.b64encode(tar[raw_from:end_of_header]).decode()})
        entry = _metadata(info)
        file_line: dict[str, Any] = {"type": 1, "name": entry["name"], "payload": None}
        if info.size:
            file_line["size"] = info.size
        if data:
            file_line["payload"] = base64.b64encode(struct.pack(">Q", crc64_iso(data))).decode()
            frames.append(_frame(tar[raw_from:end_of_header]))
            pieces = _chunks(data, chunk)
            first = len(frames)
            entry["digest"], entry["offset"], entry["endOffset"] = (
                sha(data),
                frame_at(first),
                frame_at(first + len(pieces)),
            )
            chunk_entries = []
            for i, (offset, piece, zeros) in enumerate(pieces):
                frames.append(_frame(piece))
                fields: dict[str, Any] = {"chunkSize": len(piece), "chunkDigest": sha(piece)}
                if zeros:
                    fields["chunkType"] = "zeros"
                if i == 0:
                    entry.update(fields if len(pieces) > 1 else {})
                else:
                    chunk_entries.append(
                        {"type": "chunk", "name": entry["name"], "offset": frame_at(first + i), "chunkOffset": offset}
                        | fields
                    )
            raw_from = info.offset_data + info.size
            entries += [entry, *chunk_entries]
        else:
            frames.append(_frame(tar[raw_from:end_of_header]))
            raw_from = end_of_header
            entries.append(entry)
        split.append(file_line)
    frames.append(_frame(tar[raw_from:]))
    split.append({"type": 2, "payload": base64.b64encode(tar[raw_from:]).decode()})
    for position, line in enumerate(split):
        line["position"] = position
    return Forged(tar, frames, {"version": 1, "entries": entries}, split)


def _metadata(info: tarfile.TarInfo) -> dict[str, Any]:
    """c/storage's ``minimal.NewFileMetadata``: the header as Go's reader reads it."""
    name = info.name + "/" if info.isdir() else info.name  # (tarfile takes a GNU long name over a PAX path, as Go does)
    entry: dict[str, Any] = {"type": _TYPES[info.type], "name": name}
    if info.linkname:
        entry["linkName"] = info.linkname
    for key, value in (("mode", info.mode), ("size", info.size), ("uid", info.uid), ("gid", info.gid)):
        if value:
            entry[key] = value
    entry["modtime"] = _go_time(float(info.pax_headers.get("mtime", info.mtime)))
    entry["accesstime"] = entry["changetime"] = GO_ZERO_TIME
    if info.devmajor:  # Go reads the device numbers of every ustar header, a device's or not
        entry["devMajor"] = info.devmajor
    if info.devminor:
        entry["devMinor"] = info.devminor
    xattrs = {k[13:]: v for k, v in info.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    if xattrs:
        entry["xattrs"] = {
            k: base64.b64encode(v.encode("utf-8", "surrogateescape")).decode() for k, v in xattrs.items()
        }
    return entry
