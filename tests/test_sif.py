"""SIF output: layers flattened as a stream into tar2sqfs, checked with the real tools.

- ``flatten`` semantics (whiteouts, opaque dirs, hard links whose targets upper layers
  replace or delete) against explicit expectations, fast and tool-free;
- the SIF of a Debian image with deleting/replacing upper layers against ``siftool``
  (header/list/info/dump), and its squashfs (``unsquashfs``) against ``umoci unpack``
  of the same OCI layout: paths, modes, owners, link targets, contents, hard-link
  groups and ``security.capability``;
- the runscript in a chroot of the unpacked partition against ``buildah run``;
- byte-identical conversions (thread counts, the no-INSERT_RANGE fallback);
- a >= 2 GiB layer: peak RSS and temp space of the converting process (printed);
- hostile layers refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from assembler.archive.flatten import FlattenStats, LayerSource, flatten
from assembler.archive.layer import Member, write_layer
from assembler.archive.tar import TarEntry, TarWriter
from assembler.cache import Cache
from assembler.errors import InputError, InvalidImage, ToolError, UnsafePath
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import sha256_digest
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.proc import Runner
from assembler.transports import layout, rootfs
from assembler.transports.common import SourceImage
from assembler.transports.hpc import apptainer, sif, sif_front
from assembler.transports.hpc.sif import read_sif_header, write_sif
from assembler.transports.hpc.sif_format import DATA_DEFFILE, DATA_GENERIC_JSON, DATA_LABELS, read_object
from assembler.transports.hpc.squash import Squash, block_size_of
from tests.conftest import reclaim_at_teardown
from tests.helpers import Buildah as ToolBuildah
from tests.helpers import run_cli

EPOCH = 1700000000
PLATFORM = Platform("linux", "amd64")
TAG = "t"
CAP_NET_BIND = bytes.fromhex("0100000200040000000000000000000000000000")  # cap_net_bind_service=ep
# What the SIF adds to the image's root filesystem (the underlay ones only where absent).
APPTAINER_TREE = ".singularity.d"
APPTAINER_LINKS = {"singularity", "environment", ".exec", ".run", ".shell", ".test"}
UNDERLAY = {"dev", "proc", "sys", "tmp", "var", "var/tmp", "home", "root", "etc", "etc/hosts", "etc/resolv.conf"}


# -- building layers and images ---------------------------------------------------------


def _opener(data: bytes) -> Any:
    return lambda: nullcontext(io.BytesIO(data))


def f(path: str, data: bytes = b"", mode: int = 0o644, uid: int = 0, gid: int = 0, **kw: Any) -> Member:
    return TarEntry(path, "file", mode=mode, uid=uid, gid=gid, size=len(data), mtime=EPOCH, **kw), _opener(data)


def d(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Member:
    return TarEntry(path, "dir", mode=mode, uid=uid, gid=gid, mtime=EPOCH), None


def hl(path: str, target: str) -> Member:
    return TarEntry(path, "hardlink", linkname=target, mtime=EPOCH), None


def sl(path: str, target: str) -> Member:
    return TarEntry(path, "symlink", mode=0o777, linkname=target, mtime=EPOCH), None


def wh(path: str) -> Member:
    parent, _, base = path.rpartition("/")
    return f(f"{parent}/.wh.{base}" if parent else f".wh.{base}")


def opq(directory: str) -> Member:
    return f(f"{directory}/.wh..wh..opq")


def tar_bytes(members: Sequence[Member]) -> bytes:
    """One layer as an uncompressed tar, members in the order given."""
    out = io.BytesIO()
    write_layer(members, out, compression="none", epoch=EPOCH, presorted=True)
    return out.getvalue()


def add_layers(cache: Cache, image: Image, layers: Sequence[Sequence[Member]], *, compression: Any = "gzip") -> Image:
    added = []
    for i, members in enumerate(layers):
        with cache.blob_writer() as w:
            blob = write_layer(members, w, compression=compression, epoch=EPOCH, presorted=True)
        added.append(blob.made_by(f"test layer {i}"))
    return mutate.append_layers(image, added, epoch=EPOCH)


def to_layout(cache: Cache, image: Image, path: Path) -> SourceImage:
    cache.put_image(image)
    layout.write(path, image, tag=TAG, blobs=cache)
    return layout.read(path, TAG, platform=image.platform)


# -- flatten, without any tool -----------------------------------------------------------


@dataclass(frozen=True)
class Node:
    kind: str
    mode: int
    uid: int
    gid: int
    target: str = ""  # symlink target
    data: bytes = b""


def flat(layers: Sequence[Sequence[Member]], **kw: Any) -> tuple[dict[str, Node], list[set[str]], FlattenStats]:
    """Flatten in-memory layers; the merged tree, its hard-link groups, and the stats."""
    blobs = [tar_bytes(m) for m in layers]
    sources = [LayerSource(f"layer {i + 1}", _opener(b)) for i, b in enumerate(blobs)]
    out = io.BytesIO()
    stats = flatten(sources, TarWriter(out), epoch=EPOCH, **kw)
    out.seek(0)
    nodes: dict[str, Node] = {}
    links: dict[str, str] = {}
    with tarfile.open(fileobj=out, mode="r:") as tf:
        names = [i.name.rstrip("/") for i in tf.getmembers()]
        assert len(names) == len(set(names)), "a path was written twice"
        for info in tf.getmembers():
            path = info.name.rstrip("/")
            if info.islnk():
                links[path] = info.linkname
                continue
            kind = "dir" if info.isdir() else "symlink" if info.issym() else "file" if info.isfile() else "other"
            data = tf.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            nodes[path] = Node(kind, info.mode, info.uid, info.gid, info.linkname if info.issym() else "", data)
    groups: dict[str, set[str]] = {}
    for path, target in links.items():
        while target in links:  # chains resolve to the entry carrying the data
            target = links[target]
        assert target in nodes and nodes[target].kind != "dir", f"hard link {path} -> {target} dangles"
        nodes[path] = nodes[target]
        groups.setdefault(target, {target}).add(path)
    return nodes, sorted(groups.values(), key=sorted), stats


def test_whiteouts_opaque_dirs_and_replacements() -> None:
    nodes, _, stats = flat(
        [
            [
                d("a"),
                f("a/x", b"x"),
                f("a/y", b"y1"),
                d("b"),
                d("b/sub"),
                f("b/sub/1"),
                f("b/2"),
                d("c"),
                f("c/k", b"k"),
            ],
            [wh("a/x"), opq("b"), f("b/3", b"3"), f("a/y", b"y2", 0o600, 1000, 100), wh("c"), d("c", 0o700)],
            [f("a/x", b"back", 0o4755, 5, 6), wh("b/3"), f("b/3", b"same layer wins")],
        ]
    )
    user = {p: n for p, n in nodes.items() if not p.startswith(".") and p}
    assert user["a/x"] == Node("file", 0o4755, 5, 6, data=b"back")
    assert user["a/y"] == Node("file", 0o600, 1000, 100, data=b"y2")
    assert sorted(p for p in user if p.startswith("b")) == ["b", "b/3"]
    assert user["b/3"].data == b"same layer wins"  # a whiteout hides lower layers only
    assert sorted(p for p in user if p.startswith("c")) == ["c"]  # deleted, then made again empty
    assert user["c"].mode == 0o700
    assert stats.whiteouts == 4


def test_opaque_root_hides_every_lower_layer() -> None:
    nodes, _, stats = flat([[d("a"), f("a/x"), f("b")], [f(".wh..wh..opq"), f("c", b"c")], [f("d", b"d")]])
    assert sorted(p for p in nodes if p != ".") == ["c", "d"]
    assert stats.whiteouts == 1


def test_type_changes_hide_lower_contents() -> None:
    nodes, _, stats = flat(
        [
            [d("a"), f("a/old", b"1"), d("s"), f("s/old"), f("t", b"file")],
            [sl("a", "/elsewhere"), d("t"), f("t/new", b"2")],  # dir -> symlink, file -> dir
            [d("a"), f("a/new", b"3")],  # symlink -> dir again: the old contents stay gone
            [f("s/.wh..wh..opq")],
        ]
    )
    assert sorted(p for p in nodes if p.split("/")[0] in "ast") == ["a", "a/new", "s", "t", "t/new"]
    assert stats.dropped == 0


def test_directory_an_upper_layer_needs_wins_over_a_lower_symlink() -> None:
    # Overlay semantics (buildah, podman, docker): the upper layer's a/b lives in a real
    # directory a; the lower symlink a and whatever was under the old a are gone.
    nodes, _, stats = flat([[d("a"), f("a/gone")], [sl("a", "elsewhere")], [f("a/b", b"b")]])
    assert nodes["a"].kind == "dir" and nodes["a"].mode == 0o755
    assert sorted(p for p in nodes if p.startswith("a")) == ["a", "a/b"]
    assert stats.dropped == 1 and stats.implicit_dirs >= 1


def test_hard_links_survive_when_their_target_is_deleted_or_replaced() -> None:
    nodes, groups, stats = flat(
        [
            # One layer: d is the data-carrying name, l1..l3 link to it (tar order).
            [d("h"), f("h/d", b"shared", 0o4750, 7, 8), hl("h/l1", "h/d"), hl("h/l2", "h/d"), hl("h/l3", "h/l1")],
            # Replace the data carrier, delete one link, link to a lower file from above.
            [f("h/d", b"new"), wh("h/l2"), hl("up/x", "h/l3"), d("up")],
        ]
    )
    assert nodes["h/d"].data == b"new"
    for path in ("h/l1", "h/l3", "up/x"):
        assert nodes[path] == Node("file", 0o4750, 7, 8, data=b"shared")
    assert "h/l2" not in nodes
    assert {"h/l1", "h/l3", "up/x"} in groups  # still one inode
    assert stats.rereads == 1  # h/d's data went by before h/l1 was seen


def test_hard_link_to_a_target_an_upper_layer_replaced() -> None:
    # The link is made in layer 2 to the lower t; layer 3 replaces t: the link keeps the old content.
    nodes, groups, stats = flat([[f("t", b"old")], [hl("p", "t"), hl("q", "t")], [f("t", b"new")]])
    assert nodes["t"].data == b"new" and nodes["p"].data == nodes["q"].data == b"old"
    assert {"p", "q"} in groups
    assert stats.rereads == 0  # served in the one pass over layer 1


def test_hard_link_to_an_untouched_lower_file_stays_a_link() -> None:
    nodes, groups, _ = flat([[f("t", b"v", 0o755)], [hl("p", "t")]])
    assert nodes["p"] == nodes["t"] and {"p", "t"} in groups


def test_overlay_wins_and_underlay_loses() -> None:
    nodes, _, _ = flat(
        [[d("tmp", 0o1777), f("etc/hosts", b"image"), d(".singularity.d"), f(".singularity.d/old", b"1")]],
        overlay=[d(".singularity.d", 0o755), f(".singularity.d/runscript", b"#!/bin/sh\n", 0o755)],
        underlay=[d("tmp", 0o755), f("etc/hosts", b""), d("proc")],
    )
    assert nodes["tmp"].mode == 0o1777 and nodes["etc/hosts"].data == b"image"
    assert nodes["proc"].kind == "dir"
    assert nodes[".singularity.d/runscript"].mode == 0o755
    assert ".singularity.d/old" in nodes  # directories merge


def test_whiteouts_never_delete_the_underlay() -> None:
    # A base whose root is opaque, an upper layer deleting /proc and /etc: the image's
    # content goes, the SIF's own mount points and links stay.
    nodes, _, _ = flat(
        [[f(".wh..wh..opq"), d("a"), f("a/x", b"x")], [wh("proc"), wh("etc"), opq("tmp")]],
        underlay=[d("dev"), d("proc"), d("tmp", 0o1777), d("etc"), f("etc/hosts"), sl("singularity", "x")],
    )
    assert sorted(nodes) == [".", "a", "a/x", "dev", "etc", "etc/hosts", "proc", "singularity", "tmp"]
    assert nodes["tmp"].mode == 0o1777


def test_whiteout_names_are_never_content() -> None:
    # AUFS keeps hard-link targets in /.wh..wh.plnk: a link into it takes the data, the
    # store itself (and any other .wh.* name or what is under it) is not written.
    nodes, _, _ = flat(
        [
            [
                d("a"),
                f("a/.wh..wh..opq"),
                d(".wh..wh.plnk"),
                f(".wh..wh.plnk/1.2", b"shared", 0o755),
                hl("a/tool", ".wh..wh.plnk/1.2"),
                d(".wh..wh.aufs"),
                f(".wh..wh.aufs/x"),
                d(".wh.gone"),
                f(".wh.gone/child"),
            ]
        ]
    )
    assert sorted(nodes) == [".", "a", "a/tool"]
    assert nodes["a/tool"] == Node("file", 0o755, 0, 0, data=b"shared")


def test_xattrs_are_kept_and_filtered() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("bin/ping")
        ti.size, ti.mode = 3, 0o755
        ti.pax_headers = {
            "SCHILY.xattr.security.capability": CAP_NET_BIND.decode("utf-8", "surrogateescape"),
            "SCHILY.xattr.user.junk": "x",
        }
        tf.addfile(ti, io.BytesIO(b"elf"))
    merged = io.BytesIO()
    flatten([LayerSource("l", _opener(out.getvalue()))], TarWriter(merged), epoch=EPOCH)
    merged.seek(0)
    with tarfile.open(fileobj=merged, mode="r:") as tf:
        info = tf.getmember("bin/ping")
    cap = info.pax_headers["SCHILY.xattr.security.capability"]
    assert cap.encode("utf-8", "surrogateescape") == CAP_NET_BIND
    assert "SCHILY.xattr.user.junk" not in info.pax_headers  # only the allow-listed xattrs


@pytest.mark.parametrize(
    ("member", "error"),
    [
        (f("../escape", b"x"), UnsafePath),
        (f("a/../../escape", b"x"), UnsafePath),
        (hl("a/link", "../../etc/passwd"), UnsafePath),
        (hl("a/link", "missing/file"), InvalidImage),
        (hl("a/link", "a"), InvalidImage),
    ],
    ids=["dotdot", "nested-dotdot", "hardlink-out", "hardlink-missing", "hardlink-dir"],
)
def test_flatten_refuses_bad_members(member: Member, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        flat([[d("a"), member]])
    assert "layer 1" in str(info.value) or "hard link" in str(info.value)


def test_absolute_paths_are_taken_relative_to_the_root() -> None:
    nodes, groups, _ = flat([[f("/abs/file", b"x"), hl("/abs/link", "/abs/file")]])
    assert nodes["abs/file"].data == b"x" and {"abs/file", "abs/link"} in groups


# -- Apptainer scripts, run by the host's sh ---------------------------------------------


def test_runscript_passes_arguments_like_docker_run(tmp_path: Path) -> None:
    script = tmp_path / "runscript"
    printf = shutil.which("printf") or "/usr/bin/printf"

    def run(entrypoint: list[str], cmd: list[str], *args: str) -> str:
        script.write_text(apptainer.runscript(entrypoint, cmd))
        return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, check=False).stdout

    tricky = ["it's", 'a "b"', "$HOME", "`id`", "*", ""]
    assert run([printf, "[%s]"], ["c 1", "c'2"]) == "[c 1][c'2]"
    assert run([printf, "[%s]"], ["c"], *tricky) == "".join(f"[{a}]" for a in tricky)
    assert run([], [printf, "<%s>", "x y"]) == "<x y>"
    assert run([], [printf, "<%s>"], printf, "(%s)", *tricky) == "".join(f"({a})" for a in tricky)
    assert run([printf, "{%s}"], []) == "{}"


def test_env_script_sets_the_image_environment(tmp_path: Path) -> None:
    script = apptainer.env_script(
        [
            "PATH=/opt/x/bin:/usr/bin:/bin",
            "LD_LIBRARY_PATH=/opt/x/lib",
            "Q=it's $1 `x`",
            "KEEP=image",
            "EMPTY=",
            "bad-name=1",
        ]
    )
    (tmp_path / "env.sh").write_text(script)
    show = '. ./env.sh; printf "%s|" "$PATH" "$LD_LIBRARY_PATH" "$Q" "$KEEP" "${EMPTY-unset}"'
    env = {"PATH": "/usr/bin:/bin", "KEEP": "host", "LD_LIBRARY_PATH": "/host/lib"}
    out = subprocess.run(["sh", "-c", show], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    # PATH and LD_LIBRARY_PATH are the image's; other host values win (Apptainer's --env convention).
    assert out == "/opt/x/bin:/usr/bin:/bin|/opt/x/lib|it's $1 `x`|host||"


# -- the SIF of a real image ------------------------------------------------------------


def _cap_file() -> Member:
    return f("opt/app/bin/bind", b"#!/bin/sh\necho bind\n", 0o755, xattrs={"security.capability": CAP_NET_BIND})


UPPER_LAYERS: list[list[Member]] = [
    [  # layer 2: an application owned by a user, setuid, links of every kind, deletions
        d("opt/app", 0o755, 1000, 100),
        d("opt/app/bin", 0o750, 1000, 100),
        f("opt/app/bin/tool", b"#!/bin/sh\necho tool\n", 0o4755, 0, 0),
        _cap_file(),
        d("opt/app/lib", 0o755, 1000, 100),
        f("opt/app/lib/libx.so.1.2", b"\x7fELF fake", 0o755, 1000, 100),
        sl("opt/app/lib/libx.so.1", "libx.so.1.2"),
        sl("opt/app/lib/libx.so", "/opt/app/lib/libx.so.1"),
        f("opt/app/data.txt", b"data of the app\n", 0o640, 1000, 100),
        hl("opt/app/data-link", "opt/app/data.txt"),
        hl("opt/app/data-link2", "opt/app/data.txt"),
        f("opt/app/secret", b"s", 0o600, 1234, 5678),
        wh("usr/share/doc"),  # a whole tree
        wh("etc/motd"),
        opq("etc/apt/apt.conf.d"),
        f("etc/apt/apt.conf.d/99assemble", b"APT::Install-Recommends false;\n"),
        f("etc/os-release", b'PRETTY_NAME="assembled"\n'),  # replaces a symlink with a file
    ],
    [  # layer 3: replace/delete what layer 2 and the base hold, across hard-link groups
        f("opt/app/data.txt", b"replaced data\n", 0o644, 0, 0),
        wh("opt/app/data-link2"),
        f("opt/app/bin/new", b"#!/bin/sh\necho new\n", 0o2755, 0, 50),
        hl("opt/app/bin/new-link", "opt/app/bin/new"),
        f("usr/bin/perl", b"#!/bin/sh\necho not perl\n", 0o755),  # perl5.36.0 was its hard link
        wh("usr/share/man"),
        d("usr/share/doc", 0o700),  # deleted in layer 2, made again empty
        f("opt/app/lib/libx.so.1", b"now a file"),  # symlink -> file
        sl("var/log", "/tmp"),  # directory -> symlink
    ],
]

ENTRYPOINT = [
    "/bin/sh",
    "-c",
    'printf "[%s]" "$0" "$@"; echo; echo "PATH=$PATH"; echo "LD=$LD_LIBRARY_PATH"; echo "G=$GREETING"; '
    'echo "Q=$QUOTED"; id -u; cat /opt/app/data-link; /opt/app/bin/tool',
    "entry",
]
CMD = ["default one", "it's two"]
ENV = {
    "PATH": "/opt/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LD_LIBRARY_PATH": "/opt/app/lib",
    "GREETING": "hello world",
    "QUOTED": 'it\'s "$x" `y`',
}


@dataclass(frozen=True)
class Built:
    cache: Cache
    image: Image
    oci: Path
    source: SourceImage
    sif: Path
    info: sif.SifInfo
    work: Path


@pytest.fixture(scope="module")
def built(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Built:
    """Debian minbase + two upper layers that delete and replace, as an OCI layout and a SIF."""
    work = tmp_path_factory.mktemp("sif")
    reclaim_at_teardown(request, work)
    cache = Cache(work / "cache")
    base = rootfs.read(debian_rootfs, cache=cache, platform=PLATFORM, epoch=EPOCH, compression="gzip")
    image = add_layers(cache, base, UPPER_LAYERS, compression="gzip")  # umoci 0.4.7 reads no zstd layers
    image = mutate.set_config(
        image,
        mutate.ConfigChanges(env=ENV, entrypoint=ENTRYPOINT, cmd=CMD, labels={"org.example.name": "test image"}),
        epoch=EPOCH,
    )
    source = to_layout(cache, image, work / "oci")
    out = work / "image.sif"
    info = write_sif(source, out, runner=Runner(), epoch=EPOCH)
    return Built(cache, image, work / "oci", source, out, info, work)


def _siftool(*args: str) -> str:
    return subprocess.run(["siftool", *args], capture_output=True, text=True, check=True).stdout


def test_siftool_accepts_the_sif(built: Built) -> None:
    header = _siftool("header", str(built.sif))
    assert "Primary Architecture: amd64" in header
    assert f"ID:                   {built.info.uuid}" in header
    listing = _siftool("list", str(built.sif))
    assert "FS (Squashfs/*System/amd64)" in listing
    for kind in ("Def.FILE", "JSON.Labels", "JSON.Generic"):
        assert kind in listing
    ours = read_sif_header(built.sif)
    part = ours.primary_partition()
    info = _siftool("info", str(part.id), str(built.sif))
    assert "Filesystem Type:  Squashfs" in info and "Partition Type:   *System" in info
    assert "Architecture:     amd64" in info and f"Offset:           {part.offset}" in info
    assert part.offset % 4096 == 0 and (part.offset, part.size) == (
        built.info.squashfs_offset,
        built.info.squashfs_size,
    )
    assert built.info.size == built.sif.stat().st_size and part.offset + part.size == built.info.size
    assert ours.created == ours.modified == EPOCH and all(o.created == EPOCH for o in ours.objects)
    # The small objects, dumped by siftool, are what we meant to write.
    by_type = {o.data_type: o for o in ours.objects}
    labels = subprocess.run(["siftool", "dump", str(by_type[DATA_LABELS].id), str(built.sif)], capture_output=True)
    assert json.loads(labels.stdout) == {"org.example.name": "test image"}
    generic = {o.name: o for o in ours.objects if o.data_type == DATA_GENERIC_JSON}
    assert list(generic) == ["inspect-metadata.json", "oci-config.json"]  # sorted by name, as Apptainer adds them
    config = json.loads(read_object(built.sif, generic["oci-config.json"]))
    assert config["Entrypoint"] == ENTRYPOINT and config["Cmd"] == CMD
    deffile = read_object(built.sif, by_type[DATA_DEFFILE]).decode()
    # The layout named by its folder alone: the SIF of a layout moved elsewhere is the same bytes.
    assert f"Bootstrap: oci\nFrom: {built.oci.name}:{TAG}\n" in deffile and "%runscript" in deffile


def test_inspect_metadata_is_what_apptainer_inspect_reads(built: Built, sif_root: Path) -> None:
    # The JSON.Generic object `apptainer inspect` reads instead of starting a container:
    # apptainer's inspect.Metadata, each attribute the text of the file it describes.
    ours = read_sif_header(built.sif)
    (obj,) = [o for o in ours.objects if o.name == "inspect-metadata.json"]
    assert obj.data_type == DATA_GENERIC_JSON and obj.group == 1 and obj.link == 0 and not obj.extra.strip(b"\0")
    listing = _siftool("list", str(built.sif))
    assert f"{obj.id} " in listing and "JSON.Generic" in listing
    dumped = subprocess.run(["siftool", "dump", str(obj.id), str(built.sif)], capture_output=True, check=True).stdout
    assert dumped == read_object(built.sif, obj)
    assert dumped == json.dumps(json.loads(dumped), sort_keys=True, separators=(",", ":")).encode()  # canonical
    meta = json.loads(dumped)
    assert meta["type"] == "container" and list(meta) == ["data", "type"]
    attributes = meta["data"]["attributes"]
    assert set(attributes) == {"deffile", "environment", "labels", "runscript", "startscript"}
    singularity = sif_root / ".singularity.d"
    assert attributes["labels"] == json.loads((singularity / "labels.json").read_text())
    assert attributes["runscript"] == (singularity / "runscript").read_text().rstrip("\n")
    assert attributes["startscript"] == (singularity / "startscript").read_text().rstrip("\n")
    assert attributes["environment"] == {
        f"/.singularity.d/env/{name}": (singularity / "env" / name).read_text().rstrip("\n")
        for name in ("10-docker2singularity.sh", "90-environment.sh")
    }
    deffile = next(o for o in ours.objects if o.data_type == DATA_DEFFILE)
    assert attributes["deffile"] == read_object(built.sif, deffile).decode().rstrip("\n")


@pytest.mark.integration  # tar2sqfs
def test_sif_for_another_architecture(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    image = add_layers(cache, mutate.scratch(Platform("linux", "arm64"), epoch=EPOCH), [[f("hello", b"hi")]])
    info = write_sif(to_layout(cache, image, tmp_path / "oci"), tmp_path / "a.sif", runner=Runner(), epoch=EPOCH)
    assert info.arch == "arm64"
    assert "Primary Architecture: arm64" in _siftool("header", str(info.path))
    assert "FS (Squashfs/*System/arm64)" in _siftool("list", str(info.path))


def _dump_partition(built: Built, dest: Path) -> Path:
    part = read_sif_header(built.sif).primary_partition()
    with open(dest, "wb") as out:
        subprocess.run(["siftool", "dump", str(part.id), str(built.sif)], stdout=out, check=True)
    return dest


def _unsquashfs_listing(sqfs: Path) -> dict[str, tuple[str, str, str]]:
    """``unsquashfs -lln``: path -> (mode string, uid/gid, link target)."""
    out = subprocess.run(["unsquashfs", "-lln", str(sqfs)], capture_output=True, text=True, check=True).stdout
    listing = {}
    for line in out.splitlines():
        at = line.find(" squashfs-root")
        if at < 0:
            continue
        mode, owner = line.split(None, 2)[:2]
        name, _, target = line[at + 1 :].partition(" -> ")
        listing[name.removeprefix("squashfs-root").lstrip("/")] = (mode, owner, target)
    return listing


@dataclass(frozen=True)
class Tree:
    listing: dict[str, tuple[str, str, str]]  # path -> (mode string, uid/gid, link target)
    contents: dict[str, str]  # regular file -> sha256
    groups: list[frozenset[str]]  # hard-link groups
    caps: dict[str, bytes]  # security.capability


def _walk(root: Path) -> Tree:
    listing: dict[str, tuple[str, str, str]] = {}
    contents: dict[str, str] = {}
    inodes: dict[int, set[str]] = {}
    caps: dict[str, bytes] = {}
    paths = [""]
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        paths += [name if rel_dir == "." else f"{rel_dir}/{name}" for name in (*dirnames, *filenames)]
    for rel in paths:
        full = root / rel
        st = os.lstat(full)
        target = os.readlink(full) if stat.S_ISLNK(st.st_mode) else ""
        listing[rel] = (stat.filemode(st.st_mode), f"{st.st_uid}/{st.st_gid}", target)
        if stat.S_ISREG(st.st_mode):
            contents[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
            if st.st_nlink > 1:
                inodes.setdefault(st.st_ino, set()).add(rel)
            try:
                caps[rel] = os.getxattr(full, "security.capability", follow_symlinks=False)
            except OSError:
                pass
    groups = sorted((frozenset(g) for g in inodes.values() if len(g) > 1), key=sorted)
    return Tree(listing, contents, groups, caps)


def _added_by_sif(path: str, umoci: Tree) -> bool:
    top = path.split("/")[0]
    return top == APPTAINER_TREE or (path in APPTAINER_LINKS | UNDERLAY and path not in umoci.listing)


@pytest.fixture(scope="module")
def umoci_tree(built: Built) -> Tree:
    bundle = built.work / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{built.oci}:{TAG}", str(bundle)], check=True, capture_output=True)
    return _walk(bundle / "rootfs")


@pytest.fixture(scope="module")
def sif_root(built: Built) -> Path:
    sqfs = _dump_partition(built, built.work / "part.sqfs")
    root = built.work / "sif-root"
    subprocess.run(["unsquashfs", "-no-progress", "-d", str(root), str(sqfs)], check=True, capture_output=True)
    return root


def test_partition_lists_the_flattened_rootfs(built: Built, umoci_tree: Tree, sif_root: Path) -> None:
    listing = _unsquashfs_listing(_dump_partition(built, built.work / "listing.sqfs"))
    ours = {p: v for p, v in listing.items() if p and not _added_by_sif(p, umoci_tree)}
    theirs = {p: v for p, v in umoci_tree.listing.items() if p}
    assert set(ours) - set(theirs) == set(), "paths only in the SIF"
    assert set(theirs) - set(ours) == set(), "paths only in umoci's rootfs"
    assert {p: v for p, v in ours.items() if v != theirs[p]} == {}
    # The changes of the upper layers are there, the deleted things are not.
    assert not any(p.startswith(("usr/share/man/", "opt/app/data-link2")) for p in ours)
    assert ours["usr/share/doc"][0] == "drwx------" and ours["opt/app/bin/tool"][0] == "-rwsr-xr-x"
    assert ours["opt/app/secret"][1] == "1234/5678" and ours["var/log"][2] == "/tmp"
    assert ours["opt/app/lib/libx.so"][2] == "/opt/app/lib/libx.so.1"
    # Contents, hard-link groups and capabilities, from the unpacked partition.
    unpacked = _walk(sif_root)
    mine = {p: h for p, h in unpacked.contents.items() if not _added_by_sif(p, umoci_tree)}
    assert mine == umoci_tree.contents
    assert [g for g in unpacked.groups if not any(_added_by_sif(p, umoci_tree) for p in g)] == umoci_tree.groups
    assert frozenset({"usr/bin/perl5.36.0"}) not in unpacked.groups  # the old perl stays one file
    assert unpacked.contents["usr/bin/perl5.36.0"] != unpacked.contents["usr/bin/perl"]
    assert unpacked.caps == umoci_tree.caps and unpacked.caps["opt/app/bin/bind"] == CAP_NET_BIND
    data_link = (sif_root / "opt/app/data-link").read_bytes()
    assert data_link == b"data of the app\n" and (sif_root / "opt/app/data.txt").read_bytes() == b"replaced data\n"


@pytest.mark.integration  # tar2sqfs, umoci
def test_cross_layer_hard_links_match_umoci(tmp_path: Path) -> None:
    # Links to files of lower layers, whose targets upper layers then replace or delete:
    # overlay-based runtimes refuse such layers, umoci applies them like tar does.
    layers = [
        [d("h", 0o750, 7, 8), f("h/data", b"shared", 0o4755, 5, 6), hl("h/link1", "h/data"), hl("h/link2", "h/data")],
        [d("t"), f("t/f", b"old t"), d("a"), f("a/x", b"x"), d("b"), f("b/1"), sl("b/s", "/etc/passwd")],
        [f("h/data", b"replaced"), d("c"), hl("c/hl", "h/link1"), hl("c/hl2", "h/data"), hl("t/lnk", "t/f")],
        [wh("h/link2"), f("t/f", b"new t"), wh("a/x"), opq("b"), f("b/2", b"2")],
    ]
    cache = Cache(tmp_path / "cache")
    image = add_layers(cache, mutate.scratch(PLATFORM, epoch=EPOCH), layers)
    info = write_sif(to_layout(cache, image, tmp_path / "oci"), tmp_path / "x.sif", runner=Runner(), epoch=EPOCH)
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'oci'}:{TAG}", str(tmp_path / "bundle")], check=True)
    umoci = _walk(tmp_path / "bundle" / "rootfs")
    root = tmp_path / "sif-root"
    sqfs = ["unsquashfs", "-no-progress", "-o", str(info.squashfs_offset), "-d", str(root), str(info.path)]
    subprocess.run(sqfs, check=True, capture_output=True)
    ours = _walk(root)
    mine = {p: v for p, v in ours.listing.items() if p and not _added_by_sif(p, umoci)}
    assert mine == {p: v for p, v in umoci.listing.items() if p}
    assert {p: h for p, h in ours.contents.items() if not _added_by_sif(p, umoci)} == umoci.contents
    assert [g for g in ours.groups if not any(_added_by_sif(p, umoci) for p in g)] == umoci.groups
    assert umoci.groups == [frozenset({"c/hl", "h/link1"}), frozenset({"c/hl2", "h/data"})]
    assert (root / "t/lnk").read_bytes() == b"old t" and (root / "c/hl").read_bytes() == b"shared"


def test_apptainer_files_in_the_partition(built: Built, sif_root: Path) -> None:
    sd = sif_root / ".singularity.d"
    assert os.readlink(sif_root / "singularity") == ".singularity.d/runscript"
    assert os.readlink(sif_root / "environment") == ".singularity.d/env/90-environment.sh"
    assert json.loads((sd / "labels.json").read_bytes()) == {"org.example.name": "test image"}
    for script in ("runscript", "env/10-docker2singularity.sh", "env/99-base.sh", "actions/run"):
        assert (sd / script).stat().st_mode & 0o777 == 0o755
    assert "export LD_LIBRARY_PATH='/opt/app/lib'" in (sd / "env/10-docker2singularity.sh").read_text()


def _chroot_run(root: Path, *args: str) -> str:
    """What ``apptainer run`` does: source the env scripts in order, exec the runscript."""
    boot = 'for s in /.singularity.d/env/*.sh; do . "$s"; done; exec /.singularity.d/runscript "$@"'
    argv = ["env", "-i", shutil.which("chroot") or "/usr/sbin/chroot", str(root), "/bin/sh", "-c", boot, "runscript"]
    argv += args
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


class Buildah:
    """buildah with private storage under the test's tmp dir."""

    def __init__(self, root: Path) -> None:
        self.base = [
            "buildah",
            "--root",
            str(root / "storage"),
            "--runroot",
            str(root / "run"),
            "--storage-driver",
            "overlay",
        ]

    def __call__(self, *args: str) -> str:
        proc = subprocess.run([*self.base, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"buildah {' '.join(args)}: {proc.stderr[-2000:]}"
        return proc.stdout


@pytest.fixture()
def buildah(tmp_path: Path) -> Iterator[Buildah]:
    b = Buildah(tmp_path)
    try:
        yield b
    finally:
        subprocess.run([*b.base, "rm", "--all"], capture_output=True, check=False)
        subprocess.run([*b.base, "rmi", "--all", "--force"], capture_output=True, check=False)


@pytest.mark.slow
def test_runscript_in_chroot_matches_buildah_run(built: Built, sif_root: Path, buildah: Buildah) -> None:
    cid = buildah("from", f"oci:{built.oci}:{TAG}").strip().splitlines()[-1]
    try:
        for args in ([], ["x y", "it's", "$HOME", "*"]):
            expected = buildah("run", "--isolation", "chroot", cid, "--", *ENTRYPOINT, *(args or CMD))
            got = _chroot_run(sif_root, *args)
            # Apptainer appends the directory it binds host GPU libraries into.
            got = got.replace(":/.singularity.d/libs\n", "\n")
            print(f"runscript {args!r}:\n{got}")
            assert got == expected
            assert "LD=/opt/app/lib\n" in got and "replaced data" not in got
    finally:
        buildah("rm", cid)


def test_two_conversions_are_byte_identical(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    again = write_sif(built.source, tmp_path / "again.sif", runner=Runner(), epoch=EPOCH, jobs=1)
    assert again.digest == built.info.digest
    assert (tmp_path / "again.sif").read_bytes() == built.sif.read_bytes()
    # Without FALLOC_FL_INSERT_RANGE the squashfs is moved inside the file: same bytes. (On
    # an image of its own, 20 MiB of incompressible data over three 8 MiB move buffers: the
    # rootfs's SIF took 25 s.)
    cache = Cache(tmp_path / "cache")
    files = [d("data"), *(f(f"data/{i}", os.urandom(1 << 20)) for i in range(20))]
    small = to_layout(cache, add_layers(cache, mutate.scratch(PLATFORM, epoch=EPOCH), [files]), tmp_path / "oci")
    inserted = write_sif(small, tmp_path / "inserted.sif", runner=Runner(), epoch=EPOCH)
    monkeypatch.setattr(sif_front, "_insert_range", lambda fd, length: False)
    moved = write_sif(small, tmp_path / "moved.sif", runner=Runner(), epoch=EPOCH)
    assert moved.digest == inserted.digest and moved.squashfs_size > 2 * sif_front._SHIFT_CHUNK
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


@pytest.mark.integration  # tar2sqfs
def test_other_compressor_and_epoch_change_the_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = Cache(tmp_path / "cache")
    image = add_layers(cache, mutate.scratch(PLATFORM, epoch=EPOCH), [[d("a"), f("a/x", b"x" * 5000)]])
    source = to_layout(cache, image, tmp_path / "oci")
    a = write_sif(source, tmp_path / "a.sif", runner=Runner(), epoch=EPOCH)
    b = write_sif(source, tmp_path / "b.sif", runner=Runner(), epoch=EPOCH, squash=Squash("zstd"))
    c = write_sif(source, tmp_path / "c.sif", runner=Runner(), epoch=EPOCH + 1)
    e = write_sif(source, tmp_path / "e.sif", runner=Runner(), epoch=EPOCH, squash=Squash(block_size=1 << 20))
    g = write_sif(source, tmp_path / "g.sif", runner=Runner(), epoch=EPOCH, squash=Squash(level=1))
    assert len({a.digest, b.digest, c.digest, e.digest, g.digest}) == 5
    assert len({a.uuid, b.uuid, c.uuid, e.uuid, g.uuid}) == 5 and g.level == 1 and a.level is None
    out = subprocess.run(
        ["unsquashfs", "-s", "-o", str(b.squashfs_offset), str(b.path)], capture_output=True, text=True
    )
    assert "Compression zstd" in out.stdout
    # Apptainer 1.3 refuses a zstd SIF ("unknown compression algorithm value 6"): said.
    assert [r.message for r in caplog.records if "Apptainer 1.4 or later" in r.message] == [
        f"{b.path}: a SIF of zstd runs on Apptainer 1.4 or later; 1.3 refuses it (unknown compression 6)"
    ]
    assert "Block size 131072" in out.stdout  # mksquashfs's default, as before
    out = subprocess.run(
        ["unsquashfs", "-s", "-o", str(e.squashfs_offset), str(e.path)], capture_output=True, text=True
    )
    assert "Block size 1048576" in out.stdout and e.block_size == 1 << 20
    with pytest.raises(InputError, match="block size 3000"):
        write_sif(source, tmp_path / "f.sif", runner=Runner(), epoch=EPOCH, squash=Squash(block_size=3000))
    with pytest.raises(InputError, match="lz4 takes no compression level"):
        write_sif(source, tmp_path / "f.sif", runner=Runner(), epoch=EPOCH, squash=Squash("lz4", level=1))
    assert not (tmp_path / "f.sif").exists()


@pytest.mark.parametrize(
    ("text", "size"), [("131072", 131072), ("128K", 131072), ("1M", 1 << 20), ("4k", 4096), (65536, 65536)]
)
def test_block_sizes_read_as_mksquashfs_writes_them(text: str | int, size: int) -> None:
    assert block_size_of(text) == size


@pytest.mark.parametrize("text", ["2M", "2K", "100K", "", "K", "1.5M", "-128K"])
def test_block_sizes_the_kernel_cannot_read_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="power of two from 4K to 1M"):
        block_size_of(text)


class _FakeTar2sqfs(Runner):
    """Runs ``script`` in place of tar2sqfs."""

    def __init__(self, script: Path) -> None:
        super().__init__()
        self.script = script

    def popen(self, argv: Sequence[str], **kw: Any) -> Any:
        return super().popen([str(self.script), *argv[1:]], **kw)


def test_tar2sqfs_failure_is_a_tool_error_and_leaves_nothing(tmp_path: Path) -> None:
    fake = tmp_path / "tar2sqfs"
    fake.write_text("#!/bin/sh\necho 'tar2sqfs: out of inodes' >&2\nexit 3\n")
    fake.chmod(0o755)
    cache = Cache(tmp_path / "cache")
    payload = os.urandom(4 << 20)  # more than the pipe holds: the writer meets a closed pipe
    image = add_layers(cache, mutate.scratch(PLATFORM, epoch=EPOCH), [[f("big", payload)]], compression="none")
    out = tmp_path / "out" / "x.sif"
    with pytest.raises(ToolError) as info:
        write_sif(to_layout(cache, image, tmp_path / "oci"), out, runner=_FakeTar2sqfs(fake), epoch=EPOCH)
    assert "out of inodes" in str(info.value) and info.value.returncode == 3
    assert list(out.parent.iterdir()) == []


# -- hostile input ------------------------------------------------------------------------


def _raw_layer_image(cache: Cache, tar: bytes) -> Image:
    """An image whose one layer is exactly ``tar`` (gzip), bypassing our writer's checks."""
    blob = gzip.compress(tar, mtime=0)
    digest = cache.put_bytes(blob)
    layer = Layer(Descriptor(mt.OCI_LAYER_GZIP, digest, len(blob)), sha256_digest(tar), "raw")
    return mutate.append_layers(mutate.scratch(PLATFORM, epoch=EPOCH), [layer], epoch=EPOCH)


def _tar_with(*infos: tuple[str, bytes, str]) -> bytes:
    """A tar written by tarfile itself: (name, data, hard-link target) per member."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, link in infos:
            ti = tarfile.TarInfo(name)
            if link:
                ti.type, ti.linkname = tarfile.LNKTYPE, link
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.integration  # tar2sqfs
@pytest.mark.parametrize(
    ("members", "error", "message"),
    [
        ([("../escape", b"x", "")], UnsafePath, "'../escape' climbs out of the root"),
        ([("ok", b"x", ""), ("ok/../../escape", b"x", "")], UnsafePath, "climbs out of the root"),
        ([("a", b"x", ""), ("b", b"", "../../../etc/passwd")], UnsafePath, "hardlink target"),
        ([("b", b"", "no/such/file")], InvalidImage, "no/such/file"),
    ],
    ids=["dotdot", "nested-dotdot", "hardlink-outside", "hardlink-missing"],
)
def test_hostile_layers_are_refused(
    tmp_path: Path, members: list[tuple[str, bytes, str]], error: type[Exception], message: str
) -> None:
    cache = Cache(tmp_path / "cache")
    source = to_layout(cache, _raw_layer_image(cache, _tar_with(*members)), tmp_path / "oci")
    out_dir = tmp_path / "out"
    with pytest.raises(error) as info:
        write_sif(source, out_dir / "x.sif", runner=Runner(), epoch=EPOCH)
    assert message in str(info.value)
    assert "layer 1/1 sha256:" in str(info.value) or "hard link" in str(info.value)
    assert list(out_dir.iterdir()) == []  # the partial file is gone
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()


@pytest.mark.integration  # tar2sqfs
def test_absolute_members_land_inside_the_squashfs(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    tar = _tar_with(("/abs/file", b"inside", ""), ("/abs/link", b"", "/abs/file"))
    source = to_layout(cache, _raw_layer_image(cache, tar), tmp_path / "oci")
    info = write_sif(source, tmp_path / "x.sif", runner=Runner(), epoch=EPOCH)
    listing = subprocess.run(
        ["unsquashfs", "-lln", "-o", str(info.squashfs_offset), str(info.path)], capture_output=True, text=True
    ).stdout
    assert "squashfs-root/abs/file" in listing and "squashfs-root/abs/link" in listing


@pytest.mark.integration  # tar2sqfs
def test_whiteouts_in_a_sif_keep_its_mount_points_and_are_never_files(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    base = [d("bin"), f("bin/sh", b"#!", 0o755), d("dev"), d("tmp", 0o1777), f(".wh..wh..opq"), opq("bin")]
    upper = [wh("tmp"), f(".wh.proc"), opq("etc"), f("etc/motd", b"hi")]
    image = add_layers(cache, mutate.scratch(PLATFORM, epoch=EPOCH), [base, upper])
    info = write_sif(to_layout(cache, image, tmp_path / "oci"), tmp_path / "x.sif", runner=Runner(), epoch=EPOCH)
    out = subprocess.run(
        ["unsquashfs", "-lln", "-o", str(info.squashfs_offset), str(info.path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    paths = {
        line[line.find(" squashfs-root") + 1 :].split(" -> ")[0] for line in out.splitlines() if "squashfs-root" in line
    }
    paths = {p.removeprefix("squashfs-root").lstrip("/") for p in paths}
    assert not [p for p in paths if ".wh." in p]
    assert paths >= UNDERLAY | APPTAINER_LINKS
    assert {"bin/sh", "etc/motd", ".singularity.d/runscript"} <= paths


# -- streaming: a >= 2 GiB layer --------------------------------------------------------

_BIG = 2 * 1024**3 + 4096


class _BigData(io.RawIOBase):
    """``size`` bytes of incompressible data made on the fly from a 64 MiB random pattern
    (longer than any zstd/lz4 window), every 128 KiB block stamped with its number so
    that squashfs cannot deduplicate them."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.pos = 0
        noise = os.urandom(64 << 20)
        self.noise = noise + noise[: 1 << 20]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left, 1 << 20)
        if n <= 0:
            return 0
        start = self.pos % (64 << 20)
        chunk = bytearray(self.noise[start : start + n])
        for off in range(-self.pos % 131072, n, 131072):
            chunk[off : off + 8] = ((self.pos + off) // 131072).to_bytes(8, "little")
        buffer[:n] = chunk
        self.pos += n
        self.left -= n
        return n


_CONVERT = """
import json, re, resource, sys, logging
from pathlib import Path
from assembler.oci.descriptor import Platform
from assembler.proc import Runner
from assembler.transports import layout
from assembler.transports.hpc.sif import write_sif
from assembler.transports.hpc.squash import Squash
logging.basicConfig(level=logging.INFO)
src = layout.read(Path(sys.argv[1]), "t", platform=Platform("linux", "amd64"))
info = write_sif(src, Path(sys.argv[2]), runner=Runner(), epoch=1700000000, squash=Squash("lz4"))
# VmHWM: the peak RSS of this program (ru_maxrss would also count the pytest process it was forked from).
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1))
# write_bytes: what this program and its reaped children (tar2sqfs) sent to storage.
written = int(re.search(r"^write_bytes: (\\d+)", Path("/proc/self/io").read_text(), re.M).group(1))
print(json.dumps({"rss_kib": hwm, "children_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "size": info.size, "squashfs": info.squashfs_size, "written": written}))
"""


class DiskWatch:
    """Polls the used space of some filesystems; ``peak`` is the largest growth seen."""

    def __init__(self, *paths: Path) -> None:
        fsids: dict[int, Path] = {}
        for p in paths:
            fsids.setdefault(os.statvfs(p).f_fsid, p)
        self.paths = list(fsids.values())
        self.start = self._used()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _used(self) -> int:
        return sum(shutil.disk_usage(p).used for p in self.paths)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._used() - self.start)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used() - self.start)


