"""Signed step caches (issue 20): a forged registry step cache entry, its record and layer
replaced under the same ``step-<key>`` tag by someone without the key, against the real
``docker-registry``, buildah and cosign. Cache folders stand for machines.

- Under ``--cache-trust`` the forged entry is a warning and the step runs here: the image
  is the honest one, and nothing of the forgery reaches the local cache.
- Without it the entry is used (as before signing existed), and the provenance names it:
  ``oci://REG/REPO@DIGEST`` of the very entry taken, in that build and in later ones that take
  it from the local cache; under ``--cache-trust`` such a local copy is not used either.
- A ``url:`` layer forged the same way is refused by its pinned sha256 even without trust.
- What a machine builds on an entry it took unchecked (a compile cache, a step compiled on
  it or on a step's packages layer) is never signed by its ``--cache-sign`` key, in that
  build or a later one (issue 32), and using such entries is one warning line per
  repository. Under ``--cache-trust``, no step builds on such an entry taken in an earlier
  run: a kept or shared folder restored from one is emptied, a packages layer made again.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.reference import ImageName
from assembler.registry.blobs import FileBlobs
from assembler.registry.client import Registry
from assembler.registry.types import RegistryOptions
from assembler.sign import load_public_key
from assembler.stepcache import trust as cachetrust
from tests.helpers import PYTHON, Ran, layout_index, manifest_of, read_blob, run_cli, uncompressed
from tests.plugins.demo import steps_by_state
from tests.plugins.registry import RunningRegistry

COSIGN = Path(PYTHON).parent / "cosign"  # Debian 13's cosign, linked there by scripts/setup --test
STEP_CONFIG = "application/vnd.assemble.step.v1+json"
PLAIN = RegistryOptions(tls_verify=False, backoff=0.01, max_backoff=0.05)


def _keys(folder: Path) -> tuple[Path, Path]:
    """A plain PEM Ed25519 key pair (cosign signs and verifies with such keys too)."""
    folder.mkdir(parents=True)
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = folder / "cache.pem", folder / "cache.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _gzip_layer(files: dict[str, tuple[bytes, int]]) -> tuple[bytes, dict[str, Any]]:
    """A gzip layer holding ``files`` (path: data, mode) and its cache record."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            tf.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    blob = gzip.compress(tar, mtime=0)
    record = {
        "digest": sha256_digest(blob),
        "size": len(blob),
        "diff_id": sha256_digest(tar),
        "uncompressed_size": len(tar),
        "compression": "gzip",
    }
    return blob, record


def _forge(host: str, repository: str, tag: str, files: dict[str, tuple[bytes, int]]) -> str:
    """Replace the entry ``tag`` by one whose every layer holds ``files``, as anyone who can
    push to the repository (and has no key) can; the forged manifest's digest."""
    with Registry(host, options=PLAIN) as reg:
        body, _ = reg.fetch_manifest(repository, tag)
        config = Descriptor.from_json(json.loads(body)["config"])
        record = json.loads(reg.blob_bytes(repository, config, limit=1 << 20, what="record"))
        blob, layer = _gzip_layer(files)
        if "layer" in record:
            record["layer"] = layer
        else:
            record["artifacts"] = {name: layer for name in record["artifacts"]}
        record_bytes = canonical_json(record)
        record_desc = Descriptor(STEP_CONFIG, sha256_digest(record_bytes), len(record_bytes))
        layers = [Descriptor(mt.oci_layer_type("gzip"), layer["digest"], layer["size"])] * (
            1 if "layer" in record else len(record["artifacts"])
        )
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": record_desc.to_json(),
                "layers": [d.to_json() for d in layers],
            }
        )
        blobs = FileBlobs({}, {layer["digest"]: blob, record_desc.digest: record_bytes})
        reg.push_blob(repository, layers[0], blobs)
        reg.push_blob(repository, record_desc, blobs)
        return reg.put_manifest(repository, tag, manifest, mt.OCI_MANIFEST)


