"""The registry client against the real registry (distribution 2.8) and real skopeo.

Fakes only where nothing real can run here: a fault-injecting proxy (a flaky network)
and a bearer token server, both in tests/plugins/faultproxy.py, and a clock that records
the waits between retries instead of sleeping (tests/plugins/fakeclock.py).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import requests

from assembler.archive.compress import decompressed
from assembler.archive.layer import write_layer
from assembler.archive.tar import TarEntry
from assembler.cache import Cache
from assembler.errors import DigestMismatch, InputError, NotFound, RegistryError, Unreachable
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.image import Image
from assembler.oci.reference import ImageName
from assembler.oci.validate import validate
from assembler.registry import auth, http, login
from assembler.registry.client import Registry
from assembler.registry.retry import registry_policy
from assembler.registry.types import RegistryOptions
from assembler.transports import remote
from assembler.transports.common import SourceImage
from assembler.transports.remote import push, read
from tests.plugins.fakeclock import FakeClock, streaks
from tests.plugins.faultproxy import Fault, FaultProxy
from tests.plugins.registry import RunningRegistry

EPOCH = 1700000000
PLATFORM = Platform("linux", "amd64")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_ambient_credentials(no_ambient_credentials: None) -> None:
    """Tests see only the auth files they write (tests/plugins/registry.py)."""


@pytest.fixture()
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def opts(**changes: Any) -> RegistryOptions:
    """Loopback options with quick retries."""
    return RegistryOptions(**{"tls_verify": False, "backoff": 0.05, "max_backoff": 0.5, **changes})


def _opener(data: bytes) -> Any:
    return lambda: contextlib.nullcontext(io.BytesIO(data))


def build_image(cache: Cache, layers: list[dict[str, bytes]], *, base: Image | None = None) -> Image:
    """An image with one gzip layer per dict of ``path: content``, blobs in ``cache``."""
    image = base if base is not None else mutate.scratch(PLATFORM, epoch=EPOCH)
    added = []
    for files in layers:
        members = [(TarEntry(path, "file", size=len(data)), _opener(data)) for path, data in files.items()]
        with cache.blob_writer() as out:
            blob = write_layer(members, out, compression="gzip", epoch=EPOCH)
        added.append(blob.made_by("test"))
    image = mutate.append_layers(image, added, epoch=EPOCH)
    cache.put_image(image)
    return image


def check(source: SourceImage) -> None:
    """Validate an image the hard way: every digest, size and diff_id recomputed."""

    def decompress(stream: BinaryIO, media_type: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return decompressed(stream, mt.compression_of(media_type))  # type: ignore[arg-type]

    validate(source.image, source.blobs, decompress=decompress)


def skopeo(*args: str) -> str:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"skopeo {' '.join(args)} failed:\n{done.stderr}"
    return done.stdout


def random_layer(size: int, seed: int) -> dict[str, bytes]:
    """A layer whose gzip blob is about ``size`` bytes (random data does not compress)."""
    return {f"data/blob{seed}.bin": os.urandom(size)}


# -- 1. push, then skopeo and read -------------------------------------------------------


def test_push_is_what_skopeo_and_read_see(registry: RunningRegistry, cache: Cache, tmp_path: Path) -> None:
    image = build_image(cache, [{"etc/hello": b"hello\n"}, {"app/run.sh": b"#!/bin/sh\necho hi\n"}])
    name = ImageName.parse(f"{registry.host}/demo/app:v1")
    pushed: list[int] = []
    result = push(image, name, blobs=cache, options=opts(), progress=pushed.append)
    assert result.digest == image.digest
    assert (result.stats.uploaded_blobs, result.stats.skipped_blobs, result.stats.mounted_blobs) == (3, 0, 0)
    assert sum(pushed) == result.stats.uploaded_bytes == sum(d.size for d in image.blob_descriptors())

    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}"))
    assert inspected["Digest"] == image.digest
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"], capture_output=True, check=True
    ).stdout
    assert raw == image.manifest_bytes  # exact bytes, not re-serialised

    layout = tmp_path / "copied"
    skopeo("copy", "--src-tls-verify=false", f"docker://{name}", f"oci:{layout}:v1")
    index = json.loads((layout / "index.json").read_bytes())
    assert [m["digest"] for m in index["manifests"]] == [image.digest]

    for ref in (name, name.with_reference(image.digest)):
        source = read(ref, platform=PLATFORM, options=opts())
        assert source.image.manifest_bytes == image.manifest_bytes
        assert source.image.config_bytes == image.config_bytes
        assert source.blobs.blob_file(image.layers[0].digest) is None
        check(source)


def test_tls_verify_true_on_a_plain_http_registry_says_what_to_do(registry: RunningRegistry) -> None:
    with Registry(registry.host, options=RegistryOptions(retries=1)) as reg, pytest.raises(RegistryError) as failed:
        reg.has_blob("any", "sha256:" + "0" * 64)
    assert registry.host in str(failed.value) and "TLS" in str(failed.value)
    assert failed.value.hint is not None and "--tls-verify=false" in failed.value.hint


def test_read_follows_an_index_to_the_platform(registry: RunningRegistry, cache: Cache) -> None:
    image = build_image(cache, [{"a": b"amd64\n"}])
    repo = "multi/app"
    push(image, ImageName.parse(f"{registry.host}/{repo}:amd64"), blobs=cache, options=opts())
    entry = Descriptor(image.media_type, image.digest, len(image.manifest_bytes), platform=PLATFORM)
    index = canonical_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry.to_json()]})
    with Registry(registry.host, options=opts()) as reg:
        assert reg.put_manifest(repo, "v1", index, mt.OCI_INDEX) == sha256_digest(index)
        assert reg.fetch_manifest(repo, "v1") == (index, mt.OCI_INDEX)
    source = read(ImageName.parse(f"{registry.host}/{repo}:v1"), platform=PLATFORM, options=opts())
    assert source.image.digest == image.digest
    assert source.index_digest == sha256_digest(index)
    check(source)
    with pytest.raises(NotFound, match="linux/arm64"):
        read(ImageName.parse(f"{registry.host}/{repo}:v1"), platform=Platform("linux", "arm64"), options=opts())
    with pytest.raises(NotFound, match="manifest unknown"):
        read(ImageName.parse(f"{registry.host}/{repo}:nope"), platform=PLATFORM, options=opts())


def test_downloads_are_verified(registry: RunningRegistry, cache: Cache) -> None:
    image = build_image(cache, [{"f": b"x" * 1000}])
    push(image, ImageName.parse(f"{registry.host}/verify:v1"), blobs=cache, options=opts())
    layer = image.layers[0]
    hexpart = layer.digest.split(":", 1)[1]
    stored = registry.root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only a digest check notices
    stored.write_bytes(bytes(data))
    with (
        Registry(registry.host, options=opts()) as reg,
        reg.open_blob("verify", layer.digest) as blob,
        pytest.raises(DigestMismatch, match=layer.digest),
    ):
        blob.read()
    with Registry(registry.host, options=opts()) as reg, pytest.raises(InputError, match="hashes to"):
        reg.put_manifest("verify", "sha256:" + "0" * 64, image.manifest_bytes, image.media_type)


class _Short:
    """A blob reader whose streams end before the descriptor's size (and have no file)."""

    def open_blob(self, digest: str) -> BinaryIO:
        return io.BytesIO(b"only this")

    def blob_file(self, digest: str) -> Path | None:
        return None


