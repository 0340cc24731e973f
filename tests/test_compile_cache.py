"""Compile caches through a registry (``assembler.stepcache.compile``), against the
real ``docker-registry``: two cache folders stand for two machines. No buildah here: a
folder stands for a step's kept folder (``tests/test_compile_cache_build.py`` runs steps).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from assembler.archive import chunks as ch
from assembler.cache import Cache
from assembler.compile import keptcaches, worktree
from assembler.errors import ToolError
from assembler.manifest.schema import model as m
from assembler.oci.reference import ImageName
from assembler.registry.client import Registry
from assembler.registry.types import RegistryOptions
from assembler.sign import load_private_key, load_public_key
from assembler.stepcache.compile import CompileCaches
from assembler.stepcache.trust import Trust
from tests.plugins.registry import RunningRegistry

PLAIN = RegistryOptions(tls_verify=False, backoff=0.01, max_backoff=0.05, retries=2)
TAG = "ccache-" + "ab" * 32
T0 = 1_700_000_000_000_000_001


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, fields: Mapping[str, Any]) -> None:
        self.seen.append((kind, dict(fields)))

    def warnings(self) -> list[str]:
        return [str(f["text"]) for k, f in self.seen if k == "warning"]


def _caches(root: Path, registry: RunningRegistry, *, to: bool, **more: Any) -> tuple[CompileCaches, Events]:
    events = Events()
    repo = ImageName.parse(f"{registry.host}/ccache")
    made = CompileCaches(Cache(root), target=repo if to else None, sources=[repo], options=PLAIN, report=events, **more)
    return made, events


def _build_tree(folder: Path, files: int = 120) -> None:
    """A build tree: sources older than objects, as make leaves them."""
    for i in range(files):
        for suffix, when in ((".c", T0), (".o", T0 + 10**9)):
            path = folder / f"dir{i % 5}" / f"unit{i:03}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{suffix} {i}\n".encode() * (50 + i))
            os.utime(path, ns=(when + i, when + i))
    (folder / "dir0" / "latest").symlink_to("unit000.o")


def _same_tree(a: Path, b: Path) -> None:
    left, right = ch.scan(a), ch.scan(b)
    assert [(e.rel, e.kind, e.size, e.mtime_ns, e.mode, e.link) for e in left] == [
        (e.rel, e.kind, e.size, e.mtime_ns, e.mode, e.link) for e in right
    ]


def test_exported_by_one_cache_restored_into_another(tmp_path: Path, registry: RunningRegistry) -> None:
    tree = tmp_path / "a-tree"
    _build_tree(tree)
    a, _ = _caches(tmp_path / "cache-a", registry, to=True)
    a.export(TAG, tree, "step demo")
    first = a.counts()
    assert first["compile_cache_exported"] == 1 and first["compile_cache_uploaded_chunks"] > 2, first

    b, events = _caches(tmp_path / "cache-b", registry, to=False)
    restored = tmp_path / "b-tree"
    assert b.restore(TAG, restored, "step demo")
    _same_tree(tree, restored)
    assert b.counts()["compile_cache_restored"] == 1 and not events.warnings()
    assert not b.restore("ccache-" + "cd" * 32, tmp_path / "other", "step demo"), "no entry: a miss"

    # One file changed: one chunk goes up; the others are found (their files not re-read).
    (tree / "dir2" / "unit007.o").write_bytes(b"recompiled\n")
    a.export(TAG, tree, "step demo")
    again = a.counts()
    assert again["compile_cache_uploaded_chunks"] - first["compile_cache_uploaded_chunks"] == 1, again
    assert again["compile_cache_skipped_chunks"] == first["compile_cache_uploaded_chunks"] - 1, again
    a.export(TAG, tree, "step demo")
    assert a.counts()["compile_cache_exported"] == 2, "an unchanged folder puts no new manifest"
    for caches in (a, b):
        caches.close()


def test_a_restore_told_to_stop_gives_up_between_chunks_and_leaves_nothing(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    """A step fails, or Ctrl-C, while its kept folder is restored (beside the devel image
    being brought in): the restore stops before its next chunk, leaves the folder absent (a
    step never starts from half a tree) and nothing in the cache's tmp/, and warns of
    nothing: the build is stopping already."""
    tree = tmp_path / "a-tree"
    _build_tree(tree)
    a, _ = _caches(tmp_path / "cache-a", registry, to=True)
    a.export(TAG, tree, "step demo")
    assert a.counts()["compile_cache_uploaded_chunks"] > 2
    b, events = _caches(tmp_path / "cache-b", registry, to=False)
    asked: list[int] = []

    def stop() -> bool:  # true from the second chunk on
        asked.append(1)
        return len(asked) > 1

    restored = tmp_path / "b-tree"
    assert not b.restore(TAG, restored, "step demo", stop=stop)
    assert len(asked) == 2 and not restored.exists() and not events.warnings()
    assert list((tmp_path / "cache-b" / "tmp").iterdir()) == []
    assert b.counts()["compile_cache_restored"] == 0
    assert b.restore(TAG, restored, "step demo")  # not stopped: all of it
    _same_tree(tree, restored)
    for caches in (a, b):
        caches.close()


def test_kept_folders_are_restored_while_the_devel_image_is_brought_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh runner restores a step's kept folders and brings in its devel image (the
    toolchain layer and ``buildah pull``) at once: neither needs the other. When the devel
    image fails, the restore is told to stop and the step fails with the image's error."""
    import threading
    import time

    from assembler.compile import steps
    from assembler.manifest.schema import model as m

    both = threading.Barrier(2, timeout=20)  # each waits for the other: only at once do both pass
    stopped: list[bool] = []

    class Folders:
        wait_for_stop = False

        def restore(self, tag: str, folder: Path, what: str, *, stop: Any = bool) -> bool:
            both.wait()
            deadline = time.monotonic() + (20 if self.wait_for_stop else 0)
            while not stop() and time.monotonic() < deadline:
                time.sleep(0.01)
            stopped.append(stop())
            return False

        def export(self, tag: str, folder: Path, what: str) -> None:
            pass

    def devel_image(step: m.CompileStep, base: object, ws: object, log_path: Path) -> str:
        both.wait()
        return "devel-image"

    monkeypatch.setattr(steps, "_devel_image", devel_image)
    monkeypatch.setattr(steps, "_run_compile_step", lambda step, **kw: {"image": kw["image"]})
    ws = steps.Workspace(buildah=None, cache=Cache(tmp_path / "cache"), epoch=0, compression="zstd", folders=Folders())  # type: ignore[arg-type]
    step = m.CompileStep(name="demo", base="devel", cache=["/build"], run=["true"])
    run = {"base": None, "sources": {}, "inputs": [], "ws": ws, "key": "k" * 64, "tree_key": "t" * 64}
    assert steps.run_compile_step(step, **run) == {"image": "devel-image"}  # type: ignore[arg-type]
    assert stopped == [False]

    def failing(step: m.CompileStep, base: object, ws: object, log_path: Path) -> str:
        both.wait()
        raise ToolError("buildah pull failed")

    monkeypatch.setattr(steps, "_devel_image", failing)
    Folders.wait_for_stop = True
    with pytest.raises(ToolError, match="buildah pull failed"):
        steps.run_compile_step(step, **{**run, "tree_key": "u" * 64})  # type: ignore[arg-type]
    assert stopped == [False, True]  # the restore saw the stop once the image failed


