"""A reader of zstd:chunked blobs for the tests, written from c/storage's reader
(pkg/chunked/compression_linux.go, storage_linux.go) and tar-split's assembler, not from our
writer: it finds the TOC and tar-split by the annotations and by the footer, checks their
digests, decompresses every file's frame alone (by the TOC's offsets) against the TOC's
digest, and rebuilds the tar from the tar-split and those files with each CRC-64/ISO
checked, as a partial pull does before it compares the result with the diff_id.

The CRC is computed here in plain Python (Go's table-driven crc64.ISO), not with the
writer's library, so that the two cannot agree by sharing a mistake.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import zstandard

SKIPPABLE = b"\x50\x2a\x4d\x18"
KEYS = {
    "toc": "io.github.containers.zstd-chunked.manifest-checksum",
    "toc_at": "io.github.containers.zstd-chunked.manifest-position",
    "split_at": "io.github.containers.zstd-chunked.tarsplit-position",
    "split_digest": "io.github.containers.zstd-chunked.tarsplit-checksum",
    "old_toc": "io.containers.zstd-chunked.manifest-checksum",
    "old_toc_at": "io.containers.zstd-chunked.manifest-position",
}


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xD800000000000000 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc64_iso(data: bytes) -> int:
    """Go's ``crc64.Checksum(data, crc64.MakeTable(crc64.ISO))``."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


@dataclass
class Chunked:
    toc: dict[str, Any]
    split: list[dict[str, Any]]
    files: dict[str, bytes]  # each regular file's content, read through its own frame


def _skippable_at(blob: bytes, offset: int, length: int) -> bytes:
    """The payload of the skippable frame whose payload starts at ``offset``."""
    assert blob[offset - 8 : offset] == SKIPPABLE + struct.pack("<I", length)
    return blob[offset : offset + length]


def read(blob: bytes, annotations: dict[str, str]) -> Chunked:
    """Everything a partial pull reads of ``blob``, every check it makes, made."""
    toc_at, toc_len, toc_raw, kind = map(int, annotations[KEYS["toc_at"]].split(":"))
    split_at, split_len, split_raw = map(int, annotations[KEYS["split_at"]].split(":"))
    assert kind == 1
    assert annotations[KEYS["old_toc"]] == annotations[KEYS["toc"]]
    assert annotations[KEYS["old_toc_at"]] == annotations[KEYS["toc_at"]]
    # The footer says the same as the annotations.
    assert blob[-72:-64] == SKIPPABLE + struct.pack("<I", 64) and blob[-8:] == b"GNUlInUx"
    assert struct.unpack("<7Q", blob[-64:-8]) == (toc_at, toc_len, toc_raw, 1, split_at, split_len, split_raw)
    toc_z = _skippable_at(blob, toc_at, toc_len)
    assert "sha256:" + hashlib.sha256(toc_z).hexdigest() == annotations[KEYS["toc"]]
    toc_text = zstandard.ZstdDecompressor().decompress(toc_z)
    assert len(toc_text) == toc_raw
    toc = json.loads(toc_text)
    split_z = _skippable_at(blob, split_at, split_len)
    split_digest = "sha256:" + hashlib.sha256(split_z).hexdigest()
    assert split_digest == toc["tarSplitDigest"] == annotations[KEYS["split_digest"]]
    split_text = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(split_z)).read()
    assert len(split_text) == split_raw
    split = [json.loads(line) for line in split_text.splitlines()]
    assert [e["position"] for e in split] == list(range(len(split)))
    return Chunked(toc, split, _files(blob, toc, data_end=toc_at - 8))


def _files(blob: bytes, toc: dict[str, Any], *, data_end: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for entry in toc["entries"]:
        assert entry["type"] != "chunk"  # our writer makes one frame a file
        if entry["type"] != "reg" or not entry.get("size"):
            assert "offset" not in entry and "digest" not in entry
            continue
        start, end = entry["offset"], entry["endOffset"]
        assert 0 < start < end <= data_end
        # Exactly one frame, which holds exactly the file (as c/storage fetches and decodes it).
        frame = blob[start:end]
        content = zstandard.ZstdDecompressor().decompress(
            frame, max_output_size=entry["size"] + 1, allow_extra_data=False
        )
        assert len(content) == entry["size"], entry["name"]
        assert "sha256:" + hashlib.sha256(content).hexdigest() == entry["digest"], entry["name"]
        files[entry["name"]] = content
    return files


def rebuild_tar(chunked: Chunked) -> bytes:
    """The layer's tar from the tar-split and the files (tar-split's WriteOutputTarStream)."""
    out = bytearray()
    for entry in chunked.split:
        if entry["type"] == 2:
            out += base64.b64decode(entry["payload"])
            continue
        assert entry["type"] == 1
        if not entry.get("size"):
            assert entry["payload"] is None
            continue
        name = entry.get("name") or base64.b64decode(entry["name_raw"]).decode("utf-8", "surrogateescape")
        content = chunked.files.get(name, b"")
        assert struct.pack(">Q", crc64_iso(content)) == base64.b64decode(entry["payload"]), name
        out += content
    return bytes(out)


_TYPES = {tarfile.REGTYPE: "reg", tarfile.LNKTYPE: "hardlink", tarfile.SYMTYPE: "symlink", tarfile.DIRTYPE: "dir"}
_TYPES.update({tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"})


def check_toc_against_tar(toc: dict[str, Any], tar: bytes) -> None:
    """Each TOC entry says what Python's tarfile reads of the same entry of ``tar``."""
    entries = [e for e in toc["entries"] if e["type"] != "chunk"]
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        members = tf.getmembers()
    assert len(entries) == len(members)
    for entry, member in zip(entries, members, strict=True):
        name = member.name + ("/" if member.isdir() and not member.name.endswith("/") else "")
        assert entry["name"] == name, (entry, member.name)
        assert entry["type"] == _TYPES[member.type], entry
        assert entry.get("linkName", "") == member.linkname
        assert entry.get("mode", 0) == member.mode
        assert entry.get("size", 0) == member.size
        assert (entry.get("uid", 0), entry.get("gid", 0)) == (member.uid, member.gid)
        when = datetime.fromtimestamp(member.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert entry["modtime"] == when
        xattrs = {k[13:]: v for k, v in member.pax_headers.items() if k.startswith("SCHILY.xattr.")}
        encoded = {k: base64.b64encode(v.encode("utf-8", "surrogateescape")).decode() for k, v in xattrs.items()}
        assert entry.get("xattrs", {}) == encoded
        if member.ischr() or member.isblk():
            assert (entry.get("devMajor", 0), entry.get("devMinor", 0)) == (member.devmajor, member.devminor)


def decompress(blob: bytes) -> bytes:
    """The whole blob as any zstd reader reads it: every frame, the skippable ones skipped."""
    return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True).read()


def check_blob(blob: bytes, annotations: dict[str, str], diff_id: str) -> Chunked:
    """Every check of :func:`read`, the whole blob read as plain zstd giving the diff_id,
    the tar rebuilt from the tar-split giving it too, and the TOC agreeing with the tar."""
    chunked = read(blob, annotations)
    tar = decompress(blob)
    assert "sha256:" + hashlib.sha256(tar).hexdigest() == diff_id
    assert rebuild_tar(chunked) == tar
    check_toc_against_tar(chunked.toc, tar)
    return chunked
