"""Pulls as podman users configure them: registries.conf mirrors, insecure, blocked and
short names, against the real registry (distribution 2.8) on 127.0.0.1.

Fakes only for what cannot be had here: Docker Hub (an HTTP proxy that records every
connection made through it and lets none through stands in for the internet, so a build
that reaches no further than 127.0.0.1 is one that never contacted docker.io), a name
that does not resolve (``.invalid``), a port nothing listens on. Builds are copy-only
manifests, run in this process (tests/helpers.run_cli_here).
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assembler.archive.layer import write_layer
from assembler.archive.tar import TarEntry
from assembler.cache import Cache
from assembler.errors import NotFound, Unreachable
from assembler.oci import mutate
from assembler.oci.descriptor import Platform
from assembler.oci.reference import ImageName
from assembler.registry.conffiles import load
from assembler.registry.pull import OFFLINE
from assembler.registry.types import RegistryOptions
from assembler.transports.remote import push, read
from tests.helpers import Ran, manifest_of, resolver_says, run_cli_here
from tests.plugins.faultproxy import FaultProxy
from tests.plugins.registry import RunningRegistry, start_registry

PLATFORM = Platform("linux", "amd64")
EPOCH = 1700000000
PLAIN = RegistryOptions(tls_verify=False, backoff=0.01, max_backoff=0.05)

MANIFEST = """\
name: via-mirror
bases:
  runtime: {base}
image:
  base: runtime
  layers:
    - copy: {{from: ./app.txt, to: /app/app.txt}}
outputs:
  - oci:out:latest
"""


@pytest.fixture(autouse=True)
def _no_ambient_credentials(no_ambient_credentials: None) -> None:
    """Tests see only the auth files and registries.conf they write (tests/plugins/registry.py)."""


@pytest.fixture()
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "images")


@pytest.fixture()
def other_registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A second registry, without the images the first one has."""
    reg = start_registry(tmp_path / "other-registry")
    try:
        yield reg
    finally:
        reg.stop()


