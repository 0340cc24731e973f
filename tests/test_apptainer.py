"""Our SIFs in the real Apptainer, built from its source by ``scripts/build-apptainer``
into the test cache (or an ``apptainer`` on PATH): ``apptainer run`` with and without
arguments (ENTRYPOINT + CMD as ``docker run``, the exit status passed on; as root and as
an unprivileged user), ``exec`` with the image's PATH and ENV (a user's ``--env`` still
wins), ``inspect --json`` labels and the runscript, and ``apptainer sif list/info/dump``
reading our SBOM object (type SBOM, spdx-json) and JSON objects, in a SIF that then runs.

The image is tiny: a static busybox (Debian's busybox-static) as its root filesystem.
Without a built Apptainer the tests skip with the reason the build script recorded; when
Apptainer cannot start even the SIF it builds itself from a directory, they skip with its
error (the machine cannot run containers), so a failure here is about our SIF.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_CACHE
from tests.helpers import run_cli

pytestmark = pytest.mark.integration  # every test runs Apptainer

APPTAINER_VERSION = "1.3.6"  # the version scripts/build-apptainer builds
BUILT = TEST_CACHE / f"apptainer-{APPTAINER_VERSION}"
BUSYBOX = Path("/bin/busybox")  # busybox-static: runs without any library in the image
APPLETS = ("sh", "env", "cat", "printf", "true")
IMAGE_PATH = "/opt/app:/bin"

MANIFEST = f"""\
name: appt
epoch: 1700000000
bases: {{b: "rootfs:base.tar"}}
image:
  base: b
  layers:
    - copy: {{from: ./run.sh, to: /opt/app/run.sh}}
  config:
    env: {{GREETING: hello world, PATH: "{IMAGE_PATH}"}}
    entrypoint: [/opt/app/run.sh, --flag]
    cmd: [default, two words]
    labels: {{org.example.test: "yes"}}
outputs: ['sif:x.sif']
"""
RUN_SH = """#!/bin/sh
printf '[%s]' "$@"
echo " greeting=$GREETING"
exit "${RC:-0}"
"""
DPKG_STATUS = """Package: busybox-static
Status: install ok installed
Version: 1:1.35.0-4+deb12u1
Architecture: amd64
Description: Standalone rescue shell with tons of builtin utilities

"""


@dataclass(frozen=True)
class Sif:
    apptainer: Path
    path: Path
    probe: Path | None = None  # a SIF Apptainer built itself (from a busybox directory)

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``apptainer ARGS``; for ``run``/``exec`` the SIF goes after the options in ``args``."""
        argv = [str(self.apptainer), *args]
        if args[0] in ("run", "exec"):
            i = next(i for i, a in enumerate(args) if a == "SIF")
            argv[1 + i] = str(self.path)
            # Root asks for every capability; in a container whose bounding set lacks one
            # (here: CAP_SYS_RESOURCE) the starter refuses. Our images need no privileges.
            if os.geteuid() == 0:
                argv.insert(2, "--no-privs")
        full_env = {**os.environ, **(env or {})}
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=full_env)


def apptainer_binary() -> Path:
    built = BUILT / "prefix" / "bin" / "apptainer"
    if os.access(built, os.X_OK):
        with open(BUILT / ".lock", "a") as lock:
            try:  # the script holds it while it builds: the prefix may be half installed
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pytest.skip(f"scripts/build-apptainer is building {built} right now")
        return built
    on_path = shutil.which("apptainer")
    if on_path:
        return Path(on_path)
    failed = BUILT / "failed"
    why = failed.read_text().strip() if failed.exists() else "scripts/build-apptainer has not been run"
    pytest.skip(f"no Apptainer ({built} or on PATH): {why}")


def _rootfs(tf: tarfile.TarFile) -> None:
    tf.add(BUSYBOX, "bin/busybox")
    for applet in APPLETS:
        link = tarfile.TarInfo(f"bin/{applet}")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tf.addfile(link)
    for name, text in (
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("var/lib/dpkg/status", DPKG_STATUS),
    ):
        info = tarfile.TarInfo(name)
        info.size = len(text)
        tf.addfile(info, io.BytesIO(text.encode()))


def _runnable(apptainer: Path, workdir: Path) -> Path:
    """Apptainer's own SIF of a busybox directory; skip unless Apptainer runs it."""
    sandbox = workdir / "sandbox"
    (sandbox / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, sandbox / "bin" / "busybox")
    (sandbox / "bin" / "true").symlink_to("busybox")
    (sandbox / "bin" / "sh").symlink_to("busybox")
    probe = Sif(apptainer, workdir / "probe.sif")
    built = probe("build", "--force", str(probe.path), str(sandbox))
    assert built.returncode == 0, f"apptainer build from a directory:\n{built.stderr}"
    ran = probe("exec", "SIF", "true")
    if ran.returncode != 0:
        pytest.skip(f"Apptainer cannot run even its own SIF here: {ran.stderr.strip()[-300:]}")
    return probe.path


