"""``scripts/gpu-check``, the way an image's GPU tests run on a GPU host with no container
engine (standard library only): a bundle of a built image (xz layers, its config and
tests), unpacked there with whiteouts applied and every diff_id checked, its tests run each
in a sandbox of its own (namespaces, pivot_root, its own /proc and /dev) with the image's
env. Here, with no GPU: ``--no-gpu`` runs the tests that need none and reports the others
as not run. An image that attacks the host (links out of its root, mount points that are
symlinks, tests that look for the host through /proc) changes nothing outside the scratch
folder. (scripts/gpu-check ran the demo's GPU tests on an H200: the note of the commit that
added it.)"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import zstandard

from tests.helpers import ROOT, run_cli

# Module fixtures whose tests run outside programs (tests/conftest.py: tier): a bundle runs with mount and chroot.
OUTSIDE_FIXTURES = frozenset({"bundle"})

GPU_CHECK = ROOT / "scripts" / "gpu-check"
BUSYBOX = Path("/bin/busybox")
MANIFEST = """\
name: small
bases: {b: "rootfs:base.tar"}
image:
  base: b
  layers:
    - copy: {from: ./a.txt, to: /app/a.txt}
  config:
    env: {GREETING: hello from the image}
    workdir: /app
"""

TESTED = (
    MANIFEST
    + """\
tests:
  - name: greets
    command: echo $GREETING; cat a.txt
    output: ['^hello from the image$', "the app's file"]
    not_output: [FAILED]
  - name: on-the-gpu
    command: [/bin/sh, -c, exit 3]
    exit: 3
    gpu: true
