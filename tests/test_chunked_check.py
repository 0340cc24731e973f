"""A zstd:chunked layer's TOC and tar-split held against its tar (assembler/archive/chunked_check.py):
what a partial pull (podman, CRI-O) makes of a layer must be what every reader of its tar
sees. Blobs are made here, by our writer and by the tests' own c/storage-style writer
(tests/chunked_forge.py, with chunks and zero chunks), then made to lie one way at a time,
every digest and position put right for the lie so that only the lie is left to find:
``assemble validate`` reports the member, and a build that would ship a base's layer as
it is writes it again without the foreign TOC.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from assembler.archive.chunked_check import MAX_TOC, check_toc
from assembler.archive.layer import recompress
from assembler.errors import BadToc
from tests import zstd_chunked
from tests.chunked_forge import Forged, forge, member, sha, tar_of
from tests.helpers import config_of, manifest_of, read_blob, run_cli_here, sh
from tests.test_chunked import _foreign_tar, _members, _write
from tests.zstd_chunked import KEYS

RND = random.Random(7)
BIG = RND.randbytes(10_000)  # three chunks of 4096: data, data, data (the last short)
HOLEY = RND.randbytes(3000) + bytes(4096 * 2) + RND.randbytes(500)  # a chunk of zeros inside


def _tar(fmt: int = tarfile.PAX_FORMAT) -> bytes:
    cap = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    return tar_of(
        [
            member("app", kind=tarfile.DIRTYPE, mode=0o755),
            member("app/a.txt", b"the honest a\n"),
            member("app/b.txt", b"the honest b, not a\n"),
            member("app/empty", b""),
            member("app/big.bin", BIG),
            member("app/holey.bin", HOLEY),
            member("app/ping", b"ping", mode=0o4755, uid=1000, gid=1000),
            member("app/cap", b"cap", pax_headers=cap if fmt == tarfile.PAX_FORMAT else {}),
            member("app/" + "long/" * 25 + "name.txt", b"a long name"),
            member("app/link", kind=tarfile.SYMTYPE, linkname="a.txt", mode=0o777),
            member("app/hard", kind=tarfile.LNKTYPE, linkname="app/b.txt"),
            member("dev/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
            member("run/fifo", kind=tarfile.FIFOTYPE, mode=0o600),
        ],
        fmt=fmt,
    )


def _forged(fmt: int = tarfile.PAX_FORMAT) -> Forged:
    return forge(_tar(fmt), chunk=4096)


def _check(blob: bytes, annotations: dict[str, str]) -> None:
    check_toc(io.BytesIO(blob), annotations, what="layer 1/1")


def _refused(forged: Forged | tuple[bytes, dict[str, str]], match: str, member_name: str | None = None) -> BadToc:
    blob, annotations = forged.blob() if isinstance(forged, Forged) else forged
    with pytest.raises(BadToc, match=match) as e:
        _check(blob, annotations)
    assert str(e.value).startswith("layer 1/1: ")
    if member_name is not None:
        assert e.value.member == member_name, str(e.value)
        assert repr(member_name) in str(e.value) or member_name in str(e.value)
    return e.value


# -- honest layers pass ---------------------------------------------------------------------


def test_our_writers_layers_pass() -> None:
    members, _ = _members()  # every kind of entry, PAX and unicode names, files over BIG
    blob, layer = _write(members, "zstd:chunked")
    _check(blob, dict(layer.descriptor.annotations))


@pytest.mark.parametrize("names", ["new", "old", "both"])
@pytest.mark.parametrize("footer", ["64", "40", "none"])
def test_c_storage_layers_with_chunks_pass(names: str, footer: str) -> None:
    forged = _forged()
    forged.names, forged.footer = names, footer
    blob, annotations = forged.blob()
    assert zstd_chunked.decompress(blob) == forged.tar
    chunks = [e for e in forged.toc["entries"] if e["type"] == "chunk"]
    assert len(chunks) == 4 and any(e.get("chunkType") == "zeros" for e in chunks)
    _check(blob, annotations)


def test_gnu_tars_and_a_tar_split_without_its_annotation_pass() -> None:
    forged = _forged(tarfile.GNU_FORMAT)  # GNU long names ('L' headers)
    forged.tarsplit_checksum = False
    _check(*forged.blob())


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_our_conversions_of_tars_from_elsewhere_pass(fmt: int) -> None:
    out = io.BytesIO()
    layer = recompress(io.BytesIO(_foreign_tar(fmt)), "none", out, compression="zstd:chunked")
    _check(out.getvalue(), dict(layer.descriptor.annotations))


def _chunked_toc(tar: bytes) -> tuple[bytes, dict[str, str], list[dict[str, Any]]]:
    """``tar`` as our writer writes it zstd:chunked: the blob, its annotations, its TOC's entries."""
    out = io.BytesIO()
    layer = recompress(io.BytesIO(tar), "none", out, compression="zstd:chunked")
    annotations = dict(layer.descriptor.annotations)
    return out.getvalue(), annotations, zstd_chunked.read(out.getvalue(), annotations).toc["entries"]


