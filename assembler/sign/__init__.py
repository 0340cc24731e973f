"""Signing images as cosign does, and checking such signatures (``--sign``, ``assemble verify``).

:mod:`~assembler.sign.keys` reads keys (cosign's encrypted ones and plain PEM Ed25519 or
ECDSA) and signs; :mod:`~assembler.sign.cosign` makes cosign's signature and attestation
manifests; :mod:`~assembler.sign.verify` checks them. Nothing here reads or writes an
image: :mod:`assembler.transports.signatures` puts them in registries and OCI layouts.
:func:`sign_manifest` is what a writer asks for: the signature of one manifest digest and
the attestations of its referrers (its SBOM and its provenance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.sign.cosign import PREDICATE_TYPES, SigLayer, attestation_layer, signature_layer
from assembler.sign.keys import Signer, Verifier, load_private_key, load_public_key
from assembler.sign.verify import Verdict

__all__ = [
    "PREDICATE_TYPES",
    "Signed",
    "Signer",
    "Verdict",
    "Verifier",
    "load_private_key",
    "load_public_key",
    "sign_manifest",
]

# The referrers that are attested: the SPDX SBOM, the SLSA provenance (an in-toto statement).
ATTESTED = (mt.SPDX_JSON, mt.IN_TOTO_JSON)


@dataclass(frozen=True)
class Signed:
    """The signature of manifest ``digest`` and the attestations of its referrers."""

    digest: str
    signature: SigLayer
    attestations: tuple[SigLayer, ...] = ()


def sign_manifest(signer: Signer, digest: str, identity: str, referrers: Sequence[Artifact] = ()) -> Signed:
    """Sign manifest ``digest``, named ``identity`` (``HOST/REPO``), and attest each of
    ``referrers`` (artifacts whose subject it is: the SBOM, the provenance)."""
    attested = [a for a in referrers if a.subject.digest == digest and a.artifact_type in ATTESTED]
    attestations = tuple(attestation_layer(signer, a, identity) for a in attested)
    return Signed(digest, signature_layer(signer, identity, digest), attestations)
