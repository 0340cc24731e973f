"""``assemble doctor``: each program assemble drives, found on PATH or not, its version, and
what to install (assembler/cli/doctor.py). The real programs of this machine; a PATH with
none of them is an empty folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import run_cli_here


def test_doctor_names_each_program_its_version_and_what_to_install(tmp_path: Path) -> None:
    ran = run_cli_here(["doctor", "--json"])
    assert ran.code == (0 if shutil.which("buildah") else 1), ran
    found = {t["command"]: t for t in json.loads(ran.out)["tools"]}
    for command, tool in found.items():
        built = "built by scripts/setup --test" in tool["note"]  # Apptainer, off PATH in the test cache
        assert (tool["path"] is not None) == (shutil.which(command) is not None or built), tool
    if shutil.which("umoci"):  # Debian 12's umoci 0.4.7 cannot read assemble's zstd layers
        version = subprocess.run(["umoci", "--version"], capture_output=True, text=True).stdout
        assert found["umoci"]["version"] in version
        old = version.split()[-1].startswith("0.4")
        assert ("cannot read zstd" in found["umoci"]["note"]) == old, found["umoci"]

    # Nothing on PATH: every program missing, one apt-get line for them, exit 1 (no buildah).
    empty = tmp_path / "bin"
    empty.mkdir()
    ran = run_cli_here(["doctor"], env={"PATH": str(empty), "ASSEMBLE_TEST_CACHE": str(tmp_path / "none")})
    assert ran.code == 1, ran
    assert "missing  buildah          apt-get install buildah" in ran.out, ran
    line = next(x for x in ran.out.splitlines() if x.startswith("to install what is missing:"))
    assert "--no-install-recommends buildah mmdebstrap uidmap git skopeo docker-registry squashfs-tools-ng" in line
    assert "apptainer" not in line and "scripts/build-apptainer" in ran.out, ran


NO_SUBIDS = "asmnosub"  # a user made without subordinate ids, as on many HPC login nodes


def _as_user_without_subids(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    from tests.helpers import ROOT

    if subprocess.run(["id", NO_SUBIDS], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--no-create-home", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", NO_SUBIDS],
            check=True,
            capture_output=True,
        )
    env = {"PATH": os.environ["PATH"], "HOME": str(cwd), "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}
    return subprocess.run(
        ["setpriv", f"--reuid={NO_SUBIDS}", f"--regid={NO_SUBIDS}", "--init-groups", "--", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.integration  # useradd, setpriv (and mmdebstrap, failing at once)
def test_a_user_without_subordinate_ids_is_told_so_and_what_to_ask_for(tmp_path: Path) -> None:
    """An HPC login node's user: doctor said all was well, then a bootstrapped base failed
    with mmdebstrap's "unable to pick chroot mode automatically"."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="nosub-", dir="/tmp"))  # pytest's folders are root's alone
    work.chmod(0o777)
    try:
        _doctor_and_bootstrap(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _doctor_and_bootstrap(tmp_path: Path) -> None:
    import sys

    ran = _as_user_without_subids([sys.executable, "-m", "assembler", "doctor"], tmp_path)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    said = ran.stdout
    assert f"/etc/subuid gives {NO_SUBIDS} 0 subordinate uids, where rootless builds map 65536" in said, said
    assert f"usermod --add-subuids 100000-165535 {NO_SUBIDS}" in said and "/etc/subgid gives" in said, said
    bootstrap = "{b: {bootstrap: {suite: bookworm, variant: minbase}}}"
    (tmp_path / "m.yaml").write_text(f"name: b\nbases: {bootstrap}\nimage: {{base: b}}\n")
    (tmp_path / "m.yaml").chmod(0o644)
    ran = _as_user_without_subids([sys.executable, "-m", "assembler", "m.yaml", "--cache", "c", "-q"], tmp_path)
    assert ran.returncode != 0, ran.stdout + ran.stderr
    assert "hint: /etc/subuid gives asmnosub 0 subordinate uids" in ran.stderr, ran.stderr


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /home rw,relatime shared:5 - nfs4 srv:/home rw,vers=4.2
31 30 0:41 / /home/alice/local\\040disk rw shared:6 - xfs /dev/sdb1 rw
40 22 0:50 / /lustre/project rw shared:7 - lustre 10.0.0.1@o2ib:/fs rw
"""


def test_the_filesystem_under_a_folder_is_the_longest_mount_above_it() -> None:
    from assembler.hostdisk import mount_in

    assert mount_in("/", MOUNTINFO) == ("/", "ext4")
    assert mount_in("/home/alice/.cache/assembler", MOUNTINFO) == ("/home", "nfs4")
    assert mount_in("/home/alice/local disk/cache", MOUNTINFO) == ("/home/alice/local disk", "xfs")
    assert mount_in("/lustre/project/x", MOUNTINFO) == ("/lustre/project", "lustre")
    assert mount_in("/lustre/projects", MOUNTINFO) == ("/", "ext4")  # a prefix, not a folder above


def test_buildahs_storage_on_a_network_filesystem_is_named_by_doctor_and_refused_by_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 50, item 3: an HPC home (NFS) or project folder (Lustre) holds the default cache;
    buildah's overlay storage cannot be there. No NFS mount can be made here: the mount
    table is what is stood in for."""
    from assembler import hostdisk

    storage = tmp_path / "cache" / "buildah"
    real = hostdisk.mount_of

    def on_nfs(path: Path) -> tuple[str, str]:
        inside = str(path.absolute()).startswith(str(tmp_path))
        return (str(tmp_path), "nfs4") if inside else real(path)

    monkeypatch.setattr(hostdisk, "mount_of", on_nfs)
    own = {"ASSEMBLE_STORAGE": ""}  # the tests' shared storage aside: the cache's buildah/, as by default
    ran = run_cli_here(["doctor", "--cache", str(tmp_path / "cache"), "--json"], env=own)
    assert ran.code == 1, ran
    (problem,) = json.loads(ran.out)["disk"]["problems"]
    assert f"buildah's storage {storage} is on nfs4" in problem and "--storage DIR" in problem, problem
    assert not (tmp_path / "cache").exists()  # doctor looks, it makes nothing
    # a build stops before its first step's container, saying the same
    (tmp_path / "m.yaml").write_text("name: m\nbases: {b: scratch}\nimage: {base: b, layers: [{run: ['true']}]}\n")
    out = ["-o", f"oci:{tmp_path / 'out'}:x"]
    ran = run_cli_here(["m.yaml", "--cache", str(tmp_path / "cache"), *out], cwd=tmp_path, env=own)
    assert ran.code == 2 and f"buildah's storage {storage} is on nfs4" in ran.err, ran
    assert "assemble doctor" in ran.err and not (tmp_path / "out").exists()
    # on local disk (--storage): doctor is content
    ran = run_cli_here(["doctor", "--cache", str(tmp_path / "cache"), "--storage", "/var/tmp/st", "--json"])
    assert json.loads(ran.out)["disk"]["problems"] == [], ran


# `lfs quota -q -u UID MOUNT` (Lustre's manual, "Quota Administration") and `quota -w -v -u`
# (the quota package) as they print: no kernel here has quotas (CONFIG_QUOTA is off: an
# ext4 mounted with usrquota is refused), so the tools' output is what is stood in for.
LFS_QUOTA = "     /lustre/project 12582912* 52428800 62914560       -   10233  100000  110000       -\n"
QUOTA_W = """\
Disk quotas for user alice (uid 1000):
     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace
 nfs.example:/home 2048000       0 4194304            1234       0       0
"""


def test_a_quota_is_read_from_lfs_and_quota_as_they_print_it() -> None:
    from assembler.hostdisk import parse_quota

    assert parse_quota(LFS_QUOTA, "/lustre/project") == (12582912 * 1024, 52428800 * 1024)  # over: a "*"
    assert parse_quota(QUOTA_W, "/home", device="nfs.example:/home") == (2048000 * 1024, 4194304 * 1024)  # hard only
    assert parse_quota(QUOTA_W, "/scratch") is None
    assert parse_quota("     /lustre/project 12  0  0  -  1  0  0  -\n", "/lustre/project") is None  # no limit set


def test_on_lustre_the_cache_budget_is_half_the_users_quota_and_doctor_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 50, item 3: statvfs on Lustre reports the whole filesystem (10% of a petabyte
    is 100 TB: no budget); the user's quota is what they may fill."""
    from assembler import hostdisk

    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "lfs").write_text(f"#!/bin/sh\n[ \"$1 $2 $3\" = 'quota -q -u' ] || exit 3\ncat <<'EOF'\n{LFS_QUOTA}EOF\n")
    (tools / "lfs").chmod(0o755)
    real = hostdisk.mount_of

    def on_lustre(path: Path) -> tuple[str, str]:
        inside = str(path.absolute()).startswith(str(tmp_path))
        return ("/lustre/project", "lustre") if inside else real(path)

    monkeypatch.setattr(hostdisk, "mount_of", on_lustre)
    env = {"PATH": f"{tools}:/usr/bin:/bin", "ASSEMBLE_STORAGE": "/var/tmp/st"}
    ran = run_cli_here(["doctor", "--cache", str(tmp_path / "cache"), "--json"], env=env)
    disk = json.loads(ran.out)["disk"]
    assert disk["quota"] == {
        "mount": "/lustre/project",
        "used": 12582912 * 1024,
        "limit": 52428800 * 1024,
        "tool": "lfs quota",
    }, disk
    assert disk["budget"] == 25 << 30  # half of 50 GiB, not 10% of the filesystem
    ran = run_cli_here(["doctor", "--cache", str(tmp_path / "cache")], env=env)
    assert "your quota on /lustre/project: 12.0 GiB used of 50.0 GiB (lfs quota), 38.0 GiB left" in ran.out, ran
    assert "the cache's budget: 25.0 GiB (half your quota)" in ran.out, ran
    # a local disk asks no quota tool, and keeps the share of the disk
    monkeypatch.setattr(hostdisk, "mount_of", real)
    ran = run_cli_here(["doctor", "--cache", str(tmp_path / "cache"), "--json"], env=env)
    assert json.loads(ran.out)["disk"]["quota"] is None