def test_a_gnu_long_name_is_the_name_over_a_pax_path_as_go_reads_it() -> None:
    """Go's reader (and tarfile) take a GNU long name over a PAX path: so do our TOC and the check."""
    long = "evil/" + "e" * 110
    gnu = tarfile.TarInfo(long)
    gnu.size = 3
    pax = tarfile.TarInfo("short")
    pax.size, pax.pax_headers = 3, {"path": "good"}
    tar = gnu.tobuf(tarfile.GNU_FORMAT)[:1024] + pax.tobuf(tarfile.PAX_FORMAT) + b"abc".ljust(512, b"\0") + bytes(1024)
    blob, annotations, entries = _chunked_toc(tar)
    assert [e["name"] for e in entries] == [long]
    _check(blob, annotations)
    forged = forge(tar)
    _check(*forged.blob())
    _entry(forged, long)["name"] = "good"  # the TOC of a reader that takes the PAX path
    _refused(forged, "good", "good")


def test_a_second_pax_header_replaces_the_first_as_go_reads_it() -> None:
    """Go's reader keeps the records of the last PAX header before an entry (Python's tarfile
    merges them, the first one's winning: it names this file 'evil', Go 'honest')."""
    first = tarfile.TarInfo("honest")
    first.size, first.pax_headers = 3, {"path": "evil"}
    second = tarfile.TarInfo("honest")
    second.size, second.pax_headers = 3, {"comment": "the second"}
    tar = first.tobuf(tarfile.PAX_FORMAT)[:1024] + second.tobuf(tarfile.PAX_FORMAT) + b"abc".ljust(512, b"\0")
    blob, annotations, entries = _chunked_toc(tar + bytes(1024))
    assert [e["name"] for e in entries] == ["honest"]
    _check(blob, annotations)
    forged = forge(tar + bytes(1024))  # tarfile's reading: 'evil'
    _refused(forged, "evil", "evil")


def test_a_regular_files_device_numbers_are_in_its_toc_entry_as_go_reads_them() -> None:
    tar = bytearray(tar_of([member("odd", b"a file whose ustar header has device numbers")], fmt=tarfile.USTAR_FORMAT))
    tar[329:345] = b"0000005\x000000007\x00"  # (tarfile writes none for a file)
    tar[148:156] = b" " * 8
    tar[148:156] = b"%06o\x00 " % sum(tar[:512])
    blob, annotations, entries = _chunked_toc(bytes(tar))
    assert (entries[0]["devMajor"], entries[0]["devMinor"]) == (5, 7)  # c/storage >= 1.55 compares them
    _check(blob, annotations)
    forged = forge(bytes(tar))  # tarfile reads them too
    assert (_entry(forged, "odd")["devMajor"], _entry(forged, "odd")["devMinor"]) == (5, 7)
    _check(*forged.blob())
    del _entry(forged, "odd")["devMajor"]  # the TOC of a reader that reads them for devices only
    _refused(forged, "devMajor", "odd")