def _provenance(layout: Path) -> dict[str, Any]:
    """The provenance statement a build wrote into the OCI layout ``layout``."""
    for entry in layout_index(layout)["manifests"]:
        if entry.get("artifactType") == mt.IN_TOTO_JSON:
            manifest = json.loads(read_blob(layout, entry["digest"]))
            statement: dict[str, Any] = json.loads(read_blob(layout, manifest["layers"][0]["digest"]))
            return statement
    raise AssertionError(f"no provenance in {layout}")


def _cache_deps(layout: Path) -> list[dict[str, Any]]:
    deps = _provenance(layout)["predicate"]["buildDefinition"]["resolvedDependencies"]
    return [d for d in deps if d["name"].startswith("cache:")]


def _blobs(cache: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (cache / "blobs/sha256").iterdir()}


STEP_MANIFEST = """\
name: trusted
bases: {{devel: 'rootfs:{rootfs}', runtime: scratch}}
compile:
  - name: hello
    base: devel
    run: ["mkdir -p /out && echo 'built by the honest machine' > /out/greeting"]
    artifacts:
      greeting: {{path: /out/greeting, to: /app/greeting}}
image:
  base: runtime
  layers:
    - artifact: hello.greeting
"""


def test_a_forged_step_entry_is_ignored_under_cache_trust_and_named_in_the_provenance_without(
    tmp_path: Path, registry: RunningRegistry, debian_rootfs: Path
) -> None:
    (tmp_path / "m.yaml").write_text(STEP_MANIFEST.format(rootfs=debian_rootfs))
    key, pub = _keys(tmp_path / "keys")
    repo, host = f"docker://{registry.host}/cache", registry.host

    def build(machine: str, *extra: str) -> Ran:
        args = ["m.yaml", "--cache", machine, "--json", "--progress", "plain", "--tls-verify=false"]
        ran = run_cli([*args, "-o", f"oci:out-{machine}:latest", *extra], cwd=tmp_path)
        assert ran.code == 0, str(ran)
        return ran

    honest = build("a", "--cache-to", repo, "--cache-sign", str(key))
    assert steps_by_state(honest) == {"built": {"hello"}}
    (step_key,) = [s["key"] for s in honest.json["steps"]]
    tag = f"step-{step_key}"
    # The real cosign checks a cache entry as it checks an image: signed, and for this tag.
    cosign = [str(COSIGN), "verify", "--key", str(pub), "--insecure-ignore-tlog", "--allow-insecure-registry"]
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TUF_ROOT": str(tmp_path / "tuf")}
    checked = subprocess.run(
        [*cosign, "-a", f"io.assemble.cache.tag={tag}", f"{host}/cache:{tag}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stderr
    with Registry(host, options=PLAIN) as reg:
        signed_digest = sha256_digest(reg.fetch_manifest("cache", tag)[0])

    # A trusting machine takes the signed entry (no step runs); its provenance names it.
    trusting = build("d", "--cache-from", repo, "--cache-trust", str(pub))
    assert "built" not in steps_by_state(trusting) and trusting.json["digest"] == honest.json["digest"]
    (entry,) = _cache_deps(tmp_path / "out-d")
    assert entry["uri"] == f"oci://{host}/cache@{signed_digest}" and entry["annotations"]["signedBy"]
    assert entry["annotations"]["what"] == "step hello" and entry["annotations"]["tag"] == tag

    forged = _forge(host, "cache", tag, {"app/greeting": (b"forged\n", 0o4755)})

    # Under --cache-trust: a one-line warning, the step built here, the honest image.
    guarded = build("b", "--cache-from", repo, "--cache-trust", str(pub))
    assert steps_by_state(guarded) == {"built": {"hello"}}
    assert guarded.json["digest"] == honest.json["digest"]
    (warning,) = [line for line in guarded.err.splitlines() if tag in line]
    assert "warning" in warning and f"no signature (sha256-{forged[7:]}.sig)" in warning, warning
    print(f"\nforged entry under --cache-trust: {warning}")
    assert guarded.json["step_cache"]["untrusted"] == 1 and guarded.json["step_cache"]["hits"] == 0
    forged_blobs = {d["digest"] for d in json.loads(_registry_manifest(host, tag))["layers"]}
    assert not forged_blobs & _blobs(tmp_path / "b")  # nothing of the forgery came in
    assert _cache_deps(tmp_path / "out-b") == []

    # Without it: today's behaviour (the forged entry is used), and the provenance says so.
    trusting_nobody = build("c", "--cache-from", repo)
    assert "built" not in steps_by_state(trusting_nobody)
    assert trusting_nobody.json["digest"] != honest.json["digest"]
    assert _cache_deps(tmp_path / "out-c") == [
        {
            "name": f"cache:{tag}",
            "uri": f"oci://{host}/cache@{forged}",
            "digest": {"sha256": forged[7:]},
            "annotations": {"what": "step hello", "tag": tag},
        }
    ]
    # A later build on that machine takes it from its local cache: still named.
    build("c", "-o", "oci:out-c2:latest")
    assert _cache_deps(tmp_path / "out-c2") == _cache_deps(tmp_path / "out-c")
    # Under --cache-trust that machine's copy, taken unchecked, is not used either.
    rechecked = build("c", "--cache-from", repo, "--cache-trust", str(pub), "-o", "oci:out-c3:latest")
    assert steps_by_state(rechecked) == {"built": {"hello"}}
    assert rechecked.json["digest"] == honest.json["digest"] and _cache_deps(tmp_path / "out-c3") == []
    assert f"the local cache took it from docker://{host}/cache:{tag} unchecked; not used" in rechecked.err


def _registry_manifest(host: str, tag: str) -> bytes:
    with Registry(host, options=PLAIN) as reg:
        return reg.fetch_manifest("cache", tag)[0]


TOOL = b"#!/bin/sh\necho the pinned tool\n"
URL_MANIFEST = """\
name: pinned
bases: {{runtime: scratch}}
image:
  base: runtime
  layers:
    - url: {url}/tool.sh
      sha256: {sha}
      to: /usr/local/bin/tool
      mode: "0755"
"""


def test_a_forged_url_entry_is_refused_by_its_pin_even_without_trust(
    tmp_path: Path, registry: RunningRegistry, http_folder: tuple[str, Path]
) -> None:
    url, folder = http_folder
    (folder / "tool.sh").write_bytes(TOOL)
    (tmp_path / "m.yaml").write_text(URL_MANIFEST.format(url=url, sha=hashlib.sha256(TOOL).hexdigest()))
    repo = f"docker://{registry.host}/cache"

    def build(machine: str, *extra: str) -> Ran:
        args = ["m.yaml", "--cache", machine, "--json", "--progress", "plain", "--tls-verify=false"]
        ran = run_cli([*args, "-o", f"oci:out-{machine}:1", *extra], cwd=tmp_path)
        assert ran.code == 0, str(ran)
        return ran

    honest = build("a", "--cache-to", repo)
    with Registry(registry.host, options=PLAIN) as reg:
        tags = reg.request("GET", reg.url("/v2/cache/tags/list"), what="tags").json()["tags"]
    (tag,) = [t for t in tags if t.startswith("step-url-shared-")]

    # The same path, another file: the pinned sha256 says it is not the one.
    _forge(registry.host, "cache", tag, {"usr/local/bin/tool": (b"#!/bin/sh\necho forged\n", 0o755)})
    checked = build("b", "--cache-from", repo)
    assert checked.json["digest"] == honest.json["digest"]
    (warning,) = [line for line in checked.err.splitlines() if tag in line]
    assert "not the pinned sha256" in warning, warning
    print(f"\nforged url: entry: {warning}")
    assert _cache_deps(tmp_path / "out-b") == []

    # The pinned file, set-uid: the layer is not the one the pinned file makes.
    _forge(registry.host, "cache", tag, {"usr/local/bin/tool": (TOOL, 0o4755)})
    checked = build("c", "--cache-from", repo)
    assert checked.json["digest"] == honest.json["digest"]
    (warning,) = [line for line in checked.err.splitlines() if tag in line]
    assert "its pins make" in warning, warning
    # Beside it a file no download makes: refused too.
    _forge(
        registry.host, "cache", tag, {"usr/local/bin/tool": (TOOL, 0o755), "etc/cron.d/x": (b"* * * * * x\n", 0o644)}
    )
    checked = build("d", "--cache-from", repo)
    assert checked.json["digest"] == honest.json["digest"]
    (warning,) = [line for line in checked.err.splitlines() if tag in line]
    assert "more than the one file" in warning, warning


LAUNDERING_MANIFEST = """\
name: laundering
bases: {{devel: 'rootfs:{rootfs}', runtime: scratch}}
sources:
  app: {{path: app}}
compile:
  - name: hello
    base: devel
    sources: [app]
    cache: [/build]
    run: ["cat /src/app/greeting >> /build/log && cp /build/log /build/out"]
    artifacts:
      out: {{path: /build/out, to: /app/out}}
  - name: world
    base: devel
    run: ["mkdir -p /out && echo world > /out/world"]
    artifacts:
      world: {{path: /out/world, to: /app/world}}
image:
  base: runtime
  layers:
    - artifact: hello.out
    - artifact: world.world
"""


def _signed(host: str, repository: str, tag: str, pub: Path) -> bool:
    """Whether the entry ``tag`` of ``repository`` is signed by the key ``pub`` (for that tag)."""
    name = ImageName.parse(f"{host}/{repository}")
    with Registry(host, options=PLAIN) as reg:
        digest = sha256_digest(reg.fetch_manifest(repository, tag)[0])
        signer, _ = cachetrust.vouched(reg, name, tag, digest, [load_public_key(pub.read_bytes(), what="test key")])
    return bool(signer)


def _tags(host: str, repository: str, prefix: str) -> list[str]:
    with Registry(host, options=PLAIN) as reg:
        tags = reg.request("GET", reg.url(f"/v2/{repository}/tags/list"), what="tags").json()["tags"]
    return sorted(t for t in tags if t.startswith(prefix))


def _unchecked_warnings(ran: Ran) -> list[str]:
    return [line for line in ran.err.splitlines() if "used unchecked" in line]


def test_what_is_built_on_an_unchecked_entry_is_never_signed_and_warned_of_once_per_source(
    tmp_path: Path, registry: RunningRegistry, debian_rootfs: Path
) -> None:
    """Signature laundering (issue 32): machine B takes a compile cache and a step result
    from a repository anyone may push to, without ``--cache-trust``, and signs its exports
    with ``--cache-sign``. Neither the step it compiled on that compile cache (in that run
    or a later one) nor the compile cache itself is signed, so a ``--cache-trust`` machine
    uses none of them; B's provenance names the compile cache its step is built on. Without
    ``--cache-trust``, using such entries is one warning line per repository and run."""
    (tmp_path / "m.yaml").write_text(LAUNDERING_MANIFEST.format(rootfs=debian_rootfs))
    (tmp_path / "app").mkdir()
    key, pub = _keys(tmp_path / "keys")
    host = registry.host
    shared, mine = f"docker://{host}/shared", f"docker://{host}/mine"

    def build(machine: str, greeting: str, *extra: str) -> Ran:
        (tmp_path / "app" / "greeting").write_text(greeting + "\n")
        args = ["m.yaml", "--cache", machine, "--json", "--progress", "plain", "--tls-verify=false"]
        ran = run_cli([*args, "-o", f"oci:out-{machine}:latest", *extra], cwd=tmp_path)
        assert ran.code == 0, str(ran)
        return ran

    def key_of(ran: Ran, step: str) -> str:
        (found,) = [s["key"] for s in ran.json["steps"] if s["name"] == step]
        return str(found)

    build("a", "one", "--cache-to", shared)  # pushed by anyone, unsigned
    (ccache,) = _tags(host, "shared", "ccache-")

    # B, run 1: hello's sources changed, so it compiles, on the compile cache from `shared`.
    b1 = build("b", "two", "--cache-from", shared, "--cache-to", mine, "--cache-sign", str(key))
    assert steps_by_state(b1) == {"built": {"hello"}, "cached": {"world"}}
    (warning,) = _unchecked_warnings(b1)  # a step result, a compile cache, facts: one line
    assert f"docker://{host}/shared:" in warning and "--cache-trust" in warning, warning
    assert not _signed(host, "mine", f"step-{key_of(b1, 'hello')}", pub), "built on an unchecked compile cache"
    assert not _signed(host, "mine", ccache, pub)
    built_on = [d for d in _cache_deps(tmp_path / "out-b") if d["annotations"]["what"] == "step hello"]
    assert [d["name"] for d in built_on] == [f"cache:{ccache}"], _cache_deps(tmp_path / "out-b")

    # B, run 2, no --cache-from: its kept folder is not restored again, still unchecked.
    b2 = build("b", "three", "--cache-to", mine, "--cache-sign", str(key))
    assert steps_by_state(b2) == {"built": {"hello"}, "cached": {"world"}}
    (warning,) = _unchecked_warnings(b2)  # what it took unchecked in run 1, and what it built on it
    assert f"docker://{host}/shared:" in warning, warning
    assert not _signed(host, "mine", f"step-{key_of(b2, 'hello')}", pub)
    assert not _signed(host, "mine", ccache, pub), "exported signed by a later run"

    # A machine trusting B's key takes nothing of it: all built there, from empty folders.
    c = build("c", "three", "--cache-from", mine, "--cache-trust", str(pub))
    assert steps_by_state(c) == {"built": {"hello", "world"}}
    assert "no signature" in c.err and not _unchecked_warnings(c)

    # Without --cache-trust, entries from two repositories: one line for each.
    d = build("d", "two", "--cache-from", shared, "--cache-from", mine)
    assert "built" not in steps_by_state(d)
    lines = _unchecked_warnings(d)
    assert len(lines) == 2, lines
    assert {repo for repo in ("shared", "mine") for line in lines if f"docker://{host}/{repo}:" in line} == {
        "shared",
        "mine",
    }, lines


def test_a_malformed_payload_signed_by_the_trusted_key_is_refused_not_a_crash(registry: RunningRegistry) -> None:
    """`--cache-trust`: an entry's `.sig` holds a layer the trusted key signed, over a payload
    that is no cosign signature of it (any JSON at all). The entry is not vouched for, and
    why is said; the build goes on without it, never with a traceback."""
    import base64

    from assembler.sign import Signed, Signer
    from assembler.sign.cosign import SIGNATURE_ANNOTATION, SIMPLE_SIGNING, SigLayer
    from assembler.transports import signatures

    key = Signer(ed25519.Ed25519PrivateKey.generate())
    name = ImageName.parse(f"{registry.host}/cache/steps")
    critical = b'"type":"cosign container image signature"'
    payloads = [
        b'{"critical":{' + critical + b',"image":"x"},"optional":{"io.assemble.cache.tag":"step-a"}}',
        b'{"critical":{' + critical + b',"image":{"docker-manifest-digest":["x"]}},"optional":[]}',
        b'{"critical":{' + critical + b',"image":{"docker-manifest-digest":"DIGEST"}},"optional":"step-a"}',
        b"[" * 50_000 + b"]" * 50_000,
        b"null",
    ]
    with Registry(registry.host, options=PLAIN) as reg:
        for payload in payloads:
            digest = sha256_digest(payload)
            payload = payload.replace(b"DIGEST", digest.encode())  # names the entry: only "optional" is wrong
            layer = SigLayer(
                SIMPLE_SIGNING, payload, {SIGNATURE_ANNOTATION: base64.b64encode(key.sign(payload)).decode()}
            )
            signatures.push_with(reg, name, [Signed(digest, layer)])
            signer, why = cachetrust.vouched(reg, name, "step-a", digest, [key.verifier])
            assert signer == "" and why.startswith("not signed by a trusted key: "), why


def _image_file(layout: Path, path: str) -> bytes:
    """The file ``path`` of the image tagged ``latest`` in the OCI layout ``layout``."""
    for layer in reversed(manifest_of(layout, "latest")["layers"]):
        with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, layer["digest"])))) as tf:
            member = next((m for m in tf.getmembers() if m.name.lstrip("./") == path), None)
            if member is not None:
                found = tf.extractfile(member)
                assert found is not None, path
                return found.read()
    raise AssertionError(f"no {path} in {layout}")


