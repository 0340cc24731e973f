"""zstd:chunked layers (assembler/archive/chunked.py), read back by the tests' own reader of
c/storage's format (tests/zstd_chunked.py): the blob is the plain layer's tar to any zstd
reader, the TOC finds every file's frame, the tar-split rebuilds the tar, and the same
entries give the same bytes. The real tools' checks are in tests/test_chunked_tools.py.
"""

from __future__ import annotations

import base64
import io
import os
import random
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

import pytest

from assembler.archive import chunked, chunked_batch, chunked_frames
from assembler.archive.chunked_toc import go_time
from assembler.archive.layer import Member, Opener, recompress, write_layer
from assembler.archive.tar import TarEntry
from assembler.archive.tree import iter_host_members
from assembler.errors import InvalidArchive
from assembler.oci.layer import Layer
from tests import zstd_chunked
from tests.test_archive import CAP


def _opener(data: bytes) -> Opener:
    @contextmanager
    def opener() -> Iterator[BinaryIO]:
        yield io.BytesIO(data)

    return opener


def _members(seed: int = 0) -> tuple[list[Member], dict[str, bytes]]:
    """Entries of every kind a layer has, files of every size class, and names that need
    the PAX header, JSON escapes, or are not ASCII."""
    rnd = random.Random(seed)
    files = {
        "app/empty": b"",
        "app/small.txt": b"hello\n",
        "app/a<b>&c.txt": b"escaped in JSON",
        "app/\u00fcn\u00efc\u00f6d\u00e9.txt": "d\u00e9j\u00e0".encode(),
        "app/" + "long/" * 30 + "name.txt": b"a name over 100 bytes: a PAX header",
        "lib/block.bin": bytes(4096) + rnd.randbytes(2000),  # ends off a 512-byte block
        "lib/mid.so": rnd.randbytes(3 << 20),
        "lib/big.so": rnd.randbytes(chunked.BIG) + b"tail",  # over BIG: zstd's own threads
        "lib/bigger.so": rnd.randbytes(chunked.BIG + (1 << 20)),
    }
    members: list[Member] = [(TarEntry(p, "file", size=len(d), mtime=7), _opener(d)) for p, d in files.items()]
    members += [
        (TarEntry("app", "dir", mode=0o755), None),
        (TarEntry("lib", "dir", mode=0o755, xattrs={"security.capability": CAP}), None),
        (TarEntry("app/link", "symlink", mode=0o777, linkname="small.txt"), None),
        (TarEntry("app/hard", "hardlink", linkname="app/small.txt"), None),
        (TarEntry("app/ping", "file", mode=0o4755, uid=3_000_000, gid=1000, size=4, mtime=9), _opener(b"ping")),
        (TarEntry("dev/null", "char", mode=0o666, devmajor=1, devminor=3), None),
        (TarEntry("dev", "dir", mode=0o755), None),
        (TarEntry("run/fifo", "fifo", mode=0o600), None),
        (TarEntry("run", "dir", mode=0o755), None),
    ]
    return members, files | {"app/ping": b"ping"}


def _write(members: list[Member], compression: str) -> tuple[bytes, Layer]:
    out = io.BytesIO()
    layer = write_layer(members, out, compression=compression, epoch=8)  # type: ignore[arg-type]
    return out.getvalue(), layer


def test_chunked_layer_is_the_plain_tar_and_its_toc_finds_every_file() -> None:
    members, files = _members()
    plain, plain_layer = _write(members, "none")
    blob, layer = _write(members, "zstd:chunked")
    assert layer.diff_id == plain_layer.diff_id  # the tar is the one our plain writer makes
    assert layer.media_type == "application/vnd.oci.image.layer.v1.tar+zstd" and layer.chunked
    assert layer.uncompressed_size == len(plain)
    read = zstd_chunked.check_blob(blob, dict(layer.descriptor.annotations), layer.diff_id)
    # order_hardlinks gives the data to the first name of the pair: app/hard.
    assert read.files == {("app/hard" if p == "app/small.txt" else p): d for p, d in files.items() if d}
    entries = {e["name"]: e for e in read.toc["entries"]}
    assert entries["app/small.txt"]["type"] == "hardlink" and entries["app/small.txt"]["linkName"] == "app/hard"
    assert entries["lib/"]["xattrs"] == {"security.capability": base64.b64encode(CAP).decode()}
    assert entries["app/ping"]["uid"] == 3_000_000 and entries["app/ping"]["mode"] == 0o4755
    assert entries["dev/null"]["devMajor"] == 1 and entries["dev/null"]["devMinor"] == 3
    assert entries["app/empty"]["modtime"] == "1970-01-01T00:00:07Z" and "digest" not in entries["app/empty"]
    # Frames follow one another: each file's frame ends where the next frame starts.
    spans = sorted((e["offset"], e["endOffset"]) for e in read.toc["entries"] if "offset" in e)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(spans))


