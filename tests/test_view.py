"""Fitting a layer onto the image below: through its symlinks, parents as it has them."""

from __future__ import annotations

import io
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from assembler.archive import headers as archive_headers
from assembler.archive.headers import LayerHeaders
from assembler.archive.layer import Member, Opener, write_layer
from assembler.archive.layer_reader import LayerSource, tar_members
from assembler.archive.tar import TarEntry
from assembler.archive.view import LayerIndex, TreeView, anchors, fit_members
from assembler.cache import Cache
from assembler.cache.memos import anchors_key, elf_facts_key, tree_key
from assembler.deps.files import FactReader
from assembler.oci.descriptor import Platform
from assembler.oci.layer import Layer
from assembler.pipeline.layers.maker import MAKE
from assembler.pipeline.layers.setup import ImageSetup
from assembler.proc import Runner
from assembler.sbom.packages import DatabaseTexts, PackageReader, read_packages
from assembler.transports import Context
from tests.helpers import one_layer_image


def d(path: str, mode: int = 0o755, uid: int = 0) -> TarEntry:
    return TarEntry(path=path, kind="dir", mode=mode, uid=uid, gid=uid)


def link(path: str, target: str) -> TarEntry:
    return TarEntry(path=path, kind="symlink", linkname=target)


def f(path: str) -> TarEntry:
    return TarEntry(path=path, kind="file", size=0)


def base() -> TreeView:
    return TreeView.of(
        [
            LayerIndex.of(
                [
                    d("usr"),
                    d("usr/lib"),
                    link("lib", "usr/lib"),
                    d("tmp", 0o1777),
                    d("home"),
                    d("home/app", 0o750, 1000),
                    d("usr/local"),
                    link("usr/local/cuda", "/usr/local/cuda-12.4"),
                    d("usr/local/cuda-12.4"),
                    d("opt"),
                    link("a", "b"),
                    link("b", "a"),
                ]
            ),
        ]
    )


def test_resolve_follows_parents_only() -> None:
    view = base()
    assert view.resolve("lib/x86_64-linux-gnu/libfoo.so") == "usr/lib/x86_64-linux-gnu/libfoo.so"
    assert view.resolve("usr/local/cuda/lib64/libcudart.so") == "usr/local/cuda-12.4/lib64/libcudart.so"
    assert view.resolve("lib") == "lib"  # an entry at a link replaces it
    assert view.resolve("a/x") == "a/x"  # a loop is left as written
    assert view.resolve("opt/app/bin") == "opt/app/bin"


def test_which_layers_need_fitting() -> None:
    view = base()
    assert not view.needs_fitting(anchors(["opt/x", "usr/local/y"]))  # plain root folders: as written
    # Folders the image lacks: named by the layer, or extractors disagree on them.
    assert view.needs_fitting(anchors(["opt/app/bin/x"]))
    assert view.needs_fitting(anchors(["lib/x86_64-linux-gnu/libfoo.so"]))  # a symlink on the way
    assert view.needs_fitting(anchors(["tmp/x"]))  # /tmp would lose its sticky bit
    assert view.needs_fitting(anchors(["home/app/.cache/x"]))  # /home/app would become root's


def test_fit_members_goes_through_links_and_keeps_parent_metadata() -> None:
    members = [
        (f("lib/x86_64-linux-gnu/libfoo.so"), None),
        (f("tmp/scratch"), None),
        (f("home/app/.cache/x"), None),
        (TarEntry("lib/x86_64-linux-gnu/libfoo.so.1", "hardlink", linkname="lib/x86_64-linux-gnu/libfoo.so"), None),
    ]
    out = {e.path: e for e, _ in fit_members(members, base(), epoch=1700000000)}
    assert "lib" not in out and "usr/lib/x86_64-linux-gnu/libfoo.so" in out
    assert out["usr/lib/x86_64-linux-gnu/libfoo.so.1"].linkname == "usr/lib/x86_64-linux-gnu/libfoo.so"
    assert (out["usr/lib"].mode, out["usr"].mode) == (0o755, 0o755)
    assert out["tmp"].mode == 0o1777
    assert (out["home/app"].mode, out["home/app"].uid) == (0o750, 1000)
    assert out["home/app/.cache"].mode == 0o755 and out["home/app/.cache"].uid == 0  # new: as an extractor makes it
    assert out["home/app/.cache"].mtime == 1700000000  # new folders are from the build's epoch


