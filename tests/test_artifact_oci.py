"""``--artifact STEP[.NAME]``: a compile step's artifacts written to ``oci:`` and
``docker://`` outputs as one OCI artifact of their own (artifactType, the empty config, a
blob per artifact, titled), with no image made; read back by skopeo and the oras CLI."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from tests.helpers import PYTHON, files_project, layout_digest, manifest_of, read_blob, run_cli, uncompressed
from tests.plugins.registry import RunningRegistry

EMPTY = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"  # the digest of b"{}"


def _members(blob: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(uncompressed(blob))) as tf:
        return {m.name: (tf.extractfile(m).read() if m.isfile() else b"") for m in tf.getmembers()}  # type: ignore[union-attr]


def test_artifacts_as_an_oci_artifact_in_a_layout_and_a_registry(
    debian_rootfs: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    project = files_project(tmp_path / "p", debian_rootfs)
    cache = ["--cache", str(tmp_path / "cache")]
    ref = f"{registry.host}/files/pkg:1.0"
    ran = run_cli(
        [
            "m.yaml",
            *cache,
            "--json",
            "--tls-verify=false",
            "--artifact",
            "pkg",
            "-o",
            "oci:out:pkg-1.0",
            "-o",
            f"docker://{ref}",
        ],
        cwd=project,
    )
    assert ran.code == 0, str(ran)  # the image's run: [false] never ran: no image was made
    assert [s["name"] for s in ran.json["steps"]] == ["pkg"]
    digest = ran.json["digest"]
    assert [o["digest"] for o in ran.json["outputs"]] == [digest, digest]

    layout = project / "out"
    assert layout_digest(layout, "pkg-1.0") == digest
    entry = json.loads((layout / "index.json").read_text())["manifests"][0]
    assert entry["artifactType"] == "application/vnd.assemble.artifacts.v1"
    manifest = manifest_of(layout, "pkg-1.0")
    assert manifest["artifactType"] == entry["artifactType"] and "subject" not in manifest
    assert manifest["config"]["digest"] == EMPTY and read_blob(layout, EMPTY) == b"{}"
    blobs = {b["annotations"]["org.opencontainers.image.title"]: b for b in manifest["layers"]}
    assert sorted(blobs) == ["pkg.tool.tar.zst", "pkg.wheel.tar.zst"]
    assert blobs["pkg.tool.tar.zst"]["annotations"]["io.assemble.artifact.to"] == "/usr/local/bin/tool"
    wheel = _members(read_blob(layout, blobs["pkg.wheel.tar.zst"]["digest"]))
    assert wheel["wheels/pkg-1.0-py3-none-any.whl"] == b"wheel\n"
    assert _members(read_blob(layout, blobs["pkg.tool.tar.zst"]["digest"]))["usr/local/bin/tool"].startswith(b"#!")

    # The registry holds the same manifest: skopeo reads it raw, oras pulls the titled blobs.
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"], capture_output=True, check=True
    ).stdout
    assert raw == read_blob(layout, digest)
    pulled = tmp_path / "pulled"
    oras = [str(Path(PYTHON).parent / "oras"), "pull", "--plain-http", ref, "-o", str(pulled)]
    done = subprocess.run(oras, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in pulled.iterdir()) == ["pkg.tool.tar.zst", "pkg.wheel.tar.zst"]
    assert _members((pulled / "pkg.wheel.tar.zst").read_bytes()) == wheel

    # Same inputs, same artifact; one artifact alone is another.
    again = run_cli(["m.yaml", *cache, "--json", "--artifact", "pkg", "-o", "oci:again:x"], cwd=project)
    assert again.code == 0 and again.json["digest"] == digest, str(again)
    assert again.json["steps"][0]["state"] == "cached"
    one = run_cli(["m.yaml", *cache, "--json", "--artifact", "pkg.wheel", "-o", "oci:one:x"], cwd=project)
    assert one.code == 0 and one.json["digest"] != digest, str(one)
    assert [b["annotations"]["io.assemble.artifact"] for b in manifest_of(project / "one", "x")["layers"]] == [
        "pkg.wheel"
    ]


def test_artifact_outputs_that_cannot_hold_one_and_unknown_artifacts_exit_2(
    debian_rootfs: Path, tmp_path: Path
) -> None:
    project = files_project(tmp_path / "p", debian_rootfs)
    cache = ["--cache", str(tmp_path / "cache")]
    archive = run_cli(["m.yaml", *cache, "--artifact", "pkg", "-o", "docker-archive:x.tar"], cwd=project)
    assert archive.code == 2 and "cannot hold an OCI artifact" in archive.err, str(archive)
    unknown = run_cli(["m.yaml", *cache, "--artifact", "nope", "-o", "oci:o:x"], cwd=project)
    assert unknown.code == 2 and "no compile step 'nope'" in unknown.err, str(unknown)
    nowhere = run_cli(["m.yaml", *cache, "--artifact", "pkg", "-o", "artifact:files:pkg"], cwd=project)
    assert nowhere.code == 2 and "no output to write the artifacts to" in nowhere.err, str(nowhere)
    assert not (project / "x.tar").exists() and not (project / "o").exists()
