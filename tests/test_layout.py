"""OCI layout folders written by several builds at once: each keeps the others' tags.

Two processes (threads here: ``flock`` locks open files, so threads of one process
exclude each other as processes do) add images to one ``oci:`` folder; every tag must be
in ``index.json`` at the end, and the index must name only blobs that are there.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from assembler.oci import mediatypes as mt
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.transports import layout
from assembler.transports.common import DirBlobs


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
