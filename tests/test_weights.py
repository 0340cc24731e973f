"""Model weights (``weights:``): gathered from a folder, a pinned URL or a Hugging Face
repository (a local server that speaks the Hub's HTTP API: paged tree listings, LFS sha256s,
``resolve`` downloads, a bearer token), locked file by file, packed as ModelPack does (byte
for byte the same tars, read back by Python's tarfile), pushed to a real registry as a
referrer of the image (read back by oras), and bound where the manifest says by ``assemble
run``, the build's tests, and Apptainer beside a SIF. A code change re-pushes no weight
byte (counted in the registry's access log)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from assembler.cache import Cache
from assembler.errors import InputError
from assembler.manifest.schema.weights import WeightsSpec
from assembler.transports.beside import ANNOTATION_AT, ANNOTATION_NAME
from assembler.transports.hpc.squash import Squash
from assembler.weights import lock, pack
from assembler.weights.files import WeightFile
from assembler.weights.hub import Hub
from assembler.weights.sources import gather
from tests.helpers import run_cli, run_cli_here
from tests.plugins.registry import RunningRegistry, start_registry

COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _HubHandler(BaseHTTPRequestHandler):
    """Answers for the FakeHub the server holds."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        hub: FakeHub = self.server.hub  # type: ignore[attr-defined]
        hub.auth.append(self.headers.get("Authorization"))
        if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
            return self._send(401, b"{}")
        url = urlsplit(self.path)
        path = unquote(url.path)
        if path == "/api/models/org/tiny/revision/main":
            return self._send(200, json.dumps({"sha": hub.commit}).encode())
        if path.startswith("/api/models/org/tiny/tree/"):
            return self._tree(hub, url.query)
        if path.startswith(("/org/tiny/resolve/" + COMMIT_A, "/org/tiny/resolve/" + COMMIT_B)):
            name = path.split("/", 5)[5]
            if name in hub.files:
                hub.downloads.append(name)
                return self._send(200, hub.served.get(name, hub.files[name]))
        return self._send(404, b"{}")

    def _tree(self, hub: FakeHub, query: str) -> None:
        names = sorted(hub.files)
        page = int(query.split("page=")[1]) if "page=" in query else 0
        entries: list[dict[str, Any]] = [{"type": "directory", "path": "sub", "oid": "0" * 40}] if page == 0 else []
        for name in names[page * 2 : page * 2 + 2]:
            data = hub.files[name]
            entry: dict[str, Any] = {"type": "file", "path": name, "size": len(data), "oid": "1" * 40}
            if name in hub.lfs:
                entry["lfs"] = {"oid": _sha(data), "size": len(data), "pointerSize": 130}
            entries.append(entry)
        headers = {}
        if (page + 1) * 2 < len(names):
            headers["Link"] = f'<{self.path.split("&page=")[0]}&page={page + 1}>; rel="next"'
        self._send(200, json.dumps(entries).encode(), headers)

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class FakeHub:
    """A local server that answers as the Hub's HTTP API does, for one repository ``org/tiny``:
    ``main`` stands for ``commit``; the tree is listed two entries a page; a file in LFS is
    listed with its sha256; ``resolve`` serves the bytes (``served`` may lie about one)."""

    def __init__(self, files: dict[str, bytes], *, lfs: set[str], token: str | None = None) -> None:
        self.files, self.lfs, self.token = files, lfs, token
        self.commit = COMMIT_A
        self.served: dict[str, bytes] = {}
        self.downloads: list[str] = []
        self.auth: list[str | None] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
        self.server.hub = self  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hub(self) -> Hub:
        return Hub(self.endpoint, self.token)

    def stop(self) -> None:
        self.server.shutdown()


MODEL = {
    "config.json": b'{"hidden_size": 8}\n',
    "model-00001.safetensors": b"\x01" * 3000,
    "model-00002.safetensors": b"\x02" * 2500,
    "sub/tokenizer.json": b'{"vocab": {}}\n',
    "README.md": b"# tiny\n",
}


@pytest.fixture()
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub(dict(MODEL), lfs={"model-00001.safetensors", "model-00002.safetensors"}, token="hf_secret")
    try:
        yield hub
    finally:
        hub.stop()


def _hf(include: list[str] | None = None) -> WeightsSpec:
    return WeightsSpec(source="hf://org/tiny@main", at="/models/tiny", include=include or [], exclude=["README.md"])


