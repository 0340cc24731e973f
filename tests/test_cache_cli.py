"""``assemble cache ls|verify|prune`` on real caches filled by real builds.

The invariant every test checks after a prune: each entry left names only blobs that are
in the cache (a blob goes with the last entry naming it), and the image still builds,
to the same digest. Ages are made by setting an entry's last-use stamp (its mtime) back,
as time passing would.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from assembler.cache.maintain import parse_duration, parse_size
from assembler.errors import InputError
from tests.helpers import layout_digest, manifest_of, run_cli, run_cli_here, small_project

COPY_ONLY = """\
name: cached
bases: {b: 'rootfs:base.tar'}
image:
  base: b
  layers:
    - copy: {from: ./a.txt, to: /a.txt}
    - copy: {from: ./b.txt, to: /b.txt}
"""

WITH_STEPS = """\
name: stepped
bases:
  devel: oci:{devel}:latest
  runtime: oci:{runtime}:latest
compile:
  - name: make
    base: devel
    run: ['mkdir -p /out && echo made > /out/made.txt']
    artifacts:
      made: {{path: /out/made.txt, to: /app/made.txt}}
image:
  base: runtime
  layers:
    - run: ['echo ran > /ran.txt']
    - artifact: make.made
    - copy: {{from: ./a.txt, to: /a.txt}}