def test_fit_members_names_every_missing_parent() -> None:
    out = {e.path: e for e, _ in fit_members([(f("app/bin/saxpy"), None)], base(), epoch=1700000000)}
    assert sorted(out) == ["app", "app/bin", "app/bin/saxpy"]
    for path in ("app", "app/bin"):
        entry = out[path]
        assert (entry.kind, entry.mode, entry.uid, entry.gid, entry.mtime) == ("dir", 0o755, 0, 0, 1700000000)


def test_later_layers_change_the_view() -> None:
    view = base()
    view.apply(LayerIndex.of([TarEntry(".wh.lib", "file"), d("opt", 0o700)]))
    assert view.resolve("lib/x") == "lib/x"
    assert view.needs_fitting(anchors(["opt/x"]))
    view.apply(LayerIndex.of([d("usr/local/.wh..wh..opq")]))
    index = LayerIndex.of([f("usr/local/cuda"), TarEntry("usr/local/.wh..wh..opq", "file")])
    view.apply(index)
    assert view.resolve("usr/local/cuda/x") == "usr/local/cuda/x"
    assert LayerIndex.from_json(index.to_json()) == index


class NaiveView:
    """The view by definition: every path of the view scanned for each change."""

    def __init__(self) -> None:
        self.dirs: dict[str, object] = {}
        self.links: dict[str, str] = {}

    def drop(self, path: str, *, itself: bool, below: bool) -> None:
        for table in (self.dirs, self.links):
            for key in [k for k in table if (itself and k == path) or (below and k.startswith(path + "/"))]:
                del table[key]

    def apply(self, layer: LayerIndex) -> None:
        for path in layer.whiteouts:
            self.drop(path, itself=True, below=True)
        for path in layer.opaques:
            self.drop(path, itself=False, below=True)
        for path in layer.others:
            if path in self.dirs or path in self.links:
                self.drop(path, itself=True, below=True)
        for path, target in layer.links.items():
            self.drop(path, itself=True, below=True)
            self.links[path] = target
        for path, meta in layer.dirs.items():
            self.links.pop(path, None)
            self.dirs[path] = meta


def test_tree_view_is_the_naive_view_on_random_layers() -> None:
    """The view looks below a path only where something is (a base's thousand links would
    each scan every path): the same view as scanning every time, on random layers."""
    rng = random.Random(7)

    def path() -> str:
        return "/".join(rng.choice("abc") for _ in range(rng.randint(1, 4)))

    for _ in range(2000):
        view, naive = TreeView(), NaiveView()
        for _ in range(rng.randint(1, 6)):
            layer = LayerIndex(
                dirs={path(): (0o755, 0, 0, 0) for _ in range(rng.randint(0, 5))},
                links={path(): "t" for _ in range(rng.randint(0, 3))},
                others={path() for _ in range(rng.randint(0, 3))},
                whiteouts=[path() for _ in range(rng.randint(0, 2))],
                opaques=[path() for _ in range(rng.randint(0, 2))],
            )
            view.apply(layer)
            naive.apply(layer)
            assert (view.dirs, view.links) == (naive.dirs, naive.links)


def _with_openers(members: list[tuple[TarEntry, bytes | None]]) -> list[Member]:
    """``members`` as a layer writer takes them: each file's bytes behind an opener."""

    def opener(data: bytes) -> Opener:
        return lambda: nullcontext(io.BytesIO(data))

    return [(e, opener(d) if d is not None else None) for e, d in members]


def _written_and_read_back(
    members: list[tuple[TarEntry, bytes | None]], epoch: int
) -> tuple[LayerHeaders, list[TarEntry]]:
    """The headers ``write_layer`` gathers for ``members``, and the entries a reader of the blob sees."""
    headers = LayerHeaders()
    blob = io.BytesIO()
    write_layer(
        _with_openers(members),
        blob,
        compression="zstd",
        epoch=epoch,
        headers=headers,
    )
    source = LayerSource("layer", lambda: nullcontext(io.BytesIO(blob.getvalue())), "zstd")
    return headers, [entry for entry, _ in tar_members(source)]


