"""Signing keys and cosign's signature format, without cosign (unit tier): a key pair and a
signature the real ``cosign`` v2.6.5 made (``cosign generate-key-pair``, ``cosign sign
--key --tlog-upload=false``) are read and checked here, our payload and manifest bytes are
cosign's, and Ed25519 and ECDSA signatures are deterministic. tests/test_sign.py has the
real cosign check what ``--sign`` pushes."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from assembler.errors import InputError
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import sha256_digest
from assembler.sign import PREDICATE_TYPES, Signer, load_private_key, load_public_key, sign_manifest
from assembler.sign.cosign import SIGNATURE_ANNOTATION, SIMPLE_SIGNING, signature_manifest, simple_signing_payload
from assembler.sign.verify import check
from tests.helpers import run_cli_here

# `COSIGN_PASSWORD=pw cosign generate-key-pair` (cosign v2.6.5): ECDSA P-256, scrypt N=65536.
COSIGN_KEY = b"""-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjo2NTUzNiwiciI6
OCwicCI6MX0sInNhbHQiOiJtaWhXYVAwaVVJUTBVNHRrYUhLR2xwWm1Xa2FLQXAz
c1pnVU01L0hSaGVjPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJweWduRURuOU53eTFveTlkNlIvVmg1emRiVDQwTVFaWCJ9LCJj
aXBoZXJ0ZXh0IjoiYUFZY1ZIR0tUL2p0ak15MzBya1F0TXIvaCtNajdvbnB6VFpJ
UDRPbmQ5WExvOE4wMXdVSzVESklpRFBVbXBlTDd0ZnNlYjg0cUtuV2YrWm4vVzgy
eVgrbktiR3lkZkZ2UjFqOEJiOGFQdEMzNEFqMDVUL0hpeVVxamZYaU1GNWxNUTF4
b3lZNmxxV0VMdGY2T2VKdTlFbXBqMjFPaFRwQ05NTWZpaFJNSnc0UFFocWRZWU5p
Q3VrN1ZpMFpkMVI5djdIclJiWFVoMzFQRWc9PSJ9
-----END ENCRYPTED SIGSTORE PRIVATE KEY-----
"""
COSIGN_PUB = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4Qbd1H9N6iaSKpTSD63PL2cWWB1J
UxHzz6b9tCHjiALktCLEhw/pjgjtMpCpAi7bgx7D/Zo0TdTfvPO4bKymoQ==
-----END PUBLIC KEY-----
"""
# What `cosign sign --key cosign.key 127.0.0.1:5077/t/app@DIGEST` pushed as sha256-<hex>.sig.
DIGEST = "sha256:d824398a8550643c8e7cbc3c1f1fe93f554d7f269f708aed1bbe1473867f7048"
IDENTITY = "127.0.0.1:5077/t/app"
COSIGN_SIGNATURE = "MEQCIFnsrW0hNhD+JA544rDiSHZJ0g24783CSd2G196zAnb3AiBm99IYelc6Wju3+2TyC++CMPU3riCzfGejZiT6CrzcWw=="
COSIGN_MANIFEST = (
    '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":'
    '"application/vnd.oci.image.config.v1+json","size":233,"digest":"sha256:189870c74469b81003a89422df28e91e0'
    '27b085c5a7cdca5fd807931332a2490"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+j'
    'son","size":236,"digest":"sha256:1ff69f535fa11fd91c38033bd6b075d2a60181473aa4cf969b4bc4b2e6db1aba","ann'
    'otations":{"dev.cosignproject.cosign/signature":"' + COSIGN_SIGNATURE + '"}}]}'
).encode()


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, fmt: str = "pkcs8") -> bytes:
    form = serialization.PrivateFormat.PKCS8 if fmt == "pkcs8" else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def test_cosigns_own_key_loads_with_its_password_and_its_signature_verifies() -> None:
    signer = load_private_key(COSIGN_KEY, password=b"pw", what="cosign.key")
    verifier = load_public_key(COSIGN_PUB, what="cosign.pub")
    assert signer.verifier.pem() == verifier.pem()
    # Our payload and manifest for cosign's layer are cosign's bytes.
    payload = simple_signing_payload(IDENTITY, DIGEST)
    layer = Descriptor(SIMPLE_SIGNING, sha256_digest(payload), len(payload), {SIGNATURE_ANNOTATION: COSIGN_SIGNATURE})
    assert signature_manifest([layer])[0] == COSIGN_MANIFEST
    verdict = check([layer], lambda d: payload, DIGEST, verifier, attestations=False)
    assert len(verdict.verified) == 1 and verdict.verified[0]["critical"]["image"]["docker-manifest-digest"] == DIGEST
    # The same payload naming another image is not this signature's.
    other = DIGEST[:-4] + "0000"
    assert (
        "not signed by this key"
        in check(
            [layer], lambda d: payload.replace(DIGEST.encode(), other.encode()), other, verifier, attestations=False
        ).rejected[0]
    )