PACKAGES_MANIFEST = """\
name: calc
bases:
  devel: oci:{runtime}:latest
  runtime: oci:{runtime}:latest
compile:
  - name: calc
    base: devel
    packages: [bc]
    run: ["mkdir -p /out && echo '6*7' | bc > /out/answer"]
    artifacts:
      answer: {{path: /out/answer, to: /answer}}
image:
  base: runtime
  layers:
    - artifact: calc.answer
"""


def test_a_step_compiled_on_an_unchecked_packages_layer_is_never_signed_nor_trusted_later(
    tmp_path: Path, registry: RunningRegistry, demo_bases: dict[str, Path]
) -> None:
    """A compile step's ``packages:`` travel as a layer of the step cache (issue 32): machine
    B takes one unchecked from a repository anyone may push to, whose ``bc`` someone
    replaced. The step compiled on it is built on that entry: B's ``--cache-sign`` key does
    not sign it, and B's provenance names the entry. A later ``--cache-trust`` run on B uses
    nothing of it: the packages are installed again and the step runs on them, not on the
    image B's storage still keeps of the forged layer."""
    (tmp_path / "m.yaml").write_text(PACKAGES_MANIFEST.format(runtime=demo_bases["runtime"]))
    key, pub = _keys(tmp_path / "keys")
    host = registry.host
    shared, mine = f"docker://{host}/shared", f"docker://{host}/mine"
    installs = "$ apt-get install bc"

    def build(machine: str, out: str, *extra: str) -> Ran:
        args = ["m.yaml", "--cache", machine, "--json", "--progress", "plain", "--tls-verify=false"]
        storage = ["--storage", str(tmp_path / f"storage-{machine}")]  # buildah's, as a machine's
        ran = run_cli([*args, *storage, "-o", f"oci:{out}:latest", *extra], cwd=tmp_path)
        assert ran.code == 0, str(ran)
        return ran

    honest = build("a", "out-a", "--cache-to", shared)
    assert installs in honest.err and _image_file(tmp_path / "out-a", "answer") == b"42\n"
    (step_key,) = [s["key"] for s in honest.json["steps"]]
    (packages,) = [t for t in _tags(host, "shared", "step-") if t != f"step-{step_key}"]
    _forge(host, "shared", packages, {"usr/bin/bc": (b"#!/bin/sh\necho forged\n", 0o755)})

    # B takes the forged packages layer unchecked (no apt) and compiles the step on it.
    b1 = build("b", "out-b1", "--cache-from", shared, "--cache-to", mine, "--cache-sign", str(key), "--rebuild", "calc")
    assert installs not in b1.err and _image_file(tmp_path / "out-b1", "answer") == b"forged\n"
    assert _unchecked_warnings(b1), b1.err
    assert not _signed(host, "mine", packages, pub)
    assert not _signed(host, "mine", f"step-{step_key}", pub), "a step compiled on an unchecked layer was signed"
    on = [d["name"] for d in _cache_deps(tmp_path / "out-b1") if d["annotations"]["what"] == "step calc"]
    assert on == [f"cache:{packages}"], _cache_deps(tmp_path / "out-b1")

    # B under --cache-trust: neither its local copy nor the registry's forged entry is used.
    b2 = build("b", "out-b2", "--cache-from", shared, "--cache-trust", str(pub), "--rebuild", "calc")
    assert "calc: packages: the local cache took it from" in b2.err and installs in b2.err, b2.err
    assert _image_file(tmp_path / "out-b2", "answer") == b"42\n", "the step ran on the forged bc"
    assert b2.json["digest"] == honest.json["digest"] and _cache_deps(tmp_path / "out-b2") == []


