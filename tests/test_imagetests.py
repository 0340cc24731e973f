"""Tests of built images (``tests:``) with the real buildah: run as ``docker run`` starts the
image (its entrypoint and cmd, env, working directory, user; no network but loopback unless
asked), a failing one stops every output (none written, none pushed), ``assemble test`` on an
image already built, the test-result attestation signed and verified by the real cosign,
``assemble run``/``shell``, ``--keep-failed`` and a missing artifact's folder listed, and the
tests run on a Slurm node as a SIF under Apptainer (the one-node cluster)."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PYTHON, buildah_containers, layout_index, read_blob, run_cli, run_cli_here
from tests.plugins.registry import RunningRegistry
from tests.plugins.slurm import Cluster
from tests.test_run_owned import _alive as _running
from tests.test_sign import _cosign, _key_pair, _statements

TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
PROBE = """#!/bin/sh
echo "args:$*"
echo "pwd:$(pwd) user:$(id -u) greeting:$GREETING"
exit "${PROBE_EXIT:-0}"
"""
MANIFEST = """\
name: probe
epoch: 1700000000
bases: {{b: "oci:{runtime}:latest"}}
image:
  base: b
  layers:
    - copy: {{from: ./probe.sh, to: /usr/local/bin/probe, mode: "0755"}}
    - copy: {{from: ./probe.sh, to: /srv/readme}}
  config:
    env: {{GREETING: hello}}
    entrypoint: [/usr/local/bin/probe]
    cmd: [default, args]
    workdir: /srv
    user: "65534"
tests:
{tests}
outputs: [oci:out:one]
"""
# The host's server on 127.0.0.1: a test without network has a loopback of its own.
REACH = "if (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null; then echo reached; else echo unreachable; fi"
TESTS = """\
  - name: as-docker-run
    output: ['^args:default args$', '^pwd:/srv user:65534 greeting:hello$']
  - name: args-env-user
    args: [given]
    env: {{GREETING: over}}
    user: "0"
    output: ['^args:given$', '^pwd:/srv user:0 greeting:over$']
  - name: no-network
    command: [bash, -c, "{reach}"]
    output: ['^unreachable$']
  - name: network
    network: true
    command: [bash, -c, "{reach}"]
    output: ['^reached$']
  - name: gpu
    command: [nvidia-smi]
    gpu: true
"""


def project(root: Path, runtime: Path, tests: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "probe.sh").write_text(PROBE)
    (root / "m.yaml").write_text(MANIFEST.format(runtime=runtime, tests=tests))
    return root


def serving_port(http_folder: tuple[str, Path]) -> int:
    return int(http_folder[0].rstrip("/").rsplit(":", 1)[1])


def referrer_statements(layout: Path) -> list[dict[str, Any]]:
    """The in-toto statements among the layout's referrers."""
    out = []
    for entry in layout_index(layout)["manifests"]:
        if entry.get("artifactType") == "application/vnd.in-toto+json":
            manifest = json.loads(read_blob(layout, entry["digest"]))
            out.append(json.loads(read_blob(layout, manifest["layers"][0]["digest"])))
    return out


