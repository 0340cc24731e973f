"""``assemble cache prune`` prunes the cache's buildah storage too: leftover working
containers always go (prune holds the cache alone: no build is running), images go with
the cache blobs that reference them, and a build afterwards still gives the same digest.
Real buildah storage, filled by a real build with a compile step.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import OWN_STORAGE
from tests.helpers import layout_digest, run_cli, small_project
from tests.test_cache_cli import COPY_ONLY, WITH_STEPS

STALE = "localhost/buildah/layout:" + "0" * 64  # named as a pulled base no cache blob references


def buildah(root: Path, *args: str) -> str:
    storage = root / "cache" / "buildah"
    argv = [
        "buildah",
        "--root",
        str(storage / "root"),
        "--runroot",
        str(storage / "run"),
        "--storage-driver",
        "overlay",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def stored(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    # buildah prints "null" (or nothing) for none.
    images = json.loads(buildah(root, "images", "--json") or "null") or []
    containers = json.loads(buildah(root, "containers", "--json") or "null") or []
    return images, containers


def build(root: Path, out: str) -> str:
    # The cache's own storage (not the test process's shared one): what prune prunes.
    ran = run_cli(["s.yaml", "--cache", str(root / "cache"), "-o", f"oci:{out}:x"], cwd=root, env=OWN_STORAGE)
    assert ran.code == 0, str(ran)
    return layout_digest(root / out, "x")


def prune(root: Path, *args: str) -> Any:
    ran = run_cli(["cache", "prune", *args, "--json", "--cache", str(root / "cache")], cwd=root)
    assert ran.code == 0 and "Traceback" not in ran.err, str(ran)
    return ran.json


def test_prune_removes_leftover_containers_and_unreferenced_images(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    root = small_project(tmp_path / "p", COPY_ONLY)
    # The step needs a shell only: the runtime base serves as devel too (this storage is the
    # cache's own, and the test pulls into it twice; 50 MB each time, not 300).
    (root / "s.yaml").write_text(WITH_STEPS.format(devel=demo_bases["runtime"], runtime=demo_bases["runtime"]))
    first = build(root, "out1")
    images, _ = stored(root)
    assert images, "the compile step's base is in buildah's storage"
    # Handed over through a layout made for the pull and gone after it: no second copy of the base.
    assert not (root / "cache" / "buildah" / "layout").exists()
    assert not list((root / "cache" / "tmp").glob("handover-*"))
    # The compile step's base: buildah keeps its manifest, which is a blob of the cache.
    blobs = root / "cache" / "blobs" / "sha256"
    bases = {i["id"] for i in images if (blobs / i["digest"].split(":", 1)[1]).is_file()}
    base_id = sorted(bases)[0]
    # What a killed build leaves: a working container, and an image no cache blob references.
    buildah(root, "from", "--pull=never", "--name", "assemble-killed-step", base_id)
    buildah(root, "commit", "--quiet", "assemble-killed-step", STALE)
    buildah(root, "from", "--pull=never", "--name", "assemble-killed-2", base_id)

    dry = prune(root, "--older-than", "30d", "--dry-run")
    assert len(dry["buildah"]["containers"]) == 2 and dry["buildah"]["images"] == [STALE]
    assert len(stored(root)[1]) == 2, "a dry run removes nothing"

    kept = prune(root, "--older-than", "30d")  # nothing in the cache is that old
    assert kept["removed"] == [] and kept["buildah"]["images"] == [STALE]
    images, containers = stored(root)
    assert containers == [] and not [i for i in images if STALE in (i.get("names") or [])]
    assert bases <= {i["id"] for i in images}, "the bases the cache still references stay"

    everything = prune(root, "--all")
    assert everything["buildah"]["kept"] == 0 and everything["buildah"]["images"]
    assert stored(root) == ([], [])
    assert not (root / "cache" / "buildah" / "layout").exists()
    assert build(root, "out2") == first, "a build after the prune pulls its base again, same digest"
