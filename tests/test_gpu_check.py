"""``scripts/gpu-check``, the way an image's GPU tests run on a GPU host with no container
engine (standard library only): a bundle of a built image (xz layers, its config and
tests), unpacked there with whiteouts applied and every diff_id checked, its tests run under
chroot with the image's env. Here, with no GPU: ``--no-gpu`` runs the tests that need none
and reports the others as not run. (scripts/gpu-check ran the demo's GPU tests on an H200:
the note of the commit that added it.)"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

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


def _busybox_base(path: Path) -> None:
    with tarfile.open(path, "w") as tf:
        tf.add(BUSYBOX, "bin/busybox")
        for tool in ("sh", "cat", "test", "echo", "pwd"):
            link = tarfile.TarInfo(f"bin/{tool}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tf.addfile(link)
        for name in ("etc/os-release", "etc/issue"):
            info = tarfile.TarInfo(name)
            info.size = 8
            tf.addfile(info, io.BytesIO(b"ID=test\n"))


def _gpu_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GPU_CHECK), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpucheck")
    (root / "a.txt").write_text("the app's file\n")
    (root / "m.yaml").write_text(MANIFEST)
    _busybox_base(root / "base.tar")
    ran = run_cli(["m.yaml", "--cache", "cache", "-o", "oci:out:1", "-q"], cwd=root)
    assert ran.code == 0, str(ran)
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


def test_a_bundle_runs_its_tests_under_chroot_with_the_images_env(bundle: Path) -> None:
    done = _run(bundle)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every diff_id checked" in done.stdout
    assert "passed  image/env-and-workdir" in done.stdout
    assert "not run  image/needs-a-gpu" in done.stdout  # never reported as passed


def _with_layer(bundle: Path, to: Path, members: list[tarfile.TarInfo], tests: list[dict[str, object]]) -> Path:
    """A copy of ``bundle`` with one more layer of ``members`` and other tests."""
    shutil.copytree(bundle, to)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info in members:
            tf.addfile(info, io.BytesIO(b"") if info.isfile() else None)
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