FOLDERS_MANIFEST = """\
name: folders
bases: {{devel: 'rootfs:{rootfs}', runtime: scratch}}
sources:
  app: {{path: app}}
compile:
  - name: hello
    base: devel
    sources: [app]
    cache: [/build]
    shared_cache: [/ccache]
    run:
      - cat /src/app/greeting >> /build/log && cat /src/app/greeting >> /ccache/log
      - mkdir -p /out && cp /build/log /out/kept && cp /ccache/log /out/shared
    artifacts:
      out: {{path: /out, to: /app}}
image:
  base: runtime
  layers:
    - artifact: hello.out
"""


def test_under_cache_trust_no_step_builds_in_a_folder_restored_unchecked_earlier(
    tmp_path: Path, registry: RunningRegistry, debian_rootfs: Path
) -> None:
    """Machine B restores a step's kept folder and a ``shared_cache:`` folder without
    ``--cache-trust``, from a repository anyone may push to (issue 32). Its next run, under
    ``--cache-trust``, builds on neither: both are emptied (a warning each) and restored
    from entries a trusted key signed instead. Each folder keeps a log of the greetings the
    builds in it saw, so the image says what the step built on."""
    (tmp_path / "m.yaml").write_text(FOLDERS_MANIFEST.format(rootfs=debian_rootfs))
    (tmp_path / "app").mkdir()
    key, pub = _keys(tmp_path / "keys")
    host = registry.host
    shared, mine = f"docker://{host}/shared", f"docker://{host}/mine"

    def build(machine: str, greeting: str, *extra: str) -> tuple[Ran, bytes, bytes]:
        (tmp_path / "app" / "greeting").write_text(greeting + "\n")
        args = ["m.yaml", "--cache", machine, "--json", "--progress", "plain", "--tls-verify=false"]
        ran = run_cli([*args, "-o", f"oci:out-{machine}:latest", *extra], cwd=tmp_path)
        assert ran.code == 0, str(ran)
        out = tmp_path / f"out-{machine}"
        return ran, _image_file(out, "app/kept"), _image_file(out, "app/shared")

    build("a", "one", "--cache-to", shared)  # pushed by anyone, unsigned
    build("c", "signed", "--cache-to", mine, "--cache-sign", str(key))  # a machine the key vouches for
    _, kept, shared_log = build("b", "two", "--cache-from", shared)
    assert kept == shared_log == b"one\ntwo\n"  # restored unchecked: used, without --cache-trust

    b2, kept, shared_log = build("b", "three", "--cache-from", mine, "--cache-trust", str(pub))
    assert steps_by_state(b2) == {"built": {"hello"}}
    assert kept == shared_log == b"signed\nthree\n", "built on what was restored unchecked"
    emptied = [line for line in b2.err.splitlines() if "which no --cache-trust key signed: emptied" in line]
    assert len(emptied) == 2 and all(f"docker://{host}/shared:ccache-" in line for line in emptied), b2.err
    assert any("kept folder" in line for line in emptied) and any("shared_cache /ccache" in line for line in emptied)
    assert b2.json["step_cache"]["compile_cache_restored"] == 2
    deps = _cache_deps(tmp_path / "out-b")  # built on the signed entries: the provenance names one
    assert deps and all(d["uri"].startswith(f"oci://{host}/mine@") and d["annotations"]["signedBy"] for d in deps)
