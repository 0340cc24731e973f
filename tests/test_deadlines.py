"""Deadlines a user can count on: a registry or a download server that trickles its answer
(a byte every 0.2 s, within any idle timeout) or goes silent fails within the stated
deadline plus 10%, naming the host, what was slow and how to raise the limit
(assembler/registry/deadlines.py, the registry client, fetch/pinned.py).

The one fake is the peer: a threaded HTTP server on 127.0.0.1 that answers ``/v2/`` at
once, as every registry does, and then trickles or withholds what a test names. Small
limits, set through the options the CLI's ``--network-timeout`` and ``--network-deadline``
fill, keep each test to seconds.
"""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assembler.cache import Cache
from assembler.errors import NotFound, RegistryError
from assembler.fetch.pinned import download, fetch_page
from assembler.registry.client import Registry
from assembler.registry.retry import seconds
from assembler.registry.types import NetworkLimits, RegistryOptions
from tests.helpers import run_cli_here, serving

SIZE = 1000  # what a trickling answer announces: 200 s at a byte every 0.2 s
DIGEST = "sha256:" + hashlib.sha256(bytes(SIZE)).hexdigest()
BYTE_EVERY = 0.2  # seconds between the bytes of a trickle: far inside any idle timeout here


class _Peer(http.server.BaseHTTPRequestHandler):
    """Answers ``/v2/`` at once; any other path as ``mode`` says: ``trickle`` (headers at
    once, announcing SIZE bytes unless ``announce`` is off, then a byte every BYTE_EVERY s),
    ``headers`` (even the headers trickle), ``silent`` (never a byte). ``stop`` ends them."""

    mode = "trickle"
    announce = True
    claims = SIZE  # the Content-Length announced (a lying peer claims more than it sends)
    stop = threading.Event()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        try:
            if self.mode == "silent":
                self.stop.wait()
            elif self.mode == "headers":
                self._trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000)
            else:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if self.announce:
                    self.send_header("Content-Length", str(self.claims))
                self.end_headers()
                self._trickle(bytes(SIZE))
        except OSError:  # the client gave up and closed
            pass

    def _trickle(self, data: bytes) -> None:
        for i in range(len(data)):
            self.wfile.write(data[i : i + 1])
            self.wfile.flush()
            if self.stop.wait(BYTE_EVERY):
                return


@pytest.fixture()
def peer() -> Iterator[tuple[str, type[_Peer]]]:
    """The peer's ``127.0.0.1:PORT`` and its handler class (set ``mode``, ``announce``)."""
    handler: type[_Peer] = type("Peer", (_Peer,), {"stop": threading.Event()})  # its own stop, its own mode
    with serving(handler) as host:
        try:
            yield host, handler
        finally:
            handler.stop.set()


def _within(started: float, stated: float) -> float:
    """The time since ``started``, asserted within 10% of ``stated`` and a quarter second: on
    a 2-core machine under a full suite, a 1.1 s give-up once took 1.21 s (threads waiting for
    a core); a try or a wait too many is half a second or more, and the messages count tries."""
    elapsed = time.monotonic() - started
    assert elapsed <= stated * 1.1 + 0.25, f"{elapsed:.2f} s against a stated {stated:.2f} s"
    return elapsed


# -- downloads (url: layers and sources, wheels, index pages) ----------------------------


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("announce", [True, False], ids=["sized", "unsized"])
def test_a_trickling_download_fails_within_its_deadline(
    peer: tuple[str, type[_Peer]], tmp_path: Path, announce: bool
) -> None:
    host, handler = peer
    handler.announce = announce
    limits = NetworkLimits(idle=1.0, deadline=2.0)
    url = f"http://{host}/file.tar"
    started = time.monotonic()
    with pytest.raises(NotFound) as failed:
        download(
            url, sha256=DIGEST[7:], cache=Cache(tmp_path / "c"), max_bytes=1 << 20, what="url layer", limits=limits
        )
    # The deadline: 2 s plus 1 s per 256 KiB announced (or sent): 2.004 s at most.
    _within(started, limits.deadline + SIZE / limits.min_rate)
    message = str(failed.value)
    assert message.startswith(f"url layer: {host} too slow: {url} not finished in 2 s (")
    assert "bytes arrived)" in message
    assert failed.value.hint == "raise the limit with --network-deadline SECONDS (or ASSEMBLE_NETWORK_DEADLINE=SECONDS)"


