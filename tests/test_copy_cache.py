"""A rebuild of unchanged host files proves nothing changed without reading them: the
layer of a ``copy:`` is found by what ``stat`` says of its files (as git's index does),
and its blob, read and hashed once, is known by its file's state until that changes.
Whatever changes a file's bytes changes its ctime, which no tool sets back."""

from __future__ import annotations

import io
import os
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from assembler.archive import tree
from assembler.archive.tree import HostFile, fingerprint, iter_host_members, settled
from assembler.cache.store import Store
from tests.helpers import manifest_of, read_blob, run_cli_here, small_project, uncompressed

MANIFEST = """\
name: copies
bases: {b: 'rootfs:base.tar'}
image:
  base: b
  layers:
    - copy: {from: ./weights/, to: /models/tiny/}
outputs: ['oci:out:x']
"""


def _project(root: Path) -> Path:
    small_project(root, MANIFEST)
    (root / "weights").mkdir()
    (root / "weights/model.bin").write_bytes(os.urandom(300_000))
    (root / "weights/config.json").write_text('{"layers": 2}\n')
    return root


class Reads:
    """Every host file a layer writer opens and every cache blob opened, from now on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.files: list[str] = []
        self.blobs: list[str] = []
        open_file, open_blob = HostFile.__call__, Store.open_blob

        def file(opener: HostFile) -> AbstractContextManager[BinaryIO]:
            self.files.append(opener.path)
            return open_file(opener)

        def blob(store: Store, digest: str) -> BinaryIO:
            self.blobs.append(digest)
            return open_blob(store, digest)

        monkeypatch.setattr(HostFile, "__call__", file)
        monkeypatch.setattr(Store, "open_blob", blob)

    def clear(self) -> None:
        self.files.clear()
        self.blobs.clear()


def _build(root: Path) -> Any:
    ran = run_cli_here(["m.yaml", "--cache", str(root / "cache"), "--json", "--no-sbom"], cwd=root)
    assert ran.code == 0, str(ran)
    return ran


def _top(root: Path) -> str:
    return str(manifest_of(root / "out", "x")["layers"][-1]["digest"])


def test_a_rebuild_of_unchanged_files_reads_neither_them_nor_their_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second build opens no file and no blob of the copy layer, and takes it as
    cached. A file rewritten with bytes of the same size and its mtime set back is seen
    (its ctime moved): the layer is written again, with the new bytes. A cached blob
    damaged in place, its mtime set back, is read, found damaged and made again."""
    monkeypatch.setattr(tree, "RACY_NS", 0)  # the files were written a moment ago: settled at once here
    root = _project(tmp_path / "p")
    reads = Reads(monkeypatch)
    _build(root)
    first = _top(root)
    reads.clear()
    again = _build(root)
    assert again.json["layers"][-1]["origin"] == "cached"
    assert reads.files == [] and first not in reads.blobs, (reads.files, reads.blobs)
    assert _top(root) == first

    model = root / "weights/model.bin"
    before = model.stat()
    model.write_bytes(os.urandom(before.st_size))  # same size
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: only ctime tells
    reads.clear()
    changed = _build(root)
    second = _top(root)
    assert second != first and changed.json["layers"][-1]["origin"] == "built"
    assert uncompressed(read_blob(root / "out", second)).find(model.read_bytes()[:4096]) > 0

    blob = root / "cache/blobs/sha256" / second.split(":")[1]
    stamp = blob.stat()
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    os.utime(blob, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    reads.clear()
    remade = _build(root)
    assert second in reads.blobs  # its state changed: read, and found damaged
    assert _top(root) == second and remade.json["layers"][-1]["origin"] == "built"
    reads.clear()
    _build(root)
    assert reads.files == [] and second not in reads.blobs


def test_files_changed_just_before_or_while_they_are_read_are_not_remembered_by_their_stat(tmp_path: Path) -> None:
    """A fingerprint is remembered only when every file's last change is well before the
    read began (a coarse clock could give a second change the same times), and when
    nothing changed while the files were read."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"one")
    (src / "b").write_bytes(b"two")
    members = list(iter_host_members(src, "/opt/", git_modes=True, mtime=0))
    prints = fingerprint(members)
    assert prints is not None
    now = time.time_ns()
    assert not settled(members, prints, now)  # just written
    later = now + tree.RACY_NS + 1_000_000_000
    assert settled(members, prints, later)
    time.sleep(0.05)  # past a tick of a coarse file clock (kernels before 6.13 stamp times by the tick)
    (src / "b").write_bytes(b"TWO")  # same size, new bytes: ctime moves
    assert not settled(members, prints, later)
    assert fingerprint(list(iter_host_members(src, "/opt/", git_modes=True, mtime=0))) != prints
    # Members whose data is not a host file have no fingerprint.
    assert fingerprint([(members[-1][0], lambda: nullcontext(io.BytesIO(b"one")))]) is None