def result_of(statements: list[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [s for s in statements if s["predicateType"] == TEST_RESULT]
    return found


def statuses(statement: dict[str, Any]) -> dict[str, str]:
    return {
        c["name"].removeprefix("test:"): c["annotations"]["status"]
        for c in statement["predicate"]["configuration"]
        if c["name"].startswith("test:")
    }


def test_tests_run_as_docker_run_starts_the_image_and_their_result_goes_with_it(
    tmp_path: Path, demo_bases: dict[str, Path], http_folder: tuple[str, Path]
) -> None:
    reach = REACH.format(port=serving_port(http_folder))
    root = project(tmp_path / "p", demo_bases["runtime"], TESTS.format(reach=reach))
    planned = run_cli_here(["plan", "m.yaml", "--cache", "cache", "--json"], cwd=root)
    assert planned.code == 0, str(planned)
    listed = {t["name"]: t for t in planned.json["tests"]}
    assert list(listed) == ["as-docker-run", "args-env-user", "no-network", "network", "gpu"]
    assert listed["args-env-user"]["argv"] == ["/usr/local/bin/probe", "given"] and listed["gpu"]["gpu"]

    built = run_cli(
        ["m.yaml", "--cache", "cache", "--json", "-o", "oci:out:one", "-o", "docker-archive:img.tar"], cwd=root
    )
    assert built.code == 0, str(built)
    statement = result_of(referrer_statements(root / "out"))
    assert statement["subject"][0]["digest"] == {"sha256": built.json["digest"].removeprefix("sha256:")}
    predicate = statement["predicate"]
    assert predicate["result"] == "PASSED" and predicate["failedTests"] == []
    # The GPU test did not run (no GPU here): neither passed nor failed, and why.
    assert predicate["passedTests"] == ["as-docker-run", "args-env-user", "no-network", "network"]
    (gpu,) = [c for c in predicate["configuration"] if c["name"] == "test:gpu"]
    assert gpu["annotations"]["status"] == "not-run" and "no NVIDIA GPU" in gpu["annotations"]["reason"]
    # Next to the docker-archive, as its SBOM and provenance are: the same statement.
    assert json.loads((root / "img.tar.tests.intoto.json").read_text()) == statement


def test_a_failing_test_stops_every_output(
    tmp_path: Path, demo_bases: dict[str, Path], registry: RunningRegistry
) -> None:
    tests = """\
  - name: fine
    args: [ok]
    output: ['^args:ok$']
  - name: wrong-exit
    env: {PROBE_EXIT: "7"}
  - name: forbidden
    command: [sh, -c, "echo Traceback; echo more"]
    not_output: [Traceback]
"""
    root = project(tmp_path / "p", demo_bases["runtime"], tests)
    outputs = ["-o", "oci:out:one", "-o", "docker-archive:img.tar", "-o", f"docker://{registry.host}/fail/app:1"]
    ran = run_cli(["m.yaml", "--cache", "cache", "--tls-verify=false", *outputs], cwd=root)
    assert ran.code == 1, str(ran)
    assert "test wrong-exit failed (local): exit 7, expected 0" in ran.err
    assert "$ /usr/local/bin/probe default args" in ran.err and "args:default args" in ran.err  # its command, its tail
    assert "test forbidden failed (local): the output matches 'Traceback' (not_output)" in ran.err
    assert "no output was written" in ran.err and "fine failed" not in ran.err
    # Nothing written, nothing pushed.
    assert not (root / "out").exists() and not (root / "img.tar").exists()
    assert not list(root.glob("img.tar*"))
    with urllib.request.urlopen(f"{registry.url}/v2/_catalog") as answer:
        assert json.load(answer)["repositories"] == []
    # Without the failing tests, the same build writes and pushes.
    (root / "m.yaml").write_text((root / "m.yaml").read_text().split("  - name: wrong-exit")[0] + "outputs: []\n")
    again = run_cli(["m.yaml", "--cache", "cache", "--tls-verify=false", *outputs], cwd=root)
    assert again.code == 0, str(again)
    with urllib.request.urlopen(f"{registry.url}/v2/_catalog") as answer:
        assert json.load(answer)["repositories"] == ["fail/app"]


def test_assemble_test_runs_a_manifest_s_tests_on_a_built_image(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    root = project(tmp_path / "p", demo_bases["runtime"], "  - name: fine\n    args: [ok]\n    output: ['^args:ok$']\n")
    built = run_cli(["m.yaml", "--cache", "cache", "--no-tests", "--json"], cwd=root)
    assert built.code == 0, str(built)
    assert [s for s in referrer_statements(root / "out") if s["predicateType"] == TEST_RESULT] == []  # --no-tests
    bare = run_cli(["test", "oci:out:one", "--cache", "cache"], cwd=root)  # no manifest, no tests attached
    assert bare.code == 1 and "no test results of assemble are attached to the image" in bare.err, str(bare)

    ran = run_cli(["test", "oci:out:one", "m.yaml", "--cache", "cache", "--json", "--save", "r.json"], cwd=root)
    assert ran.code == 0, str(ran)
    assert ran.json["digest"] == built.json["digest"]
    assert [(t["name"], t["status"], t["on"]) for t in ran.json["tests"]] == [("fine", "passed", "local")]
    assert json.loads((root / "r.json").read_text())["predicate"]["result"] == "PASSED"

    # Another manifest's tests (here: stricter ones) on the same image: one fails, exit 1.
    (root / "strict.yaml").write_text(
        (root / "m.yaml")
        .read_text()
        .replace(
            "output: ['^args:ok$']",
            "output: ['^args:ok$']\n    user: '0'\n  - name: root-only\n    command: [sh, -c, 'test $(id -u) = 0']",
        )
    )
    failed = run_cli(["test", "oci:out:one", "strict.yaml", "--cache", "cache", "--save", "r.json"], cwd=root)
    assert failed.code == 1, str(failed)
    assert "test root-only: failed (local): exit 1, expected 0" in failed.out
    assert "test root-only failed (local): exit 1, expected 0\n$ sh -c 'test $(id -u) = 0'" in failed.err
    saved = json.loads((root / "r.json").read_text())["predicate"]
    assert (saved["result"], saved["passedTests"], saved["failedTests"]) == ("FAILED", ["fine"], ["root-only"])

    # An image built with its tests carries them: `assemble test REF` runs them again, no manifest needed.
    assert run_cli(["m.yaml", "--cache", "cache"], cwd=root).code == 0
    again = run_cli(["test", "oci:out:one", "--cache", "cache", "--json"], cwd=root)
    assert again.code == 0, str(again)
    assert [(t["name"], t["status"], t["argv"]) for t in again.json["tests"]] == [
        ("fine", "passed", ["/usr/local/bin/probe", "ok"])
    ]


def test_assemble_test_with_the_manifest_runs_the_tests_of_the_images_target(
    tmp_path: Path, demo_bases: dict[str, Path]
) -> None:
    """Issue 50, item 6: ``assemble test IMAGE MANIFEST`` ran the default target's tests on an
    image built as another target; the image says its target (io.assemble.target)."""
    root = project(tmp_path / "p", demo_bases["runtime"], "  - name: fine\n    args: [ok]\n    output: ['^args:ok$']\n")
    text = (root / "m.yaml").read_text().replace("outputs: [oci:out:one]\n", "")
    text += (
        "outputs: [oci:out:one]\n"
        "targets:\n"
        "  main: {}\n"
        "  strict:\n"
        "    add_tests:\n"
        "      - name: as-root\n"
        "        command: [sh, -c, 'test $(id -u) = 0 && echo root']\n"
        "        output: ['^root$']\n"
        "default_target: main\n"
    )
    (root / "m.yaml").write_text(text)
    built = run_cli(["m.yaml", "--target", "strict", "--cache", "cache", "--no-tests", "--json"], cwd=root)
    assert built.code == 0, str(built)
    ran = run_cli(["test", "oci:out:one", "m.yaml", "--cache", "cache", "--json"], cwd=root)
    assert ran.code == 1, str(ran)  # the strict target's own test runs (and fails: the image's user is 65534)
    assert [(t["name"], t["status"]) for t in ran.json["tests"]] == [("fine", "passed"), ("as-root", "failed")]
    # --target still says which
    ran = run_cli(["test", "oci:out:one", "m.yaml", "--target", "main", "--cache", "cache", "--json"], cwd=root)
    assert ran.code == 0 and [t["name"] for t in ran.json["tests"]] == ["fine"], str(ran)


def test_the_test_result_attestation_is_signed_and_the_real_cosign_verifies_it(
    tmp_path: Path, demo_bases: dict[str, Path], registry: RunningRegistry
) -> None:
    root = project(tmp_path / "p", demo_bases["runtime"], "  - name: fine\n    args: [ok]\n    output: ['^args:ok$']\n")
    key, pub = _key_pair(root / "keys")
    ref = f"{registry.host}/signed/probe:1"
    built = run_cli(
        [
            "m.yaml",
            "--cache",
            "cache",
            "--json",
            "--tls-verify=false",
            "-o",
            f"docker://{ref}",
            "-o",
            "oci:out:one",
            "--sign",
            str(key),
        ],
        cwd=root,
        env={"COSIGN_PASSWORD": "pw"},
    )
    assert built.code == 0, str(built)
    digest = built.json["digest"]
    args = ["verify-attestation", "--key", str(pub), "--insecure-ignore-tlog", "--type", TEST_RESULT]
    for found in (
        _statements(_cosign(root, *args, "--allow-insecure-registry", ref)),
        _statements(_cosign(root, *args, "--local-image", "out")),
    ):
        (statement,) = [s for s in found if s["predicateType"] == TEST_RESULT]
        assert statement["subject"][0]["digest"] == {"sha256": digest.removeprefix("sha256:")}
        assert statement["predicate"]["passedTests"] == ["fine"]
    verified = run_cli(
        ["verify", f"docker://{ref}", "--key", str(pub), "--type", "testresult", "--json", "--tls-verify=false"],
        cwd=root,
    )
    assert verified.code == 0 and verified.json["attestations"] == {"testresult": 1}, str(verified)


def _assemble(args: list[str], root: Path, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """``assemble ARGS`` with ``stdin`` (a shell's commands), as a user would pipe them."""
    env = {k: v for k, v in os.environ.items() if k != "ASSEMBLE_TRACEBACK"}
    argv = [PYTHON, "-m", "assembler", *args]
    return subprocess.run(argv, cwd=root, input=stdin, capture_output=True, text=True, timeout=600, env=env)


def test_assemble_run_and_shell_start_the_image_as_docker_run(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    root = project(tmp_path / "p", demo_bases["runtime"], "  - name: fine\n")
    assert run_cli(["m.yaml", "--cache", "cache", "--no-tests"], cwd=root).code == 0
    plain = _assemble(["run", "oci:out:one", "--cache", "cache"], root)
    assert (plain.returncode, plain.stdout) == (0, "args:default args\npwd:/srv user:65534 greeting:hello\n"), plain
    given = _assemble(["run", "oci:out:one", "--cache", "cache", "-e", "GREETING=hi", "--", "a", "b c"], root)
    assert given.stdout == "args:a b c\npwd:/srv user:65534 greeting:hi\n", given.stderr
    # The command's exit status is assemble's; --entrypoint replaces the entrypoint.
    status = _assemble(
        ["run", "oci:out:one", "--cache", "cache", "--entrypoint", "/bin/sh", "--", "-c", "exit 3"], root
    )
    assert status.returncode == 3, status.stderr
    shell = _assemble(["shell", "oci:out:one", "--cache", "cache", "-u", "0"], root, stdin="id -u; pwd; exit 4\n")
    assert (shell.returncode, shell.stdout) == (4, "0\n/srv\n"), shell.stderr
    assert buildah_containers(root / "cache") == []  # each run's container is gone


KEPT = """\
name: kept
bases: {{devel: "oci:{runtime}:latest"}}
sources: {{src: {{path: ./src}}}}
compile:
  - name: first
    base: devel
    run: ["mkdir -p /out && echo from-first > /out/one.txt"]
    artifacts: {{one: {{path: /out/one.txt, to: /opt/one.txt}}}}
  - name: second
    base: devel
    sources: [src]
    inputs: [first.one]
    env: {{MARK: kept-env}}
    workdir: /src/src
    run: ["mkdir -p /build/out/lib && cat /opt/one.txt > /build/out/made.txt", "{last}"]
    artifacts: {{two: {{path: /build/out/{artifact}, to: /opt/two.txt}}}}
image: {{base: devel, layers: [{{artifact: second.two}}]}}
"""


def _kept_project(root: Path, runtime: Path, last: str, artifact: str = "made.txt") -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "file.txt").write_text("the source\n")
    (root / "m.yaml").write_text(KEPT.format(runtime=runtime, last=last, artifact=artifact))
    return root


def test_keep_failed_keeps_the_failed_step_s_container_with_its_mounts(
    tmp_path: Path, demo_bases: dict[str, Path]
) -> None:
    root = _kept_project(tmp_path / "p", demo_bases["runtime"], "false")
    failed = run_cli(["m.yaml", "--cache", "cache", "--keep-failed"], cwd=root)
    assert failed.code == 1, str(failed)
    assert "step second: command failed (exit 1): false" in failed.err
    assert "is kept (--keep-failed); enter it with:" in failed.err and "assemble shell --step second" in failed.err
    assert " run --isolation chroot --user 0:0 " in failed.err and "--terminal" in failed.err  # the exact buildah run
    assert len(buildah_containers(root / "cache")) == 1
    # Entered with its source, its input artifact, what it made, its environment and folder;
    # what the shell leaves running in the background ends with it (its own PID namespace).
    mark = str(70000 + secrets.randbelow(20000))
    commands = f"cat /src/src/file.txt /opt/one.txt /build/out/made.txt; echo $MARK; pwd; sleep {mark} &\n"
    inside = _assemble(["shell", "--step", "second", "--cache", "cache"], root, stdin=commands)
    assert (inside.returncode, inside.stdout) == (0, "the source\nfrom-first\nfrom-first\nkept-env\n/src/src\n"), inside
    time.sleep(0.3)
    assert not _running(mark), "the shell's background sleep outlived it"

    # The next run of the step removes what the failure kept; a success keeps nothing.
    _kept_project(root, demo_bases["runtime"], "true")
    fixed = run_cli(["m.yaml", "--cache", "cache", "--keep-failed"], cwd=root)
    assert fixed.code == 0, str(fixed)
    assert buildah_containers(root / "cache") == []
    assert not list((root / "cache" / "kept-failed").glob("*.json"))
    gone = _assemble(["shell", "--step", "second", "--cache", "cache"], root)
    assert gone.returncode == 1 and "no container of step second is kept" in gone.stderr


def test_a_missing_artifact_names_what_its_folder_holds_and_keep_failed_keeps_it_too(
    tmp_path: Path, demo_bases: dict[str, Path]
) -> None:
    root = _kept_project(tmp_path / "p", demo_bases["runtime"], "true", artifact="app")
    failed = run_cli(["m.yaml", "--cache", "cache"], cwd=root)
    assert failed.code == 1, str(failed)
    assert "/build/out/app: does not exist in the container (/build/out holds: lib/, made.txt)" in failed.err
    assert buildah_containers(root / "cache") == [] and "--keep-failed" not in failed.err
    (root / "m.yaml").write_text((root / "m.yaml").read_text().replace("/build/out/app", "/build/nothere/*.so"))
    globbed = run_cli(["m.yaml", "--cache", "cache", "--keep-failed"], cwd=root)
    assert "/build/nothere/*.so: no file in the container matches (/build holds: out/)" in globbed.err, str(globbed)
    inside = _assemble(["shell", "--step", "second", "--cache", "cache"], root, stdin="ls /build/out\n")
    assert inside.stdout == "lib\nmade.txt\n", inside.stderr
    (root / "m.yaml").write_text((root / "m.yaml").read_text().replace("/build/nothere/*.so", "/build/out/made.txt"))
    assert run_cli(["m.yaml", "--cache", "cache"], cwd=root).code == 0
    assert buildah_containers(root / "cache") == []


@pytest.mark.slow
def test_tests_run_on_a_slurm_node_as_a_sif_under_apptainer(
    tmp_path: Path, demo_bases: dict[str, Path], slurm_cluster: Cluster, http_folder: tuple[str, Path]
) -> None:
    from tests.test_apptainer import apptainer_binary

    apptainer = apptainer_binary()
    reach = REACH.format(port=serving_port(http_folder))
    tests = f"""\
  - name: on-node
    args: [from, slurm]
    output: ['^args:from slurm$', '^pwd:/srv user:\\d+ greeting:hello$']
  - name: no-network
    command: [bash, -c, "{reach}"]
    output: ['^unreachable$']
  - name: here
    on: local
    output: ['^args:default args$']
"""
    root = project(tmp_path / "p", demo_bases["runtime"], tests)
    # The SIF the nodes read is squashed as the manifest's sif: says (gzip 1: 2 s of CPU where
    # level 9 takes 20, for each of the three builds below).
    (root / "m.yaml").write_text((root / "m.yaml").read_text() + "sif: {level: 1}\n")
    env = {**slurm_cluster.env, "PATH": f"{apptainer.parent}:{os.environ['PATH']}"}
    built = run_cli(["m.yaml", "--cache", "cache", "--test-on", "slurm", "--json"], cwd=root, env=env)
    assert built.code == 0, str(built)
    statement = result_of(referrer_statements(root / "out"))
    where = {
        c["name"]: c["annotations"]["on"]
        for c in statement["predicate"]["configuration"]
        if "on" in c.get("annotations", {})
    }
    assert where == {"test:on-node": "slurm", "test:no-network": "slurm", "test:here": "local"}
    assert statuses(statement) == {"on-node": "passed", "no-network": "passed", "here": "passed"}
    jobs = slurm_cluster.jobs_named({"test-on-node", "test-no-network"})
    assert jobs["test-on-node"]["State"] == "COMPLETED" and jobs["test-no-network"]["State"] == "COMPLETED", jobs
    assert not list((root / "cache" / "slurm").glob("*.sif"))  # the SIF the nodes read is removed afterwards

    # --slurm-sif sbcast: each job copies the SIF to the node's /tmp first, runs on that copy
    # (APPTAINER_CONTAINER names it), removes it, and says how long the copy took.
    where = "  - name: which-sif\n    command: [sh, -c, 'echo sif:$APPTAINER_CONTAINER']\n    output: ['^sif:/tmp/']\n"
    (root / "m.yaml").write_text((root / "m.yaml").read_text().replace("  - name: here\n", where + "  - name: here\n"))
    sbcast = ["m.yaml", "--cache", "cache", "--test-on", "slurm", "--slurm-sif", "sbcast", "-o", "oci:out3:one", "-v"]
    staged = run_cli(sbcast, cwd=root, env=env)
    assert staged.code == 0, str(staged)
    assert re.search(r"tests on Slurm: the image as \S+\.sif \(squashfs gzip level 1, 128K blocks\)", staged.err)
    for name in ("on-node", "no-network", "which-sif"):
        assert re.search(rf"\[test {name}\] assemble-slurm-sif: sbcast to 1 node\(s\) in \d+ ms", staged.err), staged
    assert not list(Path("/tmp").glob(f"test-*-p*-{socket.gethostname()}.sif"))
    (root / "m.yaml").write_text((root / "m.yaml").read_text().replace(where, ""))

    # A test failing on the node fails the build: nothing written.
    (root / "m.yaml").write_text((root / "m.yaml").read_text().replace("'^unreachable$'", "'^reached$'"))
    failed = run_cli(["m.yaml", "--cache", "cache", "--test-on", "slurm", "-o", "oci:out2:one"], cwd=root, env=env)
    assert failed.code == 1 and "test no-network failed (slurm): the output does not match '^reached$'" in failed.err
    assert not (root / "out2").exists()