@pytest.mark.integration  # seconds
def test_a_huge_announced_size_does_not_stretch_the_deadline_past_the_longest(
    peer: tuple[str, type[_Peer]], tmp_path: Path
) -> None:
    """A server (a Hub) that announces a petabyte and trickles is given up at ``longest``,
    not after the weeks a second per 256 KiB of its claim would allow."""
    host, handler = peer
    handler.claims = 10**15
    limits = NetworkLimits(idle=1.0, deadline=1.0, longest=2.0)
    assert limits.allowed(10**15) == 2.0 and limits.allowed(0) == 1.0
    started = time.monotonic()
    with pytest.raises(NotFound, match="too slow"):
        download(
            f"http://{host}/f",
            sha256=DIGEST[7:],
            cache=Cache(tmp_path / "c"),
            max_bytes=10**15,
            what="weights",
            limits=limits,
        )
    _within(started, limits.longest)
    assert NetworkLimits(deadline=3 * 86400.0).allowed(10**15) == 3 * 86400.0  # a longer deadline asked stands


def test_a_registry_blob_of_a_huge_declared_size_is_given_no_more_than_the_longest() -> None:
    """A manifest may declare any size for a blob (its digest is checked only once it has all
    arrived): a petabyte at the registry's 16 KiB/s would be given years; ``longest`` caps
    it, as it caps a download's (issue 66)."""
    from assembler.registry.http import RegistryClient

    assert RegistryOptions().allowed(10**15) == NetworkLimits().longest == 24 * 3600.0
    options = RegistryOptions(tls_verify=False, deadline=1.0, longest=2.0)
    assert options.allowed(0) == 1.0 and options.allowed(16 << 10) == 2.0 and options.allowed(10**15) == 2.0
    assert RegistryClient("127.0.0.1:1", options=options).deadline(10**15).seconds == 2.0
    assert options.limits.longest == 2.0  # the downloads of a build that talks to registries: the same cap
    assert RegistryOptions(deadline=3 * 86400.0).allowed(10**15) == 3 * 86400.0  # a longer deadline asked stands


@pytest.mark.integration  # seconds
def test_a_trickling_index_page_fails_within_its_deadline(peer: tuple[str, type[_Peer]]) -> None:
    host, handler = peer
    handler.mode = "headers"  # the page's very headers trickle
    started = time.monotonic()
    with pytest.raises(NotFound, match=rf"pip layer: {host} too slow: .* not finished in 1.5 s") as failed:
        fetch_page(f"http://{host}/simple/torch/", accept="text/html", what="pip layer", limits=NetworkLimits(1, 1.5))
    _within(started, 1.5)
    assert failed.value.hint is not None and "--network-deadline" in failed.value.hint


@pytest.mark.integration  # seconds
def test_a_download_whose_server_goes_silent_fails_in_the_idle_timeout(
    peer: tuple[str, type[_Peer]], tmp_path: Path
) -> None:
    host, handler = peer
    handler.mode = "silent"
    limits = NetworkLimits(idle=0.5, deadline=30.0)
    url = f"http://{host}/file.tar"
    started = time.monotonic()
    with pytest.raises(NotFound) as failed:
        download(url, sha256=DIGEST[7:], cache=Cache(tmp_path / "c"), max_bytes=1 << 20, what="source s", limits=limits)
    # Three tries of 0.5 s each, and the waits between them (0.5 s, 1 s): far from the deadline.
    assert _within(started, 3 * 0.5 + 1.5) < 30
    assert str(failed.value) == f"source s: cannot download {url}: no byte from {host} for 0.5 s"
    assert failed.value.hint == "raise the limit with --network-timeout SECONDS (or ASSEMBLE_NETWORK_TIMEOUT=SECONDS)"


# -- registries --------------------------------------------------------------------------


def _read(registry: Registry, what: str) -> None:
    if what == "manifest":
        registry.fetch_manifest("x/y", "1")
    else:
        with registry.open_blob("x/y", DIGEST, size=SIZE) as blob:
            blob.read()


@pytest.mark.integration  # seconds
@pytest.mark.parametrize(
    ("what", "mode"),
    [
        ("manifest", "trickle"),
        ("manifest", "headers"),
        ("blob", "trickle"),
        ("blob", "silent"),
    ],
)
def test_a_registry_that_trickles_or_goes_silent_fails_within_its_deadline(
    peer: tuple[str, type[_Peer]], what: str, mode: str
) -> None:
    host, handler = peer
    handler.mode = mode
    # Ten tries (the default) of up to 1 s each: a silent peer must not cost them all.
    options = RegistryOptions(tls_verify=False, timeout=1.0, deadline=2.5)
    # A blob gets 1 s more per 16 KiB the manifest declares for it.
    stated = options.deadline + (SIZE / options.min_rate if what == "blob" else 0)
    started = time.monotonic()
    with Registry(host, options=options) as registry, pytest.raises(RegistryError) as failed:
        _read(registry, what)
    _within(started, stated)
    error = failed.value
    assert error.registry == host
    assert f": {host} too slow: not finished in {seconds(stated)} s (" in str(error)
    assert error.hint == "raise the limit with --network-deadline SECONDS (or ASSEMBLE_NETWORK_DEADLINE=SECONDS)"


