"""Same inputs, same digest, and when digests differ, `assemble diff` says why.

The demo built into a second empty cache (another folder, another time) must give the
session's demo digest. `assemble diff` is checked on tiny copy-only images (no buildah),
where exactly one thing changes, and on the demo itself.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import layout_digest, manifest_of, read_blob, run_cli, sh, uncompressed
from tests.plugins.demo import Demo, build_cold

EPOCH = 1700000000
TINY = """\
name: tiny
bases: {empty: scratch}
image:
  base: empty
  layers:
    - copy: {from: ./data/, to: /app/data/}
    - copy: {from: ./data/a.txt, to: /etc/tiny/a.txt}
"""


def tiny_project(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data/a.txt").write_text("alpha\n")
    (root / "data/b.txt").write_text("bravo\n")
    (root / "tiny.yaml").write_text(TINY)
    return root


def build_tiny(root: Path, tag: str) -> str:
    ran = run_cli(["tiny.yaml", "--cache", "cache", "--json", "--epoch", str(EPOCH), "-o", f"oci:out:{tag}"], cwd=root)
    assert ran.code == 0, str(ran)
    return str(ran.json["digest"])


def diff_json(a: str, b: str, *, code: int) -> dict[str, Any]:
    ran = run_cli(["diff", "--json", a, b])
    assert ran.code == code, str(ran)
    return ran.json  # type: ignore[no-any-return]


@pytest.mark.integration  # seconds
def test_diff_names_the_file_whose_byte_changed(tmp_path: Path) -> None:
    root = tiny_project(tmp_path / "p")
    one = build_tiny(root, "one")
    (root / "data/b.txt").write_text("brave\n")  # one byte, same size, same mtime in the layer
    two = build_tiny(root, "two")
    assert one != two
    result = diff_json(f"oci:{root}/out:one", f"oci:{root}/out:two", code=1)
    assert result["identical"] is False and (result["a"], result["b"]) == (one, two)
    assert [c["path"] for c in result["manifest"]] == ["config.digest"]
    assert [c["path"] for c in result["config"]] == ["rootfs.diff_ids[0]"]
    assert [x["status"] for x in result["layers"]] == ["changed", "same"]
    changed = result["layers"][0]
    assert changed["a_diff_id"] != changed["b_diff_id"] and changed["a"]["digest"] != changed["b"]["digest"]
    assert [(f["path"], f["change"]) for f in changed["files"]] == [("app/data/b.txt", "changed")]
    assert [c["path"] for c in changed["files"][0]["fields"]] == ["content"]

    text = run_cli(["diff", f"oci:{root}/out:one", f"oci:{root}/out:two"])
    assert text.code == 1, str(text)
    assert "layers: 1 of 2 differ" in text.out and "~ app/data/b.txt: content sha256:" in text.out


@pytest.mark.integration  # seconds
def test_diff_says_how_entries_differ(tmp_path: Path) -> None:
    root = tiny_project(tmp_path / "p")
    build_tiny(root, "one")
    os.chmod(root / "data/b.txt", 0o755)
    (root / "data/c.txt").write_text("charlie\n")
    (root / "tiny.yaml").write_text(TINY.replace("./data/a.txt", "./data/c.txt"))
    (root / "data/a.txt").unlink()
    build_tiny(root, "two")
    result = diff_json(f"oci:{root}/out:one", f"oci:{root}/out:two", code=1)
    files = {f["path"]: f for layer in result["layers"] for f in layer["files"]}
    assert {p: f["change"] for p, f in files.items()} == {
        "app/data/a.txt": "removed",
        "app/data/b.txt": "changed",
        "app/data/c.txt": "added",
        "etc/tiny/a.txt": "changed",  # now copied from c.txt
    }
    assert files["app/data/b.txt"]["fields"] == [{"path": "mode", "a": 0o644, "b": 0o755}]
    assert {c["path"]: (c["a"], c["b"]) for c in files["etc/tiny/a.txt"]["fields"]}.keys() == {"size", "content"}
    created_by = {c["path"]: c["b"] for c in result["config"]}["history[1].created_by"]
    assert "./data/c.txt" in created_by
    text = run_cli(["diff", f"oci:{root}/out:one", f"oci:{root}/out:two"])
    assert "~ app/data/b.txt: mode 0644 -> 0755" in text.out and "+ app/data/c.txt" in text.out


@pytest.mark.integration  # seconds
def test_diff_rootfs_compares_what_a_container_sees(tmp_path: Path) -> None:
    """Images whose layers do not pair by position (another builder's, or ours reordered):
    ``--rootfs`` merges each image's layers, whiteouts applied, and ``--path`` narrows it."""
    root = tiny_project(tmp_path / "p")
    build_tiny(root, "one")
    swapped = TINY.split("  layers:\n")[0] + "  layers:\n" + "\n".join(reversed(TINY.rstrip().split("\n")[-2:])) + "\n"
    (root / "tiny.yaml").write_text(swapped)
    build_tiny(root, "two")
    # A later layer with an OCI whiteout for app/data/b.txt (as buildah writes for `rm`).
    (root / "wh").mkdir()
    (root / "wh/.wh.b.txt").write_text("")
    (root / "tiny.yaml").write_text(TINY + "    - copy: {from: ./wh/, to: /app/data/}\n")
    build_tiny(root, "three")
    one, two, three = (f"oci:{root}/out:{t}" for t in ("one", "two", "three"))

    by_layer = diff_json(one, two, code=1)
    assert [x["status"] for x in by_layer["layers"]] == ["changed", "changed"]
    merged = run_cli(["diff", "--json", "--rootfs", one, two]).json
    assert merged["rootfs"] == [] and merged["paths"] == []
    assert all(x["files"] == [] for x in merged["layers"])  # not read twice
    gone = run_cli(["diff", "--json", "--rootfs", one, three]).json
    assert [(f["path"], f["change"]) for f in gone["rootfs"]] == [("app/data/b.txt", "removed")]
    under = run_cli(["diff", "--json", "--rootfs", "--path", "/etc/", one, three]).json
    assert under["rootfs"] == [] and under["paths"] == ["/etc"]
    text = run_cli(["diff", "--rootfs", "--path", "/app", one, three])
    assert text.code == 1 and "files (merged filesystems, under /app): 1 differ" in text.out, str(text)
    assert "  - app/data/b.txt" in text.out
    refused = run_cli(["diff", "--path", "/app", one, three])
    assert refused.code == 2 and "--rootfs" in refused.err, str(refused)


def test_copying_the_manifests_folder_leaves_out_the_cache_and_the_outputs(tmp_path: Path) -> None:
    """``copy: {from: .}`` of a folder that holds the cache and the outputs (the defaults a
    user gets with ``--cache cache -o oci:out``) takes neither: the layer stays the same
    from one build to the next instead of swallowing the last build."""
    root = tiny_project(tmp_path / "p")
    (root / "tiny.yaml").write_text(TINY.split("  layers:\n")[0] + "  layers:\n    - copy: {from: ., to: /src}\n")
    digests = []
    for tag in ("one", "two"):
        args = ["tiny.yaml", "--cache", "cache", "--json", "--epoch", str(EPOCH), "-o", f"oci:out:{tag}"]
        ran = run_cli([*args, "-o", f"oci-archive:out.tar:{tag}"], cwd=root)
        assert ran.code == 0, str(ran)
        digests.append(ran.json["digest"])
        # said, as for .git: a reader of the manifest would not guess it
        assert "copy from .: left out of the layer (this build's cache or outputs)" in ran.err, str(ran)
        assert f"{root}/cache" in ran.err and f"{root}/out.tar" in ran.err, str(ran)
    assert digests[0] == digests[1]
    layer = uncompressed(read_blob(root / "out", manifest_of(root / "out", "two")["layers"][0]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        names = tf.getnames()
    assert "src/data/a.txt" in names and "src/tiny.yaml" in names
    assert not [n for n in names if n.split("/")[1:2] in (["cache"], ["out"], ["out.tar"])], names


@pytest.mark.integration  # seconds
def test_diff_of_one_image_in_two_formats_is_identical_and_bad_input_is_2(tmp_path: Path) -> None:
    root = tiny_project(tmp_path / "p")
    ran = run_cli(["tiny.yaml", "--cache", "cache", "-o", "oci:out:one", "-o", "oci-archive:one.tar:one"], cwd=root)
    assert ran.code == 0, str(ran)
    same = run_cli(["diff", f"oci:{root}/out:one", f"oci-archive:{root}/one.tar:one"])
    assert same.code == 0 and same.out.rstrip().endswith("identical"), str(same)
    missing = run_cli(["diff", f"oci:{root}/out:one", f"oci:{root}/nowhere:x"])
    assert missing.code == 2 and "error:" in missing.err and "Traceback" not in missing.err, str(missing)
    bad = run_cli(["diff", f"oci:{root}/out:one", "nonsense://x"])
    assert bad.code == 2 and "error:" in bad.err and "Traceback" not in bad.err, str(bad)
    (root / "data/b.txt").write_text("brave\n")
    build_tiny(root, "two")
    layer = manifest_of(root / "out", "two")["layers"][0]["digest"].split(":", 1)[1]
    (root / "out/blobs/sha256" / layer).write_bytes(gzip.compress(b"not a tar" * 100))
    broken = run_cli(["diff", f"oci:{root}/out:one", f"oci:{root}/out:two"])
    # Refused when read (its digest no longer matches), before any tar is parsed.
    assert broken.code == 2 and "Traceback" not in broken.err, str(broken)
    assert "is not a readable" in broken.err or "does not match its digest" in broken.err, str(broken)


@pytest.mark.integration  # seconds
def test_diff_memory_stays_flat_on_a_big_layer(tmp_path: Path) -> None:
    root = tmp_path / "p"
    (root / "data").mkdir(parents=True)
    big = root / "data/big.bin"
    with open(big, "wb") as f:
        for _ in range(160):
            f.write(os.urandom(1 << 20))  # incompressible: the layer is as big as the file
    (root / "tiny.yaml").write_text(TINY.replace("./data/a.txt", "./data/big.bin"))
    build_tiny(root, "one")
    with open(big, "r+b") as f:
        f.seek(80 << 20)
        byte = f.read(1)
        f.seek(80 << 20)
        f.write(bytes([byte[0] ^ 1]))
    build_tiny(root, "two")
    ran = run_cli(["diff", "--json", f"oci:{root}/out:one", f"oci:{root}/out:two"], measure_rss=True)
    assert ran.code == 1, str(ran)
    files = [f["path"] for layer in ran.json["layers"] for f in layer["files"]]
    assert files == ["app/data/big.bin", "etc/tiny/a.txt"]
    assert ran.peak_rss_kib < 120 * 1024, f"diff of two 160 MiB layers peaked at {ran.peak_rss_kib // 1024} MiB"


def test_layers_name_the_parent_folders_the_image_below_lacks(tmp_path: Path) -> None:
    """`/etc/tiny/a.txt` on an empty image: the layer holds `etc/` and `etc/tiny/` (root,
    0755, the epoch), so a plain tar extraction makes them as every runtime would."""
    root = tiny_project(tmp_path / "p")
    build_tiny(root, "one")
    layout = root / "out"
    layers = manifest_of(layout, "one")["layers"]
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, layers[1]["digest"])))) as tf:
        members = {m.name.rstrip("/"): m for m in tf}
    assert sorted(members) == ["etc", "etc/tiny", "etc/tiny/a.txt"]
    for name in ("etc", "etc/tiny"):
        m = members[name]
        assert (m.isdir(), m.mode, m.uid, m.gid, m.mtime) == (True, 0o755, 0, 0, EPOCH), name
    # Extracting the layers in order with plain tar (as `crane export | tar x` users do).
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    for layer in layers:
        blob = layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
        sh(["sh", "-c", f"zstd -dc {blob} | tar -x --numeric-owner -C {rootfs}"])
    assert (rootfs / "etc/tiny").stat().st_mode & 0o7777 == 0o755
    assert (rootfs / "app/data").stat().st_mtime == EPOCH