def test_an_hf_source_is_listed_page_by_page_checked_and_sent_the_token(tmp_path: Path, fake_hub: FakeHub) -> None:
    cache = Cache(tmp_path / "cache")
    got = gather("tiny", _hf(), folder=tmp_path, cache=cache, locked=None, hub=fake_hub.hub)
    assert got.revision == COMMIT_A and not got.locked
    assert [f.path for f in got.files] == [
        "config.json",
        "model-00001.safetensors",
        "model-00002.safetensors",
        "sub/tokenizer.json",
    ]
    for f in got.files:
        assert f.sha256 == _sha(MODEL[f.path]) and cache.read_blob(f.digest) == MODEL[f.path]
    assert set(fake_hub.auth) == {"Bearer hf_secret"}
    # a gated repository asked without a token: said so, with the variable to set
    with pytest.raises(InputError, match=r"HTTP 401 \(asked anonymously \(no HF_TOKEN\)\)") as e:
        gather("tiny", _hf(), folder=tmp_path, cache=cache, locked=None, hub=lambda: Hub(fake_hub.endpoint))
    assert "HF_TOKEN" in (e.value.hint or "")
    assert "README.md" not in fake_hub.downloads  # excluded: never fetched
    # A file in LFS whose bytes are not its listed sha256: refused, nothing stored.
    fake_hub.served["model-00002.safetensors"] = b"\x03" * 2500
    with pytest.raises(InputError, match=r"model-00002\.safetensors.*has sha256"):
        gather("tiny", _hf(), folder=tmp_path, cache=Cache(tmp_path / "other"), locked=None, hub=fake_hub.hub)


def test_the_lock_pins_the_commit_and_every_file(tmp_path: Path, fake_hub: FakeHub) -> None:
    cache = Cache(tmp_path / "cache")
    spec = _hf(include=["*.safetensors", "*.json"])
    first = gather("tiny", spec, folder=tmp_path, cache=cache, locked=None, hub=fake_hub.hub)
    path = tmp_path / "m.weights.lock"
    assert lock.write(path, {"tiny": first.as_locked()}) and not lock.write(path, {"tiny": first.as_locked()})
    locked = lock.read(path)["tiny"]
    assert locked.revision == COMMIT_A and [f.path for f in locked.files] == [f.path for f in first.files]
    # main moves on upstream: a locked build still takes the locked commit's files, from the cache
    fake_hub.commit = COMMIT_B
    fake_hub.downloads.clear()
    again = gather("tiny", spec, folder=tmp_path, cache=cache, locked=locked, hub=fake_hub.hub)
    assert again.locked and again.revision == COMMIT_A and again.files == first.files and fake_hub.downloads == []
    # a folder that changed since it was locked: refused, naming the file
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.safetensors").write_bytes(b"one")
    local = WeightsSpec(source="model", at="/m")
    made = gather("m", local, folder=tmp_path, cache=cache, locked=None)
    (folder / "w.safetensors").write_bytes(b"two")
    with pytest.raises(InputError, match=r"w.safetensors: 3 bytes, sha256 .*; locked 3 bytes"):
        gather("m", local, folder=tmp_path, cache=cache, locked=made.as_locked())
    # a lock that is not one: file and field named
    path.write_text(json.dumps({"version": 1, "weights": {"tiny": {"source": "x", "files": [{"path": "../x"}]}}}))
    with pytest.raises(InputError, match=r"weights.tiny.files\[0\].path is not valid"):
        lock.read(path)


def _files(cache: Cache, contents: dict[str, bytes]) -> list[WeightFile]:
    out = []
    for path, data in contents.items():
        digest = cache.put_bytes(data)
        out.append(WeightFile(path, len(data), digest.removeprefix("sha256:")))
    return out


def test_packing_is_modelpacks_layout_byte_for_byte_the_same(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    files = _files(cache, MODEL)
    packed = pack.pack(
        "tiny",
        "/models/tiny",
        files,
        source="hf://org/tiny@main",
        revision=COMMIT_A,
        cache=cache,
        file_layer_min=2048,
        bundle_max=30,
    )
    # the two large files alone, the small ones bundled in path order (at most 30 bytes a bundle)
    assert [[f.path for f in layer.files] for layer in packed.layers] == [
        ["README.md", "config.json"],
        ["model-00001.safetensors"],
        ["model-00002.safetensors"],
        ["sub/tokenizer.json"],
    ]
    kinds = [layer.descriptor.media_type for layer in packed.layers]
    assert kinds == [pack.WEIGHT_CONFIG_TAR, pack.WEIGHT_TAR, pack.WEIGHT_TAR, pack.WEIGHT_CONFIG_TAR]
    big = packed.layers[1].descriptor
    assert big.annotations[pack.ANNOTATION_FILEPATH] == "model-00001.safetensors"
    assert json.loads(big.annotations[pack.ANNOTATION_FILE_METADATA])["size"] == 3000
    reader = packed.blobs()
    for layer in packed.layers:
        data = reader.open_blob(layer.descriptor.digest).read()
        assert "sha256:" + _sha(data) == layer.descriptor.digest and len(data) == layer.descriptor.size
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            for m in members:
                assert (m.uid, m.gid, m.mtime) == (0, 0, 0) and m.mode == (0o755 if m.isdir() else 0o644)
            got = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]
        assert got == {f.path: MODEL[f.path] for f in layer.files}
    with tarfile.open(fileobj=reader.open_blob(packed.layers[3].descriptor.digest), mode="r|") as tar:
        assert [m.name for m in tar] == ["sub", "sub/tokenizer.json"]
    config = json.loads(packed.config_bytes)
    assert config == {
        "descriptor": {"name": "tiny", "sourceURL": "hf://org/tiny", "revision": COMMIT_A},
        "config": {"format": "safetensors"},
        "modelfs": {"type": "layers", "diffIds": [layer.descriptor.digest for layer in packed.layers]},
    }
    # the same files in another cache, listed in another order: the same artifact
    other = Cache(tmp_path / "other")
    again = pack.pack(
        "tiny",
        "/models/tiny",
        list(reversed(_files(other, MODEL))),
        source="hf://org/tiny@main",
        revision=COMMIT_A,
        cache=other,
        file_layer_min=2048,
        bundle_max=30,
    )
    assert again.artifact(None).manifest_bytes == packed.artifact(None).manifest_bytes
    manifest = json.loads(packed.artifact(None).manifest_bytes)
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"