def test_a_wrong_or_missing_password_and_keys_that_do_not_sign_are_input_errors() -> None:
    with pytest.raises(InputError, match="wrong password"):
        load_private_key(COSIGN_KEY, password=b"nope", what="cosign.key")
    with pytest.raises(InputError, match="COSIGN_PASSWORD"):
        load_private_key(COSIGN_KEY, password=None, what="cosign.key")
    with pytest.raises(InputError, match="only Ed25519 and ECDSA"):
        load_private_key(_pem(rsa.generate_private_key(65537, 2048)), password=None, what="rsa.pem")
    with pytest.raises(InputError, match="not a PEM file"):
        load_private_key(b"hello", password=None, what="x")
    with pytest.raises(InputError, match="not a public key"):
        load_public_key(COSIGN_KEY, what="cosign.key")


def test_a_key_encrypted_as_cosign_does_round_trips() -> None:
    """go-securesystemslib's format, written here with other scrypt parameters (legacy)."""
    key = ed25519.Ed25519PrivateKey.generate()
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    salt, nonce = b"s" * 32, b"n" * 24
    box = hashlib.scrypt(b"", salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=1 << 27)
    sealed = nacl.secret.SecretBox(box).encrypt(der, nonce).ciphertext
    b64 = base64.b64encode
    body = {
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce).decode()},
        "ciphertext": b64(sealed).decode(),
    }
    text = b64(json.dumps(body).encode())
    pem = b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n" + text + b"\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n"
    loaded = load_private_key(pem, password=b"", what="k")  # an empty password is a password
    assert loaded.verifier.pem() == Signer(key).verifier.pem()


def _cosign_pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, password: bytes) -> bytes:
    """``key`` encrypted as cosign encrypts its keys (go-securesystemslib: scrypt, secretbox)."""
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    salt, nonce = b"s" * 32, b"n" * 24
    box = hashlib.scrypt(password, salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=1 << 27)
    b64 = base64.b64encode
    body = {
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": b64(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce).decode()},
        "ciphertext": b64(nacl.secret.SecretBox(box).encrypt(der, nonce).ciphertext).decode(),
    }
    text = b64(json.dumps(body).encode())
    return (
        b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n" + text + b"\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    )


@pytest.mark.parametrize("curve", [ec.SECP256K1, ec.SECP224R1, ec.BrainpoolP256R1, ec.BrainpoolP384R1])
def test_keys_on_curves_cosign_cannot_read_are_refused(curve: type[ec.EllipticCurve], tmp_path: Path) -> None:
    # cosign reads ECDSA P-256, P-384, P-521 and Ed25519 (sigstore's goodkey policy and
    # GetDefaultPublicKeyDetails): a signature made with another curve verifies nowhere.
    key = ec.generate_private_key(curve())
    name = key.curve.name
    for data, password in (
        (_pem(key), None),
        (_pem(key, "sec1"), None),
        (_cosign_pem(key, b"pw"), b"pw"),
    ):
        with pytest.raises(InputError, match=f"curve {name}, which cosign cannot read") as refused:
            load_private_key(data, password=password, what="k.pem")
        assert refused.value.exit_code == 2 and refused.value.hint
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InputError, match=f"curve {name}, which cosign cannot read"):
        load_public_key(pub, what="k.pub")
    # From the command line: exit 2, before anything is built.
    (tmp_path / "k.pem").write_bytes(_pem(key))
    (tmp_path / "m.yaml").write_text("name: t\nbases: {b: scratch}\nimage: {base: b}\n")
    ran = run_cli_here(["m.yaml", "--cache", "cache", "-o", "oci:out:x", "--sign", "k.pem"], cwd=tmp_path)
    assert ran.code == 2 and f"--sign k.pem: an ECDSA key on curve {name}" in ran.err, str(ran)
    assert "Traceback" not in ran.err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("curve", [ec.SECP256R1, ec.SECP384R1, ec.SECP521R1])
def test_keys_on_the_curves_cosign_reads_are_taken(curve: type[ec.EllipticCurve]) -> None:
    key = ec.generate_private_key(curve())
    signer = load_private_key(_cosign_pem(key, b""), password=b"", what="k")
    assert signer.verifier.verify(signer.sign(b"m"), b"m")
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_public_key(pub, what="k.pub").pem() == pub


