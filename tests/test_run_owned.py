"""A run owns its processes: ``assemble run`` (and ``shell``, and a test) runs the image in a
PID namespace of its own, so that when the run ends, by exit, signal or timeout, nothing the
image started is left (a server's background child, a two-process entrypoint): as docker and
podman end a container's whole PID namespace. ``buildah run --isolation chroot`` alone makes
none, and a stopped ``assemble run`` left the image's server answering on its port."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from assembler.compile.buildah import Buildah, RunSpec
from assembler.compile.imagerun import ImageCommand, ImageRunner
from assembler.proc import Runner
from tests.helpers import PYTHON, buildah_containers, run_cli, sh
from tests.plugins.user import User

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="unshare --pid needs root here")

# A server that forks a child: the child beats into /beat until it is killed.
SERVE = """#!/bin/sh
sh -c 'while :; do date +%s%N > /beat/hb; sleep 0.2; done' beat-{mark} &
echo started
sleep {mark}
"""
MANIFEST = """\
name: serve
epoch: 1700000000
bases: {{b: "oci:{runtime}:latest"}}
image:
  base: b
  layers:
    - copy: {{from: ./serve.sh, to: /usr/local/bin/serve, mode: "0755"}}
  config:
    entrypoint: [/usr/local/bin/serve]
outputs: [oci:out:one]
"""


def _alive(mark: str) -> list[int]:
    """The processes whose argv holds ``MARK`` (the test's own: no other test's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(mark.encode()) for arg in argv):
                found.append(int(entry.name))
    return found