SERVED = """name: served
bases: {{b: "oci:{runtime}:latest"}}
image:
  base: b
  layers:
    - copy: {{from: app/, to: /app/}}
weights:
  tiny: {{source: model, at: /models/tiny, exclude: ["*.md"]}}
tests:
  - name: sees-its-weights
    command: [sh, -c, "cat /models/tiny/config.json; sha256sum /models/tiny/big.safetensors"]
    output: ["hidden_size", "{big}"]
"""


@pytest.fixture()
def logged_registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    reg = start_registry(tmp_path / "registry", access_log=True)
    try:
        yield reg
    finally:
        reg.stop()


def _uploads(registry: RunningRegistry, since: int) -> dict[str, int]:
    """The blobs uploaded since byte ``since`` of the access log, with their sizes as stored."""
    out = {}
    for method, path, _ in registry.requests(since):
        if method == "PUT" and "/blobs/uploads/" in path:
            digest = path.rsplit("digest=", 1)[1]
            hexd = digest.removeprefix("sha256:")
            data = registry.root / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"
            out[digest] = data.stat().st_size
    return out


def _oras(*args: str) -> Any:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "oras"), *args, "--plain-http"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow  # buildah builds, runs the tests and assemble run
@pytest.mark.integration  # a registry, oras, Apptainer
@pytest.mark.timeout(900)
def test_weights_go_beside_the_image_and_a_code_change_pushes_none_of_them(
    tmp_path: Path, demo_bases: dict[str, Path], logged_registry: RunningRegistry
) -> None:
    big = os.urandom(70 << 20)  # above 64 MiB: a layer of its own
    (tmp_path / "model" / "sub").mkdir(parents=True)
    (tmp_path / "model" / "big.safetensors").write_bytes(big)
    (tmp_path / "model" / "config.json").write_text('{"hidden_size": 8}\n')
    (tmp_path / "model" / "sub" / "tokenizer.json").write_text("{}\n")
    (tmp_path / "model" / "README.md").write_text("# not taken\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "serve.sh").write_text("echo one\n")
    # gzip 1: Apptainer reading the weights beside the SIF is the point; level 9's 20 s of CPU
    # for each of the two squashfs images of the image is test_sif's and test_enroot's
    served = SERVED.format(runtime=demo_bases["runtime"], big=_sha(big)) + "sif: {level: 1}\n"
    (tmp_path / "m.yaml").write_text(served)
    host = logged_registry.host
    ref = f"docker://{host}/served/app:dev"
    built = run_cli(["m.yaml", "--cache", "cache", "-o", ref, "--tls-verify=false"], cwd=tmp_path)
    assert built.code == 0, str(built)
    assert "weights tiny: not locked" in built.err and "test sees-its-weights: passed" in built.err + built.out
    # the tag names an index: the image by its platform, the weights as unknown/unknown
    index = _oras("manifest", "fetch", f"{host}/served/app:dev")
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    image_entry, weights_entry = index["manifests"]
    assert image_entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert weights_entry["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert (
        weights_entry["artifactType"] == pack.ARTIFACT_TYPE and weights_entry["annotations"][ANNOTATION_NAME] == "tiny"
    )
    # the weights are a referrer of the image too (oras discover lists them), in ModelPack's types
    listed = _oras("discover", "--format", "json", f"{host}/served/app@{image_entry['digest']}")
    found = [d["digest"] for d in listed.get("referrers") or [] if d.get("artifactType") == pack.ARTIFACT_TYPE]
    assert found == [weights_entry["digest"]], listed
    manifest = _oras("manifest", "fetch", f"{host}/served/app@{weights_entry['digest']}")
    assert (
        manifest["config"]["mediaType"] == pack.CONFIG_TYPE and manifest["subject"]["digest"] == image_entry["digest"]
    )
    assert manifest["annotations"][ANNOTATION_AT] == "/models/tiny"
    layers = manifest["layers"]
    assert [d["mediaType"] for d in layers] == [pack.WEIGHT_TAR, pack.WEIGHT_CONFIG_TAR]
    assert layers[0]["annotations"][pack.ANNOTATION_FILEPATH] == "big.safetensors"
    image = _oras("manifest", "fetch", f"{host}/served/app@{image_entry['digest']}")
    assert all(d["size"] < 60 << 20 for d in image["layers"])  # no weight in the image
    # skopeo (containers/image, as podman and buildah) picks the image out of the index
    inspected = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", ref], capture_output=True, text=True, timeout=120
    )
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout)["Layers"] == [d["digest"] for d in image["layers"]]
    # a one-line code change: a new image and a small manifest; no weight byte goes again
    since = logged_registry.log.stat().st_size
    (tmp_path / "app" / "serve.sh").write_text("echo two\n")
    again = run_cli(["m.yaml", "--cache", "cache", "-o", ref, "--tls-verify=false"], cwd=tmp_path)
    assert again.code == 0, str(again)
    uploaded = _uploads(logged_registry, since)
    assert not {d["digest"] for d in layers} & set(uploaded), uploaded
    assert sum(uploaded.values()) < 1 << 20, uploaded  # the code layer, the config, SBOM and provenance
    image_entry, weights_entry = _oras("manifest", "fetch", f"{host}/served/app:dev")["manifests"]
    assert _oras("manifest", "fetch", f"{host}/served/app@{weights_entry['digest']}")["layers"] == layers
    # a new checkpoint's config: the image is the same (not rebuilt, not pushed), the big file not sent
    since = logged_registry.log.stat().st_size
    (tmp_path / "model" / "config.json").write_text('{"hidden_size": 9}\n')
    third = run_cli(["m.yaml", "--cache", "cache", "-o", ref, "--tls-verify=false"], cwd=tmp_path)
    assert third.code == 0, str(third)
    newer = _oras("manifest", "fetch", f"{host}/served/app:dev")["manifests"]
    assert newer[0] == image_entry and newer[1]["digest"] != weights_entry["digest"]
    uploaded = _uploads(logged_registry, since)
    assert layers[0]["digest"] not in uploaded and 0 < sum(uploaded.values()) < 1 << 20, uploaded
    # assemble run binds the weights it finds beside the image, where the manifest said
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "assembler",
            "run",
            ref,
            "--cache",
            "cache",
            "--tls-verify=false",
            "--entrypoint",
            "sh",
            "--",
            "-c",
            "sha256sum /models/tiny/big.safetensors; ls /models/tiny; cat /models/tiny/config.json",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    assert _sha(big) in ran.stdout and "README.md" not in ran.stdout and "sub" in ran.stdout
    assert '"hidden_size": 9' in ran.stdout  # the newest weights beside the image
    # a SIF: the weights as a squashfs beside it, bound by Apptainer where the manifest said
    sif = run_cli(["m.yaml", "--cache", "cache", "-o", "sif:out/app.sif", "--no-tests"], cwd=tmp_path)
    assert sif.code == 0, str(sif)
    sqfs = tmp_path / "out" / "app.weights-tiny.sqfs"
    assert sqfs.is_file() and f"--bind {sqfs}:/models/tiny:image-src=/" in sif.out + sif.err
    from tests.test_apptainer import apptainer_binary

    apptainer = apptainer_binary()
    done = subprocess.run(
        [
            str(apptainer),
            "exec",
            *(["--no-privs"] if os.geteuid() == 0 else []),  # as tests/test_apptainer.py runs it
            "--bind",
            f"{sqfs}:/models/tiny:image-src=/",
            str(tmp_path / "out" / "app.sif"),
            "sha256sum",
            "/models/tiny/big.safetensors",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and _sha(big) in done.stdout, done.stderr
    # an Enroot image: the same squashfs beside it, byte for byte
    enroot = run_cli(["m.yaml", "--cache", "cache", "-o", "sqsh:out/enroot.sqsh", "--no-tests"], cwd=tmp_path)
    assert enroot.code == 0, str(enroot)
    assert (tmp_path / "out" / "enroot.weights-tiny.sqfs").read_bytes() == sqfs.read_bytes()
    listed = subprocess.run(["unsquashfs", "-l", str(sqfs)], capture_output=True, text=True, check=True).stdout
    assert "squashfs-root/big.safetensors" in listed and "squashfs-root/sub/tokenizer.json" in listed


def test_an_oci_layout_holds_one_of_each_model_per_image(tmp_path: Path) -> None:
    """oci:DIR:TAG: the weights an untagged referrer of the image (oras discover finds it);
    a new checkpoint replaces the entry the same image had, never adds a second."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.safetensors").write_bytes(b"\x00" * 4096)
    (tmp_path / "model" / "config.json").write_text("{}\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "motd").write_text("hi\n")
    (tmp_path / "m.yaml").write_text(
        "name: layout\nbases: {b: scratch}\nimage:\n  base: b\n  layers:\n    - copy: {from: etc/, to: /etc/}\n"
        "weights:\n  tiny: {source: model, at: /models/tiny}\n"
    )

    def entries() -> list[dict[str, Any]]:
        index = json.loads((tmp_path / "out" / "index.json").read_text())
        return [d for d in index["manifests"] if d.get("artifactType") == pack.ARTIFACT_TYPE]

    planned = run_cli_here(["plan", "m.yaml", "--cache", "cache"], cwd=tmp_path)
    assert "weights (beside the image):\n  tiny                 model -> /models/tiny (not locked)" in planned.out
    locked = run_cli(["lock", "m.yaml"], cwd=tmp_path)
    assert locked.code == 0 and "m.weights.lock: 1 model(s) locked" in locked.out + locked.err, str(locked)
    planned = run_cli_here(["plan", "m.yaml", "--cache", "cache"], cwd=tmp_path)
    assert "tiny                 model -> /models/tiny (locked: 2 file(s), 0.0 MiB)" in planned.out, planned.out
    assert run_cli(["m.yaml", "--cache", "cache", "-o", "oci:out:dev"], cwd=tmp_path).code == 0
    (first,) = entries()
    (tmp_path / "model" / "config.json").write_text('{"v": 2}\n')  # changed since locked: refused
    refused = run_cli(["m.yaml", "--cache", "cache", "-o", "oci:out:dev"], cwd=tmp_path)
    assert refused.code == 2 and "config.json: 9 bytes" in refused.err and "assemble lock" in refused.err, str(refused)
    assert run_cli(["lock", "m.yaml"], cwd=tmp_path).code == 0
    assert run_cli(["m.yaml", "--cache", "cache", "-o", "oci:out:dev"], cwd=tmp_path).code == 0
    (second,) = entries()
    assert second["digest"] != first["digest"] and second["annotations"][ANNOTATION_NAME] == "tiny"
    oras = [str(Path(sys.executable).parent / "oras"), "discover", "--format", "json", "--oci-layout", "out:dev"]
    done = subprocess.run(oras, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = [
        r["digest"] for r in json.loads(done.stdout).get("referrers") or [] if r["artifactType"] == pack.ARTIFACT_TYPE
    ]
    assert found == [second["digest"]]


def test_a_large_files_layer_is_hashed_as_the_file_comes_in(tmp_path: Path) -> None:
    """A file of 64 MiB or more is its own layer: its digest is hashed in the read that
    copies the file into the cache, and is the digest of the tar read back."""
    (tmp_path / "model" / "sub").mkdir(parents=True)
    big = os.urandom(1 << 16) * (pack.FILE_LAYER_MIN >> 16) + b"tail"
    (tmp_path / "model" / "sub" / "big.gguf").write_bytes(big)
    cache = Cache(tmp_path / "cache")
    got = gather("m", WeightsSpec(source="model", at="/m"), folder=tmp_path, cache=cache, locked=None)
    kept = cache.get_key(pack._layer_key(got.files))  # before any packing: hashed as it came in
    packed = pack.pack("m", "/m", got.files, source="model", revision=None, cache=cache)
    (layer,) = packed.layers
    assert kept == {"digest": layer.descriptor.digest, "size": layer.descriptor.size}
    data = packed.blobs().open_blob(layer.descriptor.digest).read()
    assert "sha256:" + _sha(data) == layer.descriptor.digest and len(data) == layer.descriptor.size
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["sub", "sub/big.gguf"]
    assert json.loads(packed.config_bytes)["config"] == {"format": "gguf"}


@pytest.mark.integration  # a registry
def test_an_index_of_several_platforms_names_the_weights_once(tmp_path: Path, registry: RunningRegistry) -> None:
    """Two platforms: the tag's index names both images and each model once (no subject:
    the index binds them), in a registry and a layout; run and test find them through it."""
    from assembler.oci.descriptor import Platform
    from assembler.oci.reference import absolute_ref, parse_ref
    from assembler.proc import Runner
    from assembler.transports import Context, open_source
    from assembler.transports.common import RegistryOptions
    from assembler.weights import attached

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"v": 1}\n')
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "motd").write_text("hi\n")
    (tmp_path / "m.yaml").write_text(
        "name: multi\nplatforms: [linux/amd64, linux/arm64]\nbases: {b: scratch}\n"
        "image:\n  base: b\n  layers:\n    - copy: {from: etc/, to: /etc/}\n"
        "weights:\n  tiny: {source: model, at: /models/tiny}\n"
    )
    pushed = f"docker://{registry.host}/multi/app:1"
    argv = ["m.yaml", "--cache", "cache", "-o", pushed, "-o", "oci:out:dev", "--tls-verify=false"]
    built = run_cli([*argv, "--platform", "linux/amd64", "--platform", "linux/arm64"], cwd=tmp_path)
    assert built.code == 0, str(built)
    ctx = Context(
        cache=Cache(tmp_path / "cache"),
        runner=Runner(),
        platform=Platform.parse("linux/arm64"),
        epoch=0,
        registry=RegistryOptions(tls_verify=False),
    )
    for ref in (pushed, "oci:out:dev"):
        parsed = absolute_ref(parse_ref(ref), tmp_path)
        ((folder, at, readonly),) = attached.mounts(parsed, open_source(parsed, ctx), ctx)
        assert at == "/models/tiny" and readonly and (Path(folder) / "config.json").read_text() == '{"v": 1}\n'
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", pushed], capture_output=True, text=True, check=True
    ).stdout
    entries = json.loads(raw)["manifests"]
    platforms = [(e["platform"]["os"], e["platform"]["architecture"]) for e in entries]
    assert platforms == [("linux", "amd64"), ("linux", "arm64"), ("unknown", "unknown")]
    assert entries[2]["artifactType"] == pack.ARTIFACT_TYPE


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("  a: {source: nowhere, at: /models/a}\n", "m.yaml:3: weights.a.source: nowhere: no such folder"),
        (
            "  a: {source: model, at: /models}\n  b: {source: model, at: /models/b}\n",
            "m.yaml:4: weights.b.at: /models/b: weights a go to /models: one model's folder would hide the other's",
        ),
        (
            "  a: {source: 'hf://org/repo@main', at: /models/a, sha256: '" + "a" * 64 + "'}\n",
            "sha256 pins a URL source",
        ),
        ("  a: {source: 'https://host/m.gguf', at: /models/a}\n", "a URL source needs its sha256"),
        ("  a: {source: 'hf://not a repo', at: /models/a}\n", "is not hf://ORG/REPO[@REVISION]"),
        ("  a: {source: model, at: /models/../etc}\n", "is not a plain absolute folder"),
    ],
)
def test_a_bad_model_is_refused_at_its_line(tmp_path: Path, weights: str, message: str) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "m.yaml").write_text(f"name: bad\nweights:\n{weights}bases: {{b: scratch}}\nimage: {{base: b}}\n")
    ran = run_cli_here(["plan", "m.yaml", "--cache", "cache"], cwd=tmp_path)
    assert ran.code == 2 and message in ran.err and "Traceback" not in ran.err, str(ran)


@pytest.mark.parametrize(
    ("folder", "link", "target"),
    [
        ("models/tiny", "tokenizer.json", "home/.ssh/id_rsa"),  # a cloned project's link to a host file
        ("models/tiny", "sub/config.json", "models/other.json"),  # beside the folder, still outside it
        (  # a snapshot's link into another repository of the cache than its own
            "hub/models--org--tiny/snapshots/" + COMMIT_A,
            "config.json",
            "hub/models--org--other/blobs/" + "c" * 64,
        ),
    ],
)
def test_a_models_folder_follows_no_link_out_of_it(tmp_path: Path, folder: str, link: str, target: str) -> None:
    """A file of the folder that links outside it is refused by name (as a copy: refuses
    it), never read and shipped beside the image."""
    (tmp_path / target).parent.mkdir(parents=True)
    (tmp_path / target).write_text("PRIVATE KEY\n")
    root = tmp_path / folder
    (root / link).parent.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"\x00" * 64)
    os.symlink(os.path.relpath(tmp_path / target, (root / link).parent), root / link)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(InputError) as e:
        gather("tiny", WeightsSpec(source=folder, at="/models/tiny"), folder=tmp_path, cache=cache, locked=None)
    assert f"weights tiny: {root / link} links to {tmp_path / target}, outside the model's folder" in str(e.value)
    assert e.value.exit_code == 2 and "PRIVATE" not in str(e.value)
    # left out by exclude:, it is never read
    spec = WeightsSpec(source=folder, at="/models/tiny", exclude=[Path(link).name])
    got = gather("tiny", spec, folder=tmp_path, cache=cache, locked=None)
    assert [f.path for f in got.files] == ["model.safetensors"]


def test_a_huggingface_snapshot_is_read_through_its_links_to_its_blobs(tmp_path: Path) -> None:
    """huggingface_hub's cache: a snapshot's files link to the repository's blobs
    (../../blobs/HASH), and a file may link to another of the folder."""
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / COMMIT_A
    (snapshot / "sub").mkdir(parents=True)
    (repo / "blobs").mkdir()
    data = b'{"model_type": "tiny"}\n'
    (repo / "blobs" / _sha(data)).write_bytes(data)
    (snapshot / "sub" / "config.json").symlink_to(Path("../../../blobs") / _sha(data))
    (snapshot / "same.json").symlink_to(Path("sub") / "config.json")
    spec = WeightsSpec(source=str(snapshot), at="/models/tiny")
    got = gather("tiny", spec, folder=tmp_path, cache=Cache(tmp_path / "cache"), locked=None)
    assert got.files == (
        WeightFile("same.json", len(data), _sha(data)),
        WeightFile("sub/config.json", len(data), _sha(data)),
    )


def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A layer of ``entries`` in this order: (name, bytes of a file, or None: a folder)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    return out.getvalue()


def _pushed_by_another(root: Path, at: str, layer: bytes) -> str:
    """An OCI layout whose tag ``dev`` names an index with one model beside the image, as
    someone else pushed it: its ``io.assemble.weights.at`` and its layer as given."""
    from assembler.oci import mediatypes as mt

    def blob(data: bytes) -> dict[str, Any]:
        digest = _sha(data)
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / "sha256" / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    config = {"mediaType": pack.CONFIG_TYPE, **blob(b"{}")}
    model = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "artifactType": pack.ARTIFACT_TYPE,
        "config": config,
        "layers": [{"mediaType": pack.WEIGHT_TAR, **blob(layer)}],
        "annotations": {ANNOTATION_NAME: "tiny", ANNOTATION_AT: at},
    }
    entry = {"mediaType": mt.OCI_MANIFEST, "artifactType": pack.ARTIFACT_TYPE, **blob(json.dumps(model).encode())}
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry]}
    tagged = {
        "mediaType": mt.OCI_INDEX,
        **blob(json.dumps(index).encode()),
        "annotations": {mt.ANNOTATION_REF_NAME: "dev"},
    }
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [tagged]}))
    return f"oci:{root}:dev"


def _attached(tmp_path: Path, ref: str) -> tuple[tuple[str, str, bool], ...]:
    from assembler.oci.descriptor import Platform
    from assembler.oci.reference import absolute_ref, parse_ref
    from assembler.proc import Runner
    from assembler.transports import Context
    from assembler.weights import attached

    ctx = Context(cache=Cache(tmp_path / "cache"), runner=Runner(), platform=Platform.parse("linux/amd64"), epoch=0)
    return attached.mounts(absolute_ref(parse_ref(ref), tmp_path), None, ctx)  # type: ignore[arg-type]


@pytest.mark.parametrize("at", ["/x:rw", "/models/tiny,suid", "/x/..", "/x/../../etc", "/x/", "x", "/proc/1", "/a\nb"])
def test_a_pulled_models_at_is_data_never_options(tmp_path: Path, at: str) -> None:
    """The folder a pulled model names for itself reaches buildah's --volume: anything but
    an absolute, normalized folder (no ':', ',', '..') is refused, naming the image and the
    annotation, before a byte of the model is read; never a traceback."""
    ref = _pushed_by_another(tmp_path / "image", at, _tar([("config.json", b"{}\n")]))
    with pytest.raises(InputError) as e:
        _attached(tmp_path, ref)
    said = str(e.value)
    assert said.startswith(f"{ref}: weights 'tiny' (sha256:") and f"{ANNOTATION_AT} is {at!r}, not a folder" in said
    assert e.value.exit_code == 2 and not (tmp_path / "cache" / "weights" / "attached").exists()


@pytest.mark.parametrize(
    ("entries", "said"),
    [
        ([("a", b"1"), ("a/b", b"2")], "holds a/b, in a, a file of the layers, not a folder"),
        ([("a", b"1"), ("a/", None)], "a is in the layers twice"),
        ([("a/b", b"2"), ("a", b"1")], "a is in the layers twice"),
        ([("../x", b"1")], "holds '../x', not a plain relative path"),
        ([("a" * 256, b"1")], "holds 'a{256}', not a plain relative path"),  # longer than a name may be
    ],
)
def test_a_pulled_models_layer_is_unpacked_or_said_wrong(tmp_path: Path, entries: list[Any], said: str) -> None:
    ref = _pushed_by_another(tmp_path / "image", "/models/tiny", _tar(entries))
    with pytest.raises(InputError, match=said):
        _attached(tmp_path, ref)
    good = _pushed_by_another(tmp_path / "good", "/models/tiny", _tar([("a/", None), ("a/b", b"2"), ("c", b"3")]))
    ((folder, at, readonly),) = _attached(tmp_path, good)
    assert (at, readonly, (Path(folder) / "a" / "b").read_bytes()) == ("/models/tiny", True, b"2")


def test_a_manifests_at_holds_no_volume_separator(tmp_path: Path) -> None:
    for at in ("/models/a:rw", "/models/a,suid", "/dev/shm/m"):
        with pytest.raises(ValueError, match="is not a plain absolute folder"):
            WeightsSpec(source="m", at=at)
    assert WeightsSpec(source="m", at="/models/tiny/").at == "/models/tiny"


def test_a_models_bind_is_read_only_without_devices_or_set_user_id_programs() -> None:
    """What assemble run and the image's tests give buildah for each model (and --mount)."""
    from assembler.compile.imagerun import ImageCommand, ImageRunner

    class _Buildah:
        globals = ("buildah",)

        def owned(self, argv: list[str], *, network: bool = True) -> list[str]:
            return argv

    runner = ImageRunner(_Buildah(), None)  # type: ignore[arg-type]
    mounts = (("/cache/weights/attached/ab", "/models/tiny", True), ("/home/me/data", "/data", False))
    argv = runner.argv("ctr", ImageCommand(("true",), mounts=mounts), {})
    assert argv[argv.index("--volume") : argv.index("--volume") + 4] == [
        "--volume",
        "/cache/weights/attached/ab:/models/tiny:ro,nodev,nosuid",
        "--volume",
        "/home/me/data:/data:rw,nodev,nosuid",
    ]
    with pytest.raises(InputError, match="without ':'"):
        runner.argv("ctr", ImageCommand(("true",), mounts=(("/c", "/x:rw", True),)), {})


SECRET = "s3cr3t-b51e-weights"  # a URL's password and its presigned signature: in nothing written or said


class _SignedHandler(BaseHTTPRequestHandler):
    """Serves one file to a request that carries the password and the signature only."""

    body = b"GGUF" + b"\x00" * 60

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        import base64

        want = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
        signed = f"X-Amz-Signature=sig-{SECRET}" in self.path
        ok = self.headers.get("Authorization") == want and signed and self.path.startswith("/m/model.gguf?")
        self.send_response(200 if ok else 403)
        self.send_header("Content-Length", str(len(self.body) if ok else 0))
        self.end_headers()
        if ok:
            self.wfile.write(self.body)


def test_a_urls_password_and_signature_fetch_and_are_written_nowhere(tmp_path: Path) -> None:
    """A URL source with a password and a presigned query string is fetched with them; the
    weights lock, the model's pushed config, a plan's line and the build's warning name it
    without them, and the lock still matches the source signed anew (issue 66)."""
    from assembler.manifest.load.manifest import load_manifest
    from assembler.weights.models import described, lock_all, prepare

    server = ThreadingHTTPServer(("127.0.0.1", 0), _SignedHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_address[1]}"
    source = f"http://alice:{SECRET}@{host}/m/model.gguf?X-Amz-Date=20250101&X-Amz-Signature=sig-{SECRET}"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"name: signed\nbases: {{b: scratch}}\nimage: {{base: b}}\n"
        f"weights:\n  tiny: {{source: '{source}', sha256: {_sha(_SignedHandler.body)}, at: /models/tiny}}\n"
    )
    cache, warned = Cache(tmp_path / "cache"), []
    try:
        (packed,) = prepare(load_manifest(manifest), cache, warn=warned.append)
        assert lock_all(load_manifest(manifest), cache) == (1, True)
    finally:
        server.shutdown()
    said = [*warned, *described(load_manifest(manifest)).values()]
    assert said and all(SECRET not in s and f"http://{host}/m/model.gguf" in s for s in said), said
    config = json.loads(packed.config_bytes)
    assert (
        config["descriptor"]["sourceURL"] == f"http://{host}/m/model.gguf"
        and SECRET.encode() not in packed.config_bytes
    )
    written = lock.lock_path(manifest).read_text()
    assert SECRET not in written and "alice" not in written, written
    resigned = WeightsSpec(
        source=source.replace(f"sig-{SECRET}", "sig-other"), sha256=_sha(_SignedHandler.body), at="/m"
    )
    assert lock.read(lock.lock_path(manifest))["tiny"].matches(resigned)