@pytest.mark.parametrize("monolithic_max", [1 << 20, 16], ids=["put", "patch"])
def test_a_short_local_blob_fails_at_once(registry: RunningRegistry, monolithic_max: int) -> None:
    desc = Descriptor(mt.OCI_LAYER, "sha256:" + "1" * 64, 100)
    started = time.monotonic()
    options = opts(monolithic_max=monolithic_max, chunk_size=64)
    with Registry(registry.host, options=options) as reg, pytest.raises(DigestMismatch, match="ended early"):
        reg.push_blob("short", desc, _Short())
    assert time.monotonic() - started < 10, "a Content-Length we cannot honour must not wait for a timeout"


# -- 2. basic auth -----------------------------------------------------------------------


def test_basic_auth_with_registry_auth_file(
    auth_registry: RunningRegistry, cache: Cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = build_image(cache, [{"secret": b"s3cr3t\n"}])
    name = ImageName.parse(f"{auth_registry.host}/private/app:v1")

    started = time.monotonic()
    with pytest.raises(RegistryError) as failed:
        push(image, name, blobs=cache, options=opts())
    assert time.monotonic() - started < 10, "a Basic challenge must be answered at once, not retried"
    assert failed.value.status == 401
    assert failed.value.registry == auth_registry.host
    assert auth_registry.host in str(failed.value) and "401" in str(failed.value)
    assert failed.value.hint is not None and "login" in failed.value.hint

    assert auth_registry.auth_file is not None
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_registry.auth_file))
    assert push(image, name, blobs=cache, options=opts()).digest == image.digest
    check(read(name, platform=PLATFORM, options=opts()))

    wrong = auth_registry.auth_file.with_name("wrong.json")
    wrong.write_text(json.dumps({"auths": {auth_registry.host: {"username": "user", "password": "nope"}}}))
    with pytest.raises(RegistryError) as refused:
        read(name, platform=PLATFORM, options=opts(auth_file=wrong))
    assert refused.value.status == 401 and str(wrong) in (refused.value.hint or "")


