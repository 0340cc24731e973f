"""Compile-cache chunks (``assembler.archive.chunks``): deterministic, content-addressed,
exact mtimes, safe to unpack; no registry, no buildah."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from assembler.archive import chunks as ch
from assembler.errors import CacheError, UnsafePath


def _tree(root: Path, files: int = 200) -> Path:
    for i in range(files):
        path = root / f"d{i % 7}" / f"f{i:03}.o"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"object {i}\n".encode() * (i + 1))
        os.utime(path, ns=(1_700_000_000_123_456_789 + i, 1_700_000_000_123_456_789 + i))
    (root / "d0" / "link").symlink_to("f000.o")
    (root / "empty").mkdir()
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    return root


def _digests(root: Path) -> list[str]:
    out = []
    for group in ch.chunks(ch.scan(root)):
        sink = io.BytesIO()
        ch.write_chunk(root, group, sink)
        out.append(hashlib.sha256(sink.getvalue()).hexdigest())
    return out


def _restore(root: Path, dest: Path) -> None:
    unpacking = ch.Unpacking(dest)
    for group in ch.chunks(ch.scan(root)):
        sink = io.BytesIO()
        ch.write_chunk(root, group, sink)
        sink.seek(0)
        unpacking.add(sink)
    unpacking.finish()


def test_round_trip_keeps_mtimes_to_the_nanosecond_modes_and_symlinks(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    dest = tmp_path / "dest"
    dest.mkdir()
    _restore(src, dest)
    for e in ch.scan(src):
        got = os.lstat(dest / e.rel)
        assert got.st_mtime_ns == e.mtime_ns, e.rel
        assert got.st_mode & 0o7777 == e.mode, e.rel
        if e.kind == "file":
            assert (dest / e.rel).read_bytes() == (src / e.rel).read_bytes()
    assert os.readlink(dest / "d0" / "link") == "f000.o"
    assert (dest / "empty").is_dir()


def test_same_files_same_chunks_and_one_change_changes_one_chunk(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    before = _digests(src)
    assert len(before) > 2, "the tree is cut into several chunks"
    assert _digests(src) == before, "deterministic"
    (src / "d3" / "f010.o").write_bytes(b"changed, longer than before" * 3)
    after = _digests(src)
    assert len(set(after) - set(before)) == 1, (before, after)


def test_evict_leaves_out_the_oldest_files(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", files=20)
    entries = ch.scan(src)
    total = sum(e.size for e in entries if e.kind == "file")
    kept, evicted = ch.evict(entries, total - 1)
    oldest = min((e for e in entries if e.kind == "file"), key=lambda e: e.mtime_ns)
    assert [e.rel for e in evicted] == [oldest.rel]
    assert oldest not in kept and any(e.kind == "dir" for e in kept)
    assert ch.evict(entries, total) == (entries, [])


def _chunk_of(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return io.BytesIO(zstandard.ZstdCompressor().compress(raw.getvalue()))


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "./../x", "a//..//../b"])
def test_unpacking_refuses_paths_outside(tmp_path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.size = 1
    with pytest.raises(UnsafePath):
        ch.Unpacking(tmp_path).add(_chunk_of((info, b"x")))


def test_unpacking_refuses_writing_through_a_symlink(tmp_path: Path) -> None:
    link = tarfile.TarInfo("out")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    victim = tarfile.TarInfo("out/passwd")
    victim.size = 1
    with pytest.raises(UnsafePath):
        ch.Unpacking(tmp_path).add(_chunk_of((link, b""), (victim, b"x")))
    assert not (tmp_path / "out").exists() or (tmp_path / "out").is_symlink()


def test_a_damaged_chunk_is_a_cache_error(tmp_path: Path) -> None:
    with pytest.raises(CacheError):
        ch.Unpacking(tmp_path).add(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"garbage" * 10))