"""
)


def _busybox_base(path: Path) -> None:
    with tarfile.open(path, "w") as tf:
        tf.add(BUSYBOX, "bin/busybox")
        for tool in ("sh", "cat", "test", "echo", "pwd", "id"):
            link = tarfile.TarInfo(f"bin/{tool}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tf.addfile(link)
        for name in ("etc/os-release", "etc/issue"):
            info = tarfile.TarInfo(name)
            info.size = 8
            tf.addfile(info, io.BytesIO(b"ID=test\n"))


def _gpu_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GPU_CHECK), *args], capture_output=True, text=True, timeout=300)


def _built(root: Path, *options: str, manifest: str = MANIFEST) -> Path:
    """The small image built under ``root`` into ``root/out``, tagged 1."""
    (root / "a.txt").write_text("the app's file\n")
    (root / "m.yaml").write_text(manifest)
    _busybox_base(root / "base.tar")
    ran = run_cli(["m.yaml", "--cache", "cache", "-o", "oci:out:1", "-q", *options], cwd=root)
    assert ran.code == 0, str(ran)
    return root / "out"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpucheck")
    _built(root)
    tests = [
        {
            "name": "env-and-workdir",
            "run": ["/bin/sh", "-c", "pwd; echo $GREETING; cat a.txt"],
            "exit": 0,
            "expect": ["^/app$", "hello from the image", "the app's file"],
        },
        {"name": "needs-a-gpu", "gpu": True, "run": ["/bin/sh", "-c", "exit 0"]},
    ]
    (root / "tests.json").write_text(json.dumps(tests))
    done = _gpu_check("bundle", str(root / "out") + ":1", str(root / "bundle"), "--tests", str(root / "tests.json"))
    assert done.returncode == 0, done.stderr
    return root / "bundle"


def _run(bundle: Path) -> subprocess.CompletedProcess[str]:
    return _gpu_check("run", str(bundle), "--no-gpu")


def test_a_bundle_runs_its_tests_in_a_sandbox_with_the_images_env(bundle: Path) -> None:
    done = _run(bundle)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every diff_id checked" in done.stdout
    assert "passed  image/env-and-workdir" in done.stdout
    assert "not run  image/needs-a-gpu" in done.stdout  # never reported as passed


def _with_layer(
    bundle: Path,
    to: Path,
    members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]],
    tests: list[dict[str, object]],
) -> Path:
    """A copy of ``bundle`` with one more layer of ``members`` (a file's data given with it,
    else none) and other tests."""
    shutil.copytree(bundle, to)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for member in members:
            info, data = member if isinstance(member, tuple) else (member, b"")
            info.size = len(data) if info.isfile() else 0
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    (to / "layers" / f"{diff_id[7:]}.tar.xz").write_bytes(lzma.compress(raw.getvalue()))
    spec = json.loads((to / "bundle.json").read_text())
    spec["images"]["image"]["diff_ids"].append(diff_id)
    spec["tests"] = tests
    (to / "bundle.json").write_text(json.dumps(spec))
    return to


def test_whiteouts_remove_what_the_layers_below_hold(bundle: Path, tmp_path: Path) -> None:
    check = {
        "name": "whited-out",
        "run": ["/bin/sh", "-c", "test ! -e /app/a.txt && test ! -e /etc/os-release && test -e /bin/sh && echo gone"],
        "expect": ["^gone$"],
    }
    whiteouts = [tarfile.TarInfo("app/.wh.a.txt"), tarfile.TarInfo("etc/.wh..wh..opq")]
    done = _run(_with_layer(bundle, tmp_path / "b", whiteouts, [check]))
    assert done.returncode == 0 and "passed  image/whited-out" in done.stdout, done.stdout + done.stderr


def test_a_failing_test_or_a_damaged_layer_fails_the_check(bundle: Path, tmp_path: Path) -> None:
    wrong = {"name": "wrong-output", "run": ["/bin/sh", "-c", "echo something else"], "expect": ["^expected$"]}
    done = _run(_with_layer(bundle, tmp_path / "c", [], [wrong]))
    assert done.returncode == 1 and "FAILED  image/wrong-output" in done.stdout, done.stdout
    damaged = _with_layer(bundle, tmp_path / "d", [], [wrong])
    layer = next((damaged / "layers").iterdir())
    data = bytearray(lzma.decompress(layer.read_bytes()))
    data[600] ^= 0xFF
    layer.write_bytes(lzma.compress(bytes(data)))
    done = _run(damaged)
    assert done.returncode != 0 and "its tar is sha256:" in done.stdout + done.stderr, done.stdout + done.stderr


def test_a_zstd_chunked_image_is_bundled_whole(tmp_path: Path) -> None:
    """A zstd:chunked layer is a zstd frame per file, with skippable frames after them: the
    bundle reads every frame into the layer's tar (its diff_id checked there and here)."""
    out = _built(tmp_path, "--compression", "zstd:chunked")
    tests = [{"name": "app-file", "run": ["/bin/cat", "/app/a.txt"], "expect": ["the app's file"]}]
    (tmp_path / "tests.json").write_text(json.dumps(tests))
    done = _gpu_check("bundle", f"{out}:1", str(tmp_path / "bundle"), "--tests", str(tmp_path / "tests.json"))
    assert done.returncode == 0, done.stdout + done.stderr
    done = _run(tmp_path / "bundle")
    assert done.returncode == 0 and "passed  image/app-file" in done.stdout, done.stdout + done.stderr


@pytest.mark.integration  # the build runs the manifest's tests: buildah
def test_the_bundle_refuses_a_layer_whose_tar_is_not_its_diff_id(tmp_path: Path) -> None:
    """Checked where the image is, before anything goes to a GPU host."""
    out = _built(tmp_path, manifest=TESTED)
    index = json.loads((out / "index.json").read_text())
    blobs = out / "blobs" / "sha256"
    image = next(e for e in index["manifests"] if "artifactType" not in e)  # not a referrer
    manifest = json.loads((blobs / image["digest"].split(":")[1]).read_bytes())
    layer = blobs / manifest["layers"][-1]["digest"].split(":")[1]
    layer.chmod(0o644)
    layer.write_bytes(zstandard.ZstdCompressor().compress(b"not the layer's tar"))
    done = _gpu_check("bundle", f"{out}:1", str(tmp_path / "bundle"))
    assert done.returncode != 0, done.stdout
    assert "not its diff_id" in done.stderr, done.stderr
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    written = {p.name.split(".")[0] for p in (tmp_path / "bundle" / "layers").iterdir()}
    assert written == {config["rootfs"]["diff_ids"][0].split(":")[1]}  # the base's layer only, no part left


