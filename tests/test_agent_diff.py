"""What a ``run:`` step's layer says of the changes (assembler.compile.changes.diff_members),
on host folders changed by the test: no whiteout below a path the layer makes a file or a
symlink, an opaque marker for a folder emptied and refilled, hard links kept. The
differential test (tests/test_layer_consumers.py) checks the same through buildah and
every consumer; these pin the layer's entries."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from assembler.archive.cut import plan_cut
from assembler.archive.tar import TarEntry
from assembler.compile.changes import DEFAULT_EXCLUDES, diff_members, snapshot


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _entries(root: Path, before: dict[str, tuple[int, ...]], excludes: tuple[str, ...] = ()) -> dict[str, TarEntry]:
    members = diff_members(str(root), before, list(excludes), [])  # type: ignore[arg-type]
    return {entry.path: entry for entry, _ in members}


def test_a_folder_replaced_by_a_symlink_has_no_whiteout_below_it(tmp_path: Path) -> None:
    """``rm -rf /usr/lib/swap && ln -s pa /usr/lib/swap``: a whiteout ``swap/.wh.keep``
    would be read through the new link (deleting ``pa/keep``) or refused."""
    _tree(tmp_path, {"usr/lib/swap/keep": "k", "usr/lib/swap/sub/deep": "d", "usr/lib/pa/keep": "p"})
    before = snapshot(str(tmp_path), [])
    shutil.rmtree(tmp_path / "usr/lib/swap")
    os.symlink("pa", tmp_path / "usr/lib/swap")
    entries = _entries(tmp_path, before)
    assert entries["usr/lib/swap"].kind == "symlink" and entries["usr/lib/swap"].linkname == "pa"
    assert not [p for p in entries if p.startswith("usr/lib/swap/") or ".wh." in p], sorted(entries)


def test_a_folder_replaced_by_a_file_or_moved_away_has_no_whiteout_below_it(tmp_path: Path) -> None:
    _tree(tmp_path, {"a/b/c": "c", "cuda/lib64/libcudart.so": "x", "cuda/include/cuda.h": "h"})
    before = snapshot(str(tmp_path), [])
    shutil.rmtree(tmp_path / "a/b")
    (tmp_path / "a/b").write_text("a file now")
    os.rename(tmp_path / "cuda", tmp_path / "cuda-12.8")
    os.symlink("cuda-12.8", tmp_path / "cuda")
    entries = _entries(tmp_path, before)
    assert entries["a/b"].kind == "file" and entries["cuda"].kind == "symlink"
    assert "cuda-12.8/lib64/libcudart.so" in entries
    assert not [p for p in entries if ".wh." in p], sorted(entries)


def test_a_folder_emptied_and_refilled_is_opaque(tmp_path: Path) -> None:
    _tree(tmp_path, {"d/old": "o", "d/sub/x": "x", "keep/one": "1", "keep/two": "2"})
    before = snapshot(str(tmp_path), [])
    shutil.rmtree(tmp_path / "d")
    _tree(tmp_path, {"d/-first": "sorts before the marker", "d/new": "n"})
    (tmp_path / "keep/one").unlink()
    entries = _entries(tmp_path, before)
    assert entries["d/.wh..wh..opq"].kind == "file"
    assert {"d/-first", "d/new"} <= set(entries)
    assert not [p for p in entries if p.startswith("d/.wh.") and p != "d/.wh..wh..opq"]
    # a folder that keeps something of what it held gets a whiteout for what it lost
    assert "keep/.wh.one" in entries and "keep/.wh..wh..opq" not in entries


def test_no_opaque_folder_where_an_excluded_path_may_lie(tmp_path: Path) -> None:
    """What a step's layer leaves out (/var/log/*, /etc/hosts) is not in the snapshot: the
    layers below may hold it, and an opaque folder would hide it."""
    _tree(tmp_path, {"etc/a.conf": "a", "var/log/x": "x", "var/lib/y": "y", "opt/p/q": "q"})
    before = snapshot(str(tmp_path), list(DEFAULT_EXCLUDES))
    for folder in ("etc", "var", "opt/p"):
        shutil.rmtree(tmp_path / folder)
        _tree(tmp_path, {f"{folder}/new": "n"})
    entries = _entries(tmp_path, before, DEFAULT_EXCLUDES)
    assert "etc/.wh..wh..opq" not in entries and "etc/.wh.a.conf" in entries  # /etc/hosts is excluded
    assert "var/.wh..wh..opq" not in entries and "var/.wh.lib" in entries  # so is /var/log/*
    assert "opt/p/.wh..wh..opq" in entries
    entries = _entries(tmp_path, before, ("*.pyc",))  # a glob can match below any folder
    assert not [p for p in entries if p.endswith(".wh..wh..opq")], sorted(entries)


def test_hard_links_a_step_makes_stay_hard_links(tmp_path: Path) -> None:
    _tree(tmp_path, {"lower/file": "from the layer below", "other": "o"})
    before = snapshot(str(tmp_path), [])
    _tree(tmp_path, {"new/b": "made by the step"})
    os.link(tmp_path / "new/b", tmp_path / "new/a")
    os.link(tmp_path / "lower/file", tmp_path / "new/to-lower")
    entries = _entries(tmp_path, before)
    assert entries["new/a"].kind == "file" and entries["new/b"].kind == "hardlink"
    assert entries["new/b"].linkname == "new/a"
    # the file of the layer below changed too (its link count): one of its names carries it
    pair = {entries["lower/file"].kind, entries["new/to-lower"].kind}
    assert pair == {"file", "hardlink"}, pair


def test_a_cut_puts_an_opaque_marker_in_the_first_part_with_its_folders_files() -> None:
    """Parts are layers in order: a marker in a later part than its folder's files would
    hide them (the rest, last, was where every whiteout went)."""
    record = "../d/pkg.py,,\n../d/other.py,,\n"
    entries = [
        TarEntry("site", "dir", 0o755),
        TarEntry("site/d", "dir", 0o755),
        TarEntry("site/d/.wh..wh..opq", "file"),
        TarEntry("site/d/loose.txt", "file", size=10),
        TarEntry("site/d/other.py", "file", size=100),
        TarEntry("site/d/pkg.py", "file", size=100),
        TarEntry("site/x", "dir", 0o755),
        TarEntry("site/x/pkg-1.0.dist-info", "dir", 0o755),
        TarEntry("site/x/pkg-1.0.dist-info/RECORD", "file", size=len(record)),
        TarEntry("site/x/.wh.gone", "file"),
    ]
    parts = plan_cut(entries, {"site/x/pkg-1.0.dist-info/RECORD": record}, budget=1)
    assert [p.label for p in parts] == ["pkg", "rest"], parts
    assert "site/d/.wh..wh..opq" in parts[0].paths and "site/d/pkg.py" in parts[0].paths
    assert "site/d/loose.txt" in parts[1].paths and "site/x/.wh.gone" in parts[1].paths


def test_a_hard_links_header_says_what_its_target_does() -> None:
    """A tarball from elsewhere (a ``rootfs:`` base) may give a hard link another mode or
    owner than its file: podman and buildah then give the file the link's, umoci and
    squashfs keep the file's. The layer written from it says the file's in both headers."""
    from assembler.archive.layer import order_hardlinks, sorted_members

    members = [
        (TarEntry("a/file", "file", 0o2750, 65534, 65534, size=3, mtime=5), None),
        (TarEntry("b/link", "hardlink", 0o644, 0, 0, linkname="a/file", mtime=9), None),
        (TarEntry("0-first", "hardlink", 0o600, 1, 1, linkname="a/file"), None),
    ]
    out = {e.path: e for e, _ in order_hardlinks(sorted_members(members))}
    assert out["0-first"].kind == "file" and out["a/file"].kind == "hardlink" and out["b/link"].kind == "hardlink"
    for path in ("a/file", "b/link"):
        assert out[path].linkname == "0-first"
        assert (out[path].mode, out[path].uid, out[path].gid, out[path].mtime) == (0o2750, 65534, 65534, 5)
    assert (out["0-first"].mode, out["0-first"].uid) == (0o2750, 65534)


def test_a_cut_puts_a_marker_at_the_top_in_the_first_part() -> None:
    record = "../x/pkg.py,,\n"
    entries = [
        TarEntry(".wh..wh..opq", "file"),
        TarEntry("site", "dir", 0o755),
        TarEntry("site/x", "dir", 0o755),
        TarEntry("site/x/pkg.py", "file", size=100),
        TarEntry("site/y", "dir", 0o755),
        TarEntry("site/y/pkg-1.0.dist-info", "dir", 0o755),
        TarEntry("site/y/pkg-1.0.dist-info/RECORD", "file", size=len(record)),
        TarEntry("site/z.txt", "file", size=10),
    ]
    parts = plan_cut(entries, {"site/y/pkg-1.0.dist-info/RECORD": record}, budget=1)
    assert [p.label for p in parts] == ["pkg", "rest"] and ".wh..wh..opq" in parts[0].paths, parts