def test_doctor_finds_the_apptainer_setup_built_and_says_where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``scripts/setup --test`` builds Apptainer into the test cache, off PATH: doctor said
    "missing" (issue 67). It finds it there, with its version, and says where and how to run it."""
    from assembler.cli.doctor import check

    built = tmp_path / "test-cache" / "apptainer-9.9.9" / "prefix" / "bin" / "apptainer"
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\necho 'apptainer version 9.9.9'\n")
    built.chmod(0o755)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    found = {f.command: f for f in check({"ASSEMBLE_TEST_CACHE": str(tmp_path / "test-cache")})}
    apptainer = found["apptainer"]
    assert (apptainer.path, apptainer.version) == (str(built), "9.9.9"), apptainer
    assert f"PATH={built.parent}:$PATH" in apptainer.note and "scripts/setup --test" in apptainer.note
    assert found["buildah"].path is None  # only what setup builds is looked for there
    without = {f.command: f for f in check({"ASSEMBLE_TEST_CACHE": str(tmp_path / "none")})}
    assert without["apptainer"].path is None


# buildah 1.28's error for an image whose files a user namespace without subordinate ids
# cannot own (as containers/storage words it), and newuidmap's when no range is there.
BUILDAH_NO_SUBIDS = (
    "Error: creating build container: potentially insufficient UIDs or GIDs available in user namespace (requested "
    '0:42 for /etc/shadow): Check /etc/subuid and /etc/subgid if configured locally and run "podman-system-migrate": '
    "lchown /etc/shadow: invalid argument"
)
NEWUIDMAP = "newuidmap: write to uid_map failed: Operation not permitted"


def test_a_step_the_host_keeps_from_running_is_given_doctors_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's failure that comes from the host (no subordinate ids, no user namespaces)
    said only buildah's words (issue 67): it is given what doctor says to ask for, and only
    that failure (root, or another cause, keeps its own hint)."""
    import os

    import assembler.hostuser as hostuser
    from assembler.compile.buildah import Buildah
    from assembler.compile.container import _failed
    from assembler.errors import ToolError

    fix = "/etc/subuid gives alice 0 subordinate uids, where rootless builds map 65536: ask the admin for ..."
    monkeypatch.setattr(hostuser, "problems", lambda etc=None: [fix])

    class Failing:
        def run(self, argv: list[str], **_: object) -> None:
            raise ToolError("buildah failed (exit 125)", argv=argv, returncode=125, stderr_tail=BUILDAH_NO_SUBIDS)

    buildah = Buildah(Failing(), storage=tmp_path)  # type: ignore[arg-type]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(ToolError) as info:
        buildah.from_image("sha256:x", name_hint="step")
    assert info.value.hint is None  # root: not the host's doing
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    with pytest.raises(ToolError) as info:
        buildah.from_image("sha256:x", name_hint="step")
    assert info.value.hint == fix
    step = _failed("build", "make", 1, False, NEWUIDMAP, tmp_path / "log", ["buildah"])
    assert step.hint == fix
    assert _failed("build", "make", 2, True, "make: *** [all] Error 1", tmp_path / "log", []).hint != fix
    assert hostuser.host_cause("E: Unable to locate package x") is None
