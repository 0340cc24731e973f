"""``--sign`` and ``assemble verify`` against the real cosign (v2.6.5, built from its Go
module by ``scripts/setup --test`` into the test cache) and the real ``docker-registry``:
cosign accepts what a build pushed and signed with a ``cosign generate-key-pair`` key, and
its SPDX and SLSA attestations, in the registry and in the OCI layout; ``assemble verify``
accepts the same and rejects an image re-pushed unsigned and one signed by another key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.helpers import PYTHON, layout_index, run_cli, small_project
from tests.plugins.registry import RunningRegistry

COSIGN = Path(PYTHON).parent / "cosign"  # Debian 13's cosign, linked there by scripts/setup --test
MANIFEST = """\
name: signed
bases: {b: 'rootfs:base.tar'}
image:
  base: b
  layers:
    - copy: {from: ./a.txt, to: /opt/a.txt}
outputs: [oci:out:one]
"""


def _cosign(root: Path, *args: str, password: str = "pw") -> subprocess.CompletedProcess[str]:
    """The real cosign, offline (its TUF root and home under ``root``)."""
    assert COSIGN.is_file(), f"{COSIGN} is missing: scripts/setup --test puts it there"
    env = {**os.environ, "HOME": str(root / "home"), "TUF_ROOT": str(root / "tuf"), "COSIGN_PASSWORD": password}
    return subprocess.run([str(COSIGN), *args], capture_output=True, text=True, timeout=300, env=env, cwd=root)


def _key_pair(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    made = _cosign(folder, "generate-key-pair")
    assert made.returncode == 0, made.stderr
    return folder / "cosign.key", folder / "cosign.pub"


def _verified(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """What ``cosign verify``/``verify-attestation`` printed: one JSON payload per line."""
    assert done.returncode == 0, f"cosign:\n{done.stdout}\n{done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith(("{", "["))]


def _statements(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    out = []
    for found in _verified(done):
        for envelope in found if isinstance(found, list) else [found]:
            out.append(json.loads(base64.b64decode(envelope["payload"])))
    return out


def _build(root: Path, *args: str) -> dict[str, Any]:
    ran = run_cli(
        ["m.yaml", "--cache", "cache", "--json", "--tls-verify=false", *args], cwd=root, env={"COSIGN_PASSWORD": "pw"}
    )
    assert ran.code == 0, str(ran)
    result: dict[str, Any] = ran.json
    return result


def _verify(root: Path, ref: str, pub: Path, *more: str) -> Any:
    return run_cli(["verify", ref, "--key", str(pub), "--tls-verify=false", *more], cwd=root)


def test_cosign_verifies_what_a_build_signed_and_assemble_verify_rejects_the_unsigned(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    root = small_project(tmp_path / "p", MANIFEST)
    key, pub = _key_pair(root / "keys")
    ref = f"{registry.host}/sign/app:1"
    unsigned = _build(root, "-o", "oci:plain:one")
    signed = _build(root, "-o", f"docker://{ref}", "-o", "oci:out:one", "--sign", str(key))
    digest = signed["digest"]
    assert digest == unsigned["digest"]  # signing changes no byte of the image
    pushed, in_layout = signed["outputs"]
    assert len(pushed["signatures"]) == len(in_layout["signatures"]) == 2  # .sig and .att

    # The real cosign: the signature over this digest, and both attestations about it.
    (payload,) = _verified(
        _cosign(root, "verify", "--key", str(pub), "--insecure-ignore-tlog", "--allow-insecure-registry", ref)
    )[0]
    assert payload["critical"]["image"]["docker-manifest-digest"] == digest
    assert payload["critical"]["identity"]["docker-reference"] == f"{registry.host}/sign/app"
    for kind, predicate in (
        ("spdxjson", "https://spdx.dev/Document"),
        ("slsaprovenance1", "https://slsa.dev/provenance/v1"),
    ):
        args = ["--key", str(pub), "--insecure-ignore-tlog", "--type", kind]
        for found in (
            _statements(_cosign(root, "verify-attestation", *args, "--allow-insecure-registry", ref)),
            _statements(_cosign(root, "verify-attestation", *args, "--local-image", "out")),
        ):
            (statement,) = [s for s in found if s["predicateType"] == predicate]
            assert statement["subject"][0]["digest"] == {"sha256": digest[7:]}
            assert kind != "spdxjson" or statement["predicate"]["spdxVersion"] == "SPDX-2.3"
    (local,) = _verified(_cosign(root, "verify", "--key", str(pub), "--insecure-ignore-tlog", "--local-image", "out"))[
        0
    ]
    assert local["critical"]["image"]["docker-manifest-digest"] == digest

    # assemble verify: the same, in the registry and in the layout.
    for where in (f"docker://{ref}", "oci:out:one"):
        ran = _verify(root, where, pub, "--type", "spdxjson", "--type", "slsaprovenance1", "--json")
        assert ran.code == 0, str(ran)
        assert ran.json["digest"] == digest and ran.json["signatures"] == 1
        assert ran.json["attestations"] == {"spdxjson": 1, "slsaprovenance1": 1}
    # Signing again adds nothing (deterministic ECDSA: the same signature, listed once).
    again = _build(root, "-o", f"docker://{ref}", "--sign", str(key))
    assert again["outputs"][0]["signatures"] == pushed["signatures"]

    # The tag re-pushed with another image, unsigned: cosign and assemble verify refuse it.
    (root / "a.txt").write_text("changed\n")
    repushed = _build(root, "-o", f"docker://{ref}")
    assert repushed["digest"] != digest and repushed["outputs"][0]["signatures"] == []
    refused = _cosign(root, "verify", "--key", str(pub), "--insecure-ignore-tlog", "--allow-insecure-registry", ref)
    assert refused.returncode != 0 and "no signatures found" in refused.stderr, refused.stderr
    ran = _verify(root, f"docker://{ref}", pub)
    assert ran.code == 1, str(ran)
    assert f"error: docker://{ref} ({repushed['digest']}): signatures: none by key" in ran.err
    assert f"has no sha256-{repushed['digest'][7:]}.sig" in ran.err
    # The unsigned layout: no signature, and none of cosign's annotations.
    ran = _verify(root, "oci:plain:one", pub)
    assert ran.code == 1 and "has no sha256-" in ran.err, str(ran)
    assert all("kind" not in e.get("annotations", {}) for e in layout_index(root / "plain")["manifests"])


def test_a_tag_naming_the_image_and_its_weights_verifies_by_tag_and_by_digest(
    tmp_path: Path, registry: RunningRegistry
) -> None:
    """With weights beside the image, the tag names an index of both: --sign signs that
    index as well as the image, so cosign verifies the tag as users name it."""
    root = small_project(tmp_path / "p", MANIFEST + "weights:\n  tiny: {source: model, at: /models/tiny}\n")
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}\n")
    key, pub = _key_pair(root / "keys")
    ref = f"{registry.host}/sign/served:1"
    signed = _build(root, "-o", f"docker://{ref}", "--sign", str(key))
    (index,) = [o for o in signed["outputs"] if o["tagged_index"]]
    for name, digest in ((ref, index["digest"]), (f"{registry.host}/sign/served@{signed['digest']}", signed["digest"])):
        (payload,) = _verified(
            _cosign(root, "verify", "--key", str(pub), "--insecure-ignore-tlog", "--allow-insecure-registry", name)
        )[0]
        assert payload["critical"]["image"]["docker-manifest-digest"] == digest


def test_an_image_signed_by_another_key_is_refused(tmp_path: Path, registry: RunningRegistry) -> None:
    root = small_project(tmp_path / "p", MANIFEST)
    _, pub = _key_pair(root / "keys")
    other = root / "other.pem"  # a plain PEM Ed25519 key: signs as cosign signs with one
    other.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    other_pub = root / "other.pub"
    loaded = serialization.load_pem_private_key(other.read_bytes(), None)
    other_pub.write_bytes(
        loaded.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    ref = f"{registry.host}/sign/other:1"
    signed = _build(root, "-o", f"docker://{ref}", "--sign", str(other))

    # cosign accepts it with the signer's public key, refuses it with the other one.
    _verified(
        _cosign(root, "verify", "--key", str(other_pub), "--insecure-ignore-tlog", "--allow-insecure-registry", ref)
    )
    refused = _cosign(root, "verify", "--key", str(pub), "--insecure-ignore-tlog", "--allow-insecure-registry", ref)
    assert refused.returncode != 0, refused.stdout
    ran = _verify(root, f"docker://{ref}", pub, "--type", "spdxjson")
    assert ran.code == 1, str(ran)
    assert f"({signed['digest']}): signatures: none by key" in ran.err and "not signed by this key" in ran.err
    assert _verify(root, f"docker://{ref}", other_pub, "--type", "spdxjson").code == 0
    # Ed25519 is deterministic: signing again gives the same .sig manifest.
    again = _build(root, "-o", f"docker://{ref}", "--sign", str(other))
    assert again["outputs"][0]["signatures"] == signed["outputs"][0]["signatures"]
    # A wrong password fails before anything is built (exit 2).
    bad = run_cli(
        ["m.yaml", "--cache", "cache", "--sign", str(root / "keys" / "cosign.key")],
        cwd=root,
        env={"COSIGN_PASSWORD": "no"},
    )
    assert bad.code == 2 and "wrong password" in bad.err, str(bad)
    assert not (root / "out").exists()


@pytest.mark.integration  # cosign
@pytest.mark.parametrize("curve", ["secp256r1", "secp384r1", "secp521r1"])
def test_cosign_verifies_a_signature_by_a_key_on_each_curve_it_reads(tmp_path: Path, curve: str) -> None:
    """cosign verifies an ECDSA signature with the hash its key's curve goes with (P-384:
    SHA-384, P-521: SHA-512: sigstore's default algorithm details), not always SHA-256."""
    root = small_project(tmp_path / "p", MANIFEST)
    key = ec.generate_private_key(getattr(ec, curve.upper())())
    (root / "k.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (root / "k.pub").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signed = _build(root, "-o", "oci:out:one", "--sign", str(root / "k.pem"))
    (local,) = _verified(
        _cosign(root, "verify", "--key", str(root / "k.pub"), "--insecure-ignore-tlog", "--local-image", "out")
    )[0]
    assert local["critical"]["image"]["docker-manifest-digest"] == signed["digest"]
    ran = _verify(root, "oci:out:one", root / "k.pub")
    assert ran.code == 0, str(ran)
