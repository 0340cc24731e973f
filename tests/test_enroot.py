"""``sqsh:FILE``, the Enroot/Pyxis output: a squashfs that ``unsquashfs`` reads, holding
the image's files and Enroot's ``/etc/rc``, ``/etc/environment``, ``/etc/fstab`` and
``/etc/rc.local`` (NVIDIA/enroot ``doc/image-format.md``), checked against the image's
config as the OCI layout of the same build holds it; the same image gives the same bytes.

Enroot itself is not packaged here: its files are checked by reading them back
(``unsquashfs -cat``), and ``/etc/rc`` by running it with ``sh`` as Enroot does.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from assembler.transports.hpc.enroot import rc_script
from tests.helpers import config_of, run_cli, small_project
from tests.plugins.demo import Demo

# Module fixtures that run outside programs (tests/conftest.py: tier): small builds a sqsh (tar2sqfs).
OUTSIDE_FIXTURES = frozenset({"small"})

MANIFEST = """\
name: enroot
bases: {b: 'rootfs:base.tar'}
image:
  base: b
  layers:
    - copy: {from: ./a.txt, to: /a.txt}
  config:
    env: {MODEL: "it's a model", PORT: "80"}
    entrypoint: [/bin/tool, --flag]
    cmd: [hello world, "quote'd"]
    workdir: /srv/work
    volumes: [/data, /cache]
    labels: {org.example.title: enroot test}
"""
ENROOT_FILES = ("etc/rc", "etc/rc.local", "etc/environment", "etc/fstab")


def unsquashfs_list(sqsh: Path) -> set[str]:
    out = subprocess.run(["unsquashfs", "-l", str(sqsh)], capture_output=True, text=True, check=True).stdout
    return {line.removeprefix("squashfs-root").lstrip("/") for line in out.splitlines() if "squashfs-root" in line}


def unsquashfs_cat(sqsh: Path, path: str) -> str:
    return subprocess.run(["unsquashfs", "-cat", str(sqsh), path], capture_output=True, text=True, check=True).stdout


def exec_words(rc: str, *, with_args: bool) -> list[str]:
    """The words of the ``exec`` that runs when arguments were given (or not)."""
    lines = rc.splitlines()
    branch = lines.index("if [ $# -gt 0 ]; then")
    line = lines[branch + 1] if with_args else lines[branch + 3]
    words = shlex.split(line)
    assert words[0] == "exec", rc
    return words[1:]


def check_enroot_image(sqsh: Path, config: dict[str, Any]) -> str:
    """The Enroot files in ``sqsh`` agree with the image ``config``; /etc/rc's text."""
    c = config["config"]
    names = unsquashfs_list(sqsh)
    assert set(ENROOT_FILES) <= names
    workdir = c.get("WorkingDir") or "/"
    assert workdir.strip("/") in names | {""}, "the working directory exists in the image"
    assert unsquashfs_cat(sqsh, "etc/environment").splitlines() == c.get("Env", [])
    fstab = [line.split() for line in unsquashfs_cat(sqsh, "etc/fstab").splitlines()]
    assert sorted(f[1] for f in fstab) == sorted(c.get("Volumes") or {})
    for f in fstab:
        assert f[0] == "${ENROOT_ROOTFS}" + f[1] and f[2] == "none" and "x-create=dir" in f[3].split(",")
    rc = unsquashfs_cat(sqsh, "etc/rc")
    for key, value in (c.get("Labels") or {}).items():
        assert f"# {key} {value}" in rc.splitlines()
    assert ["cd", workdir, "&&", "unset", "OLDPWD", "||", "exit", "1"] in [shlex.split(x) for x in rc.splitlines()]
    entrypoint, cmd = c.get("Entrypoint") or [], c.get("Cmd") or []
    assert exec_words(rc, with_args=True) == [*entrypoint, "$@"]
    assert exec_words(rc, with_args=False) == [*entrypoint, *cmd]
    assert "/etc/rc.local" in rc and "sourced by /etc/rc" in unsquashfs_cat(sqsh, "etc/rc.local")
    return rc


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "args", "expected"),
    [
        (["printf", "%s|"], ["a b", "c'd"], [], "a b|c'd|"),
        (["printf", "%s|"], ["a b", "c'd"], ["x y"], "x y|"),
        ([], ["printf", "%s|", "$HOME"], [], "$HOME|"),
        ([], ["printf", "%s|", "q"], ["printf", "<%s>", "z"], "<z>"),
        ([], [], [], "from sh\n"),  # neither: /bin/sh (reading stdin here), as Enroot does
    ],
)
def test_rc_runs_entrypoint_and_cmd_like_docker_run(
    tmp_path: Path, entrypoint: list[str], cmd: list[str], args: list[str], expected: str
) -> None:
    rc = tmp_path / "rc"
    rc.write_text(rc_script({"Entrypoint": entrypoint, "Cmd": cmd}))
    ran = subprocess.run(["sh", str(rc), *args], capture_output=True, text=True, cwd=tmp_path, input="echo from sh\n")
    assert (ran.returncode, ran.stdout) == (0, expected), ran.stderr


