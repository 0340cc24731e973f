"""Signing keys: a private key to sign with, a public key to verify with.

Read from PEM: cosign's own encrypted private key (``cosign generate-key-pair``:
``ENCRYPTED SIGSTORE PRIVATE KEY``, or the older ``ENCRYPTED COSIGN PRIVATE KEY``), whose
body is go-securesystemslib's ``encrypted`` JSON (scrypt, then NaCl secretbox, over the
PKCS #8 key), or a plain PEM private key (PKCS #8, SEC 1 ``EC PRIVATE KEY``, or an
encrypted PKCS #8 one); public keys as ``PUBLIC KEY`` PEM. Ed25519 and ECDSA (P-256,
P-384, P-521) keys, signed as cosign signs with them: Ed25519 over the message itself,
ECDSA over its SHA-256 digest (ASN.1 DER). ECDSA signatures are deterministic (RFC 6979),
as Ed25519's are: the same key over the same bytes gives the same signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from assembler.errors import InputError

COSIGN_KEY_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
# go-securesystemslib's scrypt parameters (legacy, standard, OWASP): the only ones it reads.
_SCRYPT_PARAMS = ({"N": 32768, "r": 8, "p": 1}, {"N": 65536, "r": 8, "p": 1}, {"N": 131072, "r": 8, "p": 1})

# The curves cosign reads (sigstore's GetDefaultPublicKeyDetails and goodkey's policy):
# a secp256k1 or P-224 key would sign images no cosign can verify.
_COSIGN_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True)
class Verifier:
    """A public key: checks signatures made as :meth:`Signer.sign` makes them."""

    key: PublicKey

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            if isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, message)
            else:
                self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def key_id(self) -> str:
        """A short name of the key for messages: sha256 of its DER form, 16 hex digits."""
        der = self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return hashlib.sha256(der).hexdigest()[:16]

    @property
    def ssh_fingerprint(self) -> str:
        """``SHA256:BASE64`` of the key's SSH wire form, as ``ssh-keygen -l`` prints it: the
        key ID of a DSSE envelope go-securesystemslib signs (``dsse.SHA256KeyID``)."""
        line = self.key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        wire = base64.b64decode(line.split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(wire).digest()).decode().rstrip("=")

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        """Pickled as its DER (cryptography's keys do not pickle): a Slurm job file carries it."""
        der = self.key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return (_verifier_from_der, (der,))


@dataclass(frozen=True)
class Signer:
    """A private key: signs as cosign does with it."""

    key: PrivateKey

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(message)
        return self.key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.key.public_key())

    def __reduce__(self) -> tuple[Any, tuple[bytes]]:
        """Pickled as its PKCS #8 DER, unencrypted (cryptography's keys do not pickle): what
        a Slurm job file carries to the node that signs the step cache's entries. That file
        is its user's alone (mode 0600, :func:`assembler.pipeline.steps.slurm.write_job`)."""
        der = self.key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return (_signer_from_der, (der,))


def _signer_from_der(der: bytes) -> Signer:
    return _checked_private(serialization.load_der_private_key(der, password=None), "a pickled key")


def _verifier_from_der(der: bytes) -> Verifier:
    return _checked_public(serialization.load_der_public_key(der), "a pickled key")


def _pem_blocks(data: bytes, what: str) -> list[tuple[str, bytes]]:
    blocks = [(kind.decode(), body) for kind, body in _PEM.findall(data)]
    if not blocks:
        raise InputError(f"{what}: not a PEM file (no -----BEGIN ...----- block)")
    return blocks


def _check_curve(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey, what: str) -> None:
    """InputError for an ECDSA key on a curve cosign does not read."""
    if key.curve.name not in _COSIGN_CURVES:
        raise InputError(
            f"{what}: an ECDSA key on curve {key.curve.name}, which cosign cannot read; "
            f"only {', '.join(_COSIGN_CURVES.values())} and Ed25519 keys are used",
            hint="make a key cosign reads: cosign generate-key-pair (ECDSA P-256)",
        )


