"""Never a wrong result: every blob read is checked against its digest, a damaged cache
entry is dropped and made again, outputs share no storage with the cache, and bases
whose config does not describe their layers are refused.

Each test damages real files the way a disk, a user or a copy tool would (one byte
flipped in place, a blob swapped for another valid one) and runs the CLI as a user would.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from tests.helpers import layout_digest, manifest_of, read_blob, run_cli, sh, small_project
from tests.plugins.registry import RunningRegistry

MANIFEST = """\
name: integrity
bases: {b: 'rootfs:base.tar'}
image:
  base: b
  layers:
    - copy: {from: ./a.txt, to: /a.txt}
    - copy: {from: ./b.txt, to: /b.txt}
  config: {entrypoint: [/a.txt]}
"""


def project(root: Path) -> Path:
    return small_project(root, MANIFEST)


def build(root: Path, *outputs: str, cache: Path | None = None) -> str:
    args = ["m.yaml", "--cache", str(cache or root / "cache")]
    for o in outputs:
        args += [o] if o.startswith("--") else ["-o", o]
    ran = run_cli(args, cwd=root)
    assert ran.code == 0, str(ran)
    return ran.err


def layer_digests(layout: Path, tag: str) -> list[str]:
    return [d["digest"] for d in manifest_of(layout, tag)["layers"]]


def blob_path(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.split(":", 1)[1]


def flip(path: Path, at: int = 40) -> None:
    """Flip one byte in place: same size, same name, other bytes (what a disk does)."""
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


def other_layer() -> bytes:
    """A valid gzip layer with other files: what a swapped blob holds."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"#!/bin/sh\necho swapped\n"
        info = tarfile.TarInfo("a.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def validate(ref: str, cwd: Path) -> None:
    ran = run_cli(["validate", ref, "--cache", str(cwd / "vcache")], cwd=cwd)
    assert ran.code == 0, str(ran)


@pytest.mark.integration  # tar2sqfs
def test_sif_of_a_layout_with_a_swapped_blob_fails(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    build(root, "oci:lay:x")  # zstd layers: the swapped gzip blob also fails to decompress
    digest = layer_digests(root / "lay", "x")[0]
    blob = blob_path(root / "lay", digest)
    os.chmod(blob, 0o644)
    blob.write_bytes(other_layer())
    ran = run_cli(["sif", "oci:lay:x", "out.sif", "--cache", str(tmp_path / "c")], cwd=root)
    assert ran.code == 2, str(ran)
    assert digest in ran.err and "does not match its digest" in ran.err, ran.err
    assert "Traceback" not in ran.err
    assert not (root / "out.sif").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".out.sif")]
    # The same layout in an oci-archive: the same refusal.
    sh(["tar", "-cf", str(root / "lay.tar"), "-C", str(root / "lay"), "."])
    ran = run_cli(["sif", "oci-archive:lay.tar:x", "out.sif", "--cache", str(tmp_path / "c")], cwd=root)
    assert ran.code == 2 and "does not match its digest" in ran.err, str(ran)
    assert not (root / "out.sif").exists()
    # And `validate` says so too, with exit 2 and no traceback.
    ran = run_cli(["validate", "oci:lay:x", "--cache", str(tmp_path / "c")], cwd=root)
    assert ran.code == 2 and "Traceback" not in ran.err and digest in ran.err, str(ran)


@pytest.mark.integration  # seconds
def test_validate_of_a_flipped_blob_is_exit_2(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    build(root, "oci:lay:x")
    digest = layer_digests(root / "lay", "x")[1]
    flip(blob_path(root / "lay", digest))
    ran = run_cli(["validate", "oci:lay:x", "--cache", str(tmp_path / "c")], cwd=root)
    assert ran.code == 2, str(ran)
    assert digest in ran.err and "Traceback" not in ran.err, ran.err


def test_flipped_cache_blob_is_dropped_and_made_again(tmp_path: Path, registry: RunningRegistry) -> None:
    root = project(tmp_path / "p")
    cache = root / "cache"
    build(root, "oci:out1:x")
    first = layout_digest(root / "out1", "x")
    for digest in layer_digests(root / "out1", "x"):
        flip(blob_path(cache, digest))
    err = build(root, "oci:out2:x", f"docker://{registry.host}/integrity/app:1", "--tls-verify=false")
    assert "warning" in err and "does not match" in err, err
    assert layout_digest(root / "out2", "x") == first
    validate("oci:out2:x", root)
    pulled = json.loads(
        sh(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/integrity/app:1"]).stdout
    )
    assert pulled["Digest"] == first
    # The cache holds good bytes again: a third build uses it as it is, without a warning.
    err = build(root, "oci:out3:x")
    assert "warning" not in err, err


def test_layout_outputs_share_no_storage_with_the_cache(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    cache = root / "cache"
    build(root, "oci:out:x")
    layers = layer_digests(root / "out", "x")
    for digest in layers:
        assert os.stat(blob_path(root / "out", digest)).st_ino != os.stat(blob_path(cache, digest)).st_ino
    before = {d: read_blob(root / "out", d) for d in layers}
    for digest in layers:
        flip(blob_path(cache, digest))
    assert {d: read_blob(root / "out", d) for d in layers} == before
    validate("oci:out:x", root)


@pytest.mark.integration  # seconds
def test_base_whose_diff_ids_lie_is_refused(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    build(root, "oci:base:x")
    # Rewrite the base's config with a wrong diff_id for its second layer.
    lay = root / "base"
    manifest = manifest_of(lay, "x")
    config = json.loads(read_blob(lay, manifest["config"]["digest"]))
    config["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
    body = json.dumps(config).encode()
    from hashlib import sha256

    cdigest = "sha256:" + sha256(body).hexdigest()
    blob_path(lay, cdigest).write_bytes(body)
    manifest["config"] = {**manifest["config"], "digest": cdigest, "size": len(body)}
    mbody = json.dumps(manifest).encode()
    mdigest = "sha256:" + sha256(mbody).hexdigest()
    blob_path(lay, mdigest).write_bytes(mbody)
    index = json.loads((lay / "index.json").read_text())
    index["manifests"][0].update(digest=mdigest, size=len(mbody))
    (lay / "index.json").write_text(json.dumps(index))
    (root / "u.yaml").write_text(
        "name: user\nbases: {b: 'oci:base:x'}\nimage:\n  base: b\n  layers:\n    - copy: {from: ./a.txt, to: /c.txt}\n"
    )
    ran = run_cli(["u.yaml", "--cache", str(root / "cache2"), "-o", "oci:out:y"], cwd=root)
    assert ran.code == 2, str(ran)
    assert "layer 2/3" in ran.err and "diff_id" in ran.err and "Traceback" not in ran.err, ran.err
    assert not (root / "out").exists()


@pytest.mark.integration  # seconds
def test_malformed_digest_in_index_json_is_exit_2(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    build(root, "oci:lay:x")
    index = json.loads((root / "lay" / "index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:../../../etc/passwd"
    (root / "lay" / "index.json").write_text(json.dumps(index))
    for command in (["inspect", "oci:lay:x"], ["validate", "oci:lay:x"]):
        ran = run_cli([*command, "--cache", str(tmp_path / "c")], cwd=root)
        assert ran.code == 2, str(ran)
        assert "index.json" in ran.err and "Traceback" not in ran.err, ran.err