def test_headers_gathered_while_writing_are_what_a_reader_of_the_blob_sees() -> None:
    """A new layer's index, anchors and entry list are remembered from the writer, never
    read back: they must be exactly what reading the blob gives, whatever the names
    (long, non-ASCII, not UTF-8), links, owners, times, whiteouts and hard links."""
    rng = random.Random(11)
    odd = ["a" * 120, "é/ü", "x" * 60 + "/" + "y" * 99, "z" * 300, "bad\udcff", ".wh..wh..opq", ".wh.gone", "sp ace"]

    def name() -> str:
        return "/".join(rng.choice(["usr", "lib", "opt", "x", *odd]) for _ in range(rng.randint(1, 4)))

    for _ in range(60):
        members: dict[str, tuple[TarEntry, bytes | None]] = {}
        for _ in range(rng.randint(1, 25)):
            path, kind = name(), rng.choice(["file", "dir", "symlink", "fifo", "file"])
            entry = TarEntry(
                path=path,
                kind=kind,  # type: ignore[arg-type]
                mode=rng.choice([0o644, 0o755, 0o4755, 0o1777]),
                uid=rng.choice([0, 1000, 2**24]),
                gid=rng.choice([0, 5, 2**22]),
                size=5 if kind == "file" else 0,
                mtime=rng.choice([0, 1_700_000_000, 2_000_000_000]),
                linkname=rng.choice(["../t", "/usr/lib", "l" * 150, "ü"]) if kind == "symlink" else "",
            )
            data = rng.choice([b"abcde", b"\x7fELF\x02", b"\x7fELx\x02"])  # an ELF file begins as the second
            members[path] = (entry, data if kind == "file" else None)
        if rng.random() < 0.5:
            members[""] = (TarEntry(path="", kind="dir", mode=0o755), None)  # a root entry, as a rootfs has
        files = [p for p, (e, _) in members.items() if e.kind == "file"]
        if files:
            hard = name() + "-hard"
            members[hard] = (TarEntry(path=hard, kind="hardlink", linkname=rng.choice(files)), None)
        headers, read = _written_and_read_back(list(members.values()), epoch=1_800_000_000)
        named = [e for e in read if e.path]
        assert headers.readable
        assert headers.index() == LayerIndex.of(read)
        assert headers.anchors() == sorted(anchors(e.path for e in named))
        assert headers.entries() == [(e.path, e.kind, e.linkname) for e in named]
        written = [data for entry, data in members.values() if entry.kind == "file"]  # the last of a path wins
        assert headers.elf == (b"\x7fELF\x02" in written)


def test_a_layer_a_reader_refuses_gives_no_headers() -> None:
    headers = LayerHeaders()
    headers.add(TarEntry(path="ok", kind="dir"))
    headers.add(TarEntry(path="a/../../etc/passwd", kind="file"))
    assert not headers.readable and headers.entries() == []


def test_one_read_of_a_layers_headers_remembers_its_index_anchors_and_entries(tmp_path: Path) -> None:
    """A base's layer read for one of the three header facts (here the dependency check's
    entry list) is not read again for the others: one open of the blob records all three,
    as reading it for each would give them."""
    members = [
        (TarEntry("usr/lib/x/libz.so.1", "file", size=4), b"\x7fELF"),
        (TarEntry("usr/lib/x/libz.so", "symlink", linkname="libz.so.1"), None),
        (TarEntry("opt/tool", "dir", mode=0o700), None),
        (TarEntry("lib", "symlink", linkname="usr/lib"), None),
    ]
    blob = io.BytesIO()
    layer = write_layer(
        _with_openers(members),
        blob,
        compression="zstd",
        epoch=0,
    )
    opened: list[str] = []

    def open_blob(digest: str) -> BinaryIO:
        opened.append(digest)
        return io.BytesIO(blob.getvalue())

    cache = Cache(tmp_path / "cache")
    entries = FactReader(one_layer_image(layer), open_blob, cache=cache, workdir=tmp_path).entries(0)
    assert opened == [layer.digest]
    read = [entry for entry, _ in tar_members(LayerSource("l", lambda: nullcontext(io.BytesIO(blob.getvalue()))))]
    assert entries == [(e.path, e.kind, e.linkname) for e in read]
    assert LayerIndex.from_json(cache.memo(tree_key(layer.diff_id)) or {}) == LayerIndex.of(read)
    assert (cache.memo(anchors_key(layer.digest)) or {}).get("anchors") == sorted(anchors(e.path for e in read))
    assert cache.memo(elf_facts_key(layer.diff_id)) is None  # its data was not read: no ELF facts are known