@pytest.mark.slow
def test_big_layer_streams_in_flat_memory_and_no_temp_space(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    big: BinaryIO = io.BufferedReader(_BigData(_BIG), 1 << 20)  # type: ignore[arg-type]
    members = [d("data"), (TarEntry("data/big.bin", "file", size=_BIG, mtime=EPOCH), lambda: nullcontext(big))]
    image = add_layers(
        cache, mutate.scratch(PLATFORM, epoch=EPOCH), [members, [f("data/small", b"s")]], compression="zstd"
    )
    to_layout(cache, image, tmp_path / "oci")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    started = time.monotonic()
    with DiskWatch(out_dir, Path(tempfile.gettempdir())) as disk:
        proc = subprocess.run(
            [sys.executable, "-c", _CONVERT, str(tmp_path / "oci"), str(out_dir / "big.sif")],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = disk.peak - result["size"]
    written = result["written"] - result["size"]
    print(
        f"\n2 GiB layer -> {result['size'] / 2**20:.0f} MiB SIF in {time.monotonic() - started:.1f} s; "
        f"peak RSS: converter {result['rss_kib'] / 1024:.0f} MiB, "
        f"tar2sqfs {result['children_rss_kib'] / 1024:.0f} MiB; "
        f"peak disk use beyond the output file: {extra / 2**20:.1f} MiB (polled, includes other processes); "
        f"bytes written beyond the output file: {written / 2**20:.1f} MiB"
    )
    assert result["squashfs"] > _BIG  # incompressible: a copy of it would show in the disk watch
    assert result["rss_kib"] < 300 * 1024
    # Exact for our processes: any temp file (a tar, a squashfs copy) would be written too,
    # counted when its pages are dirtied, so one removed before it reaches the disk as well.
    # (The polled disk use, printed above, is not asserted: in a suite run other workers
    # wrote 1.6 GiB while it watched.)
    assert written < 16 * 2**20, f"{written / 2**20:.0f} MiB written beyond the SIF"
    assert "INSERT_RANGE" not in proc.stderr  # the in-place insert worked (no fallback warning)


def test_a_layer_under_a_symlinked_parent_goes_through_the_link(built: Built, tmp_path: Path) -> None:
    """Merged-/usr: /lib is a symlink to usr/lib. A copy to /lib/x86_64-linux-gnu/f must
    land in /usr/lib/... and leave /lib a symlink, for the SIF, umoci and buildah alike. On
    the module's Debian image (its layout's gzip layers taken as they are: importing the
    root filesystem again took 10 s of CPU)."""
    (tmp_path / "f.txt").write_text("through the link\n")
    (tmp_path / "m.yaml").write_text(
        f"name: links\ncompression: gzip\nbases: {{runtime: 'oci:{built.work / 'oci'}:{TAG}'}}\n"
        "image:\n  base: runtime\n  layers:\n    - copy: {from: ./f.txt, to: /lib/x86_64-linux-gnu/assemble-f.txt}\n"
        "    - copy: {from: ./f.txt, to: /tmp/scratch.txt}\n"
        "sif: {level: 1}\n"  # the paths are the point: not gzip 9's 20 s of CPU (the module's SIF has it)
    )
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:x", "-o", "sif:out.sif"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    offset = read_sif_header(tmp_path / "out.sif").primary_partition().offset
    argv = ["unsquashfs", "-o", str(offset), "-lls", str(tmp_path / "out.sif")]
    listing = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "squashfs-root/lib -> usr/lib" in listing
    assert "squashfs-root/usr/lib/x86_64-linux-gnu/assemble-f.txt" in listing
    assert "squashfs-root/lib/" not in listing
    subprocess.run(
        ["umoci", "unpack", "--image", f"{tmp_path}/out:x", str(tmp_path / "bundle")], check=True, capture_output=True
    )
    assert (tmp_path / "bundle/rootfs/usr/lib/x86_64-linux-gnu/assemble-f.txt").read_text() == "through the link\n"
    assert os.readlink(tmp_path / "bundle/rootfs/lib") == "usr/lib"
    # One write of both answers: under load, buildah 1.28's chroot run once lost the second
    # of two separate writes (the command exited 0, stat's line missing).
    command = [
        "/bin/sh",
        "-c",
        'printf \'%s\\n%s\\n\' "$(cat /lib/x86_64-linux-gnu/assemble-f.txt)" "$(stat -c %a /tmp)"',
    ]
    out = ToolBuildah(tmp_path / "b").run_image(f"oci:{tmp_path}/out:x", command)
    assert out == "through the link\n1777\n"  # overlay storage: the image runs, /tmp keeps its mode


@pytest.mark.integration  # tar2sqfs
def test_the_manifests_squashfs_choices_reach_the_sif_and_sqsh_outputs(tmp_path: Path) -> None:
    """``sif: {compressor:, block_size:, level:}`` decide both squashfs outputs; a block size
    the kernel cannot read and a level the compressor has not are refused at load, naming the
    file, line and field."""
    with tarfile.open(tmp_path / "base.tar", "w") as tf:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"node\n"))
    head = "name: t\nbases: {b: 'rootfs:base.tar'}\nimage: {base: b}\n"
    (tmp_path / "m.yaml").write_text(head + "sif: {compressor: lz4, block_size: 64K}\n")
    ran = run_cli(["m.yaml", "--cache", "cache", "-o", "sif:o.sif", "-o", "sqsh:o.sqsh", "--no-sbom"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    offset = read_sif_header(tmp_path / "o.sif").primary_partition().offset
    for argv in (["-o", str(offset), str(tmp_path / "o.sif")], [str(tmp_path / "o.sqsh")]):
        said = subprocess.run(["unsquashfs", "-s", *argv], capture_output=True, text=True, check=True).stdout
        assert "Compression lz4" in said and "Block size 65536" in said, said
    (tmp_path / "m.yaml").write_text(head + "sif: {level: 1}\n")  # gzip's
    ran = run_cli(["m.yaml", "--cache", "cache", "-o", "sif:g.sif", "-o", "sqsh:g.sqsh", "--no-sbom"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    offset = read_sif_header(tmp_path / "g.sif").primary_partition().offset
    for argv in (["-o", str(offset), str(tmp_path / "g.sif")], [str(tmp_path / "g.sqsh")]):
        said = subprocess.run(["unsquashfs", "-s", *argv], capture_output=True, text=True, check=True).stdout
        assert "Compression gzip\n\tcompression-level 1\n" in said, said
    (tmp_path / "m.yaml").write_text(head + "sif:\n  compressor: lz4\n  level: 3\n")
    ran = run_cli(["m.yaml", "--cache", "cache", "-o", "sif:p.sif"], cwd=tmp_path)
    assert ran.code == 2 and "m.yaml:6" in ran.err and "level" in ran.err and "lz4 takes no" in ran.err, str(ran)
    (tmp_path / "m.yaml").write_text(head + "sif:\n  block_size: 3K\n")
    ran = run_cli(["m.yaml", "--cache", "cache", "-o", "sif:p.sif"], cwd=tmp_path)
    assert ran.code == 2 and "m.yaml:5" in ran.err and "block_size" in ran.err, str(ran)
    assert not (tmp_path / "p.sif").exists()
    ran = run_cli(["sif", "oci:nowhere:x", "p.sif", "--block-size", "3K"], cwd=tmp_path)
    assert ran.code == 2 and "power of two from 4K to 1M" in ran.err, str(ran)
    ran = run_cli(["sqsh", "oci:nowhere:x", "p.sqsh", "--level", "10"], cwd=tmp_path)
    assert ran.code == 2 and "gzip levels are 1 to 9, not 10" in ran.err, str(ran)


def test_a_sif_written_before_is_kept_only_while_it_is_that_file_of_that_image(tmp_path: Path) -> None:
    """A no-change rebuild wrote its sif: output again (tar2sqfs: 20 s of CPU for a Debian
    minbase) to the same bytes. What was written is kept while the file is unchanged and
    the UUID (what decides its bytes) and the image's name are the same; not otherwise."""
    from assembler.oci.digest import file_digest
    from assembler.transports.hpc import sifkept
    from assembler.transports.hpc.sif import SifInfo

    cache, out = Cache(tmp_path / "cache"), tmp_path / "x.sif"
    out.write_bytes(b"SIF_MAGIC written")
    info = SifInfo(out, 17, file_digest(out), "u-1", "amd64", "sha256:" + "d" * 64, "gzip", 131072, 4096, 1, 2, 3)
    assert sifkept.kept(cache, out, "u-1", "docker://r/app:1") is None  # nothing recorded
    sifkept.remember(cache, info, "docker://r/app:1")
    assert sifkept.kept(cache, out, "u-1", "docker://r/app:1") == info
    assert sifkept.kept(cache, out, "u-2", "docker://r/app:1") is None  # another image, compressor...
    assert sifkept.kept(cache, out, "u-1", "docker://r/other:1") is None  # the definition file names it
    # Written over in place at once, the same size (the file's times may not have moved
    # yet, in the clock's tick: its bytes are read then).
    out.write_bytes(b"SIF_MAGIC WRITTEN")
    assert sifkept.kept(cache, out, "u-1", "docker://r/app:1") is None
    sifkept.remember(cache, info, "docker://r/app:1")
    link = tmp_path / "link.sif"
    link.symlink_to(out)  # an output through a link replaces the link: the SIF there is not it
    sifkept.remember(cache, replace(info, path=link), "docker://r/app:1")
    assert sifkept.kept(cache, link, "u-1", "docker://r/app:1") is None
    out.unlink()
    assert sifkept.kept(cache, out, "u-1", "docker://r/app:1") is None