"""


def copy_project(root: Path) -> Path:
    return small_project(root, COPY_ONLY)


def build(root: Path, out: str, manifest: str = "m.yaml") -> str:
    ran = run_cli([manifest, "--cache", str(root / "cache"), "-o", f"oci:{out}:x"], cwd=root)
    assert ran.code == 0, str(ran)
    return layout_digest(root / out, "x")


def cache(root: Path, *args: str) -> Any:
    ran = run_cli(["cache", *args, "--cache", str(root / "cache")], cwd=root)
    assert "Traceback" not in ran.err, str(ran)
    return ran


def items(root: Path) -> list[dict[str, Any]]:
    ran = cache(root, "ls", "--json")
    assert ran.code == 0, str(ran)
    return list(ran.json["items"])


def blob_file(root: Path, digest: str) -> Path:
    return root / "cache" / "blobs" / "sha256" / digest.split(":", 1)[1]


def assert_consistent(root: Path) -> None:
    """Every entry left names only blobs that are there."""
    for item in items(root):
        if item["kind"] in ("step", "layer", "base"):
            missing = [d for d in item["blobs"] if not blob_file(root, d).is_file()]
            assert not missing, (item, missing)


def age(item: dict[str, Any], days: float) -> None:
    then = time.time() - days * 86400
    os.utime(item["path"], (then, then))


@pytest.mark.integration  # seconds
def test_ls_lists_entries_by_kind_and_verify_drops_a_flipped_blob(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    first = build(root, "out1")
    found = items(root)
    kinds = {i["kind"] for i in found}
    assert {"layer", "base", "memo"} <= kinds, kinds
    assert all(i["size"] > 0 and i["last_use"] > time.time() - 3600 for i in found), found
    text = cache(root, "ls")
    assert text.code == 0 and "layer" in text.out and "total:" in text.out, str(text)
    clean = cache(root, "verify")
    assert clean.code == 0 and "0 corrupt" in clean.out, str(clean)

    layer = manifest_of(root / "out1", "x")["layers"][1]["digest"]
    with open(blob_file(root, layer), "r+b") as f:  # one byte flipped in place, as a disk does
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0xFF]))
    dry = cache(root, "verify", "--dry-run")
    assert dry.code == 1 and layer in dry.out and blob_file(root, layer).exists(), str(dry)
    bad = cache(root, "verify")
    assert bad.code == 1 and layer in bad.out, str(bad)
    assert "dangling" in bad.out, str(bad)  # the copy layer's entry named it: dropped too
    assert not blob_file(root, layer).exists()
    assert cache(root, "verify").code == 0
    # The next build makes the layer again, quietly, to the same image.
    assert build(root, "out2") == first
    assert blob_file(root, layer).is_file()
    assert cache(root, "verify").code == 0


@pytest.mark.integration  # seconds
def test_prune_by_age_keeps_blobs_of_kept_entries(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    first = build(root, "out1")
    found = items(root)
    base = next(i for i in found if i["kind"] == "base")
    layers = [i for i in found if i["kind"] == "layer"]
    age(base, 10)
    ran = cache(root, "prune", "--older-than", "7d", "--dry-run")
    assert ran.code == 0 and "would remove 1 items" in ran.out, str(ran)
    assert Path(base["path"]).exists()
    ran = cache(root, "prune", "--older-than", "7d")
    assert ran.code == 0 and "removed 1 items" in ran.out, str(ran)
    assert not Path(base["path"]).exists()
    assert not blob_file(root, base["blobs"][0]).exists()  # the base's manifest went with it
    for layer in layers:
        assert all(blob_file(root, d).is_file() for d in layer["blobs"]), layer
    assert_consistent(root)
    assert build(root, "out2") == first


@pytest.mark.integration  # seconds
def test_prune_to_a_size_removes_least_recently_used_first(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    first = build(root, "out1")
    found = items(root)
    total = cache(root, "ls", "--json").json["total"]
    for n, item in enumerate(sorted(found, key=lambda i: i["name"])):
        age(item, 30 - n / 10)  # distinct last uses
    oldest = min(found, key=lambda i: os.stat(i["path"]).st_mtime)
    ran = cache(root, "prune", "--keep-storage", str(total - 1), "--json")
    assert ran.code == 0, str(ran)
    removed = ran.json["removed"]
    assert [r["path"] for r in removed] == [oldest["path"]], removed
    assert ran.json["left"] <= total - 1
    assert_consistent(root)
    assert cache(root, "prune", "--keep-storage", "0").code == 0
    assert cache(root, "ls", "--json").json["total"] == 0
    assert build(root, "out2") == first


def test_prune_all_of_a_stepped_build_spares_a_folder_in_use(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    root = copy_project(tmp_path / "p")
    (root / "s.yaml").write_text(WITH_STEPS.format(devel=demo_bases["devel"], runtime=demo_bases["runtime"]))
    first = build(root, "out1", "s.yaml")
    plan = run_cli_here(["plan", "s.yaml", "--cache", str(root / "cache"), "--json"], cwd=root)
    assert plan.code == 0, str(plan)
    # Both step results are hits (read through the cache's typed entries).
    assert sorted((s["kind"], s["state"]) for s in plan.json["steps"]) == [
        ("compile", "cached"),
        ("runtime", "cached"),
    ], plan.out
    found = items(root)
    kinds = {i["kind"] for i in found}
    assert {"step", "log", "folder"} <= kinds, kinds
    steps = [i for i in found if i["kind"] == "step"]
    assert len(steps) == 2 and all(i["blobs"] for i in steps), steps
    folder = next(i for i in found if i["kind"] == "folder" and i["name"].startswith("make/"))
    lock_path = Path(folder["path"]).with_name(Path(folder["path"]).name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running build of the step holds it
        ran = cache(root, "prune", "--all")
        assert ran.code == 0 and "in use" in ran.err, str(ran)
        assert Path(folder["path"]).is_dir()
    assert [i["kind"] for i in items(root)] == ["folder"]
    assert build(root, "out2", "s.yaml") == first
    assert cache(root, "verify").code == 0


@pytest.mark.integration  # seconds
def test_prune_refuses_while_a_build_holds_the_cache(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    build(root, "out1")
    with open(root / "cache" / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)  # what every build holds
        ran = cache(root, "prune", "--all")
        assert ran.code == 1 and "in use" in ran.err, str(ran)
    assert items(root), "nothing was removed"


@pytest.mark.parametrize(
    "args",
    [
        ["prune"],
        ["prune", "--keep-storage", "lots"],
        ["prune", "--older-than", "7x"],
        ["prune", "--older-than", "-1d"],
        ["frob"],
        [],
    ],
)
def test_bad_cache_command_is_exit_2(tmp_path: Path, args: list[str]) -> None:
    ran = run_cli(["cache", *args, "--cache", str(tmp_path / "c")], cwd=tmp_path)
    assert ran.code == 2 and "error:" in ran.err and "Traceback" not in ran.err, str(ran)


def test_cache_that_is_a_file_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "c").write_text("not a folder")
    ran = run_cli(["cache", "ls", "--cache", str(tmp_path / "c")], cwd=tmp_path)
    assert ran.code == 2 and "not a folder" in ran.err and "Traceback" not in ran.err, str(ran)


def test_sizes_and_durations() -> None:
    assert parse_size("50G") == 50 << 30
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("1.5k") == 1536
    assert parse_size("1000") == 1000
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("12h") == 12 * 3600
    for bad in ("", "G", "5 parsecs", "-1G"):
        with pytest.raises(InputError):
            parse_size(bad)
    with pytest.raises(InputError):
        parse_duration("1y")


@pytest.mark.integration  # seconds
def test_records_from_before_kinds_are_still_hits(tmp_path: Path) -> None:
    """A cache written before records carried a kind keeps working: its entries are
    recognised by their shape, used as they are, and verify finds nothing wrong."""
    root = copy_project(tmp_path / "p")
    first = build(root, "out1")
    records = sorted((root / "cache" / "keys").glob("*/*.json"))
    for path in records:
        value = json.loads(path.read_text())
        assert value.pop("kind") in ("layer", "base", "memo"), value
        path.write_text(json.dumps(value))
    # A build writes its copy layers again (it reads their files anyway); the base is a hit.
    read = [p for p in records if not p.name.startswith("copy-")]
    before = {p: p.read_text() for p in read}
    assert any('"manifest"' in text for text in before.values())
    assert build(root, "out2") == first
    # Hits are not written again: the old records are still there, unchanged.
    assert {p: p.read_text() for p in read} == before
    assert {i["kind"] for i in items(root)} >= {"layer", "base", "memo"}
    assert cache(root, "verify").code == 0


@pytest.mark.integration  # seconds
def test_unreadable_record_is_reported_dropped_and_made_again(tmp_path: Path) -> None:
    root = copy_project(tmp_path / "p")
    first = build(root, "out1")
    layer = next(i for i in items(root) if i["kind"] == "layer")
    Path(layer["path"]).write_text('{"kind": "layer", "digest": ')  # cut short, as by a full disk
    ran = cache(root, "verify")
    assert ran.code == 1 and "unreadable" in ran.out and not Path(layer["path"]).exists(), str(ran)
    assert build(root, "out2") == first
    assert Path(layer["path"]).is_file() and cache(root, "verify").code == 0


@pytest.mark.integration  # seconds
def test_a_build_keeps_the_cache_within_its_budget_and_its_own_entries(tmp_path: Path) -> None:
    """After a build, a cache over its budget (``--cache-max-size``, else the config
    file's ``cache-max-size``) shrinks to it: the least recently used go (an older build's
    layer), never what the build used, even when that alone is over the budget."""
    root = copy_project(tmp_path / "p")
    (root / "old.bin").write_bytes(os.urandom(1 << 20))  # random bytes: a 1 MiB layer, compressed
    (root / "old.yaml").write_text(COPY_ONLY.replace("./b.txt, to: /b.txt", "./old.bin, to: /old.bin"))
    # What this build holds alone, in a cache of its own.
    alone = run_cli(["m.yaml", "--cache", str(root / "alone"), "-o", "oci:alone:x"], cwd=root)
    assert alone.code == 0, str(alone)
    listed = run_cli(["cache", "ls", "--json", "--cache", str(root / "alone")], cwd=root).json
    own = listed["held"]
    assert own == sum(listed["parts"].values()) == listed["total"] + listed["storage"]
    assert listed["parts"]["layers"] > 0 and listed["parts"]["records"] > 0, listed["parts"]

    build(root, "old", "old.yaml")  # an older build, used two days ago
    for item in items(root):
        age(item, 2)
    old_layer = manifest_of(root / "old", "x")["layers"][-1]["digest"]
    assert blob_file(root, old_layer).is_file()
    budget = own + (64 << 10)  # this build's own and less than the older build's layer
    ran = run_cli(
        ["m.yaml", "--cache", str(root / "cache"), "--cache-max-size", str(budget), "-o", "oci:new:x"], cwd=root
    )
    assert ran.code == 0, str(ran)
    after = cache(root, "ls", "--json").json
    assert after["held"] <= budget < after["held"] + (1 << 20), (after["held"], budget)
    assert not blob_file(root, old_layer).exists(), "the older build's layer went"
    assert_consistent(root)

    # A budget this build's own entries alone are over (the config file's): all the rest
    # goes, they stay. A build that adds nothing to the cache (no change) does not measure
    # it; this one writes a layer.
    config = tmp_path / "config" / "assemble" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('cache-max-size = "1"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    for item in items(root):
        age(item, 2)
    (root / "b.txt").write_text("second File\n" * 50)  # the same size, other bytes
    again = run_cli(["m.yaml", "--cache", str(root / "cache"), "-o", "oci:new:x", "--json"], cwd=root, env=env)
    assert again.code == 0, str(again)
    assert [layer["origin"] for layer in again.json["layers"]] == ["base", "cached", "built"]
    left = {i["kind"] for i in items(root)}
    assert {"base", "layer"} <= left, left
    rebuilt = run_cli(["m.yaml", "--cache", str(root / "cache"), "-o", "oci:new:x", "--json"], cwd=root, env=env)
    assert rebuilt.code == 0, str(rebuilt)
    assert [layer["origin"] for layer in rebuilt.json["layers"]] == ["base", "cached", "cached"]
    assert rebuilt.json["digest"] == again.json["digest"]
    assert cache(root, "ls", "--json").json["held"] <= own + 4096  # none of the older builds' is left
    bad = run_cli(["m.yaml", "--cache", str(root / "cache"), "--cache-max-size", "lots", "-o", "oci:x:x"], cwd=root)
    assert bad.code == 2 and "--cache-max-size" in bad.err, str(bad)
