"""Images assembled from bases and host files, checked by the real tools.

skopeo, umoci, buildah and podman read what we write; the real docker-registry takes
our pushes; every image is validated with every digest recomputed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import Buildah, config_of, layout_digest, manifest_of, run_cli, sh
from tests.plugins.faultproxy import Fault, FaultProxy
from tests.plugins.registry import RunningRegistry

MANIFEST = """\
name: hello
compression: {compression}
params: {{greeting: hello}}
bases:
  runtime: {base}
image:
  base: runtime
  layers:
    - copy: {{from: ./bin/, to: /app/, mode: "0755"}}
    - copy: {{from: ./etc/motd, to: /etc/motd}}
  config:
    env: {{GREETING: "${{greeting}}", PATH: "/app:${{PATH}}"}}
    entrypoint: [/app/hello.sh]
    cmd: [world]
    workdir: /app
    user: "1000:0"
    exposed_ports: ["8080/tcp"]
    labels: {{org.opencontainers.image.title: hello}}
    healthcheck: {{test: ["CMD", "true"], interval: 30s}}
annotations: {{org.opencontainers.image.source: "https://example.invalid/hello"}}
outputs:
  - oci:out/layout:latest
"""


def make_project(root: Path, base: str, *, compression: str = "zstd", order: str = "forward", mtime: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "bin/hello.sh": '#!/bin/sh\necho "$GREETING, $1, from $(cat /etc/motd) as $(id -u)"\n',
        "bin/lib/data.txt": "payload\n" * 100,
        "etc/motd": "the copy layer",
    }
    for name in sorted(files, reverse=order == "reverse"):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[name])
        if mtime:
            os.utime(path, (mtime, mtime))
    os.chmod(root / "bin/hello.sh", 0o755)
    (root / "hello.yaml").write_text(MANIFEST.format(base=base, compression=compression))
    return root / "hello.yaml"


def build(project: Path, *args: str, cache: Path | None = None, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    ran = run_cli(["hello.yaml", "--cache", str(cache or project / "cache"), "--json", *args], cwd=project, env=env)
    assert ran.code == 0, str(ran)
    return ran.json  # type: ignore[no-any-return]


def test_image_is_accepted_by_skopeo_umoci_buildah_and_podman(debian_rootfs: Path, tmp_path: Path) -> None:
    # umoci 0.4.7 cannot read zstd layers: this image uses gzip, as such clients need.
    project = tmp_path / "p"
    make_project(project, f"rootfs:{debian_rootfs}", compression="gzip")
    result = build(
        project,
        "-o",
        "oci:out/layout:latest",
        "-o",
        "oci-archive:out/image.tar:latest",
        "-o",
        "docker-archive:out/docker.tar:hello:latest",
    )
    digest = result["digest"]
    layout = project / "out/layout"
    assert layout_digest(layout, "latest") == digest
    assert [layer["origin"] for layer in result["layers"]] == ["base", "built", "built"]

    inspected = json.loads(sh(["skopeo", "inspect", f"oci:{layout}:latest"]).stdout)
    assert inspected["Digest"] == digest
    assert len(inspected["Layers"]) == 3
    assert (
        json.loads(sh(["skopeo", "inspect", f"oci-archive:{project}/out/image.tar:latest"]).stdout)["Digest"] == digest
    )
    sh(["skopeo", "copy", f"oci:{layout}:latest", f"oci:{tmp_path}/copied:x"])
    assert layout_digest(tmp_path / "copied", "x") == digest

    sh(["umoci", "unpack", "--image", f"{layout}:latest", str(tmp_path / "bundle")])
    rootfs = tmp_path / "bundle/rootfs"
    assert (rootfs / "app/hello.sh").stat().st_mode & 0o777 == 0o755
    assert (rootfs / "etc/motd").read_text() == "the copy layer"
    assert (rootfs / "usr/bin/apt").exists()  # the Debian base is underneath

    for ref in (
        f"oci:{layout}:latest",
        f"oci-archive:{project}/out/image.tar:latest",
        f"docker-archive:{project}/out/docker.tar",
    ):
        ran = run_cli(["validate", ref])
        assert ran.code == 0 and "valid" in ran.out, str(ran)

    out = Buildah(tmp_path / "buildah").run_image(f"oci:{layout}:latest", ["/app/hello.sh", "world"])
    assert out.strip() == "hello, world, from the copy layer as 1000"

    runroot = tempfile.mkdtemp(prefix="pm", dir="/tmp")  # podman refuses a runroot longer than 50 characters
    podman = ["podman", "--root", str(tmp_path / "podman/root"), "--runroot", runroot, "--storage-driver", "overlay"]
    loaded = sh([*podman, "load", "-i", str(project / "out/docker.tar")])
    assert "hello:latest" in loaded.stdout + loaded.stderr
    cfg = json.loads(sh([*podman, "image", "inspect", "hello:latest"]).stdout)[0]["Config"]
    assert cfg["Entrypoint"] == ["/app/hello.sh"] and cfg["Cmd"] == ["world"]
    assert "GREETING=hello" in cfg["Env"]
    assert any(e.startswith("PATH=/app:/usr/local/sbin") for e in cfg["Env"])  # ${PATH} from the base
    shutil.rmtree(runroot, ignore_errors=True)


def test_config_and_annotations(debian_rootfs: Path, tmp_path: Path) -> None:
    project = tmp_path / "p"
    make_project(project, f"rootfs:{debian_rootfs}")
    build(project, "--set", "greeting=hi", "--epoch", "1700000000")
    manifest = manifest_of(project / "out/layout", "latest")
    assert manifest["annotations"]["org.opencontainers.image.source"] == "https://example.invalid/hello"
    assert manifest["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    # skopeo's config view drops what the OCI spec does not define (Healthcheck): read the blob.
    config = config_of(project / "out/layout", "latest")
    assert json.loads(sh(["skopeo", "inspect", "--config", f"oci:{project}/out/layout:latest"]).stdout)["config"]["Env"]
    c = config["config"]
    assert c["Env"][-1] == "GREETING=hi" and c["User"] == "1000:0" and c["WorkingDir"] == "/app"
    assert c["ExposedPorts"] == {"8080/tcp": {}} and c["Labels"]["org.opencontainers.image.title"] == "hello"
    assert c["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 30_000_000_000}
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert all(h["created"] == "2023-11-14T22:13:20Z" for h in config["history"])
    assert [layer["mediaType"] for layer in manifest["layers"]] == ["application/vnd.oci.image.layer.v1.tar+zstd"] * 3


def test_byte_reproducible_from_empty_caches(debian_rootfs: Path, tmp_path: Path) -> None:
    """Two runs from empty caches, with different umask, mtimes and creation order."""
    digests = []
    for i, (umask, order, mtime) in enumerate([(0o022, "forward", 1_600_000_000), (0o077, "reverse", 1_750_000_000)]):
        old = os.umask(umask)
        try:
            project = tmp_path / f"p{i}"
            make_project(project, f"rootfs:{debian_rootfs}", order=order, mtime=mtime)
        finally:
            os.umask(old)
        result = build(project, cache=tmp_path / f"cache{i}", env={"SOURCE_DATE_EPOCH": "1700000000"})
        digests.append(result["digest"])
        assert layout_digest(project / "out/layout", "latest") == result["digest"]
    assert digests[0] == digests[1]
    print(f"\nsame digest from two empty caches: {digests[0]}")


def test_push_pull_back_second_push_uploads_nothing(
    debian_rootfs: Path, tmp_path: Path, registry: RunningRegistry, fault_proxy: FaultProxy
) -> None:
    project = tmp_path / "p"
    make_project(project, f"rootfs:{debian_rootfs}")
    ref = f"docker://{fault_proxy.host}/hello/app:1"
    first = build(project, "--tls-verify=false", "-o", ref, "-o", "oci:out/layout:latest")
    push = next(o for o in first["outputs"] if o["ref"].startswith("docker://"))
    assert push["digest"] == first["digest"] and push["uploaded_blobs"] == 4  # 3 layers + config
    pulled = json.loads(sh(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/hello/app:1"]).stdout)
    assert pulled["Digest"] == first["digest"]
    sh(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/hello/app:1", f"oci:{tmp_path}/back:1"])
    assert layout_digest(tmp_path / "back", "1") == first["digest"]
    assert run_cli(["validate", f"oci:{tmp_path}/back:1"]).code == 0

    before = len(fault_proxy.blob_uploads())
    second = build(project, "--tls-verify=false", "-o", ref)
    out = second["outputs"][0]
    assert second["digest"] == first["digest"]
    assert out["uploaded_blobs"] == 0 and out["uploaded_bytes"] == 0 and out["skipped_blobs"] == 4
    assert len(fault_proxy.blob_uploads()) == before  # counted on the wire too
    print(f"\nsecond push: {out['uploaded_bytes']} bytes uploaded, {out['skipped_blobs']} blobs already there")


def test_base_blobs_in_the_same_registry_are_mounted(
    debian_rootfs: Path, tmp_path: Path, registry: RunningRegistry
) -> None:
    base_project = tmp_path / "base"
    make_project(base_project, f"rootfs:{debian_rootfs}")
    base_ref = f"docker://{registry.host}/library/base:1"
    base = build(base_project, "--tls-verify=false", "-o", base_ref)
    project = tmp_path / "app"
    make_project(project, base_ref)
    (project / "etc/motd").write_text("another app")
    result = build(project, "--tls-verify=false", "-o", f"docker://{registry.host}/team/app:2")
    out = result["outputs"][0]
    assert result["layers"][0]["origin"] == "base" and len(result["layers"]) == 5
    # The 3 base layers are mounted from library/base; the new motd layer and the config are
    # uploaded; the bin layer is byte-identical to one of the base's, so it is already there.
    assert out["mounted_blobs"] == 3 and out["uploaded_blobs"] == 2, out
    annotations = json.loads(
        sh(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/team/app:2"]).stdout
    )["annotations"]
    assert annotations["org.opencontainers.image.base.digest"] == base["digest"]


def test_basic_auth_push(debian_rootfs: Path, tmp_path: Path, auth_registry: RunningRegistry) -> None:
    project = tmp_path / "p"
    make_project(project, f"rootfs:{debian_rootfs}")
    ref = f"docker://{auth_registry.host}/private/app:1"
    denied = run_cli(
        ["hello.yaml", "--tls-verify=false", "-o", ref],
        cwd=project,
        env={"REGISTRY_AUTH_FILE": str(tmp_path / "none.json"), "HOME": str(tmp_path)},
    )
    assert denied.code == 1 and auth_registry.host in denied.err and "401" in denied.err, str(denied)
    result = build(project, "--tls-verify=false", "-o", ref, env={"REGISTRY_AUTH_FILE": str(auth_registry.auth_file)})
    inspect = sh(["skopeo", "inspect", "--tls-verify=false", "--creds", "user:pass", ref]).stdout
    assert json.loads(inspect)["Digest"] == result["digest"]


def test_push_survives_faults_and_fails_clearly_when_they_do_not_stop(
    debian_rootfs: Path, tmp_path: Path, registry: RunningRegistry, fault_proxy: FaultProxy
) -> None:
    project = tmp_path / "p"
    make_project(project, f"rootfs:{debian_rootfs}")
    ref = f"docker://{fault_proxy.host}/flaky/app:1"
    fault_proxy.add(Fault("drop", method="PUT", path=r"/blobs/uploads/", after_bytes=1000, times=1))
    fault_proxy.add(Fault("drop", method="PATCH", path=r"/blobs/uploads/", after_bytes=1000, times=1))
    fault_proxy.add(Fault("status", method="HEAD", path=r"/blobs/", status=503, times=2))
    fault_proxy.add(Fault("status", method="POST", path=r"/blobs/uploads/", status=429, retry_after="0", times=1))
    fault_proxy.add(Fault("status", method="PUT", path=r"/manifests/", status=500, times=1))
    result = build(project, "--tls-verify=false", "-o", ref)
    sh(["skopeo", "copy", "--src-tls-verify=false", f"docker://{registry.host}/flaky/app:1", f"oci:{tmp_path}/back:1"])
    assert layout_digest(tmp_path / "back", "1") == result["digest"]
    assert run_cli(["validate", f"oci:{tmp_path}/back:1"]).code == 0

    fault_proxy.clear()
    fault_proxy.add(Fault("status", method=None, path=r"/blobs/", status=503, times=None))
    (project / "etc/motd").write_text("changed, so there is a blob to push")
    # Two tries: how long the default budget waits is test_remote's (on a fake clock), not this one's.
    started = time.monotonic()
    args = ["--cache", str(project / "cache"), "--tls-verify=false", "--retries", "2"]
    failed = run_cli(["hello.yaml", *args, "-o", f"docker://{fault_proxy.host}/flaky/app:2"], cwd=project)
    elapsed = time.monotonic() - started
    assert failed.code == 1, str(failed)
    message = failed.err
    assert fault_proxy.host in message and "503" in message and "sha256:" in message, message
    assert "Traceback" not in message
    assert elapsed < 120, elapsed
    print(f"\npermanent 503: exit 1 after {elapsed:.1f} s: {message.strip().splitlines()[0]}")


def test_flat_memory_with_a_2gib_layer(debian_rootfs: Path, tmp_path: Path, registry: RunningRegistry) -> None:
    project = tmp_path / "p"
    make_project(project, "scratch")
    big = project / "bin/lib/weights.bin"
    chunk = os.urandom(8 << 20)
    with open(big, "wb") as f:
        for i in range(256):  # 2 GiB, incompressible, each chunk different
            f.write(i.to_bytes(8, "little") + chunk[8:])
    ran = run_cli(
        [
            "hello.yaml",
            "--cache",
            str(tmp_path / "cache"),
            "--tls-verify=false",
            "--json",
            "-o",
            f"docker://{registry.host}/big/app:1",
            "-o",
            "oci:out/layout:latest",
        ],
        cwd=project,
        measure_rss=True,
    )
    assert ran.code == 0, str(ran)
    result = json.loads(ran.out)
    layer = max(result["layers"], key=lambda x: x["size"])
    assert layer["size"] > 2 << 30
    rss = ran.peak_rss_kib / 1024
    print(f"\n2 GiB layer assembled and pushed: peak RSS {rss:.0f} MiB")
    assert rss < 300
    pulled = json.loads(sh(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/big/app:1"]).stdout)
    assert pulled["Digest"] == result["digest"]
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    big.unlink()


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("ref", ["docker-archive:{p}/nope.tar", "oci:{p}/missing", "oci-archive:{p}/hello.yaml"])
def test_unreadable_bases_are_input_errors(tmp_path: Path, ref: str) -> None:
    project = tmp_path / "p"
    make_project(project, ref.format(p=project))
    ran = run_cli(["hello.yaml", "--cache", str(tmp_path / "cache")], cwd=project)
    assert ran.code == 2 and ran.err.startswith("error: "), str(ran)
    assert ran.err.startswith("error: hello.yaml:5: bases.runtime: "), str(ran)
    assert "Traceback" not in ran.err
    assert not (project / "out").exists()
