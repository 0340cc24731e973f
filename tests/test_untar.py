"""The one reader of tars from elsewhere (``assembler.archive.tarread``) and the one
unpacker (``assembler.archive.extract``): archives crafted here, each damaged, unbounded
or hostile in one way, are refused (InvalidArchive or UnsafePath, exit 2) naming the
archive and the member, and nothing lands outside the folder unpacked into. No outside
tool: every archive is written byte by byte here."""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from assembler.archive import chunks as ch
from assembler.archive.extract import CHUNKS, Unpacker, extract, write_new
from assembler.archive.layer import iter_tar
from assembler.archive.layer_reader import LayerSource, tar_members
from assembler.archive.tarread import Limits
from assembler.cache import Cache
from assembler.errors import CacheError, InputError, InvalidArchive, InvalidImage, UnsafePath
from assembler.transports.rootfs import layer_from_tar

Member = tuple[tarfile.TarInfo, bytes]


def _info(name: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "", **pax: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_700_000_000
    if pax:
        info.pax_headers = dict(pax)
    return info, data


def _tar(*members: Member, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return raw.getvalue()


def _read_all(data: bytes) -> list[str]:
    return [entry.path for entry, _, _ in iter_tar(io.BytesIO(data), what="t.tar")]


def _three() -> bytes:
    return _tar(_info("a", data=b"1"), _info("b", data=b"2"), _info("c", data=b"3"))


def _header_at(data: bytes, index: int) -> int:
    """The offset of the ``index``-th header of a tar of one-block files (no PAX headers)."""
    return index * 1024


# -- damage ------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [1, 2])
def test_a_bad_checksum_on_a_later_header_is_damage_not_the_end_of_the_archive(index: int) -> None:
    """tarfile ends the archive quietly at a later header whose checksum is wrong (the base
    lost every file after it, exit 0); GNU tar reports it, and so do we."""
    data = bytearray(
        _tar(_info("a", data=b"1"), _info("b", data=b"2"), _info("c", data=b"3"), fmt=tarfile.USTAR_FORMAT)
    )
    at = _header_at(bytes(data), index)
    data[at + 148 : at + 156] = b"0000000\x00"  # a checksum no header has
    with pytest.raises(InvalidArchive, match=f"t.tar: damaged tar archive after member '{'abc'[index - 1]}'"):
        _read_all(bytes(data))


def test_a_header_cut_short_after_the_first_is_damage() -> None:
    data = _tar(_info("a", data=b"1"), _info("b", data=b"2"), fmt=tarfile.USTAR_FORMAT)
    with pytest.raises(InvalidArchive, match="damaged tar archive after member 'a'"):
        _read_all(data[: 1024 + 300])


@pytest.mark.parametrize("kind", [tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK])
def test_a_gnu_long_name_claiming_a_tib_is_refused_unread(kind: bytes) -> None:
    """tarfile reads a GNU long name whole into memory: one claiming 1 TiB was a MemoryError."""
    long = tarfile.TarInfo("././@LongLink")
    long.type, long.size = kind, 1 << 40
    data = long.tobuf(tarfile.GNU_FORMAT) + b"name\x00".ljust(512, b"\x00") + _tar(_info("x", data=b"1"))
    for reader in (lambda: _read_all(data), lambda: list(tarfile_members_from_file(data))):
        with pytest.raises(InvalidArchive, match="GNU long name or link of 1099511627776 bytes"):
            reader()


def tarfile_members_from_file(data: bytes) -> Iterator[str]:
    """The members a seekable reader (rootfs:, url:, oci-archive) sees."""
    from assembler.archive.tarread import reading

    with reading(io.BytesIO(data), what="t.tar", stream=False) as (_, entries):
        for entry, _ in entries:
            yield entry.path


def test_a_pax_header_bigger_than_the_bound_is_refused() -> None:
    info, _ = _info("x", data=b"1", comment="y" * (2 << 20))
    with pytest.raises(InvalidArchive, match="a PAX header of"):
        _read_all(_tar((info, b"1")))


def test_a_chain_of_long_name_headers_is_damage_not_a_recursion_error() -> None:
    """tarfile reads each long-name header's next one recursively."""
    link = tarfile.TarInfo("././@LongLink")
    link.type, link.size = tarfile.GNUTYPE_LONGNAME, 5
    block = link.tobuf(tarfile.GNU_FORMAT) + b"name\x00".ljust(512, b"\x00")
    with pytest.raises(InvalidArchive, match="more than 16 extension headers before one member"):
        _read_all(_tar(_info("a", data=b"1"), fmt=tarfile.USTAR_FORMAT)[:1024] + block * 5000 + _tar(_info("x")))


@pytest.mark.parametrize("mtime", ["nan", "inf", "-inf", "1e400"])
def test_a_pax_mtime_that_is_no_time_is_refused(mtime: str, tmp_path: Path) -> None:
    data = _tar(_info("a", data=b"1", mtime=mtime))
    with pytest.raises(InvalidArchive, match=re.escape("t.tar: member 'a' has the modification time")):
        _read_all(data)
    (tmp_path / "r.tar").write_bytes(data)
    with pytest.raises(InvalidArchive, match="member 'a' has the modification time"):
        layer_from_tar(
            tmp_path / "r.tar", cache=Cache(tmp_path / "c"), compression="gzip", epoch=0, what="rootfs:r.tar"
        )


def _gnu_sparse_old() -> bytes:
    info = tarfile.TarInfo("holes")
    info.type, info.size = tarfile.GNUTYPE_SPARSE, 512
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[483:495] = b"%011o\x00" % (2 << 30)  # the real size: 2 GiB, nearly all of it holes
    header[148:156] = b"        "
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header) + b"x" * 512 + bytes(1024)


@pytest.mark.parametrize(
    "sparse",
    [
        {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": str(2 << 30), "GNU.sparse.name": "h"},
        {"GNU.sparse.map": f"{(2 << 30) - 5},5", "GNU.sparse.size": str(2 << 30)},
        {"GNU.sparse.size": str(2 << 30), "GNU.sparse.offset": "0", "GNU.sparse.numbytes": "5"},
        "gnu",
    ],
    ids=["pax-1.0", "pax-0.1", "pax-0.0", "gnu-old"],
)
def test_sparse_members_are_refused(sparse: dict[str, str] | str, tmp_path: Path) -> None:
    """A 10 KiB tar whose sparse member unpacked to 2 GiB of zeros: the bound counted the
    archive's bytes, not the holes."""
    data = _gnu_sparse_old() if sparse == "gnu" else _tar(_info("holes", data=b"1\n0\n5\nxxxxx", **sparse))
    with pytest.raises(InvalidArchive, match="sparse"):
        _read_all(data)
    with pytest.raises(InvalidArchive, match="sparse"):
        extract(io.BytesIO(data), tmp_path / "out", what="t.tar")
    assert not (tmp_path / "out" / "holes").exists() and not (tmp_path / "out" / "h").exists()
    (tmp_path / "r.tar").write_bytes(data)  # an uncompressed rootfs: is bounded too
    with pytest.raises(InvalidArchive, match="sparse"):
        layer_from_tar(
            tmp_path / "r.tar", cache=Cache(tmp_path / "c"), compression="gzip", epoch=0, what="rootfs:r.tar"
        )
    with pytest.raises(InvalidImage, match="sparse"):
        list(tar_members(LayerSource("layer 1", lambda: io.BytesIO(data))))  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("field", ["uid", "gid"])
def test_negative_owners_are_refused(field: str) -> None:
    info, data = _info("a", data=b"1")
    setattr(info, field, -1)
    with pytest.raises(InvalidArchive, match=f"has the {field} -1"):
        _read_all(_tar((info, data), fmt=tarfile.GNU_FORMAT))


def test_members_paths_and_bytes_are_bounded(tmp_path: Path) -> None:
    many = _tar(*(_info(f"f{i}") for i in range(11)))
    with pytest.raises(InvalidArchive, match="more than 10 members"):
        extract(io.BytesIO(many), tmp_path / "a", what="t.tar", limits=Limits(members=10))
    deep = _tar(_info("d/" * 40 + "f"))
    with pytest.raises(InvalidArchive, match="more than 32 folders deep"):
        extract(io.BytesIO(deep), tmp_path / "b", what="t.tar", limits=Limits(depth=32))
    with pytest.raises(InvalidArchive, match="its path is 5001 bytes long"):
        _read_all(_tar(_info("p" * 5001)))
    with pytest.raises(InvalidArchive, match="its link target is 5000 bytes long"):
        _read_all(_tar(_info("l", kind=tarfile.SYMTYPE, link="t" * 5000)))
    big = _tar(_info("small", data=b"x" * 1000), _info("big", data=bytes(3000)))
    with pytest.raises(InvalidArchive, match="its files hold more than 2048 bytes \\(at 'big'\\)") as caught:
        extract(io.BytesIO(big), tmp_path / "c", what="t.tar", limits=Limits(bytes=2048, hint="raise it"))
    assert caught.value.hint == "raise it"
    assert not (tmp_path / "c" / "big").exists(), "refused before a byte of it was written"


# -- nothing outside the folder ----------------------------------------------------------


def _victim(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0\n")
    os.chmod(outside, 0o755)
    os.utime(outside, ns=(10**18, 10**18))
    return outside


def _untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["passwd"]
    assert (outside / "passwd").read_text() == "root:x:0:0\n"
    st = os.stat(outside)
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_mtime_ns == 10**18


def _chunk(data: bytes) -> io.BytesIO:
    return io.BytesIO(zstandard.ZstdCompressor().compress(data))


@pytest.mark.parametrize("link_name", ["out", "./out", ".//out", "out/"])
@pytest.mark.parametrize("member", ["out/passwd", "./out/passwd", "out//passwd", "out/./passwd", "/out/passwd"])
def test_a_symlink_however_spelled_is_never_written_through(tmp_path: Path, link_name: str, member: str) -> None:
    """The compile-cache restore compared cleaned paths with link names as the tar spelled
    them: ``./out`` or ``out//passwd`` wrote through the link."""
    outside = _victim(tmp_path)
    data = _tar(_info(link_name, kind=tarfile.SYMTYPE, link=str(outside)), _info(member, data=b"owned\n"))
    for unpack in (
        lambda dest: ch.Unpacking(dest).add(_chunk(data)),
        lambda dest: extract(io.BytesIO(data), dest, what="t.tar"),
    ):
        dest = tmp_path / f"dest{len(list(tmp_path.iterdir()))}"
        with pytest.raises(UnsafePath, match="through 'out', a symlink or a file"):
            unpack(dest)
        _untouched(outside)


def test_a_symlink_from_an_earlier_chunk_is_never_written_through(tmp_path: Path) -> None:
    outside = _victim(tmp_path)
    unpacking = ch.Unpacking(tmp_path / "dest")
    unpacking.add(_chunk(_tar(_info("./a/out", kind=tarfile.SYMTYPE, link=str(outside)))))
    with pytest.raises(UnsafePath):
        unpacking.add(_chunk(_tar(_info("a//out/passwd", data=b"owned\n"))))
    _untouched(outside)


def test_a_folder_member_onto_a_symlink_does_not_touch_the_links_target(tmp_path: Path) -> None:
    """A folder member reusing a symlink's name had its mode and time set on the target."""
    outside = _victim(tmp_path)
    for spelled in ("d", "./d", "d/"):
        dest = tmp_path / f"dest-{len(list(tmp_path.iterdir()))}"
        folder, _ = _info(spelled, kind=tarfile.DIRTYPE)
        folder.mode, folder.mtime = 0o777, 1234
        unpacking = ch.Unpacking(dest)
        unpacking.add(_chunk(_tar(_info("d", kind=tarfile.SYMTYPE, link=str(outside)), (folder, b""))))
        unpacking.finish()
        assert (dest / "d").is_dir() and not (dest / "d").is_symlink()
        assert stat.S_IMODE(os.stat(dest / "d").st_mode) == 0o777 and os.stat(dest / "d").st_mtime_ns == 1234 * 10**9
        _untouched(outside)


def test_a_file_member_onto_a_symlink_replaces_the_link(tmp_path: Path) -> None:
    outside = _victim(tmp_path)
    dest = tmp_path / "dest"
    extract(
        io.BytesIO(_tar(_info("p", kind=tarfile.SYMTYPE, link=str(outside / "passwd")), _info("p", data=b"new\n"))),
        dest,
        what="t",
    )
    assert not (dest / "p").is_symlink() and (dest / "p").read_text() == "new\n"
    _untouched(outside)


def test_a_link_already_in_the_folder_is_never_followed(tmp_path: Path) -> None:
    outside = _victim(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "lib").symlink_to(outside)
    with pytest.raises(UnsafePath):
        extract(io.BytesIO(_tar(_info("lib/passwd", data=b"owned\n"))), dest, what="t.tar")
    _untouched(outside)


def test_a_member_may_not_replace_a_folder(tmp_path: Path) -> None:
    outside = _victim(tmp_path)
    data = _tar(_info("d", kind=tarfile.DIRTYPE), _info("d", kind=tarfile.SYMTYPE, link=str(outside)))
    with pytest.raises(UnsafePath, match="would replace the folder"):
        extract(io.BytesIO(data), tmp_path / "dest", what="t.tar")
    _untouched(outside)


@pytest.mark.parametrize("target", ["../outside/passwd", "l/passwd", "missing", "dir"])
def test_a_hard_link_points_only_at_a_file_unpacked_here(tmp_path: Path, target: str) -> None:
    outside = _victim(tmp_path)
    data = _tar(
        _info("l", kind=tarfile.SYMTYPE, link=str(outside)),
        _info("dir", kind=tarfile.DIRTYPE),
        _info("h", kind=tarfile.LNKTYPE, link=target),
    )
    with pytest.raises(UnsafePath):
        extract(io.BytesIO(data), tmp_path / "dest", what="t.tar")
    _untouched(outside)


def test_a_hard_link_to_an_unpacked_file_is_made(tmp_path: Path) -> None:
    data = _tar(_info("a/f", data=b"x"), _info("b/h", kind=tarfile.LNKTYPE, link="a/f"))
    extract(io.BytesIO(data), tmp_path / "dest", what="t.tar")
    assert os.stat(tmp_path / "dest" / "b" / "h").st_ino == os.stat(tmp_path / "dest" / "a" / "f").st_ino


def test_a_chunk_holds_only_files_folders_and_symlinks(tmp_path: Path) -> None:
    for kind in (tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.LNKTYPE):
        with pytest.raises(UnsafePath, match="only files, folders and symlinks"):
            ch.Unpacking(tmp_path / f"d{kind!r}").add(
                _chunk(_tar(_info("f", data=b"x"), _info("x", kind=kind, link="f")))
            )


def test_a_restore_is_bounded_across_its_chunks(tmp_path: Path) -> None:
    """A 41 KiB chunk restored a 1.25 GiB file under --cache-max 1G: the files' bytes of all
    of an entry's chunks are bounded together, before a byte past the bound is written."""
    bomb = _chunk(_tar(_info("zeros", data=bytes(8 << 20))))
    assert len(bomb.getvalue()) < 4096
    unpacking = ch.Unpacking(tmp_path / "dest", limits=Limits(bytes=12 << 20))
    unpacking.add(_chunk(_tar(_info("first", data=bytes(6 << 20)))))
    with pytest.raises(CacheError, match="more than 12582912 bytes"):
        unpacking.add(bomb)
    assert not (tmp_path / "dest" / "zeros").exists()


def test_times_are_exact_and_a_time_that_is_no_number_is_refused(tmp_path: Path) -> None:
    data = _tar(_info("f", data=b"x", mtime="1700000000.123456789"))
    with Unpacker(tmp_path / "ok", policy=CHUNKS) as unpacker:
        unpacker.add(io.BytesIO(data), what="t")
        unpacker.finish()
    assert os.stat(tmp_path / "ok" / "f").st_mtime_ns == 1_700_000_000_123_456_789
    with (
        Unpacker(tmp_path / "bad", policy=CHUNKS) as unpacker,
        pytest.raises(InvalidArchive, match="modification time"),
    ):
        unpacker.add(io.BytesIO(_tar(_info("f", data=b"x", mtime="0x10"))), what="t")


# -- zip sources -------------------------------------------------------------------------


def _zip(*files: tuple[str, bytes]) -> zipfile.ZipFile:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            zf.writestr(name, data)
    return zipfile.ZipFile(io.BytesIO(raw.getvalue()))


def test_a_zip_is_bounded_and_stays_inside(tmp_path: Path) -> None:
    with (
        Unpacker(tmp_path / "a", limits=Limits(bytes=1 << 20)) as unpacker,
        pytest.raises(InvalidArchive, match="more than"),
    ):
        unpacker.add_zip(_zip(("zeros", bytes(2 << 20))), what="z.zip")
    assert not (tmp_path / "a" / "zeros").exists()
    with Unpacker(tmp_path / "b") as unpacker, pytest.raises(UnsafePath):
        unpacker.add_zip(_zip(("../x", b"1")), what="z.zip")
    with Unpacker(tmp_path / "c") as unpacker:
        assert unpacker.add_zip(_zip(("d/f", b"1"), ("/abs", b"2")), what="z.zip") == 2
        unpacker.finish()
    assert (tmp_path / "c" / "d" / "f").read_bytes() == b"1" and (tmp_path / "c" / "abs").read_bytes() == b"2"


def test_a_zip_member_larger_than_it_declares_is_refused(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("f", b"x" * 100)
    data = raw.getvalue().replace((100).to_bytes(4, "little") * 2, (10).to_bytes(4, "little") * 2)  # declare 10
    with Unpacker(tmp_path / "d") as unpacker, pytest.raises(InvalidArchive):
        unpacker.add_zip(zipfile.ZipFile(io.BytesIO(data)), what="z.zip")
    assert not (tmp_path / "d" / "f").exists() or (tmp_path / "d" / "f").stat().st_size <= 10


# -- files saved from elsewhere ----------------------------------------------------------


def test_write_new_never_replaces_or_follows(tmp_path: Path) -> None:
    outside = _victim(tmp_path)
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "link").symlink_to(outside / "passwd")
    (folder / "mine").write_text("keep\n")
    for name in ("link", "mine"):
        with pytest.raises(InputError, match="exists already"):
            write_new(folder, [(name, [b"x"])], what="--save")
    for name in ("../x", "a/b", "..", ""):
        with pytest.raises(InputError, match="is not a file name"):
            write_new(folder, [(name, [b"x"])], what="--save")
    assert write_new(folder, [("sbom.json", [b"{", b"}"])], what="--save") == [folder / "sbom.json"]
    assert (folder / "sbom.json").read_bytes() == b"{}" and (folder / "mine").read_text() == "keep\n"
    _untouched(outside)