def test_a_base_layer_read_for_its_index_also_gives_the_sboms_database_texts(tmp_path: Path) -> None:
    """On a cold cache a base's layer is read once: the pass that reads its headers for the
    image index also keeps the texts the SBOM reads (dpkg status, os-release, a copyright
    file, Python metadata), and the SBOM reads no layer. They are what the SBOM's own read
    of the blob keeps."""
    status = b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\nArchitecture: amd64\n\n"
    metadata = b"Metadata-Version: 2.1\nName: numpy\nVersion: 2.1.0\n\nA long description.\n"
    copyright_ = (
        b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: Zlib\n"
    )
    members = [
        (TarEntry("var/lib/dpkg/status", "file", size=len(status)), status),
        (TarEntry("usr/lib/os-release", "file", size=12), b"ID=debian\n\n\n"),
        (TarEntry("etc/os-release", "symlink", linkname="../usr/lib/os-release"), None),
        (TarEntry("usr/share/doc/zlib1g/copyright", "file", size=len(copyright_)), copyright_),
        (
            TarEntry("usr/lib/python3/dist-packages/numpy-2.1.0.dist-info/METADATA", "file", size=len(metadata)),
            metadata,
        ),
        (TarEntry("usr/lib/x/libz.so.1", "file", size=4), b"\x7fELF"),
    ]
    cache = Cache(tmp_path / "cache")
    with cache.blob_writer() as w:
        layer = write_layer(
            _with_openers(members),
            w,
            compression="zstd",
            epoch=0,
        )
    opened: list[str] = []

    class Counting:
        def open_blob(self, digest: str) -> BinaryIO:
            opened.append(digest)
            return cache.open_blob(digest)

    setup = ImageSetup(Context(cache, Runner(), Platform(), 0), maker=MAKE)
    setup.blobs = Counting()  # type: ignore[assignment]
    setup.index(layer.descriptor, layer.diff_id)
    assert opened == [layer.digest]

    image = one_layer_image(layer)

    def counting_open(digest: str) -> BinaryIO:
        opened.append(digest)
        return cache.open_blob(digest)

    inventory = read_packages(image, counting_open, cache=cache, workdir=tmp_path)
    assert opened == [layer.digest]  # the SBOM found every text it reads remembered
    assert {(p.name, p.version, p.license) for p in inventory.packages} == {
        ("zlib1g", "1:1.2.13", "Zlib"),
        ("numpy", "2.1.0", ""),
    }
    assert inventory.os_release.get("ID") == "debian"
    fresh = Cache(tmp_path / "fresh")
    with open(cache.blob_path(layer.digest), "rb") as f:
        fresh.import_stream(f, digest=layer.digest)
    read = read_packages(image, fresh.open_blob, cache=fresh, workdir=tmp_path)
    assert read == inventory  # what the SBOM's own read of the blob gives


