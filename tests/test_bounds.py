"""Bounded input, clear refusals and careful writes.

Hostile or broken input (YAML alias bombs, 100,000 nested lists, tarballs with absurd
headers, a registry that lies about sizes, loops redirects or trickles) ends in exit 2
(or a bounded exit 1) with a message, never a traceback or an unbounded run; outputs
never replace foreign files unless ``--force``; reading commands leave the default
cache alone; temp files of killed runs are reclaimed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest

from assembler.errors import AssemblerError
from assembler.oci.descriptor import Platform
from assembler.transports import remote
from assembler.transports.common import RegistryOptions
from tests.helpers import run_cli, serving

SCRATCH = "name: t\nbases: {b: scratch}\nimage:\n  base: b\n  layers:\n    - copy: {from: ./f.txt, to: /f.txt}\n"


def write(root: Path, text: str, name: str = "m.yaml") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "f.txt").write_text("data\n")
    (root / name).write_text(text)
    return root


def refused(root: Path, *args: str, needle: str = "") -> str:
    ran = run_cli([*args, "--cache", str(root / "cache")], cwd=root, timeout=120)
    assert ran.code == 2, str(ran)
    assert "Traceback" not in ran.err, ran.err
    assert needle in ran.err, ran.err
    return ran.err


# -- manifests -------------------------------------------------------------------------


def test_yaml_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    root = write(tmp_path, SCRATCH + "params:\n  x: '1'\nx-bomb:\n" + "\n".join("  " + x for x in lines) + "\n")
    started = time.monotonic()
    refused(root, "plan", "m.yaml", needle="expands to more than")
    assert time.monotonic() - started < 30


@pytest.mark.integration  # seconds
def test_yaml_nested_100000_levels_is_exit_2(tmp_path: Path) -> None:
    root = write(tmp_path, SCRATCH + "x: " + "[" * 100_000 + "]" * 100_000 + "\n")
    refused(root, "plan", "m.yaml", needle="nested")


@pytest.mark.integration  # seconds
def test_overflowing_epoch_is_exit_2(tmp_path: Path) -> None:
    root = write(tmp_path, SCRATCH)
    refused(root, "m.yaml", "--epoch", "99999999999999999", "-o", "oci:o:x", needle="--epoch")
    write(tmp_path, "epoch: 99999999999999999\n" + SCRATCH)
    refused(root, "m.yaml", "-o", "oci:o:x", needle="m.yaml:1: epoch")


def test_param_cycle_is_an_error(tmp_path: Path) -> None:
    root = write(tmp_path, SCRATCH.replace("from: ./f.txt", "from: './${a}'") + "params: {a: '${b}', b: '${a}'}\n")
    refused(root, "plan", "m.yaml", needle="cycle")


@pytest.mark.integration  # seconds
@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("    - copy: {from: ./f.txt, to: /app/../../etc/x}\n", "m.yaml:7: image.layers.1.copy.to"),
        ('    - copy: {from: ./f.txt, to: "/app/\\0x"}\n', "m.yaml:7: image.layers.1.copy.to"),
        ('  config: {labels: {a: "b\\0c"}}\n', "m.yaml:7: image.config.labels.a"),
    ],
)
def test_bad_paths_and_nul_name_file_and_line(tmp_path: Path, extra: str, needle: str) -> None:
    root = write(tmp_path, SCRATCH + extra)
    refused(root, "plan", "m.yaml", needle=needle)


def test_platform_with_dots_is_refused(tmp_path: Path) -> None:
    root = write(tmp_path, "platform: ../../x\n" + SCRATCH)
    refused(root, "plan", "m.yaml", needle="m.yaml:1: platform")


# -- rootfs tarballs -----------------------------------------------------------------


def _tar(path: Path, build: list[tarfile.TarInfo], fmt: int = tarfile.PAX_FORMAT) -> None:
    with tarfile.open(path, "w", format=fmt) as tf:
        for info in build:
            tf.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)


@pytest.mark.integration  # seconds
def test_rootfs_with_a_dangling_hard_link_or_an_absurd_pax_size_is_exit_2(tmp_path: Path) -> None:
    link = tarfile.TarInfo("a/link")
    link.type, link.linkname = tarfile.LNKTYPE, "missing/file"
    _tar(tmp_path / "hl.tar", [link])
    big = tarfile.TarInfo("big")
    big.size = 5
    big.pax_headers = {"size": "99999999999999999999"}
    _tar(tmp_path / "pax.tar", [big])
    big.pax_headers = {"size": "999999999999999"}  # fits an int: the seek past the end fails
    _tar(tmp_path / "seek.tar", [big])
    big.pax_headers = {"size": "-1"}
    _tar(tmp_path / "neg.tar", [big])
    cases = (
        ("hl.tar", "hard link"),
        ("pax.tar", "damaged tar"),
        ("seek.tar", "size points past the end"),
        ("neg.tar", "has size -1"),
    )
    for name, needle in cases:
        write(tmp_path, f"name: t\nbases: {{b: 'rootfs:{name}'}}\nimage: {{base: b}}\n")
        refused(tmp_path, "m.yaml", "-o", "oci:o:x", needle=needle)


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("kind", ["checksum", "sparse", "longname", "nan"])
@pytest.mark.parametrize("compressed", [False, True])
def test_a_damaged_rootfs_is_exit_2_naming_the_member_never_a_base_with_files_missing(
    tmp_path: Path, kind: str, compressed: bool
) -> None:
    """The one tar reader under rootfs: (issue 32): a bad checksum on a later header ended
    the base there (exit 0, files missing), a sparse member unpacked holes no bound counted
    (an uncompressed rootfs: was not bounded at all), a 1 TiB GNU long name was a
    MemoryError and a PAX mtime of nan a ValueError, both tracebacks."""
    from tests.test_prebuilt_review import _damaged

    data = _damaged(kind)
    (tmp_path / "r.tar.gz").write_bytes(gzip.compress(data, compresslevel=1) if compressed else data)
    write(tmp_path, "name: t\nbases: {b: 'rootfs:r.tar.gz'}\nimage: {base: b}\n")
    needle = {"checksum": "after member 'f'", "sparse": "sparse", "longname": "GNU long name", "nan": "nan"}[kind]
    err = refused(tmp_path, "m.yaml", "-o", "oci:o:x", needle=needle)
    assert "rootfs:" in err and not (tmp_path / "o").exists()


def test_rootfs_decompression_bomb_is_bounded(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("zeros")
        info.size = 64 << 20
        tf.addfile(info, io.BytesIO(bytes(info.size)))
    (tmp_path / "bomb.tar.gz").write_bytes(gzip.compress(buf.getvalue(), compresslevel=1))
    write(tmp_path, "name: t\nbases: {b: 'rootfs:bomb.tar.gz'}\nimage: {base: b}\n")
    ran = run_cli(
        ["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:o:x"],
        cwd=tmp_path,
        env={"ASSEMBLE_ROOTFS_MAX_BYTES": str(16 << 20)},
    )
    assert ran.code == 2 and "decompression bomb" in ran.err and "Traceback" not in ran.err, str(ran)
    leftovers = [p for p in (tmp_path / "cache" / "tmp").rglob("*") if p.is_file()]
    assert not leftovers


@pytest.mark.integration  # seconds
def test_base_without_history_gives_a_valid_image(tmp_path: Path) -> None:
    root = write(tmp_path, SCRATCH)
    ran = run_cli(["m.yaml", "--cache", str(root / "cache"), "-o", "oci:base:x"], cwd=root)
    assert ran.code == 0, str(ran)
    from tests.helpers import manifest_of, read_blob

    lay = root / "base"
    manifest = manifest_of(lay, "x")
    config = json.loads(read_blob(lay, manifest["config"]["digest"]))
    del config["history"]
    body = json.dumps(config).encode()
    cdigest = "sha256:" + hashlib.sha256(body).hexdigest()
    (lay / "blobs/sha256" / cdigest[7:]).write_bytes(body)
    manifest["config"].update(digest=cdigest, size=len(body))
    mbody = json.dumps(manifest).encode()
    mdigest = "sha256:" + hashlib.sha256(mbody).hexdigest()
    (lay / "blobs/sha256" / mdigest[7:]).write_bytes(mbody)
    index = json.loads((lay / "index.json").read_text())
    index["manifests"][0].update(digest=mdigest, size=len(mbody))
    (lay / "index.json").write_text(json.dumps(index))
    write(root, SCRATCH.replace("scratch", "'oci:base:x'").replace("/f.txt}", "/g.txt}"), "u.yaml")
    ran = run_cli(["u.yaml", "--cache", str(root / "cache"), "-o", "oci:out:y"], cwd=root)
    assert ran.code == 0, str(ran)
    ran = run_cli(["validate", "oci:out:y", "--cache", str(root / "cache")], cwd=root)
    assert ran.code == 0, str(ran)


# -- registries that lie ------------------------------------------------------------------


class _Lying(BaseHTTPRequestHandler):
    """A registry with one image whose layer the server serves wrongly, as ``mode`` says."""

    mode = "big"
    layer = b"real layer bytes\n"
    blobs: ClassVar[dict[str, bytes]] = {}
    manifest = b""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path
        if path == "/v2/":
            return self._send(200, b"{}")
        if path.startswith("/loop"):
            self.send_response(302)
            self.send_header("Location", "/loop" + str(len(path)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if "/manifests/" in path:
            if self.mode == "loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return self._send(200, self.manifest, "application/vnd.oci.image.manifest.v1+json")
        digest = path.rsplit("/", 1)[1]
        body = self.blobs[digest]
        if body != self.layer:
            return self._send(200, body)
        if self.mode == "big":  # declares and sends far more than the manifest says
            self.send_response(200)
            self.send_header("Content-Length", str(10 << 30))
            self.end_headers()
            try:
                for _ in range(10 << 10):
                    self.wfile.write(bytes(1 << 20))
            except OSError:
                pass
            return None
        self.send_response(200)  # trickle: one byte at a time, each within any read timeout
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for b in body:
                self.wfile.write(bytes([b]))
                self.wfile.flush()
                time.sleep(0.3)
        except OSError:
            pass
        return None

    def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def lying() -> Iterator[tuple[str, type[_Lying]]]:
    def sha(b: bytes) -> str:
        return "sha256:" + hashlib.sha256(b).hexdigest()

    layer = _Lying.layer
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}
            ],
        }
    ).encode()
    handler = type("H", (_Lying,), {"blobs": {sha(layer): layer, sha(config): config}, "manifest": manifest})
    with serving(handler) as host:
        yield host, handler


def _pull(host: str, **options: float) -> None:
    from assembler.oci.reference import ImageName

    source = remote.read(
        ImageName.parse(f"{host}/x/y:1"),
        platform=Platform(),
        options=RegistryOptions(tls_verify=False, retries=2, backoff=0.01, **options),
    )  # type: ignore[arg-type]
    with source.blobs.open_blob(source.image.layers[0].digest) as f:
        while f.read(1 << 20):
            pass


def test_download_is_capped_at_the_declared_size(lying: tuple[str, type[_Lying]]) -> None:
    host, handler = lying
    handler.mode = "big"
    started = time.monotonic()
    with pytest.raises(AssemblerError, match="bytes the manifest declares"):
        _pull(host)
    assert time.monotonic() - started < 10


@pytest.mark.integration  # seconds
def test_trickling_download_meets_a_deadline(lying: tuple[str, type[_Lying]]) -> None:
    host, handler = lying
    handler.mode = "trickle"
    started = time.monotonic()
    with pytest.raises(AssemblerError, match="too slow"):
        _pull(host, deadline=1.0, min_rate=1 << 20)
    assert time.monotonic() - started < 4  # the whole blob would take 5 s


def test_redirect_loop_is_exit_2(tmp_path: Path, lying: tuple[str, type[_Lying]]) -> None:
    host, handler = lying
    handler.mode = "loop"
    refused(tmp_path, "inspect", f"docker://{host}/x/y:1", "--tls-verify=false", needle="redirects in a loop")


# -- writes -----------------------------------------------------------------------------


@pytest.mark.integration  # seconds
def test_outputs_do_not_replace_foreign_files_without_force(tmp_path: Path) -> None:
    root = write(tmp_path, SCRATCH)
    precious = root / "existing.txt"
    precious.write_text("not an image\n")
    refused(root, "m.yaml", "-o", f"docker-archive:{precious}", needle="--force")
    assert precious.read_text() == "not an image\n"
    refused(root, "m.yaml", "-o", "oci:m.yaml", needle="not an OCI layout")
    ran = run_cli(["m.yaml", "--cache", str(root / "cache"), "-o", f"docker-archive:{precious}"], cwd=root)
    assert ran.code == 2
    # Our own archives are replaced freely; anything with --force.
    for args in (
        ["-o", "docker-archive:a.tar"],
        ["-o", "oci-archive:a.tar"],
        ["-o", f"docker-archive:{precious}", "--force"],
    ):
        ran = run_cli(["m.yaml", "--cache", str(root / "cache"), *args], cwd=root)
        assert ran.code == 0, str(ran)
    assert precious.read_bytes()[:1] != b"n"


@pytest.mark.integration  # tar2sqfs
def test_reading_commands_leave_the_default_cache_alone(tmp_path: Path, clean_env: dict[str, str]) -> None:
    root = write(tmp_path, SCRATCH)
    ran = run_cli(["m.yaml", "--cache", str(root / "cache"), "-o", "oci:lay:x"], cwd=root)
    assert ran.code == 0, str(ran)
    for command in (["inspect", "oci:lay:x"], ["validate", "oci:lay:x"], ["sif", "oci:lay:x", "o.sif"]):
        ran = run_cli(command, cwd=root, env=clean_env)
        assert ran.code == 0, str(ran)
    assert not Path(clean_env["XDG_CACHE_HOME"]).exists()
    precious = root / "notes.sif"
    precious.write_text("mine\n")
    refused(root, "sif", "oci:lay:x", "notes.sif", needle="--force")
    ran = run_cli(["sif", "oci:lay:x", "o.sif", "--cache", str(root / "c2")], cwd=root)  # a SIF replaces a SIF
    assert ran.code == 0, str(ran)


@pytest.mark.integration  # tar2sqfs
def test_temp_files_of_killed_runs_are_reclaimed(tmp_path: Path) -> None:
    root = write(tmp_path, SCRATCH)
    cache = root / "cache"
    ran = run_cli(["m.yaml", "--cache", str(cache), "-o", "oci:lay:x", "-o", "sif:o.sif"], cwd=root)
    assert ran.code == 0, str(ran)
    dead = 4_000_000  # above pid_max: never a running process
    old = time.time() - 3600
    left = [
        cache / "blobs/sha256" / f".tmp-p{dead}-abc",
        root / f".o.sif.p{dead}-abc.tmp",
        cache / "tmp" / f"work-p{dead}-abc",
    ]
    alive = [cache / "blobs/sha256" / f".tmp-p{os.getpid()}-abc", cache / "blobs/sha256" / f".tmp-p{dead}-new"]
    for path in left + alive:
        if path.name.startswith("work-"):
            path.mkdir()
        else:
            path.write_bytes(b"partial")
        if "new" not in path.name:
            os.utime(path, (old, old))
    ran = run_cli(["m.yaml", "--cache", str(cache), "-o", "oci:lay:x", "-o", "sif:o.sif"], cwd=root)
    assert ran.code == 0, str(ran)
    assert [p for p in left if p.exists()] == []
    assert all(p.exists() for p in alive)  # a live writer's, and a fresh one: a concurrent run's


def test_temp_files_of_another_machine_are_left_to_it(tmp_path: Path) -> None:
    """A cache shared by Slurm nodes: a pid seen from here says nothing about another node's
    process, so its temp files (an hour old, pid not running here) stay; this machine's go."""
    from assembler.cache import reclaim, temp_prefix

    dead = 4_000_000
    ours = tmp_path / temp_prefix(".tmp-").replace(f"p{os.getpid()}-", f"p{dead}-")
    theirs = tmp_path / f".tmp-p{dead}-h00000000-x"
    old = time.time() - 3600
    for path in (ours, theirs):
        path.write_bytes(b"partial")
        os.utime(path, (old, old))
    assert reclaim(tmp_path, ".tmp-*") == 1
    assert not ours.exists() and theirs.exists()