@pytest.mark.parametrize(
    "make",
    [
        lambda: _pem(ed25519.Ed25519PrivateKey.generate()),
        lambda: _pem(ec.generate_private_key(ec.SECP256R1())),
        lambda: _pem(ec.generate_private_key(ec.SECP384R1()), "sec1"),
    ],
    ids=["ed25519", "ecdsa-p256", "ecdsa-p384-sec1"],
)
def test_plain_pem_keys_sign_deterministically_and_only_their_own_verify(make: Callable[[], bytes]) -> None:
    signer = load_private_key(make(), password=None, what="key.pem")
    stranger = Signer(ec.generate_private_key(ec.SECP256R1()))
    image = Descriptor(mt.OCI_MANIFEST, DIGEST, 779)
    sbom = Artifact(mt.SPDX_JSON, b'{"spdxVersion": "SPDX-2.3"}', "x.spdx.json", image)
    statement = {"_type": "https://in-toto.io/Statement/v1", "predicateType": PREDICATE_TYPES["slsaprovenance1"]}
    statement["subject"] = [{"name": "x", "digest": {"sha256": DIGEST[7:]}}]  # type: ignore[list-item]
    provenance = Artifact(mt.IN_TOTO_JSON, json.dumps(statement).encode(), "x.intoto.json", image)
    tested = {**statement, "predicateType": PREDICATE_TYPES["testresult"]}  # a test-result statement
    results = Artifact(mt.IN_TOTO_JSON, json.dumps(tested).encode(), "x.tests.intoto.json", image)
    first = sign_manifest(signer, DIGEST, IDENTITY, [sbom, provenance, results])
    assert first == sign_manifest(signer, DIGEST, IDENTITY, [sbom, provenance, results])  # the same bytes again

    blobs = {layer.descriptor.digest: layer.data for layer in (first.signature, *first.attestations)}
    sig, atts = [first.signature.descriptor], [a.descriptor for a in first.attestations]
    read = lambda d: blobs[d.digest]  # noqa: E731
    assert len(check(sig, read, DIGEST, signer.verifier, attestations=False).verified) == 1
    assert check(sig, read, DIGEST, stranger.verifier, attestations=False).rejected == [
        f"{sig[0].digest[:19]}: not signed by this key"
    ]
    for kind, uri in PREDICATE_TYPES.items():
        verdict = check(atts, read, DIGEST, signer.verifier, attestations=True, predicate_type=uri)
        assert [s["predicateType"] for s in verdict.verified] == [uri], kind
        assert verdict.verified[0]["subject"][0]["digest"] == {"sha256": DIGEST[7:]}
    assert not check(atts, read, DIGEST, stranger.verifier, attestations=True).verified
    other = "sha256:" + "1" * 64
    assert all("another subject" in r for r in check(atts, read, other, signer.verifier, attestations=True).rejected)


def test_only_registries_and_tagged_layouts_hold_signatures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from assembler.cli import main
    from assembler.oci.reference import parse_ref
    from assembler.transports.formats import holds_signatures

    assert holds_signatures(parse_ref("docker://registry.example/app:1"))
    assert holds_signatures(parse_ref(f"oci:{tmp_path}/l:tag"))
    for text in (f"oci:{tmp_path}/l", f"oci-archive:{tmp_path}/a.tar:t", f"sif:{tmp_path}/x.sif"):
        assert not holds_signatures(parse_ref(text)), text
    # assemble verify says so before it reads the key or the image.
    assert main(["verify", f"oci:{tmp_path}/l", "--key", str(tmp_path / "missing.pub")]) == 2
    said = capsys.readouterr().err
    assert "signatures live in registries (docker://...), OCI layouts (oci:DIR:TAG) and SIF files (sif:FILE)" in said


_SIGNED_TYPE = '"type":"cosign container image signature"'
# Payloads a trusted key may sign that are no cosign signature of DIGEST (any JSON at all).
MALFORMED_PAYLOADS = [
    b'{"critical":{' + _SIGNED_TYPE.encode() + b',"image":"sha256:x"},"optional":null}',
    b'{"critical":{' + _SIGNED_TYPE.encode() + b',"image":["' + DIGEST.encode() + b'"]}}',
    b'{"critical":{' + _SIGNED_TYPE.encode() + b',"image":{"docker-manifest-digest":["' + DIGEST.encode() + b'"]}}}',
    b'{"critical":{' + _SIGNED_TYPE.encode() + b',"image":{"docker-manifest-digest":{"a":1}}}}',
    b'{"critical":{' + _SIGNED_TYPE.encode() + b',"image":7}}',
    b'{"critical":{"type":["x"],"image":{}}}',
    b'{"critical":"x"}',
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"12",
    b"[" * 100_000 + b"]" * 100_000,
    b"\xff\xfe not utf-8",
    b"",
]
# Statements a trusted key may sign (in a well-formed envelope) that say nothing of DIGEST.
MALFORMED_STATEMENTS = [
    b'{"subject": 5}',
    b'{"subject": "sha256"}',
    b'{"subject": {"digest": {"sha256": "' + DIGEST[7:].encode() + b'"}}}',
    b'{"subject": [{"digest": "sha256:' + DIGEST[7:].encode() + b'"}]}',
    b'{"subject": [{"digest": {"sha256": ["' + DIGEST[7:].encode() + b'"]}}]}',
    b'{"subject": [{"digest": ["sha256"]}, 3, null, "x"]}',
    b'["subject"]',
    b"[" * 100_000 + b"]" * 100_000,
    b"\xff not utf-8",
]


