"""The deterministic tar writer and layer pipeline, read back by GNU tar and Python's tarfile."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import tarfile
from pathlib import Path

import pytest

from assembler.archive.compress import decompressed
from assembler.archive.layer import HashingSink, order_hardlinks, recompress, sorted_members, write_layer
from assembler.archive.links import walk_links
from assembler.archive.tar import TarEntry, clean_path
from assembler.archive.tree import iter_host_members
from assembler.errors import UnsafePath

# A valid VFS_CAP_REVISION_2 security.capability value: effective, CAP_NET_BIND_SERVICE.
CAP = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def make_tree(root: Path, *, reverse: bool, mtime: int, umask: int) -> None:
    old = os.umask(umask)
    try:
        names = ["a/b/c.txt", "a/d.bin", "z.txt", "m/n/o/p.txt", "long/" + "x" * 120 + "/f", "ünï/çödé.txt"]
        for name in reversed(names) if reverse else names:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(name.encode() * 100)
        os.chmod(root / "a/d.bin", 0o4755)
        os.symlink("../z.txt", root / "a/link")
        os.link(root / "z.txt", root / "m/hard")
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                os.utime(os.path.join(dirpath, n), (mtime, mtime), follow_symlinks=False)
    finally:
        os.umask(old)


def layer_bytes(src: Path, compression: str = "none", epoch: int = 0) -> tuple[bytes, str]:
    out = io.BytesIO()
    members = list(iter_host_members(src, "/opt/app/", git_modes=True, mtime=epoch))
    blob = write_layer(members, out, compression=compression, epoch=epoch)  # type: ignore[arg-type]
    return out.getvalue(), blob.diff_id


def test_same_content_same_bytes_whatever_mtimes_umask_and_creation_order(tmp_path: Path) -> None:
    make_tree(tmp_path / "one", reverse=False, mtime=1_700_000_000, umask=0o022)
    make_tree(tmp_path / "two", reverse=True, mtime=1_800_000_000, umask=0o077)
    for compression in ("none", "gzip", "zstd"):
        one, d1 = layer_bytes(tmp_path / "one", compression)
        two, d2 = layer_bytes(tmp_path / "two", compression)
        assert d1 == d2
        assert one == two, compression


def test_gnu_tar_and_tarfile_read_it_back(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", reverse=False, mtime=1_700_000_000, umask=0o022)
    os.setxattr(tmp_path / "src/z.txt", "security.capability", CAP)
    os.setxattr(tmp_path / "src/a/b/c.txt", "user.dropped", b"not allow-listed")
    data, _ = layer_bytes(tmp_path / "src", epoch=1000)
    (tmp_path / "l.tar").write_bytes(data)
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "l.tar")], capture_output=True, text=True, check=True)
    assert "opt/app/a/d.bin" in listing.stdout and "-rwsr-xr-x" in listing.stdout
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "-xf", str(tmp_path / "l.tar"), "-C", str(out)], check=True
    )
    assert os.getxattr(out / "opt/app/z.txt", "security.capability") == CAP
    assert os.lstat(out / "opt/app/m/hard").st_ino == os.lstat(out / "opt/app/z.txt").st_ino
    assert os.readlink(out / "opt/app/a/link") == "../z.txt"
    with tarfile.open(tmp_path / "l.tar") as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names, key=lambda n: n.split("/"))
        assert "opt" not in names  # the destination's parents are left to the image below
        for m in members:
            assert m.mtime == 1000, m.name  # host files are dated at the epoch
            assert m.uname == "" and m.gname == "" and m.uid == 0 and m.gid == 0
            assert "PaxHeaders" not in m.name
            assert not any(k.startswith("SCHILY.xattr.user.") for k in m.pax_headers)
        assert any(len(m.name) > 100 for m in members)
        assert "opt/app/ünï/çödé.txt" in names


def test_digest_and_diff_id_in_one_pass(tmp_path: Path) -> None:
    make_tree(tmp_path / "src", reverse=False, mtime=0, umask=0o022)
    out = io.BytesIO()
    blob = write_layer(list(iter_host_members(tmp_path / "src", "/app/")), out, compression="zstd", epoch=0)
    raw = out.getvalue()
    import hashlib

    assert blob.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert blob.size == len(raw)
    with decompressed(io.BytesIO(raw)) as plain:
        tar = plain.read()
    assert blob.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert blob.uncompressed_size == len(tar)
    again = recompress(io.BytesIO(raw), None, HashingSink(None), compression="gzip")
    assert again.diff_id == blob.diff_id and again.digest != blob.digest


def test_hard_links_are_reordered_to_point_back() -> None:
    # In a rootfs tar the link may sort before its target: the first path must carry the data.
    data = TarEntry("usr/bin/zz-target", "file", size=3)
    link = TarEntry("usr/bin/aa-link", "hardlink", linkname="usr/bin/zz-target")
    ordered = order_hardlinks(sorted_members([(data, None), (link, None)]))
    assert [(e.path, e.kind, e.linkname) for e, _ in ordered] == [
        ("usr/bin/aa-link", "file", ""),
        ("usr/bin/zz-target", "hardlink", "usr/bin/aa-link"),
    ]


@pytest.mark.parametrize("bad", ["../etc/passwd", "a/../../b", "x/.."])
def test_paths_that_climb_out_are_refused(bad: str) -> None:
    with pytest.raises(UnsafePath):
        clean_path(bad)


def test_absolute_paths_are_made_relative() -> None:
    assert clean_path("/usr//bin/./env") == "usr/bin/env"
    assert clean_path("./") == ""


def test_links_are_followed_inside_the_root_only() -> None:
    # merged /usr, a relative link that climbs, an absolute one, and a loop
    links = {"lib": "usr/lib", "usr/lib/up": "../../../../etc", "usr/lib/abs": "/opt/x", "a": "b", "b": "a"}
    assert walk_links("lib/libc.so.6", links.get) == "usr/lib/libc.so.6"
    assert walk_links("lib/up/passwd", links.get) == "etc/passwd"  # ".." never climbs above the root
    assert walk_links("/lib/abs/bin", links.get) == "opt/x/bin"
    assert walk_links("lib/abs", links.get, follow_last=False) == "usr/lib/abs"  # the link itself
    assert walk_links("a/file", links.get) is None  # a loop ends the walk
    assert walk_links("", links.get) == ""


def _every_header_shape() -> list[tuple[TarEntry, bytes | None]]:
    """Entries that take each path through the header writer: short, ustar-split and PAX
    names, non-ASCII names and link targets, ids and sizes past ustar's fields, xattrs
    (kept and dropped), devices, a file whose data is a whole number of blocks, one of
    several MiB, times past the epoch and negative."""
    big = bytes(range(256)) * (3 * 4096 + 7)  # 3 MiB and 1792 bytes: crosses the writer's 1 MiB chunks
    cases: list[tuple[TarEntry, bytes | None]] = [
        (TarEntry("", "dir", mode=0o755), None),
        (TarEntry("etc", "dir", mode=0o40755, mtime=5), None),
        (TarEntry("etc/hosts", "file", mode=0o100644, size=11, mtime=10**10), b"127.0.0.1 x"),
        (TarEntry("etc/block512", "file", size=512, mtime=-3), b"b" * 512),
        (TarEntry("etc/empty", "file", size=0), None),
        (TarEntry("etc/big", "file", mode=0o4755, size=len(big), uid=1000, gid=1000), big),
        (TarEntry("etc/cap", "file", size=1, xattrs={"security.capability": CAP, "user.junk": b"x"}), b"c"),
        (TarEntry("etc/link", "symlink", mode=0o777, linkname="hosts"), None),
        (TarEntry("etc/longlink", "symlink", linkname="t/" * 60), None),
        (TarEntry("etc/ünï", "symlink", linkname="çödé"), None),
        (TarEntry("etc/hard", "hardlink", linkname="etc/hosts"), None),
        (TarEntry("dev/null", "char", mode=0o666, devmajor=1, devminor=3), None),
        (TarEntry("dev/sda", "block", mode=0o660, devmajor=8, devminor=0, gid=6), None),
        (TarEntry("dev/fifo", "fifo", mode=0o600), None),
        (TarEntry("u/" + "d" * 99, "dir"), None),
        (TarEntry("u/" + "s" * 98 + "/" + "n" * 100, "file", size=2), b"ok"),
        (TarEntry("u/" + "p" * 200, "file", size=3), b"pax"),
        (TarEntry("u/" + "q" * 150 + "/r", "file", size=1), b"q"),
        (TarEntry("u/ids", "file", size=0, uid=2**21, gid=2**24), None),
        (TarEntry("u/café.txt", "file", size=4, mode=0o755), b"caf\xc3"),
    ]
    return cases


def test_the_tar_writers_bytes_are_pinned() -> None:
    """Every layer digest in the project rests on these bytes: a faster writer must give
    the same ones (this digest was taken from the writer before it was made faster)."""
    import hashlib
    from contextlib import nullcontext

    members = [
        (entry, None if data is None else (lambda d=data: nullcontext(io.BytesIO(d))))
        for entry, data in _every_header_shape()
    ]
    out = io.BytesIO()
    blob = write_layer(members, out, compression="none", epoch=1_700_000_000)  # type: ignore[arg-type]
    raw = out.getvalue()
    assert blob.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        names = tf.getnames()
        assert tf.extractfile("etc/big").read() == _every_header_shape()[5][1]  # type: ignore[union-attr]
    assert "u/" + "p" * 200 in names and "etc/ünï" in names
    assert blob.diff_id == "sha256:0aad5994b02b637a1bd19800487851224944027fbd5bf686705ab45a211c9e49"


@pytest.mark.parametrize("hashing", ["inline", "background"])
@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_buffers_filled_again_never_change_what_was_written(
    compression: str, hashing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tar writer fills a 1 MiB buffer again once the diff_id's hash is done with it:
    a layer of many buffers (files of odd sizes, across buffer ends) holds every file's
    bytes, and its digest and diff_id are those of the bytes written, whether the diff_id
    is hashed as it is written (two cores) or in a thread of its own (more)."""
    import hashlib
    import random

    from assembler.archive import layer

    monkeypatch.setattr(layer, "usable_cores", lambda: 2 if hashing == "inline" else 8)
    made = layer._diff_id_hash()
    made.close()
    assert type(made).__name__ == ("_InlineHash" if hashing == "inline" else "_BackgroundHash")
    rng = random.Random(7)
    files = {f"f{i:03}": rng.randbytes(rng.randrange(1, 700_000)) for i in range(40)}  # about 14 MiB
    members = [
        (TarEntry(name, "file", size=len(data)), (lambda data=data: io.BytesIO(data))) for name, data in files.items()
    ]
    out = io.BytesIO()
    blob = write_layer(members, out, compression=compression, epoch=0)  # type: ignore[arg-type]
    raw = out.getvalue()
    assert blob.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    with decompressed(io.BytesIO(raw)) as plain:
        tar = plain.read()
    assert blob.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        got = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}  # type: ignore[union-attr]
    assert got == files


