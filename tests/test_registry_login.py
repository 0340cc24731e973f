"""Logins the way Docker and cloud registries hand them out: credential helpers
(``credHelpers``, ``credsStore``) and identity tokens, against the real registry with
htpasswd auth, and against the fake token server (tests/plugins/faultproxy.py) for the
OAuth2 refresh-token exchange the real registry does not do.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import pytest

from assembler.cache import Cache
from assembler.errors import RegistryError
from assembler.oci import mediatypes as mt
from assembler.oci.digest import sha256_digest
from assembler.oci.reference import ImageName
from assembler.proc import Runner
from assembler.registry import login
from assembler.registry.client import Registry
from assembler.transports.hpc.sif_publish import push_sif
from assembler.transports.remote import push, read
from tests.plugins.faultproxy import FaultProxy
from tests.plugins.registry import RunningRegistry
from tests.test_remote import PLATFORM, build_image, check, opts

_HELPER = """#!{python}
import json, os, sys
host = sys.stdin.read().strip()
with open({log!r}, "a") as log:
    log.write(host + " " + os.environ.get("ASMTEST_VIA", "-") + "\\n")
answers = json.load(open({answers!r}))
if host not in answers:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": host, **answers[host]}}))
"""


class Helper:
    """``docker-credential-asmtest`` on PATH, answering from a JSON file, logging each call."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answers = tmp_path / "helper-answers.json"
        self.log = tmp_path / "helper.log"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        script = bin_dir / "docker-credential-asmtest"
        script.write_text(_HELPER.format(python=sys.executable, log=str(self.log), answers=str(self.answers)))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        self.answer({})

    def answer(self, answers: dict[str, dict[str, str]]) -> None:
        self.answers.write_text(json.dumps(answers))

    def calls(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def runners(self) -> list[str]:
        """What the helper saw of ``ASMTEST_VIA``: a Runner's env reaches it."""
        return [line.split()[1] for line in self.log.read_text().splitlines()] if self.log.exists() else []


@pytest.fixture(autouse=True)
def _no_ambient_credentials(no_ambient_credentials: None) -> None:
    """Tests see only the auth files they write (tests/plugins/registry.py)."""


@pytest.fixture()
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Helper:
    return Helper(tmp_path, monkeypatch)


@pytest.fixture()
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache")


def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, object]) -> Path:
    folder = tmp_path / "docker-config"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder / "config.json"


