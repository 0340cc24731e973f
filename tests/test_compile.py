"""The compile pipeline on the real thing: the demo manifest built with buildah.

One cold build per session (``demo`` in tests/plugins/demo.py, on the bootstrapped
bases), then what users rely on: nothing changed -> nothing runs; one file changed -> one
step and one layer; runtime base changed -> no compile step; the CUDA artifact holds the
asked-for architectures; failures say what failed; secrets stay out of everything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path
from typing import BinaryIO

import pytest
import zstandard

from assembler.archive.compress import decompressed
from tests.conftest import OWN_STORAGE
from tests.helpers import (
    PYTHON,
    Buildah,
    buildah_containers,
    layout_digest,
    manifest_of,
    read_blob,
    run_cli,
    run_cli_here,
    sh,
    uncompressed,
)
from tests.plugins.demo import Demo, base_args, copy_project, steps_by_state
from tests.plugins.registry import RunningRegistry
from tests.plugins.user import User


def test_cold_build_runs_every_step_and_the_image_runs(demo: Demo, tmp_path: Path) -> None:
    states = steps_by_state(demo.cold)
    assert states == {"built": {"cuda", "kernels", "tokenizer", "launcher", "pyext", "packages-1"}}
    layers = demo.cold.json["layers"]
    assert [layer["what"] for layer in layers[1:]] == [
        "packages python3-minimal libgomp1",
        "artifact tokenizer.libs",
        "artifact tokenizer.bin",
        "artifact kernels.saxpy",
        "artifact pyext.site",
        "artifact launcher.bin",
    ]
    layout = demo.project / "out/cold"  # later builds of other tests replace out/demo:latest
    assert layout_digest(layout, "latest") == demo.cold.json["digest"]
    assert run_cli(["validate", f"oci:{layout}:latest"]).code == 0
    config = json.loads(sh(["skopeo", "inspect", "--config", f"oci:{layout}:latest"]).stdout)["config"]
    argv = config["Entrypoint"] + config["Cmd"]
    out = Buildah(tmp_path / "b").run_image(f"oci:{layout}:latest", argv)
    print(f"\n$ {' '.join(argv)}\n{out}")
    assert "demo-launcher: all components answered" in out
    assert "[tokenizer] demotok 1.2.0: 3 tokens: [hello] [from] [assemble]" in out
    assert "[python] demo_ext native module for Python 3.11" in out
    assert "saxpy: no CUDA device" in out and "OK: 4096 values checked on the CPU" in out  # no GPU: the CPU answers
    # The .so set keeps its symlinks in its own layer.
    libs = next(x for x in layers if x["what"] == "artifact tokenizer.libs")
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, libs["digest"])))) as tf:
        links = {m.name: m.linkname for m in tf if m.issym()}
    assert links == {"app/lib/libdemotok.so": "libdemotok.so.1", "app/lib/libdemotok.so.1": "libdemotok.so.1.2.0"}
    # The tokenizer's build tree is a `cache:` folder kept on the host; its artifacts were read from there.
    assert list((demo.cache / "step-caches" / "tokenizer").glob("*/*/lib/libdemotok.so.1.2.0"))
    # apt's downloads are kept on the host for the next build, and are in no layer.
    assert list((demo.cache / "step-caches" / "_apt" / "archives").glob("libgomp1_*.deb"))
    packages = next(x for x in layers if x["kind"] == "packages")
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, packages["digest"])))) as tf:
        names = tf.getnames()
    assert any(n.startswith("usr/lib/x86_64-linux-gnu/libgomp.so") for n in names)
    assert not [n for n in names if n.startswith(("var/lib/apt/lists/", "var/cache/apt/", "var/log/", "tmp/"))]
    # pip runs as root in the steps' containers, made for them: its warning about that is
    # noise the user need not act on, in no step's log.
    logs = "".join(p.read_text() for p in (demo.cache / "logs").glob("*.log"))
    assert "pip install" in logs and "Running pip as the 'root' user" not in logs


def test_second_run_runs_nothing_and_gives_the_same_digest(demo: Demo) -> None:
    started = time.monotonic()
    warm = demo.build()
    seconds = time.monotonic() - started
    assert steps_by_state(warm) == {"cached": {"cuda", "kernels", "tokenizer", "launcher", "pyext", "packages-1"}}
    assert warm.json["digest"] == demo.cold.json["digest"]
    print(
        f"\ncold build {demo.cold_seconds:.1f} s, second run {seconds:.1f} s "
        f"({100 * seconds / demo.cold_seconds:.0f}% of the first), same digest {warm.json['digest']}"
    )


def test_cuda_artifact_holds_exactly_the_requested_architectures(demo: Demo, tmp_path: Path) -> None:
    spec = importlib.util.find_spec("nvidia")
    assert spec is not None and spec.submodule_search_locations, "nvidia-cuda-cuobjdump (test extra) is missing"
    cuobjdump = next(Path(p) / "cu13/bin/cuobjdump" for p in spec.submodule_search_locations)
    layer = next(x for x in demo.cold.json["layers"] if x["what"] == "artifact kernels.saxpy")
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(demo.project / "out/cold", layer["digest"])))) as tf:
        member = tf.extractfile("app/bin/saxpy")
        assert member is not None
        (tmp_path / "saxpy").write_bytes(member.read())
    elf = sh([str(cuobjdump), "--list-elf", str(tmp_path / "saxpy")]).stdout
    ptx = sh([str(cuobjdump), "--list-ptx", str(tmp_path / "saxpy")]).stdout
    print(f"\n{elf}{ptx}")
    assert {line.rsplit(".", 2)[-2] for line in elf.splitlines() if ".cubin" in line} == {"sm_80", "sm_90"}
    assert {line.rsplit(".", 2)[-2] for line in ptx.splitlines() if ".ptx" in line} == {"sm_90"}
    labels = json.loads(sh(["skopeo", "inspect", f"oci:{demo.project}/out/demo:latest"]).stdout)["Labels"]
    # The labels say what the binary holds, read from its fat binaries: SASS, then PTX.
    assert labels["io.assemble.gpu.cuda.archs"] == "sm_80;sm_90;compute_90"
    assert labels["io.assemble.step.kernels.cuda.archs"] == "sm_80;sm_90;compute_90"


def test_the_demo_states_the_driver_its_code_needs(demo: Demo) -> None:
    """Read from the code (issue 35): nvcc 13.0's cubins need a CUDA 13.0 driver (R580),
    and its PTX (ISA 9.0) is JIT-compiled by one: NVIDIA_REQUIRE_CUDA, as NVIDIA's images
    carry, so the container toolkit refuses an older driver; gpu: min_cuda 13.0 holds, so
    the build warns of nothing."""
    inspected = json.loads(sh(["skopeo", "inspect", "--config", f"oci:{demo.project}/out/cold:latest"]).stdout)
    env = dict(e.partition("=")[::2] for e in inspected["config"]["Env"])
    labels = inspected["config"]["Labels"]
    assert env["NVIDIA_REQUIRE_CUDA"] == "cuda>=13.0"
    assert labels["io.assemble.gpu.cuda.requires"] == "cuda>=13.0"
    assert labels["io.assemble.gpu.cuda.driver"] == ">=580.65.06"
    assert labels["io.assemble.gpu.cuda.ptx"] == "compute_90:cuda>=13.0"
    assert "gpu:" not in demo.cold.err, demo.cold.err


def test_code_that_needs_a_newer_driver_than_the_manifest_supports_is_refused(demo: Demo) -> None:
    """The same demo built with CUDA 13.2's nvcc (PTX ISA 9.2, which an R580 driver cannot
    JIT) warns; a manifest that must run on CUDA 12 drivers refuses its CUDA 13 cubins."""
    manifest = demo.manifest.read_text()
    pinned = 'cuda_version: "13.0.2", cuda_wheels: "13.0.88", cudart_wheel: "13.0.96", '
    newer = manifest.replace(pinned, "")  # the recipe's own release: 13.2
    assert newer != manifest
    try:
        demo.manifest.write_text(newer)
        warned = demo.build("-o", "oci:out/newer:latest")
        assert "gpu: compute_90 PTX needs a CUDA 13.2 driver" in warned.err, warned.err
        demo.manifest.write_text(newer.replace('gpu: {min_cuda: "13.0"}', 'gpu: {min_driver: "535"}'))
        args = [str(demo.manifest), "--cache", str(demo.cache), *base_args(demo.bases), "-o", "oci:out/old:latest"]
        refused = run_cli(args, cwd=demo.project)
        assert refused.code == 2, str(refused)
        assert "demo.yaml:" in refused.err and "gpu.min_driver" in refused.err
        assert "cubins are CUDA 13 code, which needs a driver for CUDA 13.0" in refused.err
        assert not (demo.project / "out/old").exists()
    finally:
        demo.manifest.write_text(manifest)


def test_one_source_file_edited_rebuilds_one_step_and_pushes_one_layer(demo: Demo, registry: RunningRegistry) -> None:
    ref = f"docker://{registry.host}/demo/app:1"
    before = demo.build("--tls-verify=false", "-o", ref)
    main_cpp = demo.project / "examples/cpp-tokenizer/src/main.cpp"
    original = main_cpp.read_text()
    try:
        main_cpp.write_text(original.replace('" tokens:"', '" tokens (edited):"'))
        after = demo.build("--tls-verify=false", "-o", ref)
    finally:
        main_cpp.write_text(original)
    states = steps_by_state(after)
    assert states["built"] == {"tokenizer"}, states
    changed = [
        (b["what"], a["digest"])
        for b, a in zip(before.json["layers"], after.json["layers"], strict=True)
        if b["digest"] != a["digest"]
    ]
    assert [what for what, _ in changed] == ["artifact tokenizer.bin"], changed
    push = next(o for o in after.json["outputs"] if o["ref"].startswith("docker://"))
    assert push["uploaded_blobs"] == 2  # that layer and the new config; nothing else
    layer_size = next(a["size"] for a in after.json["layers"] if a["what"] == "artifact tokenizer.bin")
    print(
        f"\none file edited: step tokenizer rebuilt; push uploaded {push['uploaded_bytes']} bytes "
        f"(the changed layer is {layer_size} bytes, plus the config)"
    )
    assert push["uploaded_bytes"] < layer_size + 10_000


def test_runtime_base_change_reruns_no_compile_step(demo: Demo) -> None:
    ran = demo.build(runtime="runtime-alt")
    states = steps_by_state(ran)
    assert states["cached"] >= {"cuda", "kernels", "tokenizer", "launcher", "pyext"}
    assert states.get("built") == {"packages-1"}  # the runtime step runs on the new base
    assert ran.json["layers"][0]["digest"] != demo.cold.json["layers"][0]["digest"]
    print(f"\nruntime base changed: {sorted(states['cached'])} cached, {sorted(states['built'])} rebuilt")


def test_gzip_for_old_clients_reruns_no_step(demo: Demo, tmp_path: Path) -> None:
    ran = demo.build("--compression", "gzip", "-o", f"oci:{tmp_path}/gz:latest")
    assert {s["state"] for s in ran.json["steps"]} == {"cached"}  # steps keep zstd; layers are converted
    manifest = manifest_of(tmp_path / "gz", "latest")
    assert {x["mediaType"] for x in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert [x["diff_id"] for x in ran.json["layers"]] == [x["diff_id"] for x in demo.cold.json["layers"]]
    sh(["umoci", "unpack", "--image", f"{tmp_path}/gz:latest", str(tmp_path / "bundle")])  # umoci 0.4 reads no zstd
    assert (tmp_path / "bundle/rootfs/usr/local/bin/demo-launcher").is_file()
    assert run_cli(["validate", f"oci:{tmp_path}/gz:latest"]).code == 0


def test_plan_needs_no_buildah_and_says_what_would_run(demo: Demo, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(PYTHON, bin_dir / "python3")
    env = {"PATH": str(bin_dir)}  # no buildah, no mmdebstrap, no skopeo
    args = ["plan", str(demo.manifest), "--cache", str(demo.cache), "--json", *base_args(demo.bases)]
    plan = run_cli(args, cwd=demo.project, env=env)
    assert plan.code == 0, str(plan)
    data = plan.json
    assert [s["name"] for s in data["steps"]] == ["packages-1", "tokenizer", "cuda", "kernels", "pyext", "launcher"]
    assert {s["state"] for s in data["steps"]} == {"cached"}
    assert [x["what"] for x in data["layers"]][1:] == [x["what"] for x in demo.cold.json["layers"]][1:]
    assert all(x["size"] for x in data["layers"])
    assert [x["digest"] for x in data["layers"]] == [x["digest"] for x in demo.cold.json["layers"]]
    assert data["outputs"] == [f"oci:{demo.project}/demo-out/demo:latest", "docker://127.0.0.1:5000/demo:latest"]
    kernel = demo.project / "examples/cuda-kernels/saxpy.cu"
    original = kernel.read_text()
    try:
        kernel.write_text(original + "\n// edited\n")
        edited = run_cli(args, cwd=demo.project, env=env)
    finally:
        kernel.write_text(original)
    states = {s["name"]: s["state"] for s in edited.json["steps"]}
    assert states == {
        "packages-1": "cached",
        "tokenizer": "cached",
        "cuda": "cached",
        "kernels": "will-run",
        "pyext": "cached",
        "launcher": "cached",
    }
    text = run_cli_here(["plan", str(demo.manifest), "--cache", str(demo.cache), *base_args(demo.bases)], env=env)
    assert text.code == 0 and "compile  kernels" in text.out, str(text)


def test_plan_after_a_build_knows_every_layer_copies_fitted_and_gzip_included(
    debian_rootfs: Path, tmp_path: Path
) -> None:
    """A plan reads the cache only, and still names the digests the build wrote: copy layers
    (by their content), layers fitted through merged-/usr's /lib, gzip conversions; so a
    runtime step above them shows as cached. An edited copy source unsettles what is above."""
    (tmp_path / "f.txt").write_text("one\n")
    (tmp_path / "m.yaml").write_text(
        f"name: planned\ncompression: gzip\nbases: {{runtime: 'rootfs:{debian_rootfs}'}}\n"
        "image:\n  base: runtime\n  layers:\n"
        "    - copy: {from: ./f.txt, to: /lib/x86_64-linux-gnu/planned.txt}\n"
        "    - run: [cat /usr/lib/x86_64-linux-gnu/planned.txt > /opt/seen.txt]\n"
        "      name: seen\n"
        "    - copy: {from: ./f.txt, to: /opt/again.txt}\n"
        "outputs: ['oci:out:x']\n"
    )
    cache = ["--cache", str(tmp_path / "cache")]
    built = run_cli(["m.yaml", *cache, "--json"], cwd=tmp_path)
    assert built.code == 0, str(built)
    manifest = manifest_of(tmp_path / "out", "x")
    assert {x["mediaType"] for x in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    assert [x["digest"] for x in built.json["layers"]] == [x["digest"] for x in manifest["layers"]]
    planned = run_cli_here(["plan", "m.yaml", *cache, "--json"], cwd=tmp_path)
    assert planned.code == 0, str(planned)
    assert [x["digest"] for x in planned.json["layers"]] == [x["digest"] for x in manifest["layers"]]
    assert [x["origin"] for x in planned.json["layers"]][-3:] == ["cached", "cached", "cached"]
    assert [s["state"] for s in planned.json["steps"]] == ["cached"]
    (tmp_path / "f.txt").write_text("two\n")
    blobs = sorted((tmp_path / "cache/blobs/sha256").iterdir())
    edited = run_cli_here(["plan", "m.yaml", *cache, "--json"], cwd=tmp_path)
    assert edited.code == 0, str(edited)
    assert [x["digest"] for x in edited.json["layers"]][-3:] == [None, None, None]
    assert [s["state"] for s in edited.json["steps"]] == ["will-run"]
    assert sorted((tmp_path / "cache/blobs/sha256").iterdir()) == blobs  # a plan writes no layer


def test_a_copy_into_a_folder_the_base_lacks_is_written_once_with_its_parents_named(
    debian_rootfs: Path, tmp_path: Path
) -> None:
    """Model weights copied to /models/tiny/ (no /models in Debian): the layer names
    /models as new folders are named (root's, 0755, the epoch's mtime), and it is written
    once, fitted as it is written: no second blob of the same files is left in the cache
    (a copy written as it is and then rewritten to fit would leave two)."""
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "model.safetensors").write_bytes(os.urandom(1 << 16))
    (weights / "config.json").write_text('{"layers": 2}\n')
    (tmp_path / "m.yaml").write_text(
        f"name: weights\nbases: {{runtime: 'rootfs:{debian_rootfs}'}}\n"
        "image:\n  base: runtime\n  layers:\n"
        "    - copy: {from: ./weights/, to: /models/tiny/}\n"
        "outputs: ['oci:out:x']\n"
    )
    cache = tmp_path / "cache"
    args, env = ["m.yaml", "--cache", str(cache), "--json"], {"SOURCE_DATE_EPOCH": "1700000000"}
    built = run_cli_here(args, cwd=tmp_path, env=env)
    assert built.code == 0, str(built)
    top = manifest_of(tmp_path / "out", "x")["layers"][-1]["digest"]
    with (
        open(tmp_path / "out/blobs/sha256" / top.split(":")[1], "rb") as raw,
        decompressed(raw) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tf,
    ):
        entries = {m.name.rstrip("/"): (m.type, m.mode, m.uid, m.mtime) for m in tf}
    assert entries["models"] == (tarfile.DIRTYPE, 0o755, 0, 1700000000)
    assert entries["models/tiny"][0] == tarfile.DIRTYPE
    assert {"models/tiny/model.safetensors", "models/tiny/config.json"} <= set(entries)
    holding = []
    for blob in (cache / "blobs/sha256").iterdir():
        with open(blob, "rb") as raw, decompressed(raw) as plain:
            try:
                with tarfile.open(fileobj=plain, mode="r|") as tf:
                    if any(m.name.endswith("model.safetensors") for m in tf):
                        holding.append("sha256:" + blob.name)
            except (tarfile.TarError, OSError, EOFError, zstandard.ZstdError):
                continue  # configs, manifests, SBOMs: not tars
    assert holding == [top]
    again = run_cli_here(args, cwd=tmp_path, env=env)
    assert again.code == 0, str(again)
    assert again.json["layers"][-1]["origin"] == "cached"
    assert again.json["layers"][-1]["digest"] == top


SMALL = """\
name: small
bases:
  devel: oci:{devel}:latest
  runtime: oci:{runtime}:latest