@pytest.mark.integration  # the build runs the manifest's tests: buildah
def test_the_images_own_tests_go_into_the_bundle(tmp_path: Path) -> None:
    """With no --tests, the bundle takes the manifest's tests as the build recorded them
    (the test-result statement beside the image in the layout), commands resolved."""
    out = _built(tmp_path, manifest=TESTED)
    done = _gpu_check("bundle", f"{out}:1", str(tmp_path / "bundle"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "tests: greets, on-the-gpu" in done.stdout, done.stdout
    tests = {t["name"]: t for t in json.loads((tmp_path / "bundle" / "bundle.json").read_text())["tests"]}
    assert tests["greets"]["run"] == ["/bin/sh", "-c", "echo $GREETING; cat a.txt"]
    assert tests["greets"]["not_expect"] == ["FAILED"] and tests["on-the-gpu"]["exit"] == 3
    assert tests["on-the-gpu"]["gpu"] is True and tests["greets"]["gpu"] is False
    done = _run(tmp_path / "bundle")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed  image/greets" in done.stdout and "not run  image/on-the-gpu" in done.stdout, done.stdout


def test_an_image_built_without_tests_needs_tests_given(tmp_path: Path) -> None:
    out = _built(tmp_path)
    done = _gpu_check("bundle", f"{out}:1", str(tmp_path / "bundle"))
    assert done.returncode != 0 and "no tests recorded beside the image" in done.stderr, done.stderr


def test_output_that_must_not_appear_and_the_user_a_test_runs_as(bundle: Path, tmp_path: Path) -> None:
    tests: list[dict[str, object]] = [
        {"name": "unwanted", "run": ["/bin/sh", "-c", "echo step FAILED"], "not_expect": ["FAILED"]},
        {"name": "as-1000", "run": ["/bin/id", "-u"], "user": "1000:1000", "expect": ["^1000$"]},
        {"name": "no-such-user", "run": ["/bin/id", "-u"], "user": "nobody"},
        {"name": "host-user", "run": ["/bin/id", "-u"], "user": "root"},  # the host's, through a link
    ]
    passwd = tarfile.TarInfo("etc/passwd")
    passwd.type, passwd.linkname = tarfile.SYMTYPE, "/etc/passwd"  # out of the image's root, on the host
    done = _run(_with_layer(bundle, tmp_path / "u", [passwd], tests))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED  image/unwanted" in done.stdout and "matched, must not: ['FAILED']" in done.stdout, done.stdout
    assert "passed  image/as-1000" in done.stdout, done.stdout
    assert "FAILED  image/no-such-user" in done.stdout and "not in the image's /etc/passwd" in done.stdout
    assert "FAILED  image/host-user" in done.stdout, done.stdout


# -- an image that attacks the GPU host that checks it --------------------------------------


def _m(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644, uid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid = kind, link, mode, uid, uid
    return info


def _host(tmp_path: Path) -> Path:
    """A folder of the host's that no image may change: files, a folder, a hard-link count."""
    host = tmp_path / "host"
    (host / "dir").mkdir(parents=True)
    (host / "dir" / "inner").write_text("the host's inner file\n")
    (host / "secret").write_text("the host's secret\n")
    (host / "secret").chmod(0o600)
    (host / "dir").chmod(0o755)
    return host


def _state(host: Path) -> dict[str, tuple[object, ...]]:
    """Every entry below ``host``: mode, owner, link count, content or target; and the mounts."""
    out: dict[str, tuple[object, ...]] = {}
    for path in [host, *sorted(host.rglob("*"))]:
        st = path.lstat()
        data = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else b""
        out[str(path)] = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, data)
    mounts = Path("/proc/self/mountinfo").read_text()
    out["mounts"] = tuple(line.split()[4] for line in mounts.splitlines() if str(host) in line)
    return out


ATTACKS: dict[str, tuple[Callable[[Path], list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]], str]] = {
    # name: (the layer's members, given the host folder; what the run says: "" when it unpacks)
    "a folder entry over the symlink the layer made": (
        lambda h: [_m("evil", tarfile.SYMTYPE, str(h / "dir")), _m("evil", tarfile.DIRTYPE, mode=0o7777, uid=1234)],
        "",
    ),
    "a hard link to a symlink": (
        lambda h: [_m("s", tarfile.SYMTYPE, str(h / "secret")), _m("h", tarfile.LNKTYPE, "s", mode=0o7777, uid=1234)],
        "no regular file of the image",
    ),
    "a hard link through a symlinked folder": (
        lambda h: [_m("d", tarfile.SYMTYPE, str(h / "dir")), _m("x", tarfile.LNKTYPE, "d/inner", uid=1234)],
        "no regular file of the image",
    ),
    "a hard link to a host file by its path": (
        lambda h: [_m("x", tarfile.LNKTYPE, str(h / "secret"), mode=0o7777)],
        "no regular file of the image",
    ),
    "a file through a symlinked folder": (
        lambda h: [_m("d", tarfile.SYMTYPE, str(h / "dir")), (_m("d/planted", mode=0o4755), b"planted\n")],
        "never written through",
    ),
    "a file through a symlinked folder, spelled otherwise": (
        lambda h: [_m("d", tarfile.SYMTYPE, str(h)), (_m("./d//dir/planted"), b"planted\n")],
        "never written through",
    ),
    "a folder through a symlinked folder": (
        lambda h: [_m("d", tarfile.SYMTYPE, str(h)), _m("d/dir", tarfile.DIRTYPE, mode=0o7777)],
        "never written through",
    ),
    "a whiteout through a symlinked folder": (
        lambda h: [_m("d", tarfile.SYMTYPE, str(h / "dir")), _m("d/.wh.inner")],
        "",
    ),
    "an opaque folder through a symlink": (
        lambda h: [_m("d", tarfile.SYMTYPE, str(h / "dir")), _m("d/.wh..wh..opq")],
        "",
    ),
    "a file over a symlink to a host file": (
        lambda h: [_m("s", tarfile.SYMTYPE, str(h / "secret")), (_m("s", mode=0o7777), b"overwritten\n")],
        "",
    ),
    "a member that climbs": (lambda h: [(_m("../../escape"), b"out\n")], "climbs out of the root"),
    "a whiteout of the folder above": (lambda h: [_m(".wh..."), _m("bin/.wh..."), _m("bin/.wh..")], ""),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_image_changes_nothing_of_the_host_while_it_is_unpacked(bundle: Path, tmp_path: Path, attack: str) -> None:
    host = _host(tmp_path)
    scratch = tmp_path / "scratch"  # the roots' folder, and beside them what must stay
    scratch.mkdir()
    (scratch / "beside").write_text("beside the image's root\n")
    before = _state(host)
    members, refused = ATTACKS[attack]
    check = {"name": "runs", "run": ["/bin/sh", "-c", "echo ran"], "expect": ["^ran$"]}
    layered = _with_layer(bundle, tmp_path / "b", members(host), [check])
    done = _gpu_check("run", str(layered), "--no-gpu", "--keep", str(scratch))
    said = done.stdout + done.stderr
    assert _state(host) == before, said
    assert (scratch / "beside").read_text() == "beside the image's root\n", said
    if refused:
        assert done.returncode != 0 and refused in said, said
    else:
        assert done.returncode == 0 and "passed  image/runs" in said, said


def test_a_test_sees_neither_the_hosts_processes_nor_its_root(bundle: Path, tmp_path: Path) -> None:
    """Mount points the image made symlinks to host folders, a test as root writing through
    /proc/$PPID/root and /proc/1/root (gpu-check's own root under chroot was the host's /),
    and a host process the tests must not see."""
    host = _host(tmp_path)
    marker = f"gpu-check-host-process-{os.getpid()}"
    sleeper = subprocess.Popen(["/bin/sh", "-c", f"exec -a {marker} sleep 300"])
    points = [_m(p, tarfile.SYMTYPE, str(host / "dir")) for p in ("proc", "dev", "sys")]
    secret = host / "secret"
    tests: list[dict[str, object]] = [
        {"name": "processes", "run": ["/bin/sh", "-c", "echo /proc/[0-9]*; cat /proc/[0-9]*/cmdline"]},
        {
            "name": "through-proc",
            "user": "0",
            "run": ["/bin/sh", "-c", f"echo pwned > /proc/$PPID/root{secret}; echo pwned > /proc/1/root{secret}; echo"],
        },
        {"name": "who", "run": ["/bin/sh", "-c", "id -u; cat /proc/self/status"]},
        {"name": "root", "user": "root:0", "run": ["/bin/cat", "/proc/self/status"]},
    ]
    tests[0]["expect"], tests[0]["not_expect"] = [r"^/proc/1 /proc/\d+$"], [marker]
    tests[2]["expect"] = [r"^65534$", r"^NoNewPrivs:\s+1$", r"^CapEff:\s+0+$"]
    tests[3]["expect"] = [r"^CapBnd:\s+00000000a00425fb$", r"^Uid:\s+0\s"]
    passwd = (_m("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n")
    before = _state(host)
    try:
        with_points = _with_layer(bundle, tmp_path / "b", [*points, passwd], tests)
        done = _gpu_check("run", str(with_points), "--no-gpu", "--keep", str(tmp_path / "scratch"))
    finally:
        sleeper.kill()
    said = done.stdout + done.stderr
    assert _state(host) == before, said
    assert done.returncode == 0, said
    for name in ("processes", "through-proc", "who", "root"):
        assert f"passed  image/{name}" in said, said
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(tmp_path) in line]


def _script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(GPU_CHECK))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("gpu_check", loader))
    loader.exec_module(module)
    return module


