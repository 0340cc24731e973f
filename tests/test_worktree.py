"""Working copies of sources (assembler.compile.worktree): what an incremental build relies on."""

from __future__ import annotations

import os
import time
from pathlib import Path

from assembler.compile import worktree
from assembler.compile.sources import source_filter


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_sync_copies_keeps_and_removes(tmp_path: Path) -> None:
    src, copy = tmp_path / "src", tmp_path / "cache" / "src-app"
    _tree(src, {"a.c": "int a;", "lib/b.c": "int b;", "gone.c": "x", ".git/HEAD": "ref", "old/x.c": "x"})
    os.symlink("a.c", src / "link.c")
    stats = worktree.sync(src, copy, keep=source_filter())
    assert stats.copied == 4 and (copy / "lib" / "b.c").read_text() == "int b;"
    assert os.readlink(copy / "link.c") == "a.c"
    assert not (copy / ".git").exists()  # what the key leaves out, the build does not see
    # The build writes into its tree; the copy is writable.
    (copy / "generated.h").write_text("// made by the build")
    mtime_a = (copy / "a.c").stat().st_mtime_ns
    time.sleep(0.01)
    # Edit one file, delete one file and one folder, re-create one with the same content.
    (src / "lib" / "b.c").write_text("int b = 2;")
    (src / "gone.c").unlink()
    (src / "old" / "x.c").unlink()
    (src / "old").rmdir()
    (src / "a.c").unlink()
    (src / "a.c").write_text("int a;")
    before = time.time_ns()
    stats = worktree.sync(src, copy, keep=source_filter())
    assert (stats.copied, stats.removed) == (1, 3)  # gone.c, old/x.c, old
    assert (copy / "lib" / "b.c").read_text() == "int b = 2;"
    assert (copy / "lib" / "b.c").stat().st_mtime_ns >= before  # newer than any build output
    assert (copy / "a.c").stat().st_mtime_ns == mtime_a  # same content: make rebuilds nothing
    assert not (copy / "gone.c").exists() and not (copy / "old").exists()
    assert (copy / "generated.h").read_text() == "// made by the build"


def test_sync_restores_what_the_build_changed(tmp_path: Path) -> None:
    """A step that patches its source in place must see the pristine file next time."""
    src, copy = tmp_path / "src", tmp_path / "copy"
    _tree(src, {"a.c": "int a;"})
    worktree.sync(src, copy, keep=source_filter())
    (copy / "a.c").write_text("int a; /* patched */")
    worktree.sync(src, copy, keep=source_filter())
    assert (copy / "a.c").read_text() == "int a;"


def test_sync_older_source_times_still_rebuild(tmp_path: Path) -> None:
    """A changed file whose source time is older (another checkout) still looks new."""
    src, copy = tmp_path / "src", tmp_path / "copy"
    _tree(src, {"a.c": "one"})
    worktree.sync(src, copy, keep=source_filter())
    (src / "a.c").write_text("two")
    os.utime(src / "a.c", ns=(0, 0))
    worktree.sync(src, copy, keep=source_filter())
    assert (copy / "a.c").read_text() == "two" and (copy / "a.c").stat().st_mtime > time.time() - 60


def test_sync_from_another_folder_compares_content(tmp_path: Path) -> None:
    """A git source lives at one folder per commit: a new commit is synced by content, what
    the build wrote stays, and files with the same content keep their time."""
    one, two, copy = tmp_path / "one", tmp_path / "two", tmp_path / "copy"
    _tree(one, {"a.c": "same", "b.c": "1", "only-one.c": "1"})
    _tree(two, {"a.c": "same", "b.c": "2"})
    worktree.sync(one, copy, keep=source_filter())
    (copy / "build-output.o").write_text("kept")
    mtime_a = (copy / "a.c").stat().st_mtime_ns
    stats = worktree.sync(two, copy, keep=source_filter())
    assert (stats.copied, stats.kept, stats.removed) == (1, 1, 1)
    assert sorted(p.name for p in copy.iterdir()) == ["a.c", "b.c", "build-output.o"]
    assert (copy / "b.c").read_text() == "2" and (copy / "a.c").stat().st_mtime_ns == mtime_a


