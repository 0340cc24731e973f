"""The retry policy shared by the registry client and downloads, on a fake clock.

The registry client's retries against a real registry behind a fault-injecting proxy are
in test_remote.py; here the policy itself, and the download loop against a plain HTTP
server on 127.0.0.1 that answers 5xx as long as a test says.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from assembler.cache import Cache
from assembler.errors import NotFound
from assembler.fetch.pinned import DOWNLOAD_RETRY, download, fetch_page
from assembler.registry.retry import Attempts, RetryPolicy, registry_policy
from assembler.transports.common import RegistryOptions
from tests.helpers import serving
from tests.plugins.fakeclock import FakeClock, streaks

BODY = b"a pinned file\n"


def test_the_registry_default_schedule_is_about_14_s_of_waiting() -> None:
    policy = registry_policy(RegistryOptions())
    assert policy.schedule() == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert (policy.tries, policy.max_tries) == (10, 30)
    assert registry_policy(RegistryOptions(retries=0)).tries == 1  # --retries 0: one try, no retry
    assert policy.wait(3, retry_after=7.0) == 7.0  # the server's Retry-After wins


def test_progress_starts_the_streak_again_but_not_the_count_of_all_tries() -> None:
    attempts = Attempts(RetryPolicy(tries=3, max_tries=5, backoff=1.0, max_backoff=3.0))
    assert [attempts.failed(), attempts.wait()] == [False, 1.0]
    assert [attempts.failed(), attempts.wait()] == [False, 2.0]
    assert [attempts.failed(progress=True), attempts.wait()] == [False, 1.0]
    assert [attempts.failed(), attempts.wait()] == [False, 2.0]
    assert attempts.failed(progress=True)  # the fifth failure in all
    assert (attempts.tries, attempts.streak) == (5, 1)


def test_a_policy_allows_at_least_one_try() -> None:
    with pytest.raises(ValueError, match="at least one try"):
        RetryPolicy(tries=0, max_tries=3, backoff=1.0, max_backoff=1.0)


def test_streaks_reads_a_schedule_and_refuses_waits_off_it() -> None:
    policy = registry_policy(RegistryOptions())
    assert streaks([0.25, 0.5, 0.25, 0.5, 1.0, 2.0, 2.0], policy) == [2, 5]
    with pytest.raises(AssertionError, match="off the schedule"):
        streaks([0.25, 1.0], policy)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures`` requests, then ``BODY``."""

    failures = 0
    seen = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        type(self).seen += 1
        status, body = (503, b"busy") if type(self).seen <= self.failures else (200, BODY)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def flaky() -> Iterator[tuple[str, type[_Flaky]]]:
    """The server's ``http://127.0.0.1:PORT`` and its handler class (set ``failures``)."""
    handler = type("Flaky", (_Flaky,), {})
    with serving(handler) as host:
        yield f"http://{host}", handler


@pytest.mark.parametrize("failures", [0, 1, 2])
def test_a_download_survives_two_5xx(flaky: tuple[str, type[_Flaky]], tmp_path: Path, failures: int) -> None:
    server, handler = flaky
    handler.failures = failures
    clock = FakeClock()
    sha = hashlib.sha256(BODY).hexdigest()
    url = f"{server}/f"
    digest = download(url, sha256=sha, cache=Cache(tmp_path / "c"), max_bytes=1 << 20, what="t", clock=clock)
    assert digest == "sha256:" + sha and handler.seen == failures + 1
    assert clock.waits == DOWNLOAD_RETRY.schedule()[:failures] == [0.5, 1.0][:failures]


def test_a_page_that_keeps_failing_is_given_up_after_three_tries(flaky: tuple[str, type[_Flaky]]) -> None:
    server, handler = flaky
    handler.failures = 3
    clock = FakeClock()
    with pytest.raises(NotFound, match="HTTP 503"):
        fetch_page(f"{server}/simple/", accept="text/html", what="t", clock=clock)
    assert (handler.seen, clock.waits) == (3, [0.5, 1.0])


def test_an_unreachable_server_is_given_up_after_three_tries() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/simple/"
    clock = FakeClock()
    with pytest.raises(NotFound, match="cannot download"):
        fetch_page(url, accept="text/html", what="t", clock=clock)
    assert clock.waits == [0.5, 1.0]