def test_same_entries_same_blob_whatever_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    members, _ = _members(seed=1)
    blob, layer = _write(members, "zstd:chunked")
    again, layer_again = _write(members, "zstd:chunked")
    assert again == blob and layer_again.descriptor == layer.descriptor
    # Nothing left in flight: each batch written as it is sent, so a big file's frame goes
    # into the blob as it comes, where otherwise it may wait for the batches before it.
    monkeypatch.setattr(chunked_frames, "_IN_FLIGHT", 0)
    assert _write(members, "zstd:chunked")[0] == blob
    with ThreadPoolExecutor(max_workers=1) as one:  # what a one-core machine's pool is
        monkeypatch.setattr(chunked_batch, "_pool", one)
        on_one_core, _ = _write(members, "zstd:chunked")
    assert on_one_core == blob


def test_host_tree_and_conversion_of_a_plain_zstd_layer_agree(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for i in range(300):  # many small files: many frames in each batch
        path = tree / f"d{i % 7}" / f"f{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(i * 37) + b"x" * i)
    os.symlink("d0/f0.py", tree / "link")
    members = list(iter_host_members(tree, "/opt/t/", git_modes=True, mtime=0))
    zstd_blob, zstd_layer = _write(members, "zstd")
    blob, layer = _write(members, "zstd:chunked")
    out = io.BytesIO()
    converted = recompress(io.BytesIO(zstd_blob), "zstd", out, compression="zstd:chunked")
    assert converted.descriptor == layer.descriptor and out.getvalue() == blob
    assert converted.diff_id == zstd_layer.diff_id
    zstd_chunked.check_blob(blob, dict(layer.descriptor.annotations), layer.diff_id)


def _foreign_tar(fmt: int) -> bytes:
    """A tar from Python's tarfile: GNU long names ('L', 'K') or PAX records, and the
    record padding after the end-of-archive blocks."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for name, data in (("x/" + "n" * 120 + ".txt", b"long"), ("y.txt", b"y" * 1000), ("z/empty", b"")):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uid, info.mode = len(data), 1_600_000_000, 5, 0o640
            if fmt == tarfile.PAX_FORMAT:
                info.pax_headers = {"SCHILY.xattr.user.note": "v\u00e9", "mtime": "1600000000.25"}
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("l/" + "k" * 110)
        link.type, link.linkname = tarfile.SYMTYPE, "t/" + "q" * 110
        tf.addfile(link)
    return out.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tars_from_elsewhere_convert_with_their_own_bytes(fmt: int) -> None:
    tar = _foreign_tar(fmt)
    out = io.BytesIO()
    layer = recompress(io.BytesIO(tar), "none", out, compression="zstd:chunked")
    read = zstd_chunked.read(out.getvalue(), dict(layer.descriptor.annotations))
    assert zstd_chunked.rebuild_tar(read) == tar  # the record padding too
    entries = {e["name"]: e for e in read.toc["entries"]}
    assert entries["y.txt"]["uid"] == 5 and entries["y.txt"]["mode"] == 0o640
    assert entries["l/" + "k" * 110]["linkName"] == "t/" + "q" * 110
    if fmt == tarfile.PAX_FORMAT:
        assert entries["y.txt"]["xattrs"] == {"user.note": "dsOp"}
        assert entries["y.txt"]["modtime"] == "2020-09-13T12:26:40.25Z"


def _tar_of(*infos: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in infos:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_what_zstd_chunked_cannot_describe_is_refused() -> None:
    def convert(tar: bytes) -> None:
        recompress(io.BytesIO(tar), "none", io.BytesIO(), compression="zstd:chunked")

    twice = _tar_of((tarfile.TarInfo("a"), b"1"), (tarfile.TarInfo("a"), b"2"))
    with pytest.raises(InvalidArchive, match="two entries named"):
        convert(twice)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "g"}) as tf:
        tf.addfile(tarfile.TarInfo("a"), io.BytesIO())
    with pytest.raises(InvalidArchive, match="global PAX header"):
        convert(out.getvalue())
    sparse = tarfile.TarInfo("s")
    sparse.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
    with pytest.raises(InvalidArchive, match="sparse"):
        convert(_tar_of((sparse, b"")))
    cut = _tar_of((tarfile.TarInfo("c"), b"c" * 5000))[:1500]
    with pytest.raises(InvalidArchive, match="ended inside an entry"):
        convert(cut)


def test_layer_record_keeps_the_annotations() -> None:
    members, _ = _members()
    _, layer = _write(members[:3], "zstd:chunked")
    record = layer.to_json()
    assert Layer.from_json(record) == layer and Layer.from_json(record).chunked
    plain = Layer.of(layer.digest, 1, layer.diff_id, "zstd")
    assert "annotations" not in plain.to_json() and not plain.chunked  # plain records unchanged
    with pytest.raises(Exception, match="malformed layer record"):
        Layer.from_json({**record, "annotations": {"k": 1}})


def test_times_as_go_writes_them() -> None:
    assert go_time((0, 0)) == "1970-01-01T00:00:00Z"
    assert go_time((1_700_000_000, 500_000_000)) == "2023-11-14T22:13:20.5Z"
    assert go_time((-1, 999_999_999)) == "1969-12-31T23:59:59.999999999Z"