def test_credentials_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = "reg.example:5000"

    def auth_file(path: Path, user: str, key: str = host) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        encoded = base64.b64encode(f"{user}:pw-{user}".encode()).decode()
        path.write_text(json.dumps({"auths": {key: {"auth": encoded}, "other.example": {"auth": "eDp5"}}}))
        return path

    home = Path(os.environ["HOME"])
    files = [
        ("explicit", tmp_path / "explicit.json", None),
        ("env", tmp_path / "env.json", "REGISTRY_AUTH_FILE"),
        ("runtime", tmp_path / "run/containers/auth.json", "XDG_RUNTIME_DIR"),
        ("config", home / ".config/containers/auth.json", None),
        ("dockerenv", tmp_path / "dockercfg/config.json", "DOCKER_CONFIG"),
        ("docker", home / ".docker/config.json", None),
    ]
    env_values = {
        "REGISTRY_AUTH_FILE": str(tmp_path / "env.json"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "DOCKER_CONFIG": str(tmp_path / "dockercfg"),
    }
    for name, value in env_values.items():
        monkeypatch.setenv(name, value)
    # Most specific first: remove each winner in turn and the next in line must answer.
    for user, path, _ in files:
        key = f"https://{host}/v1/" if user == "docker" else host  # keys may carry scheme and path
        auth_file(path, user, key)
    for i, (user, path, _) in enumerate(files):
        explicit = files[0][1] if i == 0 else None
        creds = login.find_credentials(host, auth_file=explicit)
        assert creds is not None and (creds.username, creds.password, creds.source) == (user, f"pw-{user}", path)
        path.unlink()
    assert login.find_credentials(host, auth_file=None) is None
    auth_file(tmp_path / "localhost.json", "local", "localhost:5000")
    creds = login.find_credentials("127.0.0.1:5000", auth_file=tmp_path / "localhost.json")
    assert creds is not None and creds.basic() == "Basic " + base64.b64encode(b"local:pw-local").decode()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.json"):
        login.find_credentials(host, auth_file=tmp_path / "bad.json")


def test_challenge_parsing() -> None:
    header = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    [bearer] = auth.parse_challenges(header)
    assert bearer.scheme == "bearer" and bearer.realm == "https://auth.example/token" and bearer.service == "reg"
    assert bearer.params["scope"] == "repository:a/b:pull,push"
    basic = auth.pick_challenge('Basic realm="Registry Realm"')
    assert basic is not None and (basic.scheme, basic.realm) == ("basic", "Registry Realm")
    both = auth.pick_challenge('Basic realm="x", Bearer realm="https://t/token",service=s')
    assert both is not None and both.scheme == "bearer" and both.service == "s"
    assert auth.pick_challenge('Negotiate abc=="') is None


def test_tokens_are_cached_per_scope_until_they_expire() -> None:
    now = [1000.0]
    tokens = auth.TokenCache(clock=lambda: now[0])
    pull = auth.scopes_of(auth.pull_scope("a"))
    push_ = auth.scopes_of(auth.push_scope("a"), auth.pull_scope("b"))
    assert push_ == auth.scopes_of(auth.pull_scope("b"), auth.push_scope("a"))
    assert tokens.put(pull, {"access_token": "p", "expires_in": 300}) == "p"
    assert tokens.get(pull) == "p" and tokens.get(push_) is None
    assert tokens.put(push_, ["not", "a", "token"]) is None
    now[0] += 295  # within the refresh margin of its 300 s
    assert tokens.get(pull) is None


def test_retry_after_parsing() -> None:
    def answer(value: str) -> requests.Response:
        response = requests.Response()
        response.headers["Retry-After"] = value
        return response

    assert http.retry_after(answer("3"), 60) == 3.0
    assert http.retry_after(answer("3600"), 60) == 60.0  # capped
    assert http.retry_after(answer("soon"), 60) is None
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    delay = http.retry_after(answer(when), 60)
    assert delay is not None and 25 <= delay <= 30
    assert http.retry_after(requests.Response(), 60) is None


# -- 3. a second push uploads nothing ----------------------------------------------------


def test_second_push_uploads_no_blob(fault_proxy: FaultProxy, cache: Cache) -> None:
    image = build_image(cache, [random_layer(100_000, 1), random_layer(50_000, 2)])
    name = ImageName.parse(f"{fault_proxy.host}/again/app:v1")
    first = push(image, name, blobs=cache, options=opts())
    assert first.stats.uploaded_blobs == 3
    assert fault_proxy.blob_upload_bytes() >= sum(d.size for d in image.blob_descriptors())

    fault_proxy.clear()
    second = push(image, name, blobs=cache, options=opts())
    assert second.digest == first.digest == image.digest
    assert (second.stats.uploaded_blobs, second.stats.uploaded_bytes, second.stats.mounted_blobs) == (0, 0, 0)
    assert second.stats.skipped_blobs == 3
    assert fault_proxy.blob_uploads() == []
    assert fault_proxy.blob_upload_bytes() == 0
    # The registry holds these manifest bytes under the tag: one HEAD, no blob asked for.
    assert [(r.method, r.path.split("/v2/", 1)[-1]) for r in fault_proxy.records if r.path != "/v2/"] == [
        ("HEAD", "again/app/manifests/v1")
    ]
    # The tag moved elsewhere meanwhile: every blob is asked for again, and the tag put back.
    other = build_image(cache, [random_layer(10_000, 3)])
    push(other, name, blobs=cache, options=opts())
    fault_proxy.clear()
    third = push(image, name, blobs=cache, options=opts())
    assert third.digest == image.digest and third.stats.uploaded_blobs == 0
    heads = [r for r in fault_proxy.records if r.method == "HEAD" and "/blobs/" in r.path]
    assert len(heads) == 3
    assert [r.method for r in fault_proxy.records if "/manifests/" in r.path] == ["HEAD", "PUT"]


def test_a_registry_that_refuses_a_manifest_head_is_pushed_to_blob_by_blob(
    fault_proxy: FaultProxy, cache: Cache
) -> None:
    """The one HEAD that finds an image already pushed is an optimisation: a registry that
    refuses it (405) gets the push every registry got before, blob by blob."""
    fault_proxy.add(Fault("status", method="HEAD", path="/manifests/", status=405, times=None))
    image = build_image(cache, [random_layer(20_000, 1)])
    name = ImageName.parse(f"{fault_proxy.host}/refuses/app:v1")
    first = push(image, name, blobs=cache, options=opts())
    again = push(image, name, blobs=cache, options=opts())
    assert first.digest == again.digest == image.digest
    assert (first.stats.uploaded_blobs, again.stats.uploaded_blobs, again.stats.skipped_blobs) == (2, 0, 2)


# -- 4. cross-repository mounts ----------------------------------------------------------


def test_push_mounts_base_layers_from_another_repo(registry: RunningRegistry, cache: Cache) -> None:
    base = build_image(cache, [random_layer(30_000, 1), random_layer(20_000, 2)])
    base_name = ImageName.parse(f"{registry.host}/team/base:1")
    push(base, base_name, blobs=cache, options=opts())

    app = build_image(cache, [{"app/main.py": b"print('hi')\n"}], base=base)
    app_name = ImageName.parse(f"{registry.host}/team/app:1")
    other_registry = ImageName.parse("elsewhere.example/team/base:1")  # ignored: another registry
    result = push(app, app_name, blobs=cache, options=opts(), mount_from=[other_registry, base_name])
    assert result.stats.mounted_blobs == len(base.layers) == 2
    assert result.stats.uploaded_blobs == 2  # the new layer and the new config
    assert result.stats.uploaded_bytes == app.layers[-1].size + app.config_descriptor.size
    check(read(app_name, platform=PLATFORM, options=opts()))
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{app_name}"))["Digest"] == app.digest


def test_mount_answered_202_continues_the_upload(registry: RunningRegistry, cache: Cache) -> None:
    image = build_image(cache, [random_layer(10_000, 3)])
    name = ImageName.parse(f"{registry.host}/solo/app:1")
    # The "from" repository does not have the blobs: the registry starts an upload instead.
    result = push(image, name, blobs=cache, options=opts(), mount_from=[ImageName.parse(f"{registry.host}/empty:1")])
    assert (result.stats.mounted_blobs, result.stats.uploaded_blobs) == (0, 2)
    check(read(name, platform=PLATFORM, options=opts()))


# -- 5. faults ---------------------------------------------------------------------------

FAULTS = {
    "drop-mid-put": dict(faults=[Fault("drop", method="PUT", path="/blobs/uploads/", after_bytes=40_000)]),
    "drop-mid-patch": dict(
        faults=[Fault("drop", method="PATCH", after_bytes=5_000, skip=2)],
        options=dict(monolithic_max=64 << 10, chunk_size=32 << 10),
    ),
    "500-manifest": dict(faults=[Fault("status", method="PUT", path="/manifests/", status=500, times=2)]),
    "503-head": dict(faults=[Fault("status", method="HEAD", status=503, times=3)]),
    "502-504-post": dict(
        faults=[Fault("status", method="POST", status=502), Fault("status", method="POST", status=504)]
    ),
    "429-retry-after": dict(faults=[Fault("status", method="POST", status=429, retry_after="7")], waits=[7.0]),
    "patch-refused": dict(
        faults=[Fault("status", method="PATCH", status=405, times=None)],
        options=dict(monolithic_max=64 << 10, chunk_size=32 << 10),
    ),
}


@pytest.mark.parametrize("case", sorted(FAULTS))
def test_push_survives_faults(case: str, fault_proxy: FaultProxy, registry: RunningRegistry, cache: Cache) -> None:
    spec: dict[str, Any] = FAULTS[case]
    faults = [fault_proxy.add(f) for f in spec["faults"]]
    image = build_image(cache, [random_layer(200_000, 1), {"small": b"small\n"}])
    name = ImageName.parse(f"{fault_proxy.host}/faults/{case}:v1")
    clock = FakeClock()
    options = opts(**spec.get("options", {}))
    result = push(image, name, blobs=cache, options=options, clock=clock)
    assert result.digest == image.digest
    assert all(f.hits >= 1 for f in faults), [(f.action, f.method, f.hits) for f in faults]
    if "waits" in spec:
        assert clock.waits == spec["waits"], "Retry-After must be honoured"
    else:
        streaks(clock.waits, registry_policy(options))  # the backoff schedule
    # Read back from the registry itself, not through the proxy.
    check(read(ImageName.parse(f"{registry.host}/faults/{case}:v1"), platform=PLATFORM, options=opts()))
    if case == "patch-refused":
        patches = [r for r in fault_proxy.records if r.method == "PATCH"]
        assert len(patches) == 1, "PATCH is not tried again once refused"


def test_ten_pushes_survive_a_30_percent_fault_rate_with_default_settings(
    fault_proxy: FaultProxy, registry: RunningRegistry, cache: Cache
) -> None:
    # Three requests in ten fail, at random: 20% get a 503, 12.5% of the others are cut
    # (RST) before any answer. The default retry budget must carry every push through.
    faults = [
        fault_proxy.add(Fault("status", status=503, times=None, rate=0.2, seed=9)),
        fault_proxy.add(Fault("drop", times=None, rate=0.125, seed=10)),
    ]
    layers = [random_layer(200_000, 1), *({f"f{i}": f"{i}\n".encode()} for i in range(5))]
    image = build_image(cache, layers)
    options = RegistryOptions(tls_verify=False)  # the defaults, loopback aside
    clock = FakeClock()
    for i in range(10):
        name = ImageName.parse(f"{fault_proxy.host}/flaky/app{i}:v1")
        result = push(image, name, blobs=cache, options=options, clock=clock)
        assert result.digest == image.digest
    failed = sum(f.hits for f in faults)
    assert 0.2 < failed / len(fault_proxy.records) < 0.4, (failed, len(fault_proxy.records))
    # One wait per failure, each the default schedule's next (progress starts it over),
    # and no run of failures near the budget of 10.
    runs = streaks(clock.waits, registry_policy(options))
    assert len(clock.waits) == failed and max(runs) < options.retries - 2, runs
    for i in range(10):
        check(read(ImageName.parse(f"{registry.host}/flaky/app{i}:v1"), platform=PLATFORM, options=opts()))


@pytest.mark.parametrize("down", ["503", "refused"])
def test_a_dead_registry_fails_in_bounded_time_with_default_settings(
    down: str, fault_proxy: FaultProxy, cache: Cache
) -> None:
    if down == "503":
        fault_proxy.add(Fault("status", status=503, times=None))
        host = fault_proxy.host
    else:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            host = f"127.0.0.1:{s.getsockname()[1]}"
    image = build_image(cache, [{"x": b"x\n"}])
    clock = FakeClock()
    options = RegistryOptions(tls_verify=False)
    started = time.monotonic()
    with pytest.raises(RegistryError) as failed:
        push(image, ImageName.parse(f"{host}/down/app:v1"), blobs=cache, options=options, clock=clock)
    assert time.monotonic() - started < 5, "no wait but the clock's"
    if down == "503":
        assert f"after {RegistryOptions.retries} tries" in str(failed.value)
        # The default schedule: reported after about 14 s of waiting.
        assert clock.waits == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0] == registry_policy(options).schedule()
    else:  # a host that never answered and refuses: not retried like a 5xx (tests/test_unreachable.py)
        assert isinstance(failed.value, Unreachable)
        assert f"cannot reach {host} (connection refused, 3 tries)" in str(failed.value)
        assert clock.waits == [0.25, 0.5]


