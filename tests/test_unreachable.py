"""A registry host that cannot be reached at all is given up on in seconds, not retried
like a registry that answers 5xx (assembler/registry/reach.py).

Fakes only for what cannot be had here: a name that does not resolve (the ``.invalid``
top-level domain, which never does), a port nothing listens on, a TCP server that accepts
and never answers, a tiny HTTP server that answers and then goes away, and the retry
clock (tests/plugins/fakeclock.py). The real registry's side: tests/test_remote.py.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from assembler.errors import RegistryError, Unreachable
from assembler.registry import reach
from assembler.registry.client import Registry
from assembler.registry.types import RegistryOptions
from tests.helpers import serving
from tests.plugins.fakeclock import FakeClock

DIGEST = "sha256:" + "0" * 64


def _free_port() -> int:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture()
def silent() -> Iterator[str]:
    """``127.0.0.1:PORT`` of a server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_name_that_does_not_resolve_fails_at_once() -> None:
    clock = FakeClock()
    started = time.monotonic()
    with (
        Registry("registry.invalid", options=RegistryOptions(), clock=clock) as registry,
        pytest.raises(Unreachable) as failed,
    ):
        registry.fetch_manifest("library/x", "tag")
    assert time.monotonic() - started < 5
    assert clock.waits == [], "not retried"
    error = failed.value
    assert (error.host, error.why, error.registry) == ("registry.invalid", reach.NO_NAME, "registry.invalid")
    assert (
        str(error)
        == "reading manifest tag of registry.invalid/library/x: cannot reach registry.invalid (name does not resolve)"
    )


def test_a_refusing_host_gets_three_quick_tries() -> None:
    host = f"127.0.0.1:{_free_port()}"
    clock = FakeClock()
    refused = rf"cannot reach {host} \(connection refused, 3 tries\)"
    with (
        Registry(host, options=RegistryOptions(tls_verify=False), clock=clock) as registry,
        pytest.raises(Unreachable, match=refused),
    ):
        registry.has_blob("x", DIGEST)
    assert clock.waits == [0.25, 0.5]


def test_a_host_that_never_answers_is_given_up_after_three_pings(silent: str) -> None:
    options = RegistryOptions(tls_verify=False, ping_timeout=0.3)
    clock = FakeClock()
    started = time.monotonic()
    silence = rf"cannot reach {silent} \(no answer in 0.3 s, 3 tries\)"
    with Registry(silent, options=options, clock=clock) as registry, pytest.raises(Unreachable, match=silence):
        registry.fetch_manifest("x", "1")
    assert time.monotonic() - started < 3, "three pings of 0.3 s, not three requests of 60 s"
    assert clock.waits == [0.25, 0.5]


def test_with_the_default_timeouts_a_silent_host_is_reported_in_about_16_s() -> None:
    options = RegistryOptions()
    waits = [RegistryOptions.backoff * 2**i for i in range(reach.TRIES - 1)]
    assert reach.TRIES * options.ping_timeout + sum(waits) == 15.75


class _Answers(http.server.BaseHTTPRequestHandler):
    """A registry's first answers: ``/v2/`` and 404 for every blob."""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self.do_GET()


def test_a_host_that_answered_and_then_refuses_is_retried_as_before() -> None:
    clock = FakeClock()
    options = RegistryOptions(tls_verify=False, retries=4)
    with serving(_Answers) as host:
        registry = Registry(host, options=options, clock=clock)
        assert registry.has_blob("x", DIGEST) is False
    with registry, pytest.raises(RegistryError) as failed:  # the server is gone: refused
        registry.has_blob("x", DIGEST)
    assert not isinstance(failed.value, Unreachable)
    assert "after 4 tries" in str(failed.value)
    assert clock.waits == [0.25, 0.5, 1.0], "a registry that was there may come back: the usual schedule"


def test_the_failure_names_docker_hub_not_its_api_host() -> None:
    silence = reach.Silence("docker.io", api="registry-1.docker.io", budget=10)
    with pytest.raises(Unreachable) as failed:
        silence.failed("reading", reach.NO_NAME, host="registry-1.docker.io", cause=OSError())
    assert str(failed.value) == "reading: cannot reach docker.io (name does not resolve)"
    silence = reach.Silence("docker.io", api="registry-1.docker.io", budget=2)  # --retries 2: two tries
    silence.failed("reading", reach.REFUSED, host="auth.docker.io", cause=OSError())
    with pytest.raises(Unreachable, match=r"cannot reach auth.docker.io \(connection refused, 2 tries\)"):
        silence.failed("reading", reach.REFUSED, host="auth.docker.io", cause=OSError())