def _corrupt(registry: RunningRegistry) -> None:
    blobs = sorted(
        (registry.root / "docker/registry/v2/blobs/sha256").glob("*/*/data"), key=lambda p: -p.stat().st_size
    )
    data = bytearray(blobs[0].read_bytes())  # the largest: a chunk, not the config
    data[len(data) // 2] ^= 0xFF
    blobs[0].write_bytes(bytes(data))


def test_a_corrupt_chunk_is_a_warning_and_an_empty_folder(tmp_path: Path, registry: RunningRegistry) -> None:
    tree = tmp_path / "a-tree"
    _build_tree(tree, files=30)
    a, _ = _caches(tmp_path / "cache-a", registry, to=True)
    a.export(TAG, tree, "step demo")
    _corrupt(registry)
    b, events = _caches(tmp_path / "cache-b", registry, to=False)
    restored = tmp_path / "b-tree"
    assert not b.restore(TAG, restored, "step demo")
    assert ch.folder_is_empty(restored)
    [warning] = events.warnings()
    assert TAG in warning and "restoring failed" in warning and "sha256" in warning, warning
    assert not list((tmp_path / "cache-b" / "tmp").iterdir()), "the work folder is gone"


def test_cache_max_evicts_the_oldest_files(tmp_path: Path, registry: RunningRegistry) -> None:
    tree = tmp_path / "a-tree"
    _build_tree(tree, files=20)
    files = [e for e in ch.scan(tree) if e.kind == "file"]
    oldest = sorted(files, key=lambda e: e.mtime_ns)[:3]
    limit = sum(e.size for e in files) - sum(e.size for e in oldest)
    a, events = _caches(tmp_path / "cache-a", registry, to=True, max_bytes=limit)
    a.export(TAG, tree, "step demo")
    [warning] = events.warnings()
    assert "3 oldest files" in warning and "--cache-max" in warning, warning
    b, _ = _caches(tmp_path / "cache-b", registry, to=False)
    restored = tmp_path / "b-tree"
    assert b.restore(TAG, restored, "step demo")
    here = {e.rel for e in ch.scan(restored) if e.kind == "file"}
    assert here == {e.rel for e in files} - {e.rel for e in oldest}


def _keypair() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def test_under_cache_trust_only_a_signed_entry_is_restored(tmp_path: Path, registry: RunningRegistry) -> None:
    tree = tmp_path / "a-tree"
    _build_tree(tree, files=10)
    private, public = _keypair()
    trusted = Trust(keys=(load_public_key(public, what="test key"),))
    a, _ = _caches(tmp_path / "cache-a", registry, to=True)  # unsigned
    a.export(TAG, tree, "step demo")
    b, events = _caches(tmp_path / "cache-b", registry, to=False, trust=trusted)
    assert not b.restore(TAG, tmp_path / "b-tree", "step demo")
    assert "no signature" in events.warnings()[0], events.warnings()

    signer = Trust(signer=load_private_key(private, password=None, what="test key"))
    a2, _ = _caches(tmp_path / "cache-a", registry, to=True, trust=signer)
    a2.export(TAG, tree, "step demo")  # the same entry, now signed
    c, events = _caches(tmp_path / "cache-c", registry, to=False, trust=trusted)
    assert c.restore(TAG, tmp_path / "c-tree", "step demo"), events.warnings()
    _same_tree(tree, tmp_path / "c-tree")


def test_a_folder_restored_unchecked_is_never_signed_by_a_later_run(tmp_path: Path, registry: RunningRegistry) -> None:
    """Signature laundering (issue 32): machine B restores a step's kept folder without
    ``--cache-trust``, from an entry anyone who can push may have made. Where it came from
    stays beside it in B's cache: a later run on B, with ``--cache-sign``, exports it (a step
    built in it since) unsigned, and a ``--cache-trust`` machine does not restore it. Once
    the folder is emptied (``--rebuild``) and built here, B's key signs it."""
    private, public = _keypair()
    signer = Trust(signer=load_private_key(private, password=None, what="test key"))
    trusted = Trust(keys=(load_public_key(public, what="test key"),))
    tree = tmp_path / "a-tree"
    _build_tree(tree, files=10)
    a, _ = _caches(tmp_path / "cache-a", registry, to=True)  # no key: an unsigned entry
    a.export(TAG, tree, "step demo")

    b_cache, tree_key = Cache(tmp_path / "cache-b"), "t" * 64
    step = m.CompileStep(name="demo", base="devel", cache=["/build"], run=["true"])
    with worktree.kept_folder(b_cache, step.name, tree_key) as kept:  # run 1: restored unchecked
        b1, events = _caches(tmp_path / "cache-b", registry, to=False)
        assert b1.restore(TAG, kept, "step demo") and not events.warnings()
        b1.close()
    [origin] = keptcaches.origins(step, cache=b_cache, tree_key=tree_key)
    assert (origin.repository, origin.tag, origin.signer) == (f"{registry.host}/ccache", TAG, "")
    mine = ImageName.parse(f"{registry.host}/mine")

    def later_run(*, fresh: bool) -> tuple[bool, list[str]]:
        """A later run on B with --cache-sign (a step builds in the folder, which is then
        exported to B's repository); whether a --cache-trust machine restores it, its warnings."""
        with worktree.kept_folder(b_cache, step.name, tree_key, fresh=fresh) as kept:
            if fresh:
                _build_tree(kept, files=10)
            (kept / "dir1" / "unit001.o").write_bytes(b"built on machine B\n")
            b2 = CompileCaches(b_cache, target=mine, sources=[mine], options=PLAIN, report=Events(), trust=signer)
            b2.export(TAG, kept, "step demo")
            b2.close()
        c_root, seen = tmp_path / f"cache-c-{fresh}", Events()
        c = CompileCaches(Cache(c_root), target=None, sources=[mine], options=PLAIN, report=seen, trust=trusted)
        restored = c.restore(TAG, c_root / "tree", "step demo")
        c.close()
        return restored, seen.warnings()

    restored, warnings = later_run(fresh=False)
    assert not restored, "B's key signed a folder it restored unchecked"
    [warning] = warnings
    assert "no signature" in warning, warning
    with Registry(registry.host, options=PLAIN) as reg:
        assert reg.fetch_manifest("mine", TAG)  # exported all the same, unsigned
    restored, warnings = later_run(fresh=True)  # emptied and built here: B vouches for it
    assert restored and not warnings, warnings
    assert keptcaches.origins(step, cache=b_cache, tree_key=tree_key) == []