def test_push_gives_up_in_bounded_time(fault_proxy: FaultProxy, cache: Cache) -> None:
    fault_proxy.add(Fault("status", method="POST", path="/blobs/uploads/", status=503, times=None))
    image = build_image(cache, [{"x": b"x\n"}])
    name = ImageName.parse(f"{fault_proxy.host}/down/app:v1")
    started = time.monotonic()
    with pytest.raises(RegistryError) as failed:
        push(image, name, blobs=cache, options=opts(retries=3))
    assert time.monotonic() - started < 30
    message = str(failed.value)
    assert failed.value.status == 503 and failed.value.registry == fault_proxy.host
    assert f"{fault_proxy.host}/down/app" in message
    assert image.layers[0].digest in message
    assert "503 Service Unavailable" in message and "after 3 tries" in message
    assert message.startswith("layer 1/1: pushing blob")
    posts = [r for r in fault_proxy.records if r.method == "POST"]
    assert len(posts) == 3


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_downloads_retry_and_resume(
    ranges: bool, fault_proxy: FaultProxy, registry: RunningRegistry, cache: Cache
) -> None:
    image = build_image(cache, [random_layer(6_000_000, 7)])
    push(image, ImageName.parse(f"{registry.host}/dl/app:v1"), blobs=cache, options=opts())
    layer = image.layers[0]
    blob_path = f"/blobs/{layer.digest}"
    # A 503 when the download starts, then the body cut twice: the reader retries, then resumes.
    fault_proxy.add(Fault("status", method="GET", path=blob_path, status=503))
    fault_proxy.add(Fault("cut", method="GET", path=blob_path, after_bytes=2_200_000, times=2))
    fault_proxy.ignore_range = not ranges  # then the reader skips what it already has
    clock = FakeClock()
    with (
        Registry(fault_proxy.host, options=RegistryOptions(tls_verify=False), clock=clock) as reg,
        reg.open_blob("dl/app", layer.digest) as blob,
    ):
        data = blob.read()
    assert sha256_digest(data) == layer.digest
    # With Range each cut comes after new bytes: progress, the first wait again. Without, the
    # second cut comes at the same byte as the first: no progress, the schedule's next wait.
    assert clock.waits == ([0.25, 0.25, 0.25] if ranges else [0.25, 0.25, 0.5])
    gets = [r for r in fault_proxy.records if r.method == "GET" and blob_path in r.path]
    assert [r.status for r in gets] == ([503, 200, 206, 206] if ranges else [503, 200, 200, 200])
    assert gets[1].range == "" and gets[2].range.startswith("bytes=")  # asked from where it stopped
    if ranges:
        assert int(gets[3].range[6:-1]) > int(gets[2].range[6:-1])  # progress kept across the second cut
    assert reg.stats.downloaded_bytes == layer.size