def test_same_size_and_mtime_but_other_content_is_copied(tmp_path: Path) -> None:
    """cp -p / rsync -a / tar keep size and mtime: the copy must still follow the content."""
    src, copy = tmp_path / "src", tmp_path / "copy"
    _tree(src, {"a.c": "one"})
    worktree.sync(src, copy, keep=source_filter())
    st = (src / "a.c").stat()
    (src / "a.c").write_text("two")
    os.utime(src / "a.c", ns=(st.st_atime_ns, st.st_mtime_ns))
    worktree.sync(src, copy, keep=source_filter())
    assert (copy / "a.c").read_text() == "two"


def test_a_folder_that_became_a_link_removes_nothing_through_it(tmp_path: Path) -> None:
    src, copy = tmp_path / "src", tmp_path / "copy"
    _tree(src, {"a/x": "old", "b/x": "keep me"})
    worktree.sync(src, copy, keep=source_filter())
    for p in (src / "a" / "x", src / "a"):
        p.unlink() if p.is_file() else p.rmdir()
    os.symlink("b", src / "a")
    worktree.sync(src, copy, keep=source_filter())
    assert (copy / "b" / "x").read_text() == "keep me" and os.readlink(copy / "a") == "b"


def test_an_interrupted_sync_starts_again_from_empty(tmp_path: Path) -> None:
    src, copy = tmp_path / "src", tmp_path / "copy"
    _tree(src, {"a.c": "1"})
    worktree.sync(src, copy, keep=source_filter())
    (copy / "stray.py").write_text("copied by a sync that was killed")
    state = copy.parent / f"{copy.name}{worktree.STATE}"
    state.write_text(state.read_text().replace('"complete": true', '"complete": false'))
    worktree.sync(src, copy, keep=source_filter())
    assert sorted(p.name for p in copy.iterdir()) == ["a.c"]


def test_kept_folder_is_locked_and_fresh_empties_it(tmp_path: Path) -> None:
    import fcntl

    from assembler.cache import Cache

    cache = Cache(tmp_path / "cache")
    with worktree.kept_folder(cache, "step", "a" * 64) as kept:
        (kept / "obj.o").write_text("x")
        with open(kept.parent / f"{kept.name}.lock") as lock:  # held: another build would wait
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("the kept folder is not locked while in use")
            except BlockingIOError:
                pass
    with worktree.kept_folder(cache, "step", "a" * 64) as kept:
        assert (kept / "obj.o").exists()
    with worktree.kept_folder(cache, "step", "a" * 64, fresh=True) as kept:
        assert not (kept / "obj.o").exists()
    # Older definitions beyond the newest few go, unless in use.
    for i in range(worktree.KEEP_DEFINITIONS + 2):
        with worktree.kept_folder(cache, "step", f"{i:x}" * 64):
            pass
    folders = [p for p in (cache.root / "step-caches" / "step").iterdir() if p.is_dir()]
    assert len(folders) == worktree.KEEP_DEFINITIONS


def test_sync_excludes_and_read_only_folders(tmp_path: Path) -> None:
    src, copy = tmp_path / "src", tmp_path / "copy"
    _tree(src, {"target/debug/x": "big", "ro/f.c": "x"})
    os.chmod(src / "ro", 0o555)
    try:
        worktree.sync(src, copy, keep=source_filter(("target",)))
    finally:
        os.chmod(src / "ro", 0o755)
    assert not (copy / "target").exists()
    (copy / "ro" / "new.o").write_text("the build can write here")


def test_folder_digest_is_remembered_until_a_file_changes(tmp_path: Path) -> None:
    from assembler.cache import Cache
    from assembler.compile.sources import path_source, tree_digest
    from assembler.manifest.schema import model as m

    src = tmp_path / "src"
    _tree(src, {"a.c": "int a;", "lib/b.c": "int b;"})
    cache = Cache(tmp_path / "cache")
    spec = m.PathSource(path=str(src))
    first = path_source("s", spec, base_dir=tmp_path, cache=cache)
    assert first.digest == tree_digest(src)
    assert path_source("s", spec, base_dir=tmp_path, cache=cache).digest == first.digest
    # Same size, same mtime, other content: ctime still tells.
    st = (src / "lib" / "b.c").stat()
    (src / "lib" / "b.c").write_text("int c;")
    os.utime(src / "lib" / "b.c", ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = path_source("s", spec, base_dir=tmp_path, cache=cache)
    assert changed.digest == tree_digest(src) != first.digest
