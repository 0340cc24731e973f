"""``assemble registry start|stop`` (issue 67, item 4): a registry of one's own, outside the
clone, that a build pushes to, and that ``stop`` ends; its storage in the cache folder."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_cli_here

MANIFEST = """name: mine
bases: {b: scratch}
image:
  base: b
  layers:
    - copy: {from: etc/, to: /etc/mine/}
"""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]  # a zombie has ended


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration  # docker-registry, started and stopped by the command
@pytest.mark.timeout(120)
def test_a_started_registry_takes_a_push_and_stop_ends_it(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    port = str(_free_port())
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "motd").write_text("hello\n")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    folder = tmp_path / "xdg" / "assembler" / f"registry-{port}"
    started = run_cli(["registry", "start", "--port", port], cwd=tmp_path, env=env)
    try:
        assert started.code == 0 and f"started on 127.0.0.1:{port}" in started.out + started.err, str(started)
        pid = int((folder / "pid").read_text())
        ref = f"docker://127.0.0.1:{port}/mine:1"
        pushed = run_cli(["m.yaml", "-o", ref, "--tls-verify=false", "--cache", str(tmp_path / "cache")], cwd=tmp_path)
        assert pushed.code == 0, str(pushed)
        assert (folder / "storage" / "docker" / "registry" / "v2" / "repositories" / "mine").is_dir()
        again = run_cli(["registry", "start", "--port", port], cwd=tmp_path, env=env)
        assert again.code == 0 and "already answering" in again.out + again.err, str(again)
    finally:
        stopped = run_cli(["registry", "stop", "--port", port], cwd=tmp_path, env=env)
    assert stopped.code == 0 and f"stopped on 127.0.0.1:{port}" in stopped.out + stopped.err, str(stopped)
    assert not (folder / "pid").exists() and not _alive(pid)
    gone = run_cli(["registry", "stop", "--port", port], cwd=tmp_path, env=env)
    assert gone.code == 0 and "none started" in gone.out + gone.err, str(gone)


def test_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    ran = run_cli_here(["registry", "stop", "--port", "70000"], cwd=tmp_path)
    assert ran.code == 2 and "not a port" in ran.err, str(ran)