# -- 6. bearer tokens --------------------------------------------------------------------


def _bearer_auth_file(tmp_path: Path, host: str, password: str = "pass") -> Path:
    path = tmp_path / "bearer-auth.json"
    path.write_text(json.dumps({"auths": {f"http://{host}": {"username": "user", "password": password}}}))
    return path


def test_bearer_tokens_have_the_scope_each_request_needs(
    fault_proxy: FaultProxy, registry: RunningRegistry, cache: Cache, tmp_path: Path
) -> None:
    bearer = fault_proxy.enable_bearer("user", "pass")
    options = opts(auth_file=_bearer_auth_file(tmp_path, fault_proxy.host))
    base = build_image(cache, [random_layer(5_000, 1)])
    app = build_image(cache, [{"app": b"app\n"}], base=base)

    # One client for everything: pull first, then push. A client that caches one token
    # would present the pull token for the push (oras-py does).
    with Registry(fault_proxy.host, options=options) as reg:
        assert not reg.has_blob("app", base.layers[0].digest)
        for desc in (*base.layers, base.config_descriptor):
            assert reg.push_blob("base", desc, cache) == "uploaded"
        reg.put_manifest("base", "1", base.manifest_bytes, base.media_type)
        assert reg.push_blob("app", base.layers[0], cache, mount_from=["base"]) == "mounted"
        assert reg.fetch_manifest("base", "1")[0] == base.manifest_bytes

    assert bearer.violations == []
    scopes = [s for _, s in bearer.token_requests]
    assert all(user == "user" for user, _ in bearer.token_requests)
    assert scopes[0] == ("repository:app:pull",)
    assert ("repository:base:pull,push",) in scopes
    assert ("repository:app:pull,push", "repository:base:pull") in scopes
    assert ("repository:base:pull",) in scopes
    assert len(scopes) == len(set(scopes)), "tokens are cached per scope"

    result = push(app, ImageName.parse(f"{fault_proxy.host}/app:1"), blobs=cache, options=options)
    assert result.stats.skipped_blobs == 1 and bearer.violations == []
    check(read(ImageName.parse(f"{fault_proxy.host}/app:1"), platform=PLATFORM, options=options))
    assert bearer.violations == []