def test_a_models_squashfs_beside_a_sif_is_read_by_whoever_reads_the_sif(tmp_path: Path) -> None:
    """The ``.sqfs`` was 0600 (its temp file's mode) beside a 0755 SIF: a colleague's
    Apptainer ran the image and could not mount its weights (issue 67). It takes the
    output's read and write bits."""
    from assembler.cache import locked_temp
    from assembler.proc import Runner
    from assembler.transports import beside

    class Model:
        name, at = "tiny", "/models/tiny"

        def write_squashfs(self, out: Path, *, runner: Runner, squash: Squash) -> None:
            fd, tmp = locked_temp(out.parent, ".x.")  # as squashfs.replacing makes it: 0600
            os.write(fd, b"hsqs")
            os.replace(tmp, out)
            os.close(fd)

    for sif_mode, want in ((0o755, 0o644), (0o750, 0o640)):
        sif = tmp_path / f"app{sif_mode:o}.sif"
        sif.write_bytes(b"#!/usr/bin/env run-singularity\n")
        sif.chmod(sif_mode)
        (written,) = beside.write_squashfs(sif, [Model()], runner=Runner(), squash=Squash())  # type: ignore[list-item]
        sqfs = beside.sidecar_path(sif, "tiny")
        assert str(sqfs) in written.ref and sqfs.stat().st_mode & 0o777 == want, oct(sqfs.stat().st_mode)
