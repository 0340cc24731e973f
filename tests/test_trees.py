"""Artifact layers mounted by steps running at the same time are unpacked once
(:mod:`assembler.compile.trees`): TGI's stand-in ran kernel steps two at a time, each
unpacking its own 7.7 GB copy of the venv and CUDA prefix it mounts, and filled the disk."""

from __future__ import annotations

import io
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

import pytest

from assembler.archive.layer import Member, with_parents, write_layer
from assembler.archive.tar import TarEntry
from assembler.cache import Cache
from assembler.compile import trees as trees_module
from assembler.compile.trees import Trees
from assembler.oci.layer import Layer


def _layer(cache: Cache, text: bytes) -> Layer:
    def opener() -> AbstractContextManager[BinaryIO]:
        return io.BytesIO(text)

    members: list[Member] = [(TarEntry("opt/venv/bin/python", "file", size=len(text), mode=0o755), opener)]
    with cache.blob_writer() as w:
        return write_layer(with_parents(members, epoch=0), w, compression="zstd", epoch=0)


def test_steps_mounting_one_layer_at_once_share_one_folder_removed_after_the_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, trees = Cache(tmp_path / "cache"), Trees()
    venv, other = _layer(cache, b"#!venv\n"), _layer(cache, b"#!other\n")
    unpacks: list[Path] = []
    real = trees_module.extract
    monkeypatch.setattr(trees_module, "extract", lambda f, root, what: (unpacks.append(root), real(f, root, what=what)))
    started, release = threading.Barrier(3), threading.Event()
    seen: list[Path] = []

    def step() -> None:  # a step that mounts the venv while the others do
        with trees.unpacked(cache, venv, "artifact torch.venv") as root:
            seen.append(root)
            started.wait(10)
            release.wait(10)

    threads = [threading.Thread(target=step) for _ in range(2)]
    for t in threads:
        t.start()
    started.wait(10)
    assert len(unpacks) == 1 and seen[0] == seen[1] == unpacks[0]  # one folder, unpacked once
    assert (seen[0] / "opt/venv/bin/python").read_bytes() == b"#!venv\n"
    with trees.unpacked(cache, other, "artifact other") as root:  # another layer: its own folder
        assert root != seen[0] and len(trees) == 2
    release.set()
    for t in threads:
        t.join(10)
    assert not seen[0].exists() and len(trees) == 0  # removed after the last step is done
    with trees.unpacked(cache, venv, "artifact torch.venv") as again:  # a later step unpacks it anew
        assert (again / "opt/venv/bin/python").read_bytes() == b"#!venv\n" and len(unpacks) == 3


def test_a_layer_that_fails_to_unpack_leaves_no_folder_and_the_next_step_tries_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, trees = Cache(tmp_path / "cache"), Trees()
    venv = _layer(cache, b"#!venv\n")
    real = trees_module.extract

    def broken(f: BinaryIO, root: Path, what: str) -> None:
        (root / "half").write_text("written before the failure")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(trees_module, "extract", broken)
    with pytest.raises(OSError, match="No space left"), trees.unpacked(cache, venv, "artifact torch.venv"):
        pass
    assert len(trees) == 0 and not any((tmp_path / "cache" / "tmp").glob("tree-*"))
    monkeypatch.setattr(trees_module, "extract", real)
    with trees.unpacked(cache, venv, "artifact torch.venv") as root:
        assert (root / "opt/venv/bin/python").read_bytes() == b"#!venv\n"