def test_bearer_anonymous_and_refused(fault_proxy: FaultProxy, cache: Cache, tmp_path: Path) -> None:
    image = build_image(cache, [{"pub": b"public\n"}])
    bearer = fault_proxy.enable_bearer()  # anonymous tokens for anyone
    name = ImageName.parse(f"{fault_proxy.host}/public/app:1")
    push(image, name, blobs=cache, options=opts())
    check(read(name, platform=PLATFORM, options=opts()))
    assert bearer.violations == [] and all(user is None for user, _ in bearer.token_requests)

    fault_proxy.enable_bearer("user", "pass")
    with pytest.raises(RegistryError) as refused:
        read(name, platform=PLATFORM, options=opts(auth_file=_bearer_auth_file(tmp_path, fault_proxy.host, "bad")))
    assert refused.value.status == 401 and "token server" in str(refused.value)


# -- 7. big blobs stream -----------------------------------------------------------------

_PUSH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from assembler.oci.descriptor import Descriptor
    from assembler.registry.client import Registry
    from assembler.registry.types import RegistryOptions

    host, repo, path, digest, size, monolithic_max = sys.argv[1:]

    class OneFile:
        def open_blob(self, d):
            return open(path, "rb")
        def blob_file(self, d):
            return Path(path)

    options = RegistryOptions(tls_verify=False, monolithic_max=int(monolithic_max))
    reg = Registry(host, options=options)
    desc = Descriptor("application/vnd.oci.image.layer.v1.tar", digest, int(size))
    outcome = reg.push_blob(repo, desc, OneFile())
    print(json.dumps({"outcome": outcome, "requests": reg.stats.requests, "bytes": reg.stats.uploaded_bytes}))
    """
)


@pytest.mark.slow
def test_big_blob_push_keeps_memory_flat(registry: RunningRegistry, tmp_path: Path) -> None:
    size = (1 << 30) + 12345  # over 1 GiB, not a multiple of the chunk size
    path = tmp_path / "big.bin"
    sha = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 << 20))
            sha.update(block)
            f.write(block)
            left -= len(block)
    digest = "sha256:" + sha.hexdigest()

    for mode, monolithic_max in (("chunked", 32 << 20), ("monolithic", 4 << 30)):
        argv = [sys.executable, "-c", _PUSH_SCRIPT, registry.host, f"big/{mode}", str(path), digest, str(size)]
        stdout, exit_code, peak_kib = _run_measured([*argv, str(monolithic_max)], tmp_path / f"{mode}.stderr")
        assert exit_code == 0, (tmp_path / f"{mode}.stderr").read_text()
        peak_mib = peak_kib / 1024
        report = json.loads(stdout)
        print(f"\n{mode} push of {size} bytes: peak RSS {peak_mib:.0f} MiB, {report['requests']} requests")
        assert report["outcome"] == "uploaded" and report["bytes"] == size
        assert peak_mib < 300, f"{mode} upload is not streamed: peak RSS {peak_mib:.0f} MiB"
        if mode == "chunked":
            assert report["requests"] >= size // (32 << 20)  # PATCHes of at most chunk_size
        with Registry(registry.host, options=opts()) as reg:
            assert reg.has_blob(f"big/{mode}", digest)
    hexpart = digest.split(":", 1)[1]
    stored = registry.root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    assert stored.stat().st_size == size


_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(proc.pid, 0)
sys.stderr.write("\\nPEAK_RSS_KIB=%d\\n" % usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(argv: list[str], stderr_path: Path) -> tuple[bytes, int, int]:
    """Run ``argv``; its stdout, exit code and its own peak RSS in KiB (from wait4).

    Linux keeps a process's peak RSS across exec, and a child forked from this (large)
    pytest process starts with its pages: a small fresh interpreter does the fork.
    """
    with open(stderr_path, "wb") as err:
        proc = subprocess.run([sys.executable, "-c", _MEASURE, *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
    text = stderr_path.read_text(errors="replace")
    peak = int(text.rsplit("PEAK_RSS_KIB=", 1)[1].split()[0])
    return proc.stdout, proc.returncode, peak


# -- 8. the client's own helpers (no oras-py: ARCHITECTURE.md says why) --------------------


def test_params_join_the_registrys_own_query_as_it_sent_it() -> None:
    """An upload's ``Location`` goes back with its own parameters byte for byte (a blank
    one too, which oras-py's ``append_url_params`` dropped), ours added or replacing."""
    client = http.RegistryClient("127.0.0.1:5000", options=opts())
    assert client.url("/v2/r/blobs/uploads/") == "http://127.0.0.1:5000/v2/r/blobs/uploads/"
    location = "/v2/r/blobs/uploads/u1?_state=a%2Bb%3D%3D&empty=&digest=sha256%3Aold"
    assert client.url(location, digest="sha256:new") == (
        "http://127.0.0.1:5000/v2/r/blobs/uploads/u1?_state=a%2Bb%3D%3D&empty=&digest=sha256%3Anew"
    )
    assert client.url("https://other.example/up?x=1", mount="sha256:d", **{"from": "a/b"}) == (
        "https://other.example/up?x=1&mount=sha256%3Ad&from=a%2Fb"
    )