compile:
  - name: broken
    base: devel
    secrets: [DEMO_TOKEN]
    run:
      - echo "using $DEMO_TOKEN for the build"
      - mkdir -p /out && printf %s "$DEMO_TOKEN" | sha256sum | cut -d' ' -f1 > /out/token.sha256
      - {command}
    artifacts:
      hash: {{path: /out/token.sha256, to: /app/token.sha256}}
image:
  base: runtime
  layers:
    - run: ['test -n "$DEMO_TOKEN" && echo "runtime step saw $DEMO_TOKEN" && echo ok > /app-ran']
      secrets: [DEMO_TOKEN]
    - artifact: broken.hash
"""


def small_project(tmp_path: Path, bases: dict[str, Path], command: str) -> Path:
    # Its compile step needs a shell and coreutils, no toolchain: the runtime base serves as
    # devel too, so the tests that pull into a storage of their own pull 50 MB, not 300.
    small = SMALL.format(devel=bases["runtime"], runtime=bases["runtime"], command=command)
    (tmp_path / "small.yaml").write_text(small)
    return tmp_path / "small.yaml"


def test_failing_command_shows_step_command_log_tail_and_leaves_no_container(
    tmp_path: Path, demo_bases: dict[str, Path]
) -> None:
    small_project(tmp_path, demo_bases, "for i in $(seq 1 50); do echo log-line-$i; done; exit 3")
    cache = tmp_path / "cache"
    ran = run_cli(
        ["small.yaml", "--cache", str(cache), "-o", "oci:out:x"], cwd=tmp_path, env={"DEMO_TOKEN": "s3cr3t-value-0123"}
    )
    assert ran.code == 1, str(ran)
    err = ran.err[ran.err.index("error: ") :]  # progress lines come first
    assert err.startswith("error: step broken: command failed (exit 3): for i in $(seq 1 50)"), err
    tail = [line for line in err.splitlines() if line.startswith("log-line-")]
    assert tail == [f"log-line-{i}" for i in range(21, 51)], err  # exactly the last 30 lines
    log_path = Path(err.split("--- full log: ")[1].split()[0])
    assert log_path.is_file() and "log-line-1\n" in log_path.read_text()
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    assert buildah_containers(cache) == []


def test_interrupt_removes_the_container(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    small_project(tmp_path, demo_bases, "sleep 300")
    cache = tmp_path / "cache"
    env = dict(os.environ, DEMO_TOKEN="x", **OWN_STORAGE)  # in the cache: what must be deletable at once
    proc = subprocess.Popen(
        [PYTHON, "-m", "assembler", "small.yaml", "--cache", str(cache), "-o", "oci:out:x"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (cache / "buildah/root").exists():
        time.sleep(0.2)
    while time.monotonic() < deadline and not buildah_containers(cache, env):
        time.sleep(0.2)
    time.sleep(2)  # in `sleep 300` by now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert buildah_containers(cache, env) == []
    # Nothing keeps running or stays mounted: the cache can be deleted at once.
    ps = sh(["ps", "-eo", "args"]).stdout
    assert str(cache) not in ps, ps
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()
    shutil.rmtree(cache)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_a_step_as_ctrl_c_does(
    tmp_path: Path, demo_bases: dict[str, Path], sig: signal.Signals, code: int
) -> None:
    """``timeout``, a CI cancel, Slurm's time limit, Kubernetes (SIGTERM) or a closed
    terminal (SIGHUP) mid-step: one line, the signal's exit status, no container, no
    process, no mount, the cache deletable at once."""
    small_project(tmp_path, demo_bases, "sleep 300")
    cache = tmp_path / "cache"
    env = dict(os.environ, DEMO_TOKEN="x", **OWN_STORAGE)
    proc = subprocess.Popen(
        [PYTHON, "-m", "assembler", "small.yaml", "--cache", str(cache), "-o", "oci:out:x"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not buildah_containers(cache, env):
        time.sleep(0.2)
    time.sleep(2)  # in `sleep 300` by now
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"terminated by {sig.name}: stopped" in err and "Traceback" not in err, err
    assert buildah_containers(cache, env) == []
    assert str(cache) not in sh(["ps", "-eo", "args"]).stdout
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()
    shutil.rmtree(cache)


def contains(path: Path, needle: bytes) -> bool:
    """Whether the file, or its decompressed content for a zstd/gzip blob, holds ``needle``
    (streamed: blobs can be large and this process's memory must stay small)."""
    from assembler.archive.compress import decompressed

    def scan(stream: BinaryIO) -> bool:
        tail = b""
        while chunk := stream.read(1 << 20):
            if needle in tail + chunk:
                return True
            tail = chunk[-len(needle) :]
        return False

    with open(path, "rb") as f:
        if scan(f):
            return True
        f.seek(0)
        head = f.read(4)
        f.seek(0)
        if head[:4] == b"\x28\xb5\x2f\xfd" or head[:2] == b"\x1f\x8b":
            with decompressed(f) as plain:
                return scan(plain)
    return False


def test_secret_is_in_no_blob_config_history_or_log(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    secret = "tok-" + hashlib.sha256(os.urandom(16)).hexdigest()[:24]
    small_project(tmp_path, demo_bases, "echo done")
    cache = tmp_path / "cache"
    ran = run_cli(
        ["small.yaml", "--cache", str(cache), "-v", "-o", "oci:out:x", "-o", "oci-archive:out.tar:x"],
        cwd=tmp_path,
        env={"DEMO_TOKEN": secret, **OWN_STORAGE},  # buildah's storage in the cache: searched too
    )
    assert ran.code == 0, str(ran)
    # The steps did see it: the artifact holds its hash, the runtime step's marker exists.
    manifest = manifest_of(tmp_path / "out", "x")
    artifact = uncompressed(read_blob(tmp_path / "out", manifest["layers"][-1]["digest"]))
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in artifact
    runtime_layer = uncompressed(read_blob(tmp_path / "out", manifest["layers"][-2]["digest"]))
    assert b"app-ran" in runtime_layer
    needle = secret.encode()
    searched = 0
    for root in (tmp_path, cache):  # buildah's storage (under the cache) included
        for path in root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            try:
                found = contains(path, needle)
            except OSError:
                continue
            searched += 1
            assert not found, path
    assert needle not in ran.out.encode() and needle not in ran.err.encode()
    logs = list((cache / "logs").glob("*.log"))
    assert logs and all("***" in p.read_text() for p in logs if "broken" in p.name)
    print(f"\nsecret absent from {searched} files (every blob decompressed, configs, keys, logs) and the output")


def test_unprivileged_user_builds_the_demo(tmp_path: Path, demo_bases: dict[str, Path], user: User) -> None:
    work = user.home / "demo-build"
    shutil.rmtree(work, ignore_errors=True)
    manifest = copy_project(work)
    sh(["chown", "-R", f"{user.name}:{user.name}", str(work)])
    args = [
        PYTHON,
        "-m",
        "assembler",
        str(manifest),
        "--cache",
        str(work / "cache"),
        "--json",
        *base_args(demo_bases),
        "-o",
        f"oci:{work}/out/demo:latest",
    ]
    proc = user.run(args, work)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {s["state"] for s in result["steps"]} == {"built"}
    owners = {p.stat().st_uid for p in (work / "cache").rglob("*") if not p.is_symlink() and "buildah" not in p.parts}
    assert owners == {user.uid}  # nothing written as root
    out = Buildah(tmp_path / "b").run_image(f"oci:{work}/out/demo:latest", ["/usr/local/bin/demo-launcher"])
    assert "all components answered" in out
    print(f"\nbuilt as {user.name} (rootless buildah): {result['digest']}")
    sh(["rm", "-rf", str(work)])


def test_images_own_ca_certificates_install_and_https_works(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    """The host CA bundle is mounted at a private path: the image's ca-certificates package
    still installs (its setup rewrites /etc/ssl/certs), and curl, pip and apt use the host CA."""
    (tmp_path / "ca.yaml").write_text(f"""\
name: ca
bases:
  devel: oci:{demo_bases["devel"]}:latest
  runtime: oci:{demo_bases["runtime"]}:latest
compile:
  - name: fetch
    base: devel
    packages: [ca-certificates, curl]
    run:
      - curl -fsS -o /dev/null https://pypi.org/simple/six/
      - pip download --no-deps -q -d /out six==1.16.0
    artifacts:
      wheel: {{path: "/out/*.whl", to: /wheels/}}
image:
  base: runtime
  layers:
    - packages: [ca-certificates]
    - artifact: fetch.wheel
""")
    ran = run_cli(["ca.yaml", "--cache", str(tmp_path / "cache"), "--json", "-o", "oci:out:x"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    manifest = manifest_of(tmp_path / "out", "x")
    with tarfile.open(
        fileobj=io.BytesIO(uncompressed(read_blob(tmp_path / "out", manifest["layers"][1]["digest"])))
    ) as tf:
        names = set(tf.getnames())
    assert "etc/ssl/certs/ca-certificates.crt" in names  # the image's own bundle, made by its package
    assert not any(n.startswith("run/") for n in names)  # the mounted host bundle is not in the layer
    with tarfile.open(
        fileobj=io.BytesIO(uncompressed(read_blob(tmp_path / "out", manifest["layers"][2]["digest"])))
    ) as tf:
        assert any(n.startswith("wheels/six-1.16.0") for n in tf.getnames())


def test_a_runtime_step_that_writes_a_machine_identity_gives_one_layer(
    tmp_path: Path, demo_bases: dict[str, Path]
) -> None:
    """systemd's and dbus's install scripts write a random /etc/machine-id and
    /var/lib/dbus/machine-id: a package step installing either gave another layer each
    build. The identity is left out of the layer (each container makes its own): the same
    step twice, in two caches, gives one digest. So are the files the runtime mounts over
    (a write there never reaches an image Docker builds either), which buildah leaves
    behind as empty mount points where the base has none."""
    (tmp_path / "m.yaml").write_text(
        f"""name: identity
bases: {{runtime: "oci:{demo_bases["runtime"]}:latest"}}
image:
  base: runtime
  layers:
    - run:
        - head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /etc/machine-id
        - mkdir -p /var/lib/dbus && cp /etc/machine-id /var/lib/dbus/machine-id && echo kept > /etc/marker
        - echo "10.0.0.1 cluster-head" >> /etc/hosts
"""
    )
    digests = []
    for cache in ("a", "b"):
        ran = run_cli(["m.yaml", "--json", "--cache", cache, "-o", f"oci:out-{cache}:x"], cwd=tmp_path)
        assert ran.code == 0, str(ran)
        digests.append(ran.json["digest"])
    layout = tmp_path / "out-a"
    layer = manifest_of(layout, "x")["layers"][-1]
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, layer["digest"])))) as tar:
        names = {m.name.lstrip("./") for m in tar.getmembers()}
    assert "etc/marker" in names, names  # what the step wrote besides is there
    assert not names & {"etc/machine-id", "var/lib/dbus/machine-id"}, names
    assert not names & {"etc/hosts", "etc/hostname", "etc/resolv.conf"}, names
    assert digests[0] == digests[1]