def test_credential_helper_login_pushes_to_htpasswd_registry(
    auth_registry: RunningRegistry, helper: Helper, cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = auth_registry.host
    image = build_image(cache, [{"secret": b"helper\n"}])
    name = ImageName.parse(f"{host}/private/app:v1")
    docker_config(tmp_path, monkeypatch, {"credHelpers": {host: "asmtest"}})

    helper.answer({host: {"Username": "user", "Secret": "wrong"}})
    with pytest.raises(RegistryError) as refused:
        push(image, name, blobs=cache, options=opts())
    assert refused.value.status == 401 and "docker-credential-asmtest" in (refused.value.hint or "")

    helper.answer({host: {"Username": "user", "Secret": "pass"}})
    assert push(image, name, blobs=cache, options=opts()).digest == image.digest
    check(read(name, platform=PLATFORM, options=opts()))
    assert set(helper.calls()) == {host}, "the helper is asked for the registry host, on stdin"

    # The oras:// SIF push is the same client: the same login serves it.
    sif = tmp_path / "app.sif"
    sif.write_bytes(os.urandom(70_000))
    digest = sha256_digest(sif.read_bytes())
    published = push_sif(sif, digest, sif.stat().st_size, ImageName.parse(f"{host}/private/app-sif:1"), options=opts())
    assert published.digest and published.uploaded_bytes >= sif.stat().st_size
    with Registry(host, options=opts()) as reg:
        body, media_type = reg.fetch_manifest("private/app-sif", "1")
    manifest = json.loads(body)
    assert media_type == mt.OCI_MANIFEST and sha256_digest(body) == published.digest
    assert manifest["config"]["mediaType"] == mt.SIF_CONFIG
    assert [(d["mediaType"], d["digest"]) for d in manifest["layers"]] == [(mt.SIF_LAYER, digest)]


def test_creds_store_answers_for_every_host(
    auth_registry: RunningRegistry, helper: Helper, cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = auth_registry.host
    image = build_image(cache, [{"store": b"store\n"}])
    # What `docker login` writes with a credsStore: an empty entry, the secret in the store.
    docker_config(tmp_path, monkeypatch, {"auths": {host: {}}, "credsStore": "asmtest"})
    helper.answer({host: {"Username": "user", "Secret": "pass"}})
    assert push(image, ImageName.parse(f"{host}/store/app:1"), blobs=cache, options=opts()).digest == image.digest
    # A helper that knows nothing of a host is no error: the lookup goes on (and finds nothing).
    helper.answer({})
    assert login.find_credentials("other.example:5000", auth_file=None) is None
    assert "other.example:5000" in helper.calls()


def test_identity_token_from_a_helper_is_exchanged_for_scoped_tokens(
    fault_proxy: FaultProxy, helper: Helper, cache: Cache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = fault_proxy.host
    bearer = fault_proxy.enable_bearer(refresh_token="id-token-1")
    image = build_image(cache, [{"id": b"identity\n"}])
    name = ImageName.parse(f"{host}/team/app:1")
    docker_config(tmp_path, monkeypatch, {"credHelpers": {host: "asmtest"}})
    helper.answer({host: {"Username": "<token>", "Secret": "id-token-1"}})

    creds = login.find_credentials(host, auth_file=None, runner=Runner(env={"ASMTEST_VIA": "runner"}))
    assert creds is not None and creds.identity_token == "id-token-1" and creds.helper == "asmtest"
    assert helper.runners() == ["runner"], "the helper runs through the project's Runner"
    assert push(image, name, blobs=cache, options=opts()).digest == image.digest
    check(read(name, platform=PLATFORM, options=opts()))
    assert bearer.violations == [] and bearer.token_requests
    assert all(user == "<token>" for user, _ in bearer.token_requests), "the identity token, never as a password"
    assert ("repository:team/app:pull,push",) in [scopes for _, scopes in bearer.token_requests]

    # An `identitytoken` entry in an auth file (what `docker login` writes for such registries).
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {host: {"identitytoken": "id-token-1"}}}))
    helper.answer({})
    check(read(name, platform=PLATFORM, options=opts(auth_file=auth_file)))

    auth_file.write_text(json.dumps({"auths": {host: {"identitytoken": "revoked"}}}))
    with pytest.raises(RegistryError) as refused:
        read(name, platform=PLATFORM, options=opts(auth_file=auth_file))
    assert refused.value.status == 401 and "token server" in str(refused.value)


def test_auth_entries_become_oras_lookups(tmp_path: Path) -> None:
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "https://Reg.Example:5000/v1/": {"username": "u", "password": "p"},
                    "tok.example": {"identitytoken": "t"},
                },
                "credHelpers": {"https://helped.example": "x"},
            }
        )
    )
    config = login.read_auth_file(path)
    assert config is not None
    assert config["auths"]["reg.example:5000"] == {"auth": base64.b64encode(b"u:p").decode()}
    assert config["auths"]["tok.example"] == {"auth": base64.b64encode(b"<token>:t").decode()}
    assert config["credHelpers"] == {"helped.example": "x"}
    creds = login.find_credentials("tok.example", auth_file=path)
    assert creds is not None and creds.identity_token == "t" and creds.source == path
    assert login.host_names("localhost:5000") == ("localhost:5000", "127.0.0.1:5000")
    path.write_text(json.dumps({"auths": ["not", "a", "mapping"], "credHelpers": "x"}))  # ignored, as Docker does
    assert login.find_credentials("tok.example", auth_file=path) is None


def test_one_file_inline_auth_then_cred_helper_then_creds_store(
    helper: Helper, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Docker's order within one auth file (as oras-py's)."""
    inline = base64.b64encode(b"inline:secret").decode()
    path = docker_config(
        tmp_path,
        monkeypatch,
        {
            "auths": {"a.example": {"auth": inline}, "b.example": {}},
            "credHelpers": {"a.example": "asmtest", "b.example": "asmtest"},
            "credsStore": "asmtest",
        },
    )
    helper.answer(
        {"b.example": {"Username": "helped", "Secret": "s"}, "c.example": {"Username": "stored", "Secret": "t"}}
    )
    a = login.find_credentials("a.example", auth_file=None)
    assert a is not None and (a.username, a.password, a.source, a.helper) == ("inline", "secret", path, "")
    assert helper.calls() == [], "an inline auth asks no helper"
    b = login.find_credentials("b.example", auth_file=None)
    assert b is not None and (b.username, b.helper) == ("helped", "asmtest")
    c = login.find_credentials("c.example", auth_file=None)  # no entry, no credHelpers: the credsStore
    assert c is not None and (c.username, c.password) == ("stored", "t")
    assert helper.calls() == ["b.example", "c.example"]