def test_rc_changes_to_the_working_directory_and_makes_it(tmp_path: Path) -> None:
    workdir = tmp_path / "it's here"
    rc = tmp_path / "rc"
    rc.write_text(rc_script({"WorkingDir": str(workdir), "Entrypoint": ["sh", "-c", "pwd"]}))
    ran = subprocess.run(["sh", str(rc)], capture_output=True, text=True, cwd="/")
    assert (ran.returncode, ran.stdout) == (0, f"{workdir}\n"), ran.stderr
    assert workdir.is_dir()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = small_project(tmp_path_factory.mktemp("enroot"), MANIFEST)
    ran = run_cli(["m.yaml", "--cache", "cache", "-o", "oci:out/img:latest", "-o", "sqsh:out/img.sqsh"], cwd=root)
    assert ran.code == 0, str(ran)
    return root


def test_sqsh_holds_the_image_and_enroots_files(small: Path) -> None:
    sqsh = small / "out" / "img.sqsh"
    config = config_of(small / "out" / "img", "latest")
    assert sqsh.read_bytes()[:4] == b"hsqs"
    assert {"a.txt", "bin/tool", "etc/os-release", "srv", "srv/work"} <= unsquashfs_list(sqsh)
    rc = check_enroot_image(sqsh, config)
    assert exec_words(rc, with_args=False) == ["/bin/tool", "--flag", "hello world", "quote'd"]
    env = unsquashfs_cat(sqsh, "etc/environment")
    assert "MODEL=it's a model\nPORT=80\n" in env  # as written, no shell quoting (Enroot reads it raw)
    assert oct(os.stat(sqsh).st_mode & 0o777) == oct(0o644)


def test_same_image_gives_the_same_bytes(small: Path, tmp_path: Path) -> None:
    again = run_cli(["m.yaml", "--cache", "cache", "-o", f"sqsh:{tmp_path}/warm.sqsh"], cwd=small)
    cold = run_cli(["m.yaml", "--cache", str(tmp_path / "cold"), "-o", f"sqsh:{tmp_path}/cold.sqsh"], cwd=small)
    assert again.code == 0 and cold.code == 0, f"{again}\n{cold}"
    first = (small / "out" / "img.sqsh").read_bytes()
    assert (tmp_path / "warm.sqsh").read_bytes() == first
    assert (tmp_path / "cold.sqsh").read_bytes() == first


def test_existing_files_and_leftovers(small: Path, tmp_path: Path) -> None:
    mine = tmp_path / "notes.sqsh"
    mine.write_text("not an image\n")
    refused = run_cli(["m.yaml", "--cache", "cache", "-o", f"sqsh:{mine}"], cwd=small)
    assert refused.code == 2 and "not a squashfs image" in refused.err, str(refused)
    assert mine.read_text() == "not an image\n"
    # A killed run's temp file (a pid that is not running, untouched for a while) is reclaimed.
    stale = tmp_path / f".notes.sqsh.p{2**22 + 7}-x.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    forced = run_cli(["m.yaml", "--cache", "cache", "-o", f"sqsh:{mine}", "--force"], cwd=small)
    assert forced.code == 0, str(forced)
    assert mine.read_bytes() == (small / "out" / "img.sqsh").read_bytes()
    assert not stale.exists()
    # The squashfs and, next to it, the image's SBOM and provenance: nothing else.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.sqsh",
        "notes.sqsh.provenance.intoto.json",
        "notes.sqsh.spdx.json",
    ]
    # Our own squashfs is replaced without --force.
    again = run_cli(["m.yaml", "--cache", "cache", "-o", f"sqsh:{mine}"], cwd=small)
    assert again.code == 0, str(again)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "sqsh:out/x.sqsh:tag"], "takes a file path only"),
        (["-o", "sqsh:"], "no path after 'sqsh:'"),
        (["-o", "sqsh:out"], "is a folder"),
        (["--base", "b=sqsh:out/img.sqsh"], "squashfs cannot be a base"),
    ],
)
def test_bad_sqsh_references_exit_2(small: Path, args: list[str], message: str) -> None:
    ran = run_cli(["m.yaml", "--cache", "cache", *args], cwd=small)
    assert ran.code == 2 and message in ran.err and "Traceback" not in ran.err, str(ran)