# -- the demo ----------------------------------------------------------------------------


def test_demo_is_the_same_image_from_two_empty_caches(demo: Demo, tmp_path: Path) -> None:
    """A second cold build, in another folder, gives the session's demo digest. When it
    does not, the failure shows `assemble diff` of the two images."""
    project = tmp_path / "again"
    _, again, _ = build_cold(project, demo.bases)
    first, second = f"oci:{demo.project}/out/cold:latest", f"oci:{project}/out/cold:latest"
    assert layout_digest(demo.project / "out/cold", "latest") == demo.cold.json["digest"]
    diff = run_cli(["diff", first, second])
    assert again.json["digest"] == demo.cold.json["digest"], f"two empty caches, two images:\n{diff.out}{diff.err}"
    assert diff.code == 0 and "identical" in diff.out, str(diff)


def test_demo_in_gzip_differs_only_in_compression(demo: Demo, tmp_path: Path) -> None:
    demo.build("--compression", "gzip", "-o", f"oci:{tmp_path}/gz:latest")
    result = diff_json(f"oci:{demo.project}/out/cold:latest", f"oci:{tmp_path}/gz:latest", code=1)
    assert result["manifest"] == [] and result["config"] == []  # same config: same diff_ids
    statuses = [x["status"] for x in result["layers"]]
    assert set(statuses) <= {"same", "recompressed"} and "recompressed" in statuses
    assert all(x["files"] == [] for x in result["layers"])  # no layer was read
