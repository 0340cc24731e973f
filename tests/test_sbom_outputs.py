"""The SBOM and provenance of a build on every file output, not only layouts and registries:
inside a tagged oci-archive (as a tagged layout holds them), next to a docker-archive, an
untagged oci-archive and a sqsh file (``FILE.spdx.json``, ``FILE.provenance.intoto.json``),
and inside a SIF as an SBOM object (type SBOM, format spdx-json) and a generic JSON
object, checked with skopeo, siftool, unsquashfs and the SPDX reference validator;
``--no-sbom`` leaves them all out.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from assembler.oci import mediatypes as mt
from assembler.transports.hpc.sif_format import DATA_GENERIC_JSON, DATA_SBOM, read_sif_header
from tests.helpers import run_cli, sh
from tests.test_sbom import _project, referrers, saved, validate_spdx


def _build(root: Path, *args: str) -> dict[str, Any]:
    ran = run_cli(["m.yaml", "--cache", "cache", "--json", *args], cwd=root)
    assert ran.code == 0, str(ran)
    result: dict[str, Any] = ran.json
    return result


def _index(archive: Path) -> list[dict[str, Any]]:
    with tarfile.open(archive) as tf:
        member = tf.extractfile("index.json")
        assert member is not None
        entries: list[dict[str, Any]] = json.load(member)["manifests"]
    return entries


def _names_image(sbom_file: Path, prov_file: Path, digest: str) -> None:
    """The SBOM is valid SPDX and both name the image ``digest``."""
    validate_spdx(sbom_file)
    assert digest[7:] in json.loads(sbom_file.read_text())["documentNamespace"]
    statement = json.loads(prov_file.read_text())
    assert statement["subject"][0]["digest"] == {"sha256": digest[7:]}


@pytest.mark.integration  # tar2sqfs
def test_archives_and_sqsh_carry_the_sbom_and_provenance_inside_or_next_to_them(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    outputs = [
        "-o",
        "oci-archive:a.tar:one",
        "-o",
        "oci-archive:u.tar",
        "-o",
        "docker-archive:d.tar",
        "-o",
        "sqsh:e.sqsh",
    ]
    built = _build(root, *outputs)
    digest, attached = built["digest"], built["referrers"]
    # Tagged oci-archive: the referrer manifests in its index, after the image, as in a layout.
    entries = _index(root / "a.tar")
    assert [e["digest"] for e in entries] == [digest, *(r["digest"] for r in attached)]
    assert [e.get("artifactType") for e in entries] == [None, mt.SPDX_JSON, mt.IN_TOTO_JSON]
    assert json.loads(sh(["skopeo", "inspect", f"oci-archive:{root}/a.tar:one"]).stdout)["Digest"] == digest
    (root / "files").mkdir()
    listing = referrers("oci-archive:a.tar:one", "--save", "files", cwd=root)
    assert listing["subject"] == digest and {r["digest"] for r in listing["referrers"]} == {
        r["digest"] for r in attached
    }
    sbom, prov = root / saved(listing, mt.SPDX_JSON), root / saved(listing, mt.IN_TOTO_JSON)
    _names_image(sbom, prov, digest)
    # Untagged oci-archive: one manifest (skopeo reads it), the referrers next to it.
    assert [e["digest"] for e in _index(root / "u.tar")] == [digest]
    assert json.loads(sh(["skopeo", "inspect", f"oci-archive:{root}/u.tar"]).stdout)["Digest"] == digest
    # docker-archive and sqsh: the same bytes next to them, with the suffixes `referrers --save` uses.
    assert sbom.name.endswith(".spdx.json") and prov.name.endswith(".provenance.intoto.json")
    for ref in ("oci-archive:u.tar", "docker-archive:d.tar", "sqsh:e.sqsh"):
        file = ref.partition(":")[2]
        assert (root / f"{file}.spdx.json").read_bytes() == sbom.read_bytes()
        assert (root / f"{file}.provenance.intoto.json").read_bytes() == prov.read_bytes()
        side = referrers(ref, cwd=root)
        assert side["subject"] == digest and len(side["referrers"]) == 2
    # The docker-archive holds the built image's config (its image ID), with uncompressed layers.
    with tarfile.open(root / "d.tar") as tf:
        member = tf.extractfile("manifest.json")
        assert member is not None
        (entry,) = json.load(member)
    config = json.loads(sh(["skopeo", "inspect", "--raw", f"oci-archive:{root}/a.tar:one"]).stdout)["config"]
    assert entry["Config"] == f"{config['digest'][7:]}.json"

    # --no-sbom: the same image, nothing inside, and the files of the last build removed.
    bare = _build(root, "--no-sbom", *outputs)
    assert bare["digest"] == digest and bare["referrers"] == []
    assert [e["digest"] for e in _index(root / "a.tar")] == [digest]
    assert not list(root.glob("*.json"))
    assert referrers("oci-archive:a.tar:one", cwd=root)["referrers"] == []
    assert referrers("docker-archive:d.tar", cwd=root)["referrers"] == []
    assert referrers("sqsh:e.sqsh", cwd=root)["referrers"] == []


def _siftool(*args: str) -> str:
    return subprocess.run(["siftool", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.integration  # tar2sqfs
def test_a_sif_holds_the_sbom_as_an_sbom_object_and_the_provenance_as_json(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    digest = _build(root, "-o", "sif:s.sif")["digest"]
    listed = _siftool("list", str(root / "s.sif"))
    assert "SBOM (spdx-json)" in listed and "FS (Squashfs/*System/amd64)" in listed
    objects = read_sif_header(root / "s.sif").objects
    (sbom_obj,) = [o for o in objects if o.data_type == DATA_SBOM]
    (prov_obj,) = [o for o in objects if o.data_type == DATA_GENERIC_JSON and o.name.endswith(".intoto.json")]
    info = _siftool("info", str(sbom_obj.id), str(root / "s.sif"))
    assert "Data Type:    SBOM" in info and "Format:       spdx-json" in info and "sbomtest.spdx.json" in info
    assert "sbomtest.provenance.intoto.json" in _siftool("info", str(prov_obj.id), str(root / "s.sif"))
    dumped = subprocess.run(
        ["siftool", "dump", str(sbom_obj.id), str(root / "s.sif")], capture_output=True, check=True
    ).stdout
    (root / "files").mkdir()
    listing = referrers("sif:s.sif", "--save", "files", cwd=root)
    assert listing["subject"] == digest
    sbom, prov = root / saved(listing, mt.SPDX_JSON), root / saved(listing, mt.IN_TOTO_JSON)
    assert sbom.read_bytes() == dumped
    _names_image(sbom, prov, digest)
    # The partition is still the image's squashfs, after the new objects, aligned.
    part = read_sif_header(root / "s.sif").primary_partition()
    assert part.offset % 4096 == 0 and part.offset > prov_obj.offset + prov_obj.size
    with open(root / "part.sqfs", "wb") as out:
        subprocess.run(["siftool", "dump", str(part.id), str(root / "s.sif")], stdout=out, check=True)
    assert "squashfs-root/opt/app.txt" in sh(["unsquashfs", "-l", str(root / "part.sqfs")]).stdout

    # Another build of the same inputs (another cache): the same bytes.
    again = run_cli(["m.yaml", "--cache", "cache2", "--json", "-o", "sif:s2.sif"], cwd=root)
    assert again.code == 0, str(again)
    assert (root / "s2.sif").read_bytes() == (root / "s.sif").read_bytes()
    # --no-sbom: neither object, and another UUID than the SIF with them.
    _build(root, "--no-sbom", "-o", "sif:bare.sif")
    bare = read_sif_header(root / "bare.sif")
    assert [o.data_type for o in bare.objects if o.data_type == DATA_SBOM or o.name.endswith(".intoto.json")] == []
    assert "SBOM" not in _siftool("list", str(root / "bare.sif"))
    assert bare.uuid != read_sif_header(root / "s.sif").uuid
    assert referrers("sif:bare.sif", cwd=root) == {"subject": "", "referrers": []}


@pytest.mark.integration  # seconds
def test_bad_paths_for_the_files_are_refused_with_exit_2(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    (root / "d.tar.spdx.json").mkdir()  # where the SBOM of d.tar would go
    ran = run_cli(["m.yaml", "--cache", "cache", "-o", "docker-archive:d.tar"], cwd=root)
    assert ran.code == 2 and "d.tar.spdx.json is a folder" in ran.err, str(ran)
    assert not (root / "d.tar").exists()  # refused before anything was built
    refused = {
        "sif:missing.sif": "does not exist",
        "sif:m.yaml": "not a SIF file",
        "sqsh:m.yaml": "not a squashfs image",
        "docker-archive:m.yaml": "not an image archive",
    }
    for ref, needle in refused.items():
        ran = run_cli(["referrers", ref], cwd=root)
        assert ran.code == 2 and needle in ran.err and "Traceback" not in ran.err, str(ran)


@pytest.mark.integration  # tar2sqfs
def test_assemble_sif_carries_the_sbom_the_image_has(tmp_path: Path) -> None:
    # A build's tagged layout holds its referrers; a SIF made later from that image gets them.
    root = _project(tmp_path / "p")
    built = _build(root, "-o", "oci:out:one", "-o", "sif:direct.sif")
    ran = run_cli(["sif", "oci:out:one", "later.sif", "--cache", "cache", "--json"], cwd=root)
    assert ran.code == 0, str(ran)
    later = referrers("sif:later.sif", cwd=root)
    assert later["subject"] == built["digest"]
    assert {r["artifact_type"] for r in later["referrers"]} == {mt.SPDX_JSON, mt.IN_TOTO_JSON}
    # The very objects of the build's own SIF (whose other bytes differ: it names the build's source).
    direct = referrers("sif:direct.sif", cwd=root)
    assert later["referrers"] == direct["referrers"] and later["referrers"]
    ran = run_cli(["sif", "oci:out:one", "bare.sif", "--cache", "cache", "--no-sbom"], cwd=root)
    assert ran.code == 0, str(ran)
    assert referrers("sif:bare.sif", cwd=root)["referrers"] == []


@pytest.mark.integration  # tar2sqfs
def test_sif_and_sqsh_outputs_through_a_symlink_replace_the_link_not_its_target(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    _build(root, "-o", "sif:real.sif", "-o", "sqsh:real.sqsh", "-o", "oci:out:one")
    before = {name: (root / name).read_bytes() for name in ("real.sif", "real.sqsh")}
    (root / "link.sif").symlink_to("real.sif")
    (root / "link.sqsh").symlink_to("real.sqsh")
    _build(root, "--force", "-o", "sif:link.sif", "-o", "sqsh:link.sqsh")
    for name in ("link.sif", "link.sqsh"):
        assert not (root / name).is_symlink() and (root / name).stat().st_size > 0
    assert {name: (root / name).read_bytes() for name in before} == before
    assert (root / "link.sqsh.spdx.json").is_file() and (root / "link.sqsh.provenance.intoto.json").is_file()
    # `assemble sqsh` writes the SBOM beside its file as a build does: a user's file of that
    # name is never replaced (refused before anything is written; --no-sbom leaves it be).
    (root / "mine.sqsh.spdx.json").write_text("the user's\n")
    ran = run_cli(["sqsh", "oci:out:one", "mine.sqsh", "--cache", "cache"], cwd=root)
    assert ran.code == 2 and "was not written by assemble; not replacing it" in ran.err, str(ran)
    assert not (root / "mine.sqsh").exists()
    ran = run_cli(["sqsh", "oci:out:one", "mine.sqsh", "--cache", "cache", "--no-sbom"], cwd=root)
    assert ran.code == 0, str(ran)
    assert (root / "mine.sqsh.spdx.json").read_text() == "the user's\n"


def test_the_files_beside_an_output_take_its_permissions(tmp_path: Path) -> None:
    """An SBOM next to an archive is read by whoever may read the archive: its read and
    write bits, not a fixed 0644 (issue 67)."""
    from assembler.oci.artifact import Artifact
    from assembler.oci.descriptor import Descriptor
    from assembler.transports.sidecar import write_sidecars

    subject = Descriptor(mt.OCI_MANIFEST, "sha256:" + "a" * 64, 2)
    artifact = Artifact(mt.SPDX_JSON, b"{}", "image.spdx.json", subject)
    output = tmp_path / "app.tar"
    output.write_bytes(b"")
    output.chmod(0o640)
    (path,) = write_sidecars(output, "docker-archive", [artifact], ours=lambda kind, data: True)
    assert path.stat().st_mode & 0o777 == 0o640, oct(path.stat().st_mode)