def test_login_names_and_basic_auth() -> None:
    """The loopback host's two names stand for each other only as the whole host name
    (oras-py's ``iter_localhosts`` swapped substrings); basic auth is base64 of
    ``user:secret`` in UTF-8."""
    assert login.host_names("localhost:5000") == ("localhost:5000", "127.0.0.1:5000")
    assert login.host_names("127.0.0.1") == ("127.0.0.1", "localhost")
    assert login.host_names("mylocalhost.example:5000") == ("mylocalhost.example:5000",)
    assert login.host_names("10.127.0.0.1.example") == ("10.127.0.0.1.example",)
    assert login.host_names("Index.Docker.IO") == ("docker.io", "index.docker.io", "registry-1.docker.io")
    assert login.basic_auth("u", "p:ß") == base64.b64encode("u:p:ß".encode()).decode()
    creds = login.Credentials("u", "p", Path("auth.json"))
    assert creds.basic() == "Basic " + base64.b64encode(b"u:p").decode()


def test_the_session_refuses_cookies(registry: RunningRegistry) -> None:
    """As oras's does: Harbor takes a client that keeps cookies for a browser."""
    with Registry(registry.host, options=opts()) as reg:
        assert reg.session.cookies._policy.allowed_domains() == ()  # type: ignore[attr-defined]
        reg.renew_session()
        assert reg.session.cookies._policy.allowed_domains() == ()  # type: ignore[attr-defined]


def test_manifest_bytes_go_up_as_they_are(registry: RunningRegistry, cache: Cache) -> None:
    image = build_image(cache, [{"a": b"a\n"}])
    spaced = json.dumps(json.loads(image.manifest_bytes), indent=3).encode()  # not canonical: must stay so
    push(image, ImageName.parse(f"{registry.host}/exact:v0"), blobs=cache, options=opts())
    with Registry(registry.host, options=opts()) as reg:
        answer = reg.put_manifest_bytes("exact", "v1", spaced, image.media_type)
        assert answer.headers["Docker-Content-Digest"] == sha256_digest(spaced)
        assert reg.fetch_manifest("exact", "v1") == (spaced, image.media_type)


def test_only_the_registry_client_imports_requests_and_nothing_imports_oras() -> None:
    """requests has one owner; oras-py is no dependency (a venv made before may still hold it)."""
    for path in sorted((ROOT / "assembler").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from) oras\b", text, re.MULTILINE), f"{path} imports oras"
        imports = "import requests" in text or "from requests" in text
        # requests also in the one downloader of pinned files (url: sources and layers, wheels): not a registry.
        ok = path.parent.name == "registry" or path.relative_to(path.parents[1]).as_posix() == "fetch/pinned.py"
        assert not imports or ok, f"{path} imports requests"
    assert "oras" not in (ROOT / "pyproject.toml").read_text().split("[project.optional-dependencies]")[0]