def test_demo_as_enroot_image(demo: Demo, tmp_path: Path) -> None:
    """Issue 11's must-show: the demo written as ``sqsh:``, checked against its config. (A
    second write gives the same bytes: test_assemble_sqsh_converts_any_image here, and the
    squashfs of a Debian root from one and from all cores in test_sif's
    test_two_conversions_are_byte_identical; writing the demo's again took 23 s of CPU.)"""
    first = tmp_path / "demo.sqsh"
    demo.build("-o", f"sqsh:{first}")
    config = config_of(demo.project / "out" / "demo", "latest")
    rc = check_enroot_image(first, config)
    assert exec_words(rc, with_args=True) == ["/usr/local/bin/demo-launcher", "$@"]
    assert {"app/bin/saxpy", "app/bin/tokenize", "usr/local/bin/demo-launcher"} <= unsquashfs_list(first)
    print(f"demo.sqsh: {first.stat().st_size} bytes")


def test_assemble_sqsh_converts_any_image(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "conv.sqsh"
    args = ["sqsh", f"oci:{small}/out/img:latest", str(out), "--cache", str(tmp_path / "cache"), "--json"]
    first = run_cli(args, cwd=small)
    assert first.code == 0, str(first)
    check_enroot_image(out, config_of(small / "out" / "img", "latest"))
    assert first.json["digest"] == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    again = run_cli(args, cwd=small)
    assert again.code == 0 and again.json["digest"] == first.json["digest"], str(again)
    for bad, message in (
        ([f"sqsh:{out}", str(tmp_path / "x.sqsh")], "read with `unsquashfs -l`"),
        ([f"oci:{tmp_path}/missing:latest", str(tmp_path / "y.sqsh")], "missing"),
    ):
        ran = run_cli(["sqsh", *bad, "--cache", str(tmp_path / "cache")], cwd=small)
        assert ran.code == 2 and message in ran.err and "Traceback" not in ran.err, str(ran)
    # The image's SBOM and provenance next to it, as `sif` keeps them and a build's sqsh: has them.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cache",
        "conv.sqsh",
        "conv.sqsh.provenance.intoto.json",
        "conv.sqsh.spdx.json",
    ]
    assert [b["path"] for b in first.json["beside"]] == [f"{out}.spdx.json", f"{out}.provenance.intoto.json"]


def test_assemble_sqsh_keeps_the_images_sbom_and_provenance(small: Path, tmp_path: Path) -> None:
    """What `referrers` reads for a sqsh file (the files next to it) are the layout's
    referrers, byte for byte; --no-sbom writes none and removes ours."""
    out = tmp_path / "conv.sqsh"
    ran = run_cli(["sqsh", f"oci:{small}/out/img:latest", str(out), "--cache", str(tmp_path / "cache")], cwd=small)
    assert ran.code == 0 and f"  + {out}.spdx.json\n" in ran.out, str(ran)
    of_layout = run_cli(["referrers", f"oci:{small}/out/img:latest", "--json"], cwd=small)
    of_sqsh = run_cli(["referrers", f"sqsh:{out}", "--json"], cwd=small)
    assert of_layout.code == 0 and of_sqsh.code == 0, f"{of_layout}\n{of_sqsh}"
    blobs = {r["artifact_type"]: r["files"][0]["digest"] for r in of_layout.json["referrers"]}
    assert len(blobs) == 2 and {r["artifact_type"]: r["files"][0]["digest"] for r in of_sqsh.json["referrers"]} == blobs
    assert of_sqsh.json["subject"] == of_layout.json["subject"]
    bare = run_cli(["sqsh", f"oci:{small}/out/img:latest", str(out), "--no-sbom", "--cache", str(tmp_path / "cache")])
    assert bare.code == 0, str(bare)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "conv.sqsh"]
