"""What the suite makes once per machine and inputs, under the test cache's lock: the demo's
cold build (tests/plugins/demo.py) and manifests/cuda.yaml's bases (test_cuda_toolkit.py).

``kept(name, key, make)`` returns ``TEST_CACHE/NAME-KEY``, calling ``make(folder)`` into a
temporary folder first when no test process made it yet (the suite's workers wait for the
first: one builds, the others take its result), then renaming it into place, so a folder of
that name is always whole. A machine keeps one folder per name: a change of inputs (a new
key) removes the older ones. ``inputs_key`` is the digest of what decides such a build's
bytes: files by path, mode and content, with the tools' versions and Python's added.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tests.conftest import TEST_CACHE
from tests.helpers import ROOT

SKIP = frozenset({"__pycache__", "target", "build"})


def inputs_key(parts: Iterable[str], *extra: bytes) -> str:
    """The digest of the files under ``parts`` (paths under the checkout: folders walked,
    build leftovers skipped), ``extra`` and buildah's and Python's versions."""
    h = hashlib.sha256()
    for part in parts:
        top = ROOT / part
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.is_file() and not SKIP & set(path.relative_to(ROOT).parts):
                h.update(f"{path.relative_to(ROOT)}\0{path.stat().st_mode & 0o111}\0".encode())
                h.update(hashlib.sha256(path.read_bytes()).digest())
    for more in extra:
        h.update(more)
    buildah = subprocess.run(["buildah", "--version"], capture_output=True, text=True, check=True).stdout
    h.update(f"{buildah}\0{sys.version}".encode())
    return h.hexdigest()[:16]


def kept(name: str, key: str, make: Callable[[Path], None], done: str) -> Path:
    """``TEST_CACHE/NAME-KEY``, made by ``make`` unless a folder holding ``done`` is there."""
    folder = TEST_CACHE / f"{name}-{key}"
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / done).exists():
            return folder
        for old in TEST_CACHE.glob(f"{name}-*"):
            shutil.rmtree(old, ignore_errors=True)
        tmp = TEST_CACHE / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        make(tmp)
        if not (tmp / done).exists():
            raise AssertionError(f"{name}: making it left no {done}")
        tmp.rename(folder)
    return folder