def test_a_layer_without_a_toc_is_not_read() -> None:
    class Unread(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            raise AssertionError("read")

    check_toc(Unread(), {"org.example": "x"}, what="layer 1/1")


# -- lies the TOC tells ---------------------------------------------------------------------


def _swap(a: dict[str, Any], b: dict[str, Any], *keys: str) -> None:
    for key in keys:
        a[key], b[key] = b[key], a[key]


def _entry(forged: Forged, name: str) -> dict[str, Any]:
    return forged.entries(name)[0]


def test_two_files_swapped_offsets_and_digests_are_refused() -> None:
    """The red team's layer: a partial pull really swaps the files, the tar does not."""
    forged = _forged()
    _swap(_entry(forged, "app/a.txt"), _entry(forged, "app/b.txt"), "offset", "endOffset", "digest")
    _refused(forged, "app/a.txt", "app/a.txt")


LIES: dict[str, tuple[Callable[[Forged], None], str, str]] = {
    # what the lie does, what the error says, the member it names
    "a wrong digest": (lambda f: _entry(f, "app/a.txt").update(digest=sha(b"evil")), "digest", "app/a.txt"),
    "offsets of another file": (
        lambda f: _entry(f, "app/a.txt").update({k: _entry(f, "app/ping")[k] for k in ("offset", "endOffset")}),
        "app/a.txt",
        "app/a.txt",
    ),
    "a size that lies": (lambda f: _entry(f, "app/b.txt").update(size=5), "size", "app/b.txt"),
    "the setuid bit": (lambda f: _entry(f, "app/a.txt").update(mode=0o4755), "mode", "app/a.txt"),
    "root's uid": (lambda f: _entry(f, "app/ping").pop("uid"), "uid", "app/ping"),
    "another symlink target": (lambda f: _entry(f, "app/link").update(linkName="/etc/shadow"), "link", "app/link"),
    "another hard link target": (lambda f: _entry(f, "app/hard").update(linkName="app/a.txt"), "link", "app/hard"),
    "another type": (lambda f: _entry(f, "run/fifo").update(type="reg"), "type", "run/fifo"),
    "another name": (lambda f: _entry(f, "app/a.txt").update(name="app/evil"), "app/evil", "app/evil"),
    "another modtime": (
        lambda f: _entry(f, "app/a.txt").update(modtime="2030-01-01T00:00:00Z"),
        "modtime",
        "app/a.txt",
    ),
    "another xattr": (
        lambda f: _entry(f, "app/cap").update(xattrs={"security.capability": base64.b64encode(b"\xff").decode()}),
        "xattr",
        "app/cap",
    ),
    "another device": (lambda f: _entry(f, "dev/null").update(devMinor=5), "dev", "dev/null"),
    "an entry more": (
        lambda f: f.toc["entries"].insert(2, dict(_entry(f, "app/a.txt"), name="app/extra")),
        "app/extra",
        "app/extra",
    ),
    "an entry less": (lambda f: f.toc["entries"].remove(_entry(f, "app/link")), "app/link", "app/link"),
    "an entry less at the end": (lambda f: f.toc["entries"].pop(), "run/fifo", "run/fifo"),
    # c/storage finds files and chunks of later layers by the digests of the layers it holds
    "a digest on an empty file": (
        lambda f: _entry(f, "app/empty").update(
            {k: _entry(f, "app/a.txt")[k] for k in ("offset", "endOffset", "digest")}
        ),
        "digest",
        "app/empty",
    ),
    "a digest on a symlink": (
        lambda f: _entry(f, "app/link").update(digest=sha(b"the honest a\n")),
        "digest",
        "app/link",
    ),
    # chunks
    "a chunk's digest": (lambda f: f.entries("app/big.bin")[1].update(chunkDigest=sha(b"x")), "chunk", "app/big.bin"),
    "a chunk's place in the file": (
        lambda f: f.entries("app/big.bin")[1].update(chunkOffset=4000),
        "chunk",
        "app/big.bin",
    ),
    "a chunk's size": (lambda f: f.entries("app/big.bin")[2].update(chunkSize=100), "chunk", "app/big.bin"),
    "two chunks swapped": (
        lambda f: _swap(*f.entries("app/big.bin")[1:3], "offset", "chunkDigest"),
        "chunk",
        "app/big.bin",
    ),
    "a chunk of data called zeros": (
        lambda f: f.entries("app/big.bin")[1].update(chunkType="zeros", chunkDigest=sha(bytes(4096))),
        "zero",
        "app/big.bin",
    ),
    "a chunk with no file": (
        lambda f: f.toc["entries"].insert(1, dict(f.entries("app/big.bin")[1], name="app")),
        "chunk",
        "app",
    ),
    "an unknown chunk type": (lambda f: f.entries("app/big.bin")[1].update(chunkType="holes"), "chunk", "app/big.bin"),
    "a file's range past its frame": (
        lambda f: _entry(f, "app/a.txt").update(endOffset=_entry(f, "app/b.txt")["offset"]),
        "frame",
        "app/a.txt",
    ),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_toc_that_lies_is_refused_with_the_member_named(lie: str) -> None:
    change, match, name = LIES[lie]
    forged = _forged()
    change(forged)
    _refused(forged, match, name)


def test_a_toc_key_go_reads_in_another_case_is_refused() -> None:
    """Go's JSON decoder matches keys without regard to case (and K/k, ſ/s): "Name" would be the name."""
    forged = _forged()
    text = json.dumps(forged.resolved_toc()).replace('"name": "app/a.txt"', '"name": "app/a.txt", "\u017fize": 1', 1)
    _refused(forged.blob(toc_bytes=text.encode()), "key")
    twice = json.dumps(forged.resolved_toc()).replace(
        '"name": "app/a.txt"', '"name": "app/a.txt", "name": "app/b.txt"', 1
    )
    _refused(forged.blob(toc_bytes=twice.encode()), "twice")


# -- lies the tar-split tells ---------------------------------------------------------------


def _segment_with(forged: Forged, needle: bytes) -> dict[str, Any]:
    return next(e for e in forged.split if e["type"] == 2 and needle in base64.b64decode(e["payload"]))


def _file_line(forged: Forged, name: str) -> dict[str, Any]:
    return next(e for e in forged.split if e["type"] == 1 and e["name"] == name)


def _header_changed(f: Forged) -> None:
    segment = _segment_with(f, b"app/a.txt")
    raw = bytearray(base64.b64decode(segment["payload"]))
    at = raw.index(b"app/a.txt") + 100  # the mode field
    raw[at : at + 7] = b"0004755"
    segment["payload"] = base64.b64encode(bytes(raw)).decode()


SPLIT_LIES: dict[str, tuple[Callable[[Forged], None], str]] = {
    "a header changed": (_header_changed, "tar-split"),
    "two files swapped": (lambda f: _swap(_file_line(f, "app/a.txt"), _file_line(f, "app/b.txt"), "name"), "tar-split"),
    "a CRC that lies": (
        lambda f: _file_line(f, "app/a.txt").update(payload=base64.b64encode(bytes(8)).decode()),
        "CRC",
    ),
    "a file left out": (lambda f: f.split.remove(_file_line(f, "app/a.txt")), "tar-split"),
    "bytes more at the end": (
        lambda f: f.split.append({"type": 2, "payload": base64.b64encode(b"x" * 512).decode(), "position": 99}),
        "tar-split",
    ),
    "a size that lies": (lambda f: _file_line(f, "app/a.txt").update(size=3), "tar-split"),
    "an unknown line": (lambda f: f.split.insert(0, {"type": 3, "payload": None, "position": 0}), "tar-split"),
    "a digest the TOC does not give": (lambda f: f.toc.update(tarSplitDigest=sha(b"another")), "tar-split"),
}


@pytest.mark.parametrize("lie", sorted(SPLIT_LIES))
def test_a_tar_split_that_does_not_rebuild_the_tar_is_refused(lie: str) -> None:
    change, match = SPLIT_LIES[lie]
    forged = _forged()
    change(forged)
    _refused(forged, match)


# -- lies the annotations and the footer tell -----------------------------------------------


def _second_toc(forged: Forged) -> tuple[bytes, int, int, int]:
    """A lying TOC in a skippable frame of its own before the honest one: (its bytes, offset, length, raw length)."""
    liar = forged.copy()
    _swap(_entry(liar, "app/a.txt"), _entry(liar, "app/b.txt"), "offset", "endOffset", "digest")
    liar_blob, liar_annotations = liar.blob()
    at, length, raw, _ = map(int, liar_annotations[KEYS["toc_at"]].split(":"))
    toc_z = liar_blob[at : at + length]
    forged.extra = [toc_z]
    data = sum(len(frame) for frame in forged.frames)
    return toc_z, data + 8, length, raw


def test_old_annotations_naming_another_toc_are_refused() -> None:
    """podman 4.3 reads io.containers.*, podman 5 io.github.containers.*: both must say the same."""
    forged = _forged()
    forged.footer = "none"  # (a footer naming the honest TOC is refused too: below)
    toc_z, at, length, raw = _second_toc(forged)
    blob, annotations = forged.blob()
    annotations[KEYS["old_toc"]] = sha(toc_z)
    annotations[KEYS["old_toc_at"]] = f"{at}:{length}:{raw}:1"
    _refused((blob, annotations), "TOC")
    # ... and the lying TOC is refused for what it says, named by the old annotations alone
    for key in (KEYS["toc"], KEYS["toc_at"], KEYS["split_at"], KEYS["split_digest"]):
        del annotations[key]
    _refused((blob, annotations), "app/a.txt", "app/a.txt")


def test_a_footer_naming_another_toc_is_refused() -> None:
    """A reader given no position annotation reads the footer: it must say what the annotations say."""
    forged = _forged()
    _, at, length, raw = _second_toc(forged)
    blob, annotations = forged.blob()
    footer = bytearray(blob[-64:])
    footer[0:24] = struct.pack("<3Q", at, length, raw)
    _refused((blob[:-64] + bytes(footer), annotations), "footer")


def test_a_toc_digest_annotation_that_does_not_match_is_refused() -> None:
    forged = _forged()
    blob, annotations = forged.blob()
    annotations[KEYS["toc"]] = sha(b"another TOC")
    _refused((blob, annotations), "digest")
    annotations = forged.blob()[1]
    annotations[KEYS["toc_at"]] = "1:2:3"
    _refused((blob, annotations), "position")


def test_a_toc_too_big_to_check_is_refused_before_it_is_read() -> None:
    forged = _forged()
    blob, annotations = forged.blob()
    at, length, _, _ = map(int, annotations[KEYS["toc_at"]].split(":"))
    annotations[KEYS["toc_at"]] = annotations[KEYS["old_toc_at"]] = f"{at}:{length}:{MAX_TOC + 1}:1"
    _refused((blob, annotations), "too big")


def test_a_gzip_layer_carrying_a_toc_is_refused() -> None:
    import gzip

    forged = _forged()
    _, annotations = forged.blob()
    _refused((gzip.compress(forged.tar), annotations), "zstd")


# -- validate and builds --------------------------------------------------------------------


def _layout(folder: Path, blob: bytes, annotations: dict[str, str], tar: bytes, *, kind: str = "tar+zstd") -> Path:
    """An OCI layout of one image: the layer ``blob`` (zstd) over the tar ``tar``, tagged base."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        (blobs / hashlib.sha256(data).hexdigest()).write_bytes(data)
        return sha(data), len(data)

    layer, layer_size = put(blob)
    diff_id = sha(tar)
    history = [{"created_by": "the test"}]
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    config_digest, config_size = put(json.dumps(config | {"history": history}).encode())
    layer_desc = {
        "mediaType": f"application/vnd.oci.image.layer.v1.{kind}",
        "digest": layer,
        "size": layer_size,
        "annotations": annotations,
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [layer_desc],
    }
    digest, size = put(json.dumps(manifest).encode())
    ref = {"org.opencontainers.image.ref.name": "base"}
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": manifest["mediaType"], "digest": digest, "size": size, "annotations": ref}],
    }
    (folder / "index.json").write_text(json.dumps(index))
    (folder / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    return folder


def _lying() -> Forged:
    forged = _forged()
    _swap(_entry(forged, "app/a.txt"), _entry(forged, "app/b.txt"), "offset", "endOffset", "digest")
    return forged


def test_validate_reports_a_lying_toc_with_the_member(tmp_path: Path) -> None:
    honest = _forged()
    _layout(tmp_path / "honest", *honest.blob(), honest.tar)
    ran = run_cli_here(["validate", f"oci:{tmp_path}/honest:base"])
    assert ran.code == 0, str(ran)
    lying = _lying()
    _layout(tmp_path / "lying", *lying.blob(), lying.tar)
    ran = run_cli_here(["validate", f"oci:{tmp_path}/lying:base"])
    assert ran.code == 1, str(ran)
    assert "app/a.txt" in ran.err and "TOC" in ran.err, ran.err


MANIFEST = """\
name: on-a-chunked-base
bases: {{b: "oci:{base}:base"}}
image:
  base: b
  layers:
    - copy: {{from: ./c.txt, to: /app/c.txt}}
"""


@pytest.mark.parametrize("compression", ["zstd", "zstd:chunked"])
def test_a_build_does_not_ship_a_bases_lying_toc(tmp_path: Path, compression: str) -> None:
    lying = _lying()
    blob, annotations = lying.blob()
    _layout(tmp_path / "base", blob, annotations, lying.tar)
    (tmp_path / "c.txt").write_text("c\n")
    (tmp_path / "m.yaml").write_text(MANIFEST.format(base=tmp_path / "base"))
    ran = run_cli_here(
        ["m.yaml", "--cache", "cache", "-o", "oci:out:1", "-q", "--compression", compression], cwd=tmp_path
    )
    assert ran.code == 0, str(ran)
    out = tmp_path / "out"
    shipped = manifest_of(out, "1")["layers"][0]
    assert shipped["digest"] != sha(blob)  # written again ...
    assert config_of(out, "1")["rootfs"]["diff_ids"][0] == sha(lying.tar)  # ... with the same tar
    written = read_blob(out, shipped["digest"])
    annotations = shipped.get("annotations", {})
    assert annotations.get(KEYS["toc"]) != sha(blob)
    if compression == "zstd:chunked":  # our own TOC, which the tests' reader finds sound
        zstd_chunked.check_blob(written, annotations, sha(lying.tar))
    else:  # plain zstd: no TOC a partial pull would trust
        assert not {KEYS["toc"], KEYS["old_toc"]} & set(annotations)
        assert (
            zstandard.ZstdDecompressor().stream_reader(io.BytesIO(written), read_across_frames=True).read() == lying.tar
        )
    assert run_cli_here(["validate", "oci:out:1"], cwd=tmp_path).code == 0


@pytest.mark.parametrize("compression", ["zstd", "zstd:chunked"])
def test_a_build_ships_a_bases_sound_toc_as_it_is(tmp_path: Path, compression: str) -> None:
    honest = _forged()
    blob, annotations = honest.blob()
    _layout(tmp_path / "base", blob, annotations, honest.tar)
    (tmp_path / "c.txt").write_text("c\n")
    (tmp_path / "m.yaml").write_text(MANIFEST.format(base=tmp_path / "base"))
    ran = run_cli_here(
        ["m.yaml", "--cache", "cache", "-o", "oci:out:1", "-q", "--compression", compression], cwd=tmp_path
    )
    assert ran.code == 0, str(ran)
    shipped = manifest_of(tmp_path / "out", "1")["layers"][0]
    assert shipped["digest"] == sha(blob) and shipped["annotations"] == annotations


@pytest.mark.integration  # runs skopeo
def test_c_storages_own_layers_pass_and_made_to_lie_are_refused(tmp_path: Path) -> None:
    """skopeo's c/storage writes the layer: its chunks cut by a rolling checksum, runs of zeros
    as chunks of zeros; its annotations and footer those of its version (1.43: io.containers.*)."""
    rnd = random.Random(3)
    tar = tar_of(
        [
            member("a.txt", b"the honest a\n"),
            member("b.txt", b"the honest b, not a\n"),
            member("mixed.bin", rnd.randbytes(200_000) + bytes(5000) + rnd.randbytes(200_000)),
            member("link", kind=tarfile.SYMTYPE, linkname="a.txt"),
        ]
    )
    _layout(tmp_path / "plain", tar, {}, tar, kind="tar")
    dest = tmp_path / "chunked"
    sh(
        [
            "skopeo",
            "copy",
            "-q",
            "--dest-compress-format",
            "zstd:chunked",
            f"oci:{tmp_path}/plain:base",
            f"oci:{dest}:base",
        ]
    )
    layer = manifest_of(dest, "base")["layers"][0]
    blob, annotations = read_blob(dest, layer["digest"]), dict(layer["annotations"])
    position_key = next(k for k in (KEYS["toc_at"], KEYS["old_toc_at"]) if k in annotations)
    at, length, _, _ = map(int, annotations[position_key].split(":"))
    toc = json.loads(zstandard.ZstdDecompressor().decompress(blob[at : at + length]))
    assert any(e.get("chunkType") == "zeros" for e in toc["entries"])  # chunks, one of them zeros
    _check(blob, annotations)
    assert run_cli_here(["validate", f"oci:{dest}:base"]).code == 0
    a, b = (next(e for e in toc["entries"] if e["name"].endswith(n)) for n in ("a.txt", "b.txt"))
    _swap(a, b, "offset", "endOffset", "digest")
    raw = json.dumps(toc).encode()
    toc_z = zstandard.ZstdCompressor().compress(raw)
    lying = blob + zstd_chunked.SKIPPABLE + struct.pack("<I", len(toc_z)) + toc_z
    for key in (KEYS["toc_at"], KEYS["old_toc_at"]):
        if key in annotations:
            annotations[key] = f"{len(blob) + 8}:{len(toc_z)}:{len(raw)}:1"
    for key in (KEYS["toc"], KEYS["old_toc"]):
        if key in annotations:
            annotations[key] = sha(toc_z)
    _layout(tmp_path / "lying", lying, annotations, tar)
    ran = run_cli_here(["validate", f"oci:{tmp_path}/lying:base"])
    assert ran.code == 1 and "a.txt" in ran.err, str(ran)
