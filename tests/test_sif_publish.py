"""SIF files published with oras: pulled back byte-identical, listed as referrers of the image."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from pathlib import Path

from assembler.oci import mediatypes as mt
from assembler.oci.reference import ImageName
from assembler.registry.client import Registry
from assembler.registry.types import RegistryOptions
from tests.helpers import run_cli, sh
from tests.plugins.registry import RunningRegistry
from tests.test_image import make_project


def _get(url: str, accept: str = "") -> bytes:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()  # type: ignore[no-any-return]


def test_sif_command_pushes_and_attaches(debian_rootfs: Path, tmp_path: Path, registry: RunningRegistry) -> None:
    project = tmp_path / "p"
    make_project(project, f"rootfs:{debian_rootfs}")
    image_ref = f"docker://{registry.host}/hpc/app:1"
    built = run_cli(
        ["hello.yaml", "--cache", str(tmp_path / "cache"), "--tls-verify=false", "--json", "-o", image_ref], cwd=project
    )
    assert built.code == 0, str(built)
    image_digest = built.json["digest"]

    out = tmp_path / "app.sif"
    push, attach = f"oras://{registry.host}/hpc/app-sif:1", f"docker://{registry.host}/hpc/app"
    # gzip 1: what is pushed and attached is the point here; level 9's 20 s of CPU is test_sif's
    sif = ["sif", image_ref, str(out), "--level", "1", "--tls-verify=false", "--json"]
    ran = run_cli([*sif, "--push", push, "--attach", attach])
    assert ran.code == 0, str(ran)
    result = ran.json
    sif_bytes = out.read_bytes()
    assert result["digest"] == "sha256:" + hashlib.sha256(sif_bytes).hexdigest()
    assert result["image"] == image_digest
    sh(["siftool", "info", "4", str(out)])

    # Tagged artifact, the way `apptainer pull oras://` finds it: config and layer media types.
    manifest = json.loads(_get(f"{registry.url}/v2/hpc/app-sif/manifests/1", mt.OCI_MANIFEST))
    assert manifest["config"]["mediaType"] == mt.SIF_CONFIG
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == mt.SIF_LAYER and layer["annotations"][mt.ANNOTATION_TITLE] == "app.sif"
    pulled = _get(f"{registry.url}/v2/hpc/app-sif/blobs/{layer['digest']}")
    assert pulled == sif_bytes  # pulled back by digest: byte-identical

    # Referrer of the image: distribution 2.8 has no referrers API, so the tag-schema index lists it.
    index = json.loads(_get(f"{registry.url}/v2/hpc/app/manifests/sha256-{image_digest[7:]}", mt.OCI_INDEX))
    entries = [d for d in index["manifests"] if d.get("artifactType") == mt.SIF_CONFIG]
    assert len(entries) == 1
    referrer = json.loads(_get(f"{registry.url}/v2/hpc/app/manifests/{entries[0]['digest']}", mt.OCI_MANIFEST))
    assert referrer["subject"]["digest"] == image_digest
    assert referrer["layers"][0]["digest"] == result["digest"]
    with Registry(registry.host, options=RegistryOptions(tls_verify=False)) as reg:
        listed = reg.list_referrers("hpc/app", image_digest, mt.SIF_CONFIG)
    assert [d.digest for d in listed] == [entries[0]["digest"]]
    print(f"\nSIF {result['digest']} pushed, pulled back identical, listed as referrer of {image_digest}")


def test_build_writes_sif_and_oras_outputs(debian_rootfs: Path, tmp_path: Path, registry: RunningRegistry) -> None:
    project = tmp_path / "p"
    manifest = make_project(project, f"rootfs:{debian_rootfs}")
    manifest.write_text(manifest.read_text() + "sif: {level: 1}\n")  # not gzip 9's 20 s of CPU: test_sif's
    args = [
        "hello.yaml",
        "--cache",
        str(tmp_path / "cache"),
        "--tls-verify=false",
        "--json",
        "--attach-sif",
        "-o",
        "sif:out/hello.sif",
        "-o",
        f"oras://{registry.host}/hpc/hello-sif:v1",
        "-o",
        f"docker://{registry.host}/hpc/hello:v1",
    ]
    ran = run_cli(args, cwd=project)
    assert ran.code == 0, str(ran)
    outputs = {o["ref"].split(" ")[0]: o for o in ran.json["outputs"]}
    sif = project / "out/hello.sif"
    digest = "sha256:" + hashlib.sha256(sif.read_bytes()).hexdigest()
    assert outputs["sif:" + str(sif)]["digest"] == digest
    # The SIF made for the file output is the one pushed: same bytes.
    manifest = json.loads(_get(f"{registry.url}/v2/hpc/hello-sif/manifests/v1", mt.OCI_MANIFEST))
    assert manifest["layers"][0]["digest"] == digest
    with Registry(registry.host, options=RegistryOptions(tls_verify=False)) as reg:
        referrers = reg.list_referrers("hpc/hello", ran.json["digest"])
    # The SIF, beside the SBOM and the provenance every build attaches.
    assert sorted(r.artifact_type for r in referrers) == sorted([mt.SIF_CONFIG, mt.SPDX_JSON, mt.IN_TOTO_JSON])
    # A second build keeps the SIF it wrote (the same image: not written again, the file
    # untouched) and uploads no SIF again. (Two writes give the same bytes: test_sif.)
    before = sif.stat()
    again = run_cli(args, cwd=project)
    assert again.code == 0, str(again)
    after = sif.stat()
    assert (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns)
    assert {o["ref"].split(" ")[0]: o for o in again.json["outputs"]}["sif:" + str(sif)]["digest"] == digest
    assert all(o["uploaded_bytes"] == 0 for o in again.json["outputs"] if o["ref"].startswith("oras://")), again.out
    assert ImageName.parse(f"{registry.host}/hpc/hello:v1").tag == "v1"