def test_a_layer_writer_keeps_the_sboms_database_texts_as_a_reader_of_the_blob_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer we write (a pip: layer's Python metadata, a copied dpkg status) is not
    streamed again by the SBOM: the writer keeps what the SBOM keeps of those files, equal
    to what reading the blob gives; a wanted file too big to keep leaves it to the reader."""
    status = b"Package: zlib1g\nStatus: install ok installed\nVersion: 1:1.2.13\n\n"
    metadata = b"Metadata-Version: 2.1\nName: numpy\nVersion: 2.1.0\n\n" + b"description " * 10_000
    dist = "opt/venv/lib/python3.11/site-packages/numpy-2.1.0.dist-info/METADATA"
    files = {
        "var/lib/dpkg/status": status,
        dist: metadata,
        "usr/share/doc/zlib1g/copyright": b"not a DEP-5 file\n",
        "opt/venv/lib/python3.11/site-packages/numpy/core.so": b"\x7fELF" + bytes(5000),
    }
    members = _with_openers([(TarEntry(p, "file", size=len(d)), d) for p, d in files.items()])

    def written(cache: Cache) -> tuple[dict[str, Any] | None, Layer]:
        texts = DatabaseTexts(cache)
        headers = LayerHeaders(observers=[texts])
        with cache.blob_writer() as w:
            layer = write_layer(members, w, compression="zstd", epoch=0, headers=headers)
        return headers.found(texts), layer

    cache = Cache(tmp_path / "cache")
    kept, layer = written(cache)
    wanted = {"var/lib/dpkg/status", dist, "usr/share/doc/zlib1g/copyright"}
    assert kept is not None and set(kept) == wanted
    reader = PackageReader(one_layer_image(layer), cache.open_blob, cache=None, workdir=tmp_path)
    assert reader.texts_of(0, wanted) == kept  # the blob read whole, nothing remembered
    assert kept[dist].endswith("Version: 2.1.0\n")  # the headers only, as the reader keeps

    monkeypatch.setattr(archive_headers, "TEXT_LIMIT", 1000)  # the METADATA is now too big to keep
    small = Cache(tmp_path / "small")
    kept, _ = written(small)
    assert kept is None


# -- trees 2,000 folders deep ------------------------------------------------------------

DEEP = 2000


def _deep(top: str, depth: int = DEEP) -> list[str]:
    """``top``, ``top/d``, ``top/d/d``...: the folders of a tree ``depth`` deep."""
    paths = [top]
    for _ in range(depth):
        paths.append(paths[-1] + "/d")
    return paths


def test_a_tree_2000_folders_deep_is_fitted_in_linear_time() -> None:
    """Each path of a deep tree used to walk all its ancestors, each rebuilt from its parts:
    cubic in the depth (minutes at 2,000). A base holding the tree behind a symlink, and a
    layer naming only a file at its bottom: the view, the fit and its cache key."""
    import time

    started = time.monotonic()
    folders = _deep("real")
    view = TreeView.of([LayerIndex.of([d("usr"), link("x", "real"), *(d(p, 0o700, 7) for p in folders)])])
    bottom = "x" + folders[-1].removeprefix("real") + "/f"
    found = anchors([bottom])
    assert len(found) == DEEP + 1 and view.needs_fitting(found)
    assert len(view.relevant(found)) == 1  # the link: nothing under x is a folder of the view
    fitted = {e.path: e for e, _ in fit_members([(f(bottom), None)], view, epoch=5)}
    assert set(fitted) == {*folders, folders[-1] + "/f"}  # through the link, every parent named
    assert all(fitted[p].mode == 0o700 and fitted[p].uid == 7 for p in folders)  # as the image has them
    headers = LayerHeaders()
    members = _with_openers([(f(p + "/f"), b"") for p in folders[::100]])
    write_layer(members, io.BytesIO(), compression="zstd", epoch=0, headers=headers)
    assert headers.anchors() == sorted(folders)
    assert time.monotonic() - started < 5, time.monotonic() - started  # cubic: 20 s and more


def test_the_final_view_of_a_tree_2000_folders_deep_is_linear() -> None:
    """The dependency check's view of an image (newest layer first, what upper layers hide)."""
    import time

    from assembler.deps.files import ImageFiles

    started = time.monotonic()
    folders = _deep("opt")
    lower = [(p, "dir", "") for p in folders] + [(folders[-1] + "/lib.so", "file", "")]
    upper = [(p, "dir", "") for p in folders[: DEEP // 2]] + [(folders[DEEP // 2 - 1] + "/.wh.d", "file", "")]
    whole = ImageFiles.of([lower])
    assert whole.data_of(folders[-1] + "/lib.so") == (0, folders[-1] + "/lib.so")
    assert whole.realpath(folders[-1] + "/lib.so") == folders[-1] + "/lib.so"
    hidden = ImageFiles.of([lower, upper])  # the upper layer deletes the bottom half
    assert hidden.data_of(folders[-1] + "/lib.so") is None and folders[DEEP // 2] not in hidden.records
    assert folders[DEEP // 2 - 1] in hidden.records
    assert time.monotonic() - started < 5, time.monotonic() - started  # cubic: 20 s and more


def test_a_runtime_steps_tree_2000_folders_deep_is_diffed_in_linear_time(tmp_path: Path) -> None:
    """The export agent's diff of a step's root: each new path's parents as members."""
    import os
    import time

    from assembler.compile.changes import diff_members

    fds = [os.open(tmp_path, os.O_RDONLY)]
    try:
        for name in ["deep"] + ["d"] * DEEP:  # made one level at a time: no path of 4 KiB is opened whole
            os.mkdir(name, dir_fd=fds[-1])
            fds.append(os.open(name, os.O_RDONLY, dir_fd=fds[-1]))
        started = time.monotonic()
        members = diff_members(str(tmp_path), {}, [], [])
        assert sorted(e.path for e, _ in members) == sorted(_deep("deep"))
        assert time.monotonic() - started < 10, time.monotonic() - started
    finally:  # removed from the bottom up (shutil.rmtree, pytest's too, recurses once per level)
        for parent, name in zip(reversed(fds[:-1]), reversed(["deep"] + ["d"] * (len(fds) - 2)), strict=True):
            os.rmdir(name, dir_fd=parent)
        for fd in fds:
            os.close(fd)


def test_resolve_is_a_walk_of_the_links_on_random_views() -> None:
    """resolve() remembers the folders it resolved: the same answers as walking each path."""
    from assembler.archive.links import walk_links

    rng = random.Random(11)

    def path(parts: str = "abc", most: int = 4) -> str:
        return "/".join(rng.choice(parts) for _ in range(rng.randint(1, most)))

    for _ in range(2000):
        links = {path(): rng.choice(["/", "", "../"]) + path("abx.", 3) for _ in range(rng.randint(1, 6))}
        view = TreeView.of([LayerIndex(dirs={path(): (0o755, 0, 0, 0) for _ in range(3)}, links=links)])
        for _ in range(20):
            asked = path("abcd", 6)
            walked = walk_links(asked, view.links.get, follow_last=False)
            assert view.resolve(asked) == (asked if walked is None else walked), (links, asked)
