"""Registry fixtures: the real ``docker-registry`` (distribution 2.8, from Debian) on 127.0.0.1.

- ``registry``: no authentication, storage under the test's tmp_path.
- ``auth_registry``: htpasswd basic auth (user ``user``, password ``pass``) plus a
  containers ``auth.json`` holding those credentials (``.auth_file``).
- ``fault_proxy``: a :class:`~tests.plugins.faultproxy.FaultProxy` in front of
  ``registry`` (pass-through until a test adds faults; it counts requests and bytes).

``start_registry(..., access_log=True)`` keeps the registry's access log (every request, in
combined log format) in its log file: :meth:`RunningRegistry.requests` reads it back.

Each registry starts in well under a second, so every test gets its own. A registry that
cannot start fails the test with its log: nothing is skipped.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.plugins.faultproxy import FaultProxy

_START_TIMEOUT = 15.0


@dataclass
class RunningRegistry:
    """A started registry: ``host`` is ``127.0.0.1:PORT``, ``root`` its storage dir."""

    host: str
    url: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]
    username: str | None = None
    password: str | None = None
    auth_file: Path | None = None

    def requests(self, since: int = 0) -> list[tuple[str, str, int]]:
        """(method, path with query (percent-decoded), status) of each request in the access
        log after byte ``since`` of the log (``log.stat().st_size`` before what a test looks at)."""
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
        return [(m[1], unquote(m[2]), int(m[3])) for m in _ACCESS.finditer(text)]

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# A combined-log-format line: ... "GET /v2/... HTTP/1.1" 200 ...
_ACCESS = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) ')


def _config(root: Path, port: int, htpasswd: Path | None, access_log: bool) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        f"    disabled: {'false' if access_log else 'true'}",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: assemble-tests",
    ]
    if htpasswd is not None:
        lines += ["auth:", "  htpasswd:", "    realm: basic-realm", f"    path: {htpasswd}"]
    return "\n".join(lines) + "\n"


def start_registry(base: Path, *, htpasswd: Path | None = None, access_log: bool = False) -> RunningRegistry:
    """Start ``docker-registry serve`` on a free loopback port; wait until ``/v2/`` answers."""
    base.mkdir(parents=True, exist_ok=True)
    root = base / "storage"
    log = base / "registry.log"
    for _ in range(3):  # a free port can be taken between probing and binding: try another
        port = _free_port()
        config = base / "config.yml"
        config.write_text(_config(root, port, htpasswd, access_log))
        with open(log, "wb") as out:
            process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
        reg = RunningRegistry(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", root, log, process)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{reg.url}/v2/", timeout=2):
                    return reg
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return reg
            except OSError:
                time.sleep(0.02)
        reg.stop()
        if "address already in use" not in reg.log_tail():
            break
    pytest.fail(f"docker-registry did not start on {reg.host}:\n{reg.log_tail()}")


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A fresh registry without authentication."""
    reg = start_registry(tmp_path / "registry")
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture()
def auth_registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A registry with htpasswd basic auth, and an auth.json with its credentials."""
    base = tmp_path / "auth-registry"
    base.mkdir()
    htpasswd = base / "htpasswd"
    made = subprocess.run(["htpasswd", "-Bbn", "user", "pass"], check=True, capture_output=True)
    htpasswd.write_bytes(made.stdout)
    reg = start_registry(base, htpasswd=htpasswd)
    reg.username, reg.password = "user", "pass"
    reg.auth_file = base / "auth.json"
    token = base64.b64encode(b"user:pass").decode()
    reg.auth_file.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture()
def fault_proxy(registry: RunningRegistry) -> Iterator[FaultProxy]:
    """A pass-through proxy in front of ``registry`` that tests can make fail."""
    proxy = FaultProxy(registry.host).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture()
def no_ambient_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the auth files they write (not the developer's)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
