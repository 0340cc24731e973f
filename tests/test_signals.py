"""SIGTERM and SIGHUP stop a build as Ctrl-C does (issue 50, item 4), in each of the places a
build spends its time: a compile step (tests/test_compile.py), a runtime step and a push.
``timeout``, a CI cancel, Slurm's time limit and Kubernetes send SIGTERM; a closed terminal
SIGHUP. Each time: one line saying what stopped it, the signal's exit status (128 + N), no
buildah container, no process, no mount of the cache left, the cache deleted with ``rm -rf``
at once, and the next build right.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import OWN_STORAGE
from tests.helpers import PYTHON, buildah_containers, run_cli, sh
from tests.plugins.faultproxy import Fault, FaultProxy

RUNTIME_STEP = """\
name: sig
bases:
  runtime: oci:{runtime}:latest
image:
  base: runtime
  layers:
    - run: ["{command}"]
      name: slow
"""


def _project(tmp_path: Path, bases: dict[str, Path], command: str) -> None:
    (tmp_path / "sig.yaml").write_text(RUNTIME_STEP.format(runtime=bases["runtime"], command=command))


def _nothing_left(cache: Path, env: dict[str, str]) -> None:
    assert buildah_containers(cache, env) == []
    assert str(cache) not in sh(["ps", "-eo", "args"]).stdout
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()
    shutil.rmtree(cache)  # rm -rf: nothing mounted or busy in it


def _wait(what: object, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not what():  # type: ignore[operator]
        time.sleep(0.2)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_through_timeout_mid_runtime_step(
    tmp_path: Path, demo_bases: dict[str, Path], sig: signal.Signals, code: int
) -> None:
    """``timeout --preserve-status -s TERM`` (what a CI job's limit does) while a runtime
    step runs, and the SIGHUP of a closed terminal passed on the same way: the message, the
    signal's exit status, nothing left; the next build gives the image."""
    _project(tmp_path, demo_bases, "sleep 300")
    cache = tmp_path / "cache"
    env = dict(os.environ, **OWN_STORAGE)
    argv = [PYTHON, "-m", "assembler", "sig.yaml", "--cache", str(cache), "-o", "oci:out:x"]
    proc = subprocess.Popen(
        ["timeout", "--preserve-status", "-s", "TERM", "600", *argv],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(lambda: buildah_containers(cache, env))
    time.sleep(2)  # in `sleep 300` by now
    proc.send_signal(sig)  # timeout passes it on, as it sends TERM when its time is up
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"terminated by {sig.name}: stopped" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()
    _nothing_left(cache, env)
    _project(tmp_path, demo_bases, "echo quick > /quick")
    ran = run_cli(["sig.yaml", "--cache", str(cache), "-o", "oci:out:x"], cwd=tmp_path, env=OWN_STORAGE)
    assert ran.code == 0, str(ran)
    assert (tmp_path / "out" / "index.json").is_file()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_mid_push_stops_it_and_the_next_push_is_right(
    tmp_path: Path, demo_bases: dict[str, Path], fault_proxy: FaultProxy, sig: signal.Signals, code: int
) -> None:
    """The build is done and its blobs are going up (one upload held by the registry): the
    signal stops the push, nothing is left, and the next run pushes the same image whole."""
    _project(tmp_path, demo_bases, "echo made > /made")
    cache = tmp_path / "cache"
    env = dict(os.environ, **OWN_STORAGE)
    held = fault_proxy.add(Fault("stall", method="PATCH", path="/blobs/uploads/", times=1))
    held_put = fault_proxy.add(Fault("stall", method="PUT", path="/blobs/uploads/", times=1))
    ref = f"docker://{fault_proxy.host}/sig/app:1"
    argv = [PYTHON, "-m", "assembler", "sig.yaml", "--cache", str(cache), "-o", ref, "--tls-verify=false"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    _wait(lambda: held.reached.is_set() or held_put.reached.is_set() or proc.poll() is not None, 300)
    assert proc.poll() is None, proc.communicate()[1]
    assert held.reached.is_set() or held_put.reached.is_set()  # a blob's upload in flight
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    held.release.set()
    held_put.release.set()
    assert proc.returncode == code, err
    assert f"terminated by {sig.name}: stopped" in err and "Traceback" not in err, err
    manifests = [r for r in fault_proxy.records if r.method == "PUT" and "/manifests/" in r.path]
    assert manifests == [], "no manifest pushed: the image is not in the registry half-made"
    _nothing_left(cache, env)
    fault_proxy.clear()
    ran = run_cli(["sig.yaml", "--cache", str(cache), "-o", ref, "--tls-verify=false", "--json"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    pulled = sh(["skopeo", "inspect", "--tls-verify=false", "--raw", ref]).stdout
    assert '"layers"' in pulled


@pytest.mark.integration  # a real bootstrap: mmdebstrap, apt downloading from Debian's mirror
def test_ctrl_c_during_a_bootstrap_is_an_interruption_not_mmdebstraps_failure(tmp_path: Path) -> None:
    """Ctrl-C reaches the terminal's whole process group: mmdebstrap gets it too and fails of
    it, and that failure reached the user as the build's error ("mmdebstrap failed"). The
    interruption is what is said, exit 130, and nothing is left in the cache's way."""
    (tmp_path / "b.yaml").write_text(
        "name: boot\nbases: {runtime: {bootstrap: {suite: bookworm, variant: essential}}}\n"
        "image: {base: runtime, layers: [{run: ['true']}]}\n"
    )
    cache = tmp_path / "cache"
    env = dict(os.environ, **OWN_STORAGE)
    argv = [PYTHON, "-m", "assembler", "b.yaml", "--cache", str(cache), "-o", "oci:out:x"]
    # a session of its own: the process group a terminal's Ctrl-C goes to
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def bootstrapping() -> bool:
        ps = sh(["ps", "-o", "args=", "--sid", str(proc.pid)], check=False).stdout
        return "mmdebstrap" in ps or proc.poll() is not None

    _wait(bootstrapping, 180)
    assert proc.poll() is None, proc.communicate()[1]
    time.sleep(3)  # well into it: apt at work
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.rstrip().endswith("interrupted") and "mmdebstrap" not in err.split("interrupted")[-1], err
    assert "error:" not in err and "Traceback" not in err, err
    _nothing_left(cache, env)


@pytest.mark.parametrize(
    ("sig", "code", "said"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_programs_failure_from_the_same_signal_is_reported_as_the_stop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sig: signal.Signals, code: int, said: str
) -> None:
    """The race the test above cannot force: the signal arrives, and what reaches the command
    first is a program's failure (a worker thread's mmdebstrap, killed by it), not the
    KeyboardInterrupt. The stop is what is said, with its exit status."""
    import assembler.cli as cli
    from assembler.errors import ToolError

    def command(args: object) -> int:
        try:
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler runs here
        except KeyboardInterrupt:
            pass  # as a worker's failure overtakes it
        raise ToolError("mmdebstrap failed (exit 1): E: interrupted by signal", argv=("mmdebstrap",), returncode=1)

    monkeypatch.setattr(cli, "command", lambda name: command)
    assert cli.main(["doctor"]) == code
    err = capsys.readouterr().err
    assert said in err and "mmdebstrap" not in err, err