def _checked_private(key: Any, what: str) -> Signer:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        _check_curve(key, what)
    if isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        return Signer(key)
    raise InputError(f"{what}: a {type(key).__name__}; only Ed25519 and ECDSA keys sign")


def _checked_public(key: Any, what: str) -> Verifier:
    if isinstance(key, ec.EllipticCurvePublicKey):
        _check_curve(key, what)
    if isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        return Verifier(key)
    raise InputError(f"{what}: a {type(key).__name__}; only Ed25519 and ECDSA keys verify")


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"{what}: not a cosign key (a field is missing)")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as e:
        raise InputError(f"{what}: not a cosign key ({e})") from None


def decrypt_cosign_key(body: bytes, password: bytes, what: str) -> bytes:
    """The PKCS #8 DER key inside cosign's encrypted key body (base64 of go-securesystemslib's
    JSON: ``kdf`` scrypt with ``salt`` and ``params``, ``cipher`` nacl/secretbox with
    ``nonce``, ``ciphertext``). InputError for a wrong password or another format."""
    try:
        data = json.loads(base64.b64decode(body))
        kdf, cipher = data["kdf"], data["cipher"]
    except (ValueError, TypeError, KeyError, binascii.Error) as e:
        raise InputError(f"{what}: not a cosign key ({e})") from None
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise InputError(f"{what}: unknown key encryption {kdf.get('name')!r}/{cipher.get('name')!r}")
    params = kdf.get("params")
    if params not in _SCRYPT_PARAMS:
        raise InputError(f"{what}: unsupported scrypt parameters {params!r}")
    key = hashlib.scrypt(
        password,
        salt=_b64(kdf.get("salt"), what),
        n=params["N"],
        r=params["r"],
        p=params["p"],
        dklen=32,
        maxmem=1 << 28,
    )
    try:
        return nacl.secret.SecretBox(key).decrypt(_b64(data.get("ciphertext"), what), _b64(cipher.get("nonce"), what))
    except nacl.exceptions.CryptoError:
        raise InputError(f"{what}: wrong password", hint="set COSIGN_PASSWORD to the key's password") from None


def load_private_key(data: bytes, *, password: bytes | None, what: str) -> Signer:
    """The signing key in PEM ``data`` (a cosign key needs ``password``, maybe empty).

    Raises InputError: not PEM, a wrong or missing password, an unsupported key type."""
    kind, body = _pem_blocks(data, what)[0]
    if kind in COSIGN_KEY_TYPES:
        if password is None:
            raise InputError(f"{what}: an encrypted cosign key, and no $COSIGN_PASSWORD", hint="set COSIGN_PASSWORD")
        der = decrypt_cosign_key(b"".join(body.split()), password, what)
        try:
            return _checked_private(serialization.load_der_private_key(der, None), what)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise InputError(f"{what}: the decrypted key does not parse ({e})") from None
    if "PRIVATE KEY" not in kind:
        raise InputError(f"{what}: a PEM {kind}, not a private key")
    secret = password if kind == "ENCRYPTED PRIVATE KEY" else None
    if kind == "ENCRYPTED PRIVATE KEY" and not password:
        raise InputError(f"{what}: an encrypted key, and no $COSIGN_PASSWORD", hint="set COSIGN_PASSWORD")
    try:
        return _checked_private(serialization.load_pem_private_key(data, secret), what)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InputError(f"{what}: the key does not load ({e})") from None


def load_public_key(data: bytes, *, what: str) -> Verifier:
    """The public key in PEM ``data`` (``cosign.pub``, or any ``PUBLIC KEY`` PEM); InputError."""
    kinds = [kind for kind, _ in _pem_blocks(data, what)]
    if "PUBLIC KEY" not in kinds:
        raise InputError(f"{what}: a PEM {kinds[0]}, not a public key", hint="give the .pub file")
    try:
        return _checked_public(serialization.load_pem_public_key(data), what)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise InputError(f"{what}: the public key does not load ({e})") from None