class Internet:
    """An HTTP proxy that records the first line of every connection (``CONNECT
    registry-1.docker.io:443 HTTP/1.0``) and answers 502: nothing gets through it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass

    def env(self) -> dict[str, str]:
        """Every request goes through this proxy, but those to 127.0.0.1 (the registries)."""
        proxy = {"HTTP_PROXY": self.url, "HTTPS_PROXY": self.url, "NO_PROXY": "127.0.0.1,localhost"}
        return {**proxy, **{k.lower(): v for k, v in proxy.items()}}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.close()


@pytest.fixture()
def internet() -> Iterator[Internet]:
    trap = Internet()
    try:
        yield trap
    finally:
        trap.close()


def push_image(cache: Cache, host: str, name: str, content: bytes = b"from the mirror\n") -> str:
    """Push a one-layer image to ``host/name``; its digest."""
    members = [(TarEntry("base.txt", "file", size=len(content)), lambda: contextlib.nullcontext(io.BytesIO(content)))]
    with cache.blob_writer() as out:
        blob = write_layer(members, out, compression="gzip", epoch=EPOCH)
    image = mutate.append_layers(mutate.scratch(PLATFORM, epoch=EPOCH), [blob.made_by("test")], epoch=EPOCH)
    cache.put_image(image)
    return push(image, ImageName.parse(f"{host}/{name}"), blobs=cache, options=PLAIN).digest


def registries_conf(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def project(root: Path, base: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "m.yaml").write_text(MANIFEST.format(base=base))
    (root / "app.txt").write_text("the app\n")
    return root


def build(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[Ran, float]:
    started = time.monotonic()
    ran = run_cli_here(["build", "m.yaml", "--cache", str(root / "cache"), "--json", *args], cwd=root, env=env)
    return ran, time.monotonic() - started


def served_manifests(proxy: FaultProxy) -> list[str]:
    return [r.path for r in proxy.records if r.method == "GET" and "/manifests/" in r.path]


# -- the must-shows ------------------------------------------------------------------------


def test_a_docker_hub_base_builds_from_a_mirror_without_contacting_docker_io(
    fault_proxy: FaultProxy, cache: Cache, internet: Internet, tmp_path: Path
) -> None:
    digest = push_image(cache, fault_proxy.host, "library/x:tag")
    conf = registries_conf(
        tmp_path / "registries.conf",
        f'[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n'
        f'[[registry.mirror]]\nlocation = "{fault_proxy.host}"\ninsecure = true\n',
    )
    root = project(tmp_path / "p", "docker://docker.io/library/x:tag")
    env = {**internet.env(), "CONTAINERS_REGISTRIES_CONF": str(conf)}
    ran, _ = build(root, env=env)
    assert ran.code == 0, str(ran)
    assert internet.requests == [], "nothing left 127.0.0.1"
    assert served_manifests(fault_proxy) == ["/v2/library/x/manifests/tag"], "the mirror served the base"
    annotations = manifest_of(root / "out", "latest")["annotations"]
    assert annotations["org.opencontainers.image.base.digest"] == digest
    assert annotations["org.opencontainers.image.base.name"] == "docker.io/library/x:tag"  # the name, not the mirror

    # The control: without the mirror, the same build goes out to Docker Hub (and is stopped).
    conf.write_text("")
    ran, _ = build(root, "--retries", "1", env=env)
    assert ran.code == 1, str(ran)
    assert [r.rsplit(" ", 1)[0] for r in internet.requests] == ["CONNECT registry-1.docker.io:443"]


def test_offline_a_base_fails_in_seconds_saying_what_to_do(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "docker://registry.invalid/library/x:tag")
    conf = ["--registries-conf", str(registries_conf(tmp_path / "empty.conf", ""))]
    # the preflight names it with the sources and outputs (tests/test_preflight.py)...
    ran, took = build(root, *conf)
    assert ran.code == 1 and took < 10, str(ran)
    assert f"registry.invalid ({resolver_says('registry.invalid')}): needed by bases.runtime" in ran.err, ran.err
    assert "--base runtime=REF" in ran.err and "a mirror in registries.conf" in ran.err, ran.err
    # ...and without it the registry client gives up on it as soon
    ran, took = build(root, *conf, "--no-preflight")
    assert ran.code == 1, str(ran)
    assert took < 10, f"{took:.1f} s"
    error = ran.err.split("error: ", 1)[1]
    assert f"cannot reach registry.invalid (name does not resolve): {OFFLINE}" in error, ran.err
    assert "hint: registries.conf read here: " + str(tmp_path / "empty.conf") in ran.err
    assert "trying again" not in ran.err, "not retried"


# -- mirrors -------------------------------------------------------------------------------


def test_mirrors_are_tried_in_order_then_the_location(
    fault_proxy: FaultProxy, other_registry: RunningRegistry, cache: Cache, tmp_path: Path
) -> None:
    digest = push_image(cache, fault_proxy.host, "team/app:1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    conf = registries_conf(
        tmp_path / "registries.conf",
        f'[[registry]]\nprefix = "registry.invalid"\nlocation = "registry.invalid"\n'
        f'[[registry.mirror]]\nlocation = "{closed}"\ninsecure = true\n'
        f'[[registry.mirror]]\nlocation = "{other_registry.host}/cache"\ninsecure = true\n'
        f'[[registry.mirror]]\nlocation = "{fault_proxy.host}"\ninsecure = true\n',
    )
    options = RegistryOptions(backoff=0.01, max_backoff=0.05, conf=load(conf, environ={}))
    source = read(ImageName.parse("registry.invalid/team/app:1"), platform=PLATFORM, options=options)
    assert source.image.digest == digest and source.name == "docker://registry.invalid/team/app:1"
    assert served_manifests(fault_proxy) == ["/v2/team/app/manifests/1"]

    # None has it: every source's failure is named, and the location's is last.
    with pytest.raises(Unreachable) as failed:
        read(ImageName.parse("registry.invalid/team/other:1"), platform=PLATFORM, options=options)
    message = str(failed.value)
    assert f"cannot reach {closed} (connection refused, 3 tries)" in message
    assert f"{other_registry.host}/cache/team/other" in message and "MANIFEST_UNKNOWN" in message
    assert f"{fault_proxy.host}/team/other" in message
    assert message.endswith(f"cannot reach registry.invalid (name does not resolve): {OFFLINE}")


def test_a_tag_pull_skips_mirrors_by_digest_only(fault_proxy: FaultProxy, cache: Cache, tmp_path: Path) -> None:
    digest = push_image(cache, fault_proxy.host, "team/app:1")
    conf = registries_conf(
        tmp_path / "registries.conf",
        f'[[registry]]\nlocation = "registry.invalid"\nmirror-by-digest-only = true\n'
        f'[[registry.mirror]]\nlocation = "{fault_proxy.host}"\ninsecure = true\n',
    )
    options = RegistryOptions(conf=load(conf, environ={}))
    with pytest.raises(Unreachable, match=r"cannot reach registry\.invalid"):
        read(ImageName.parse("registry.invalid/team/app:1"), platform=PLATFORM, options=options)
    assert served_manifests(fault_proxy) == [], "the mirror was not asked for a tag"
    by_digest = read(ImageName.parse(f"registry.invalid/team/app@{digest}"), platform=PLATFORM, options=options)
    assert by_digest.image.digest == digest


def test_a_mirror_that_is_not_marked_insecure_is_spoken_to_over_tls(
    fault_proxy: FaultProxy, cache: Cache, tmp_path: Path
) -> None:
    push_image(cache, fault_proxy.host, "team/app:1")
    conf = registries_conf(
        tmp_path / "registries.conf",
        f'[[registry]]\nlocation = "registry.invalid"\n[[registry.mirror]]\nlocation = "{fault_proxy.host}"\n',
    )
    options = RegistryOptions(backoff=0.01, max_backoff=0.05, conf=load(conf, environ={}))
    with pytest.raises(Unreachable) as failed:
        read(ImageName.parse("registry.invalid/team/app:1"), platform=PLATFORM, options=options)
    assert "TLS failed" in str(failed.value) and served_manifests(fault_proxy) == []


def test_pushes_go_to_the_named_registry_over_plain_http_where_it_is_insecure(
    registry: RunningRegistry, other_registry: RunningRegistry, cache: Cache, tmp_path: Path
) -> None:
    conf = registries_conf(
        tmp_path / "registries.conf",
        f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n'
        f'[[registry.mirror]]\nlocation = "{other_registry.host}"\ninsecure = true\n',
    )
    root = project(tmp_path / "p", "scratch")
    ran, _ = build(root, "--registries-conf", str(conf), "-o", f"docker://{registry.host}/team/app:1")
    assert ran.code == 0, str(ran)
    pushed = ran.json["digest"]
    insecure = RegistryOptions(conf=load(conf, environ={}))  # no --tls-verify=false: registries.conf says it
    got = read(ImageName.parse(f"{registry.host}/team/app:1"), platform=PLATFORM, options=insecure)
    assert got.image.digest == pushed
    with pytest.raises(NotFound):  # the mirror got nothing
        read(ImageName.parse(f"{other_registry.host}/team/app:1"), platform=PLATFORM, options=PLAIN)


def test_a_mirror_s_insecure_does_not_make_a_push_to_its_host_plain_http(
    registry: RunningRegistry, tmp_path: Path
) -> None:
    mirror_only = (
        f'[[registry]]\nlocation = "registry.invalid"\n'
        f'[[registry.mirror]]\nlocation = "{registry.host}"\ninsecure = true\n'
    )
    conf = registries_conf(tmp_path / "registries.conf", mirror_only)
    root = project(tmp_path / "p", "scratch")
    out = f"docker://{registry.host}/team/app:1"
    ran, _ = build(root, "--registries-conf", str(conf), "--retries", "1", "-o", out)
    assert ran.code != 0 and "TLS failed" in ran.err, str(ran)
    with pytest.raises(NotFound):  # nothing went up over plain HTTP
        read(ImageName.parse(f"{registry.host}/team/app:1"), platform=PLATFORM, options=PLAIN)

    # The registry's own table says insecure: now the push goes over plain HTTP.
    conf.write_text(mirror_only + f'[[registry]]\nlocation = "{registry.host}"\ninsecure = true\n')
    ran, _ = build(root, "--registries-conf", str(conf), "-o", out)
    assert ran.code == 0, str(ran)
    got = read(ImageName.parse(f"{registry.host}/team/app:1"), platform=PLATFORM, options=PLAIN)
    assert got.image.digest == ran.json["digest"]


def test_docker_hub_s_other_names_are_read_from_the_docker_io_mirror(
    fault_proxy: FaultProxy, cache: Cache, internet: Internet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = push_image(cache, fault_proxy.host, "library/x:tag")
    conf = registries_conf(
        tmp_path / "registries.conf",
        f'[[registry]]\nprefix = "index.docker.io"\nlocation = "docker.io"\n'
        f'[[registry.mirror]]\nlocation = "{fault_proxy.host}"\ninsecure = true\n',
    )
    for key, value in internet.env().items():
        monkeypatch.setenv(key, value)
    options = RegistryOptions(retries=1, conf=load(conf, environ={}))
    for name in ("registry-1.docker.io/x:tag", "index.docker.io/library/x:tag", "DOCKER.IO./x:tag"):
        source = read(ImageName.parse(name), platform=PLATFORM, options=options)
        assert source.image.digest == digest, name
    assert internet.requests == [], "nothing left 127.0.0.1"
    assert served_manifests(fault_proxy) == ["/v2/library/x/manifests/tag"] * 3


@pytest.mark.parametrize(
    ("blocked", "base"),
    [("docker.io", "registry-1.docker.io/library/x:tag"), ("index.docker.io", "x:tag")],
)
def test_a_blocked_docker_hub_is_refused_under_another_name_before_any_request(
    internet: Internet, tmp_path: Path, blocked: str, base: str
) -> None:
    conf = registries_conf(tmp_path / "registries.conf", f'[[registry]]\nlocation = "{blocked}"\nblocked = true\n')
    root = project(tmp_path / "p", f"docker://{base}")
    ran, _ = build(root, "--registries-conf", str(conf), "--retries", "1", env=internet.env())
    assert ran.code == 2, str(ran)
    assert "pulls from this registry are blocked (docker.io in" in ran.err and str(conf) in ran.err
    assert internet.requests == []


def test_a_blocked_registry_is_refused_before_any_request(fault_proxy: FaultProxy, tmp_path: Path) -> None:
    conf = registries_conf(
        tmp_path / "registries.conf", f'[[registry]]\nlocation = "{fault_proxy.host}"\nblocked = true\n'
    )
    root = project(tmp_path / "p", f"docker://{fault_proxy.host}/team/app:1")
    ran, _ = build(root, "--tls-verify=false", "--registries-conf", str(conf))
    assert ran.code == 2, str(ran)
    assert "pulls from this registry are blocked" in ran.err and str(conf) in ran.err
    assert fault_proxy.records == []


def test_a_push_to_a_blocked_registry_is_refused_before_any_request(fault_proxy: FaultProxy, tmp_path: Path) -> None:
    """containers/image opens no connection to a blocked name, pushes included."""
    conf = registries_conf(
        tmp_path / "registries.conf", f'[[registry]]\nlocation = "{fault_proxy.host}/team"\nblocked = true\n'
    )
    root = project(tmp_path / "p", "scratch")
    ran, _ = build(
        root, "--tls-verify=false", "--registries-conf", str(conf), "-o", f"docker://{fault_proxy.host}/team/app:1"
    )
    assert ran.code == 2, str(ran)
    assert "pushes to this registry are blocked" in ran.err and str(conf) in ran.err
    assert fault_proxy.records == []


def test_short_names_are_resolved_by_aliases_and_search_registries(
    fault_proxy: FaultProxy, other_registry: RunningRegistry, cache: Cache, tmp_path: Path
) -> None:
    searched = push_image(cache, fault_proxy.host, "app:1", b"searched\n")
    aliased = push_image(cache, fault_proxy.host, "team/aliased:1", b"aliased\n")
    conf = load(
        registries_conf(
            tmp_path / "registries.conf",
            f'unqualified-search-registries = ["{other_registry.host}", "{fault_proxy.host}"]\n'
            f'[aliases]\n"short" = "{fault_proxy.host}/team/aliased"\n'
            f'[[registry]]\nlocation = "{other_registry.host}"\ninsecure = true\n'
            f'[[registry]]\nlocation = "{fault_proxy.host}"\ninsecure = true\n',
        ),
        environ={},
    )
    options = RegistryOptions(conf=conf)
    assert read(ImageName.parse("app:1"), platform=PLATFORM, options=options).image.digest == searched
    assert read(ImageName.parse("short:1"), platform=PLATFORM, options=options).image.digest == aliased


def test_a_broken_registries_conf_is_bad_input(tmp_path: Path) -> None:
    root = project(tmp_path / "p", "scratch")
    ran, _ = build(root, "--registries-conf", str(registries_conf(tmp_path / "bad.conf", "[[registry]\n")))
    assert ran.code == 2 and f"error: {tmp_path / 'bad.conf'}: not a TOML file" in ran.err, str(ran)