@pytest.mark.parametrize("payload", MALFORMED_PAYLOADS, ids=range(len(MALFORMED_PAYLOADS)))
def test_a_malformed_payload_signed_by_the_key_is_refused_not_a_crash(payload: bytes) -> None:
    signer = Signer(ed25519.Ed25519PrivateKey.generate())
    signature = base64.b64encode(signer.sign(payload)).decode()
    layer = Descriptor(SIMPLE_SIGNING, sha256_digest(payload), len(payload), {SIGNATURE_ANNOTATION: signature})
    for wanted in (None, {"io.assemble.cache.tag": "step-a"}):
        verdict = check([layer], lambda d: payload, DIGEST, signer.verifier, attestations=False, annotations=wanted)
        assert not verdict.verified and len(verdict.rejected) == 1
        assert verdict.rejected[0].startswith(layer.digest[:19] + ": ") and len(verdict.rejected[0]) < 200


@pytest.mark.parametrize("statement", MALFORMED_STATEMENTS, ids=range(len(MALFORMED_STATEMENTS)))
def test_a_malformed_statement_signed_by_the_key_is_refused_not_a_crash(statement: bytes) -> None:
    from assembler.sign.cosign import DSSE_ENVELOPE, envelope

    signer = Signer(ec.generate_private_key(ec.SECP256R1()))
    data = envelope(statement, signer)
    layer = Descriptor(DSSE_ENVELOPE, sha256_digest(data), len(data), {SIGNATURE_ANNOTATION: ""})
    for predicate_type in (None, PREDICATE_TYPES["spdxjson"]):
        verdict = check(
            [layer], lambda d: data, DIGEST, signer.verifier, attestations=True, predicate_type=predicate_type
        )
        assert not verdict.verified and len(verdict.rejected) == 1, verdict
        assert verdict.rejected[0].startswith(layer.digest[:19] + ": ")


def test_assemble_verify_refuses_malformed_payloads_signed_by_the_key(tmp_path: Path) -> None:
    """`assemble verify` over a layout whose .sig and .att hold layers signed by the key
    over payloads that are no signature of the image: exit 1 with why, never a traceback."""
    from assembler.sign import Signed
    from assembler.sign.cosign import DSSE_ENVELOPE, SigLayer, envelope, signature_layer
    from assembler.transports import signatures

    (tmp_path / "f.txt").write_text("data\n")
    (tmp_path / "m.yaml").write_text(
        "name: t\nbases: {b: scratch}\nimage:\n  base: b\n  layers:\n    - copy: {from: ./f.txt, to: /f.txt}\n"
    )
    ran = run_cli_here(["m.yaml", "--cache", "cache", "-o", "oci:out:x"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    digest = next(m["digest"] for m in index["manifests"] if not m.get("artifactType"))
    signer = Signer(ed25519.Ed25519PrivateKey.generate())
    (tmp_path / "k.pub").write_bytes(signer.verifier.pem())
    payload = b'{"critical":{"type":"cosign container image signature","image":"' + digest.encode() + b'"}}'
    sig = SigLayer(SIMPLE_SIGNING, payload, {SIGNATURE_ANNOTATION: base64.b64encode(signer.sign(payload)).decode()})
    att = SigLayer(DSSE_ENVELOPE, envelope(b'{"subject": {"digest": 5}}', signer), {SIGNATURE_ANNOTATION: ""})
    signatures.write_layout(tmp_path / "out", [Signed(digest, sig, (att,))])
    ran = run_cli_here(["verify", "oci:out:x", "--key", "k.pub"], cwd=tmp_path)
    assert ran.code == 1 and "not a cosign signature payload" in ran.err and "Traceback" not in ran.err, str(ran)
    # A good signature beside it: the image verifies; the attestation is still refused.
    good = Signed(digest, signature_layer(signer, "out", digest), (att,))
    signatures.write_layout(tmp_path / "out", [good])
    ran = run_cli_here(["verify", "oci:out:x", "--key", "k.pub"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    ran = run_cli_here(["verify", "oci:out:x", "--key", "k.pub", "--type", "spdxjson"], cwd=tmp_path)
    assert ran.code == 1 and "no subject list" in ran.err and "Traceback" not in ran.err, str(ran)