def test_the_drivers_libraries_go_in_only_through_the_images_own_folders(tmp_path: Path) -> None:
    gc = _script()
    host = _host(tmp_path)
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "libcuda.so.580.1").write_bytes(b"\x7fELF the driver")
    (libs / "libcuda.so.1").symlink_to("libcuda.so.580.1")
    (libs / "libother.so").write_bytes(b"not the driver's")
    before = _state(host)
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / "usr").symlink_to(host)  # the image's /usr leads to a host folder
    root = gc.Root(crafted)
    with pytest.raises(gc.Refused, match="never written through"):
        gc.install_driver(root, libs)
    assert _state(host) == before
    plain = tmp_path / "plain"
    plain.mkdir()
    root = gc.Root(plain)
    assert gc.install_driver(root, libs) == ["libcuda.so.1", "libcuda.so.580.1"]
    lib_dir = plain / "usr" / "lib" / f"{os.uname().machine}-linux-gnu"
    assert os.readlink(lib_dir / "libcuda.so.1") == "libcuda.so.580.1"
    assert (lib_dir / "libcuda.so.580.1").read_bytes() == b"\x7fELF the driver"


@pytest.mark.integration  # Apptainer (scripts/build-apptainer)
def test_where_apptainer_is_on_path_the_tests_run_in_it(bundle: Path, tmp_path: Path) -> None:
    """A real runtime is preferred where the host has one: the same checks, in Apptainer
    (--containall, --cleanenv, no privileges, the test's user by --security)."""
    from tests.test_apptainer import apptainer_binary

    binary = apptainer_binary()
    host = _host(tmp_path)
    before = _state(host)
    tests: list[dict[str, object]] = [
        {"name": "env-and-workdir", "run": ["/bin/sh", "-c", "pwd; echo $GREETING"], "expect": ["^/app$", "hello"]},
        {"name": "processes", "run": ["/bin/sh", "-c", "echo /proc/[0-9]*"], "expect": [r"^/proc/1 /proc/\d+$"]},
        {"name": "who", "run": ["/bin/sh", "-c", "id -u; cat /proc/self/status"], "expect": ["^65534$"]},
        {
            "name": "through-proc",
            "user": "0",
            "run": ["/bin/sh", "-c", f"echo pwned > /proc/1/root{host / 'secret'}; echo"],
        },
        {"name": "needs-a-gpu", "gpu": True, "run": ["/bin/sh", "-c", "exit 0"]},
    ]
    layered = _with_layer(bundle, tmp_path / "b", [], tests)
    path = f"{binary.parent}:{os.environ.get('PATH', '')}"
    done = subprocess.run(
        [sys.executable, str(GPU_CHECK), "run", str(layered), "--no-gpu"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": path},
    )
    said = done.stdout + done.stderr
    assert f"each test runs in Apptainer ({binary})" in said, said
    assert done.returncode == 0, said
    for name in ("env-and-workdir", "processes", "who", "through-proc"):
        assert f"passed  image/{name}" in said, said
    assert "not run  image/needs-a-gpu" in said, said
    assert _state(host) == before, said