@pytest.fixture(scope="module")
def sif(tmp_path_factory: pytest.TempPathFactory) -> Sif:
    apptainer = apptainer_binary()
    root = tmp_path_factory.mktemp("apptainer")
    probe = _runnable(apptainer, root)
    with tarfile.open(root / "base.tar", "w") as tf:
        _rootfs(tf)
    (root / "run.sh").write_text(RUN_SH)
    (root / "run.sh").chmod(0o755)
    (root / "m.yaml").write_text(MANIFEST)
    ran = run_cli(["m.yaml", "--cache", "cache", "--json"], cwd=root)
    assert ran.code == 0, str(ran)
    return Sif(apptainer, root / "x.sif", probe)


def test_run_is_docker_run_entrypoint_then_cmd_or_the_arguments(sif: Sif) -> None:
    default = sif("run", "SIF")
    assert (default.returncode, default.stdout) == (0, "[--flag][default][two words] greeting=hello world\n")
    args = sif("run", "SIF", "a", "b c", "")
    assert args.stdout == "[--flag][a][b c][] greeting=hello world\n", args.stderr
    # The entrypoint's exit status is the run's; a variable the user passes reaches it.
    failing = sif("run", "--env", "RC=3", "SIF")
    assert failing.returncode == 3, failing.stderr


def test_exec_sees_the_image_path_and_env(sif: Sif) -> None:
    contained = sif("exec", "--containall", "SIF", "env")
    assert contained.returncode == 0, contained.stderr
    env = dict(line.split("=", 1) for line in contained.stdout.splitlines() if "=" in line)
    # The image's PATH first; Apptainer appends the standard directories missing from it
    # (its fixpath step, for every image it runs).
    assert env["PATH"].startswith(IMAGE_PATH + ":") and env["GREETING"] == "hello world"
    assert "/.singularity.d/libs" in env["LD_LIBRARY_PATH"].split(":")
    # The host's PATH does not hide the image's (as with docker run); the command is found on it.
    found = sif("exec", "SIF", "run.sh", "x", env={"PATH": "/host/bin:/usr/bin:/bin"})
    assert found.stdout == "[x] greeting=hello world\n", found.stderr
    # Other variables keep a value the user gives (Apptainer's convention for OCI images).
    over = sif("exec", "--env", "GREETING=over", "SIF", "sh", "-c", 'echo "$GREETING"')
    assert over.stdout == "over\n", over.stderr


def test_inspect_reads_labels_and_runscript_without_a_container(sif: Sif) -> None:
    inspected = sif("inspect", "--json", str(sif.path))
    assert inspected.returncode == 0, inspected.stderr
    labels = json.loads(inspected.stdout)["data"]["attributes"]["labels"]
    assert labels["org.example.test"] == "yes"
    runscript = sif("inspect", "--runscript", str(sif.path)).stdout
    assert "set -- '/opt/app/run.sh' '--flag' \"$@\"" in runscript and "'two words'" in runscript


def test_apptainer_reads_our_sbom_and_json_objects(sif: Sif) -> None:
    listed = sif("sif", "list", str(sif.path))
    assert listed.returncode == 0, listed.stderr
    rows = [[c.strip() for c in line.split("|")] for line in listed.stdout.splitlines() if "|" in line][1:]
    types = [row[4] for row in rows]
    assert types.count("SBOM (spdx-json)") == 1 and "JSON.Generic" in types and "JSON.Labels" in types
    assert types[-1] == "FS (Squashfs/*System/amd64)" and "Def.FILE" in types
    sbom_id = rows[types.index("SBOM (spdx-json)")][0]
    info = sif("sif", "info", sbom_id, str(sif.path)).stdout
    assert "Data Type:    SBOM" in info and "Format:       spdx-json" in info and "appt.spdx.json" in info
    document = json.loads(sif("sif", "dump", sbom_id, str(sif.path)).stdout)
    assert document["spdxVersion"] == "SPDX-2.3"
    assert "busybox-static" in {p["name"] for p in document["packages"]}
    for row in rows:  # every JSON object is JSON to Apptainer's reader too
        if row[4].startswith("JSON."):
            json.loads(sif("sif", "dump", row[0], str(sif.path)).stdout)
    # ... and the SIF with those objects before its partition still runs.
    assert sif("exec", "SIF", "cat", "/var/lib/dpkg/status").stdout == DPKG_STATUS


def test_an_unprivileged_user_runs_it_too(sif: Sif) -> None:
    """The HPC case: no root, a user namespace (squashfuse, or else the SIF unpacked to a
    temporary sandbox)."""
    if os.geteuid() != 0:
        pytest.skip("the other tests already ran as an unprivileged user")
    assert sif.probe is not None
    shared = Path(tempfile.mkdtemp(prefix="apptainer-"))  # pytest's tmp_path is root's alone
    try:
        shared.chmod(0o755)
        for made in (sif.path, sif.probe):
            shutil.copy(made, shared / made.name)
            (shared / made.name).chmod(0o644)

        def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
            argv = ["runuser", "-u", "nobody", "--", str(sif.apptainer), *args]
            return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/")

        probe = as_nobody("exec", str(shared / sif.probe.name), "true")
        if probe.returncode != 0:
            pytest.skip(f"an unprivileged user cannot run Apptainer's own SIF here: {probe.stderr.strip()[-300:]}")
        ran = as_nobody("run", str(shared / "x.sif"), "as nobody")
        assert (ran.returncode, ran.stdout) == (0, "[--flag][as nobody] greeting=hello world\n"), ran.stderr
    finally:
        shutil.rmtree(shared)
