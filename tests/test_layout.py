"""OCI layout folders written by several builds at once: each keeps the others' tags.

Two processes (threads here: ``flock`` locks open files, so threads of one process
exclude each other as processes do) add images to one ``oci:`` folder; every tag must be
in ``index.json`` at the end, and the index must name only blobs that are there.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from assembler.errors import InputError
from assembler.oci import mediatypes as mt
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.transports import layout
from assembler.transports.common import DirBlobs
from tests.helpers import run_cli_here


def _image(n: int) -> Image:
    rootfs = {"type": "layers", "diff_ids": []}
    config = canonical_json({"architecture": "amd64", "os": "linux", "rootfs": rootfs, "config": {"Env": [f"N={n}"]}})
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [],
        }
    )
    return Image(manifest, config)


def test_concurrent_writers_keep_every_tag(tmp_path: Path) -> None:
    out = tmp_path / "out"
    blobs = DirBlobs(tmp_path / "none", what="no blobs")  # the images have no layers
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            for n in range(first, first + 40):
                layout.write(out, _image(n), tag=f"t{n}", blobs=blobs)
        except BaseException as e:  # shown by the assert below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(first,)) for first in (0, 100, 200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    index = json.loads((out / "index.json").read_text())
    tags = {d["annotations"][mt.ANNOTATION_REF_NAME] for d in index["manifests"]}
    assert tags == {f"t{n}" for first in (0, 100, 200) for n in range(first, first + 40)}
    for d in index["manifests"]:
        assert (out / "blobs/sha256" / d["digest"].split(":")[1]).is_file()
    assert sorted(p.name for p in out.iterdir()) == ["blobs", "index.json", "oci-layout"]  # no lock file, no temp


def test_writing_what_a_layout_holds_already_leaves_its_index_as_it_is(tmp_path: Path) -> None:
    """A rebuild with nothing changed writes nothing: the index is not replaced by the same
    bytes (its inode and times stay, which the up-to-date check compares)."""
    out, blobs = tmp_path / "out", DirBlobs(tmp_path / "none", what="no blobs")
    layout.write(out, _image(1), tag="t", blobs=blobs)
    before = (out / "index.json").stat()
    layout.write(out, _image(1), tag="t", blobs=blobs)
    after = (out / "index.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    layout.write(out, _image(2), tag="t", blobs=blobs)
    assert (out / "index.json").stat().st_ino != before.st_ino, "another image: the index is replaced"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o027, 0o077])
def test_an_oci_output_is_written_as_the_umask_says(tmp_path: Path, umask: int) -> None:
    # Every file of the layout (index, oci-layout, manifests, configs, layers, the SBOM's
    # blobs) as open() makes files: 0666 less the umask, never mkstemp's 0600.
    (tmp_path / "f.txt").write_text("data\n")
    (tmp_path / "m.yaml").write_text(
        "name: t\nbases: {b: scratch}\nimage:\n  base: b\n  layers:\n    - copy: {from: ./f.txt, to: /f.txt}\n"
    )
    saved = os.umask(umask)
    try:
        ran = run_cli_here(["m.yaml", "--cache", "cache", "-o", "oci:out:x", "-o", "oci:out:y"], cwd=tmp_path)
        layout.write(tmp_path / "direct", _image(1), tag="t", blobs=DirBlobs(tmp_path / "none", what="no blobs"))
    finally:
        os.umask(saved)
    assert ran.code == 0, str(ran)
    for out in (tmp_path / "out", tmp_path / "direct"):
        files = [p for p in out.rglob("*") if p.is_file()]
        assert len(files) >= 4
        modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
        assert modes == dict.fromkeys(modes, oct(0o666 & ~umask))


def _image_with_layer(tmp_path: Path, data: bytes) -> tuple[Image, DirBlobs]:
    """An image of one layer ``data``, the layer a file of a blob folder."""
    digest = sha256_digest(data)
    folder = tmp_path / "blobs"
    (folder / "sha256").mkdir(parents=True)
    (folder / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
    rootfs = {"type": "layers", "diff_ids": [digest]}
    config = canonical_json({"architecture": "amd64", "os": "linux", "rootfs": rootfs})
    layer = {"mediaType": mt.OCI_LAYER, "digest": digest, "size": len(data)}
    config_desc = {"mediaType": mt.OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)}
    manifest = canonical_json(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": config_desc, "layers": [layer]}
    )
    return Image(manifest, config), DirBlobs(folder, what="the test's blobs")


def test_a_layer_is_a_copy_unless_linked_and_linked_only_once_checked(tmp_path: Path) -> None:
    """An output's layers are copies (the user may change them); the layout the cache makes
    to hand an image to buildah links them, after reading each through its digest check."""
    image, blobs = _image_with_layer(tmp_path, b"layer bytes" * 1000)
    digest = image.layers[0].digest
    src = blobs.blob_file(digest)
    assert src is not None

    layout.write(tmp_path / "copied", image, tag="t", blobs=blobs)
    layout.write(tmp_path / "linked", image, tag="t", blobs=blobs, linked=True)
    copied = tmp_path / "copied" / "blobs" / "sha256" / digest.split(":", 1)[1]
    linked = tmp_path / "linked" / "blobs" / "sha256" / digest.split(":", 1)[1]
    assert copied.stat().st_ino != src.stat().st_ino and copied.read_bytes() == src.read_bytes()
    assert linked.stat().st_ino == src.stat().st_ino

    src.write_bytes(b"damaged" * 1000)  # a blob whose bytes are no longer its digest
    with pytest.raises(InputError):
        layout.write(tmp_path / "damaged", image, tag="t", blobs=blobs, linked=True)
    assert not list((tmp_path / "damaged" / "blobs" / "sha256").glob(digest.split(":", 1)[1]))