# -- 9. referrers ------------------------------------------------------------------------


def _referrer(cache: Cache, subject: Image, artifact_type: str, payload: bytes) -> tuple[bytes, list[Descriptor]]:
    empty = cache.put_bytes(b"{}")
    blob = cache.put_bytes(payload)
    config = Descriptor(mt.OCI_EMPTY, empty, 2)
    layer = Descriptor("application/octet-stream", blob, len(payload))
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config.to_json(),
            "layers": [layer.to_json()],
            "subject": subject.descriptor.to_json(),
            "annotations": {mt.ANNOTATION_CREATED: "2023-11-14T22:13:20Z"},
        }
    )
    return manifest, [config, layer]


def test_referrers_through_the_tag_schema_fallback(registry: RunningRegistry, cache: Cache) -> None:
    image = build_image(cache, [{"x": b"x\n"}])
    repo = "signed/app"
    push(image, ImageName.parse(f"{registry.host}/{repo}:v1"), blobs=cache, options=opts())
    with Registry(registry.host, options=opts()) as reg:
        assert reg.list_referrers(repo, image.digest) == []
        digests = []
        for artifact_type, payload in (
            ("application/vnd.example.sig", b"sig"),
            ("application/vnd.example.sbom", b"{}"),
        ):
            manifest, blobs = _referrer(cache, image, artifact_type, payload)
            for desc in blobs:
                reg.push_blob(repo, desc, cache)
            digests.append(reg.put_referrer(repo, manifest, mt.OCI_MANIFEST, image.descriptor))
            assert digests[-1] == sha256_digest(manifest)
        again = reg.put_referrer(
            repo, _referrer(cache, image, "application/vnd.example.sig", b"sig")[0], mt.OCI_MANIFEST, image.descriptor
        )
        assert again == digests[0]

        found = reg.list_referrers(repo, image.digest)
        assert [d.digest for d in found] == digests
        assert found[0].artifact_type == "application/vnd.example.sig"
        assert found[0].annotations == {mt.ANNOTATION_CREATED: "2023-11-14T22:13:20Z"}
        sboms = reg.list_referrers(repo, image.digest, "application/vnd.example.sbom")
        assert [d.digest for d in sboms] == digests[1:]
        fallback, media_type = reg.fetch_manifest(repo, "sha256-" + image.digest.split(":", 1)[1])
        assert media_type == mt.OCI_INDEX and len(json.loads(fallback)["manifests"]) == 2

        other = build_image(cache, [{"y": b"y\n"}])
        with pytest.raises(InputError, match="subject"):
            reg.put_referrer(repo, _referrer(cache, image, "a/b", b"z")[0], mt.OCI_MANIFEST, other.descriptor)


def test_public_api_names() -> None:
    assert set(remote.__all__) >= {"PushResult", "read", "push"}
    assert RegistryOptions().chunk_size == 32 << 20 and RegistryOptions().retries == 10


def test_referrers_pushed_again_are_asked_for_and_left_as_they_are(fault_proxy: FaultProxy, cache: Cache) -> None:
    """An SBOM and a provenance pushed with the same image again: each manifest is asked
    for (HEAD) and the referrers listed once; no blob, no PUT, the fallback index unchanged.
    One the registry does not list yet is pushed as before."""
    from assembler.oci.artifact import Artifact
    from assembler.transports.referrers import push_referrers

    image = build_image(cache, [random_layer(10_000, 1)])
    name = ImageName.parse(f"{fault_proxy.host}/again/refs:v1")
    push(image, name, blobs=cache, options=opts())
    sbom = Artifact("application/spdx+json", b'{"spdx": 1}', "sbom.spdx.json", image.descriptor)
    prov = Artifact("application/vnd.in-toto+json", b'{"prov": 1}', "prov.json", image.descriptor)
    assert push_referrers(name, [sbom, prov], options=opts()) == [sbom.digest, prov.digest]

    fault_proxy.clear()
    assert push_referrers(name, [sbom, prov], options=opts()) == [sbom.digest, prov.digest]
    asked = [(r.method, r.path.rsplit("/", 2)[-2]) for r in fault_proxy.records if r.path != "/v2/"]
    assert asked == [("HEAD", "manifests"), ("GET", "referrers"), ("GET", "manifests"), ("HEAD", "manifests")]

    fault_proxy.clear()
    sig = Artifact("application/vnd.example.sig", b"sig", "sig", image.descriptor)
    assert push_referrers(name, [sbom, sig], options=opts()) == [sbom.digest, sig.digest]
    assert any(r.method == "PUT" and r.path.endswith(sig.digest) for r in fault_proxy.records)
    with Registry(fault_proxy.host, options=opts()) as reg:
        listed = {d.digest for d in reg.list_referrers("again/refs", image.digest)}
    assert listed == {sbom.digest, prov.digest, sig.digest}