def test_zstd_contexts_kept_between_layers_change_no_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer is compressed with a context an earlier layer used (it keeps its worker
    threads and buffers); its bytes are those a fresh context writes. A stream that fails
    midway drops its context rather than handing it on."""
    import random

    from assembler.archive import encoders

    pool = encoders._ContextPool()
    monkeypatch.setattr(encoders, "_CONTEXTS", pool)
    rng = random.Random(3)
    words = [rng.randbytes(rng.randrange(2, 12)).hex().encode() for _ in range(4000)]

    def text(n: int) -> bytes:  # compressible, and longer than one zstd job (several MiB)
        return b" ".join(rng.choices(words, k=n))

    def members(files: dict[str, bytes]) -> list[tuple[TarEntry, object]]:
        return [(TarEntry(k, "file", size=len(v)), (lambda v=v: io.BytesIO(v))) for k, v in files.items()]

    def layer(files: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        write_layer(members(files), out, compression="zstd", epoch=0)  # type: ignore[arg-type]
        return out.getvalue()

    first = {"a": text(1_500_000), "b": text(300_000)}  # about 20 MiB
    fresh = layer(first)
    (context,) = pool._idle[encoders.ZSTD_LEVEL]
    assert layer({"other": text(900_000)}) != fresh  # the same context, another stream

    class Broken(io.BytesIO):
        def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
            raise OSError("disk gone")

    with pytest.raises(OSError):
        write_layer(
            [(TarEntry("x", "file", size=5 << 20), Broken), *members({"y": text(10)})],
            io.BytesIO(),
            compression="zstd",
            epoch=0,
        )
    assert pool._idle[encoders.ZSTD_LEVEL] == []  # the failed stream's context was dropped
    assert layer(first) == fresh  # a fresh context again
    (again,) = pool._idle[encoders.ZSTD_LEVEL]
    assert again is not context
    assert layer(first) == fresh  # a kept one
    assert pool._idle[encoders.ZSTD_LEVEL] == [again]


def _tar_with_owner(fmt: int, **owner: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        ok = tarfile.TarInfo("etc/os-release")
        ok.size = 8
        tf.addfile(ok, io.BytesIO(b"ID=test\n"))
        odd = tarfile.TarInfo("srv/odd")
        odd.size = 2
        for field, value in owner.items():
            setattr(odd, field, value)
        tf.addfile(odd, io.BytesIO(b"x\n"))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "owner"),
    [
        (tarfile.PAX_FORMAT, {"uid": 2**32}),  # a PAX "uid" record past 32 bits
        (tarfile.PAX_FORMAT, {"uid": 2**32 - 1}),  # (uid_t)-1: chown's "unchanged"
        (tarfile.PAX_FORMAT, {"gid": 2**40}),
        (tarfile.PAX_FORMAT, {"uid": -1}),  # a PAX record "-1"
        (tarfile.GNU_FORMAT, {"uid": -1}),  # GNU's base-256 field, negative
        (tarfile.GNU_FORMAT, {"gid": 2**50}),
    ],
    ids=["pax-2^32", "pax-2^32-1", "pax-gid-2^40", "pax-minus-1", "gnu-minus-1", "gnu-gid-2^50"],
)
def test_owners_outside_32_bits_are_damaged_input(tmp_path: Path, fmt: int, owner: dict[str, int]) -> None:
    """A base (or any tar read from elsewhere) whose member's owner no uid_t holds is
    refused naming the archive and the member (exit 2), never copied into a layer."""
    from assembler.archive.tar import MAX_OWNER, entry_from_tarinfo
    from assembler.errors import InvalidArchive
    from tests.helpers import run_cli_here

    data = _tar_with_owner(fmt, **owner)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        odd = tf.getmember("srv/odd")
        assert (odd.uid, odd.gid) == (owner.get("uid", 0), owner.get("gid", 0))  # what the tar says
        with pytest.raises(InvalidArchive, match=f"member 'srv/odd' has {next(iter(owner))}"):
            entry_from_tarinfo(odd, what="base.tar")
        edge = tf.getmember("srv/odd")
        edge.uid, edge.gid = MAX_OWNER, MAX_OWNER
        assert entry_from_tarinfo(edge, what="base.tar") is not None  # the highest owner is one
    (tmp_path / "base.tar").write_bytes(data)
    (tmp_path / "m.yaml").write_text("name: t\nbases: {b: 'rootfs:base.tar'}\nimage: {base: b}\n")
    ran = run_cli_here(["m.yaml", "--cache", "cache", "-o", "oci:out:x"], cwd=tmp_path)
    assert ran.code == 2 and "srv/odd" in ran.err and "Traceback" not in ran.err, str(ran)
    assert not (tmp_path / "out").exists()