@pytest.mark.integration  # tar2sqfs
@pytest.mark.parametrize(
    ("output", "temps"),
    [
        ("sif:o.sif", ".o.sif.*.tmp"),
        ("sqsh:o.sqsh", ".o.sqsh.*.tmp"),
        ("oci-archive:o.tar", ".o.tar.p*"),
        ("docker-archive:o.tar", ".o.tar.p*"),
        ("oci:lay2:x", "lay2/blobs/sha256/.tmp-*"),
    ],
)
def test_a_killed_write_leaves_no_temp_after_the_next_write(tmp_path: Path, output: str, temps: str) -> None:
    """SIGKILL a writer while its temp file is there, write the same output again at once:
    the killed write's temp is gone (its lock is free, its pid dead), however recent."""
    import signal
    import subprocess
    import sys

    root = write(tmp_path, SCRATCH.replace("./f.txt, to: /f.txt", "./big.bin, to: /big.bin"))
    (root / "big.bin").write_bytes(os.urandom(96 << 20))  # random: compressing it takes a while
    cache = ["--cache", str(root / "cache")]
    assert run_cli(["m.yaml", *cache, "-o", "oci:lay:x"], cwd=root).code == 0  # the layer, in the cache
    target = root / output.split(":")[1]
    tries: list[str] = []
    left: list[Path] = []
    while not left and len(tries) < 5:  # a reflinked copy's temp lives a few ms: a busy host can miss it
        if target.is_dir():  # a finished write: the next one would find its blobs there
            shutil.rmtree(target)
        target.unlink(missing_ok=True)
        writer = subprocess.Popen(
            [sys.executable, "-m", "assembler", "m.yaml", *cache, "-o", output],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while not list(root.glob(temps)) and writer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        writer.send_signal(signal.SIGKILL)
        _, err = writer.communicate()
        left = list(root.glob(temps))
        tries.append(f"exit {writer.returncode}: {err.decode(errors='replace')[-300:]}")
        assert writer.returncode in (0, -signal.SIGKILL), tries[-1]
    assert left, f"no temp file {temps} seen while {output} was written, {len(tries)} tries: {tries}"
    ran = run_cli(["m.yaml", *cache, "-o", output], cwd=root)
    assert ran.code == 0, str(ran)
    assert [p for p in left if p.exists()] == [] and list(root.glob(temps)) == []
    if output.startswith("oci:"):
        ran = run_cli(["validate", output, *cache], cwd=root)
        assert ran.code == 0, str(ran)