def _end(pids: list[int]) -> None:
    """What a failed test left running, ended (the old behaviour leaves the server up)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _mark() -> str:
    return str(70000 + secrets.randbelow(20000))


def test_an_image_run_is_its_own_pid_namespace_and_a_network_one_without_network(tmp_path: Path) -> None:
    buildah = Buildah(Runner(), storage=tmp_path)
    runner = ImageRunner(buildah, cache=None)  # type: ignore[arg-type]  # argv only: no cache used
    for network in (True, False):
        argv = runner.argv("c", ImageCommand(("serve",), network=network), {})
        (at,) = [i for i in range(len(argv)) if argv[i : i + 4] == ["unshare", "--pid", "--fork", "--kill-child"]]
        flags = argv[at : argv.index("--", at)]
        assert ("--net" in flags) is not network, argv
        assert argv.index("run") > at  # buildah run inside, as the namespace's first process
    # `assemble shell --step`: the shell in a failed step's kept container, likewise
    argv = buildah.shell_argv("c", RunSpec(command="", workdir="/"))
    (at,) = [i for i in range(len(argv)) if argv[i : i + 4] == ["unshare", "--pid", "--fork", "--kill-child"]]
    assert argv.index("run") > at and argv[-3:] == ["c", "--", "/bin/sh"], argv


@ROOT_ONLY
def test_a_stopped_run_ends_its_namespace_after_the_grace_even_if_the_command_ignores_it() -> None:
    from assembler.compile import pidns

    mark = _mark()
    # sh as a namespace's first process ignores SIGTERM (no handler): the grace runs out.
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--", "sh", "-c", f"sleep {mark} & sleep {mark}"]
    proc = subprocess.Popen(argv)
    deadline = time.monotonic() + 10
    while len(_alive(mark)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pidns.namespace_init(proc.pid) is not None
    started = time.monotonic()
    pidns.stop(proc, signal.SIGTERM, grace=0.5)
    assert proc.returncode is not None and time.monotonic() - started < 5
    time.sleep(0.2)
    assert _alive(mark) == []


def _project(root: Path, runtime: Path, mark: str) -> Path:
    """SERVE's project in ``root``, with the folder the image's /beat binds, writable by all."""
    (root / "beat").mkdir(parents=True)
    os.chmod(root / "beat", 0o777)
    (root / "serve.sh").write_text(SERVE.format(mark=mark))
    (root / "m.yaml").write_text(MANIFEST.format(runtime=runtime))
    return root


@ROOT_ONLY
def test_stopping_assemble_run_leaves_nothing_the_image_started(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    mark = _mark()
    root = _project(tmp_path / "p", demo_bases["runtime"], mark)
    assert run_cli(["m.yaml", "--cache", "cache", "--no-tests"], cwd=root).code == 0
    env = {k: v for k, v in os.environ.items() if k != "ASSEMBLE_TRACEBACK"}
    run = [PYTHON, "-m", "assembler", "run", "oci:out:one", "--cache", "cache", "--mount", f"{root / 'beat'}:/beat"]
    _stop_and_exit(run, root, env, mark)
    assert buildah_containers(root / "cache") == []


@ROOT_ONLY  # root makes the user and sends the signal
def test_an_unprivileged_users_stopped_run_leaves_nothing_either(user: User, demo_bases: dict[str, Path]) -> None:
    """Rootless, the PID namespace is made inside ``buildah unshare``'s user namespace
    (which holds the capability): stopped, or its entrypoint exited, nothing it started is
    left, as for root."""
    mark = _mark()
    root = user.home / "run-owned"
    shutil.rmtree(root, ignore_errors=True)
    _project(root, demo_bases["runtime"], mark)
    sh(["chown", "-R", f"{user.name}:{user.name}", str(root)])
    built = user.run([PYTHON, "-m", "assembler", "m.yaml", "--cache", "cache", "--no-tests"], root)
    assert built.returncode == 0, built.stderr
    run = user.argv(
        [PYTHON, "-m", "assembler", "run", "oci:out:one", "--cache", "cache", "--mount", f"{root}/beat:/beat"]
    )
    _stop_and_exit(run, root, user.env(), mark)
    sh(["rm", "-rf", str(root)])


def _stop_and_exit(run: list[str], root: Path, env: dict[str, str], mark: str) -> None:
    """``run`` started, then stopped with SIGTERM: that ends it and its server's child; an
    entrypoint's exit ends its child too. What a failure leaves running is ended."""
    proc = subprocess.Popen(run, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        _stopped(proc, run, root, env, mark)
    finally:
        proc.kill()
        _end(_alive(mark))


def _stopped(proc: subprocess.Popen[str], run: list[str], root: Path, env: dict[str, str], mark: str) -> None:
    beat = root / "beat" / "hb"
    deadline = time.monotonic() + 120
    while not beat.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert beat.exists(), proc.poll()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM and out == "started\n"
    assert _alive(mark) == []
    last = beat.read_text()
    time.sleep(0.6)
    assert beat.read_text() == last  # the background child beats no more
    # An entrypoint that exits leaves no child behind either; its exit status is the run's.
    exits = [*run[:-2], "--entrypoint", "/bin/sh", "--", "-c", f"sleep {mark} & echo hi; exit 5"]
    done = subprocess.run(exits, cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (5, "hi\n"), done.stderr
    assert _alive(mark) == []


def test_an_image_run_sees_its_own_namespace_in_proc(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    """/proc in a run is its PID namespace's: the shell finds itself at /proc/self. With the
    host's /proc bound in, the command's pids named other processes, and DeepSpeed's CPU
    accelerator failed as it started ("process PID not found" reading /proc/<its pid>)."""
    script = 'read -r pid _ < /proc/self/stat; [ "$pid" = "$$" ] && echo "own /proc: $(ls -d /proc/[0-9]* | wc -l)"'
    image = f"oci:{demo_bases['runtime']}:latest"
    ran = run_cli(["run", image, "--cache", str(tmp_path / "cache"), "--entrypoint", "/bin/sh", "--", "-c", script])
    assert ran.code == 0, str(ran)
    assert int(ran.out.split()[-1]) < 10, ran.out  # the namespace's few processes, not the host's


def test_run_mount_refuses_a_bind_over_the_image_s_root(tmp_path: Path) -> None:
    """A manifest's ``copy: {to: /}`` (or ``--mount HOST:/``) would bind a host folder over
    the image's root, hiding its shell and libraries: refused, with what to do instead."""
    from assembler.cli.run import _mounts
    from assembler.errors import InputError

    (tmp_path / "app").mkdir()
    manifest = tmp_path / "m.yaml"
    layers = "[{copy: {from: ./app, to: /srv/}}, {copy: {from: ./app, to: /}}]"
    manifest.write_text(f'name: r\nbases: {{b: "oci:/none:latest"}}\nimage: {{base: b, layers: {layers}}}\n')
    with pytest.raises(InputError, match=r"copy: layer from \./app goes to /: a host folder bound over /") as e:
        _mounts([str(manifest)])
    assert e.value.hint is not None and "--mount HOST:PATH" in e.value.hint
    for spec in (f"{tmp_path / 'app'}:/", f"{tmp_path / 'app'}://:ro"):
        with pytest.raises(InputError, match="bound over / would hide the whole image"):
            _mounts([spec])
    assert _mounts([f"{tmp_path / 'app'}:/srv"]) == ((str(tmp_path / "app"), "/srv", False),)