@pytest.mark.integration  # seconds
def test_a_silent_registry_fails_within_its_deadline_not_tries_times_the_idle_timeout(
    peer: tuple[str, type[_Peer]],
) -> None:
    host, handler = peer
    handler.mode = "silent"
    options = RegistryOptions(tls_verify=False, timeout=1.0, deadline=2.5)  # ten tries of 1 s: 10 s and more
    started = time.monotonic()
    with Registry(host, options=options) as registry, pytest.raises(RegistryError) as failed:
        registry.fetch_manifest("x/y", "1")
    _within(started, options.deadline)
    assert failed.value.hint == "raise the limit with --network-deadline SECONDS (or ASSEMBLE_NETWORK_DEADLINE=SECONDS)"
    # Tries of 1 s, waits of 0.25 s, 0.5 s: the third could not end in time, so it is not made.
    assert str(failed.value) == (
        f"reading manifest 1 of {host}/x/y: {host} too slow: not finished in 2.5 s "
        f"(2 tries, the last: no byte from {host} for 1 s)"
    )


@pytest.mark.integration  # seconds
def test_a_silent_registry_with_few_tries_names_the_idle_timeout(peer: tuple[str, type[_Peer]]) -> None:
    host, handler = peer
    handler.mode = "silent"
    options = RegistryOptions(tls_verify=False, timeout=0.5, deadline=30.0, retries=2, backoff=0.1)
    started = time.monotonic()
    with Registry(host, options=options) as registry, pytest.raises(RegistryError) as failed:
        registry.fetch_manifest("x/y", "1")
    _within(started, 2 * 0.5 + 0.1)
    assert str(failed.value) == f"reading manifest 1 of {host}/x/y: no byte from {host} for 0.5 s after 2 tries"
    assert failed.value.hint == "raise the limit with --network-timeout SECONDS (or ASSEMBLE_NETWORK_TIMEOUT=SECONDS)"


# -- the command line --------------------------------------------------------------------


@pytest.mark.integration  # seconds
@pytest.mark.parametrize(
    ("command", "through"),
    [("inspect", "flag"), ("inspect", "environment"), ("build", "flag"), ("build", "environment")],
)
def test_the_cli_sets_the_deadline_and_says_how_to_raise_it(
    peer: tuple[str, type[_Peer]], tmp_path: Path, command: str, through: str
) -> None:
    host, handler = peer
    handler.mode = "trickle"  # the manifest (inspect), the url: layer's file (build)
    if command == "inspect":
        args = ["inspect", f"docker://{host}/x/y:1", "--tls-verify=false"]
        slow = f"reading manifest 1 of {host}/x/y: {host} too slow: not finished in 2 s ("
    else:
        url = f"http://{host}/tool"
        layer = f"    - url: {url}\n      sha256: {DIGEST[7:]}\n      to: /opt/tool\n"
        (tmp_path / "m.yaml").write_text(f"name: slow\nbases:\n  b: scratch\nimage:\n  base: b\n  layers:\n{layer}")
        args = [str(tmp_path / "m.yaml"), "--cache", str(tmp_path / "cache"), "-o", f"oci:{tmp_path / 'out'}:1"]
        slow = f"url layer {url}: {host} too slow: {url} not finished in 2 s ("
    env = {"ASSEMBLE_NETWORK_DEADLINE": "2"}
    if through == "flag":
        args += ["--network-deadline", "2", "--network-timeout", "1"]
        env = {"ASSEMBLE_NETWORK_DEADLINE": "600"}  # the flag wins
    started = time.monotonic()
    ran = run_cli_here(args, env=env)
    elapsed = time.monotonic() - started
    assert ran.code == 1, ran
    assert elapsed < 2 * 1.1 + 1, ran  # the command's own start besides
    assert slow in ran.err, ran
    assert "hint: raise the limit with --network-deadline SECONDS (or ASSEMBLE_NETWORK_DEADLINE=SECONDS)" in ran.err


def test_the_limits_are_in_the_help_and_checked() -> None:
    shown = " ".join(run_cli_here(["build", "--help"]).out.split())
    assert "--network-timeout SECONDS seconds a registry or a download's server may send nothing" in shown
    assert "(default $ASSEMBLE_NETWORK_TIMEOUT, else 60)" in shown
    assert "--network-deadline SECONDS seconds one registry operation or one download may take" in shown
    assert "(default $ASSEMBLE_NETWORK_DEADLINE, else 300)" in shown
    refused = run_cli_here(["inspect", "docker://127.0.0.1:1/x:1", "--network-deadline", "0"])
    assert refused.code == 2 and "--network-deadline must be a positive number of seconds, got 0" in refused.err
    refused = run_cli_here(["inspect", "docker://127.0.0.1:1/x:1"], env={"ASSEMBLE_NETWORK_TIMEOUT": "soon"})
    assert refused.code == 2 and "ASSEMBLE_NETWORK_TIMEOUT must be a number of seconds, got 'soon'" in refused.err
