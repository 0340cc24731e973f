"""cosign's signature format: what ``cosign sign`` and ``cosign attest`` write, made here.

An image ``sha256:<hex>`` is signed by an image manifest tagged ``sha256-<hex>.sig`` in
its repository (:func:`sig_tag`). Each layer is one signature: its blob the "simple
signing" payload (:func:`simple_signing_payload`, media type
``application/vnd.dev.cosign.simplesigning.v1+json``) naming the image's digest, its
annotation ``dev.cosignproject.cosign/signature`` the base64 signature over those bytes.
Attestations are tagged ``sha256-<hex>.att``: each layer a DSSE envelope
(``application/vnd.dsse.envelope.v1+json``) of an in-toto statement whose subject is the
image, signed over DSSE's pre-authentication encoding (:func:`pae`), with the annotations
``predicateType`` and an empty ``dev.cosignproject.cosign/signature``. The manifest's
config is the image config go-containerregistry gives an empty image with those layers
appended (:func:`signature_config`). A transparency-log bundle annotation is not written:
``cosign verify --insecure-ignore-tlog`` does not ask for one.

Signing a second time adds a layer to what the tag holds (:func:`merge_layers`), as cosign
does; the same signature is not added twice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from assembler.errors import InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, digest_hex, sha256_digest
from assembler.sign.keys import Signer

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_ANNOTATION = "predicateType"
SIGNATURE_TYPE = "cosign container image signature"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPES = mt.PREDICATE_TYPES
# go-containerregistry's zero time, as an empty image's config carries it.
_ZERO_TIME = "0001-01-01T00:00:00Z"


def sig_tag(digest: str) -> str:
    """The tag of the signatures of manifest ``digest``."""
    return f"sha256-{digest_hex(digest)}.sig"


def att_tag(digest: str) -> str:
    """The tag of the attestations of manifest ``digest``."""
    return f"sha256-{digest_hex(digest)}.att"


def simple_signing_payload(identity: str, digest: str, annotations: Mapping[str, str] | None = None) -> bytes:
    """The payload cosign signs for image ``digest`` named ``identity`` (``HOST/REPO``):
    the same bytes Go's json.Marshal gives sigstore's ``payload.Cosign``. ``annotations``
    go in its ``optional`` part, as ``cosign sign -a KEY=VALUE`` puts them (``cosign verify
    -a KEY=VALUE`` checks them)."""
    critical = {"identity": {"docker-reference": identity}, "image": {"docker-manifest-digest": digest}}
    optional = dict(annotations) if annotations else None
    return canonical_json({"critical": {**critical, "type": SIGNATURE_TYPE}, "optional": optional})


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what an envelope's signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)


def envelope(statement: bytes, signer: Signer) -> bytes:
    """A DSSE envelope of ``statement`` (an in-toto statement), signed by ``signer``; its
    fields in the order cosign writes them."""
    signature = signer.sign(pae(mt.IN_TOTO_JSON, statement))
    body = {
        "payloadType": mt.IN_TOTO_JSON,
        "payload": base64.b64encode(statement).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
    }
    return _go_json(body)


def statement_of(artifact: Artifact, name: str) -> bytes:
    """The in-toto statement an attestation of ``artifact`` (a referrer: the SPDX SBOM or
    the provenance) signs: the provenance is one already; the SBOM is put in one as its
    predicate (``https://spdx.dev/Document``), its subject the image, named ``name``."""
    if artifact.artifact_type == mt.IN_TOTO_JSON:
        return artifact.data
    if artifact.artifact_type != mt.SPDX_JSON:
        raise ValueError(f"no attestation for {artifact.artifact_type}")
    return canonical_json(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": name, "digest": {"sha256": digest_hex(artifact.subject.digest)}}],
            "predicateType": PREDICATE_TYPES["spdxjson"],
            "predicate": json.loads(artifact.data),
        }
    )


@dataclass(frozen=True)
class SigLayer:
    """One layer of a signature manifest: its blob and its descriptor's annotations."""

    media_type: str
    data: bytes
    annotations: Mapping[str, str]

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, sha256_digest(self.data), len(self.data), dict(self.annotations))


def signature_layer(
    signer: Signer, identity: str, digest: str, annotations: Mapping[str, str] | None = None
) -> SigLayer:
    """The signature of image ``digest`` (named ``identity``) by ``signer``, with
    ``annotations`` in its payload (see :func:`simple_signing_payload`)."""
    payload = simple_signing_payload(identity, digest, annotations)
    signature = base64.b64encode(signer.sign(payload)).decode()
    return SigLayer(SIMPLE_SIGNING, payload, {SIGNATURE_ANNOTATION: signature})


def attestation_layer(signer: Signer, artifact: Artifact, name: str) -> SigLayer:
    """The attestation of ``artifact`` (of its subject, named ``name``) by ``signer``."""
    statement = statement_of(artifact, name)
    predicate = str(json.loads(statement)["predicateType"])
    return SigLayer(
        DSSE_ENVELOPE, envelope(statement, signer), {PREDICATE_ANNOTATION: predicate, SIGNATURE_ANNOTATION: ""}
    )


def _go_json(value: Any) -> bytes:
    """JSON as Go's json.Marshal writes a struct: fields in their declared order, compact."""
    return json.dumps(value, separators=(",", ":")).encode()


def _go_descriptor(d: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": d.media_type, "size": d.size, "digest": d.digest}
    if d.annotations:
        out["annotations"] = dict(sorted(d.annotations.items()))  # a Go map: sorted keys
    return out


def signature_config(layers: Sequence[Descriptor]) -> bytes:
    """The config of a signature manifest of ``layers``: go-containerregistry's empty image
    with them appended (each layer its own diff_id: the payloads are not compressed), in
    its field order, so the bytes are cosign's."""
    config = {
        "architecture": "",
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [d.digest for d in layers]},
        "config": {},
    }
    return _go_json(config)


def signature_manifest(layers: Sequence[Descriptor]) -> tuple[bytes, bytes]:
    """The manifest of ``layers`` and its config, as bytes (cosign's, for the same layers)."""
    config = signature_config(layers)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": _go_descriptor(Descriptor(mt.OCI_CONFIG, sha256_digest(config), len(config))),
        "layers": [_go_descriptor(d) for d in layers],
    }
    return _go_json(manifest), config


def manifest_layers(body: bytes, what: str) -> list[Descriptor]:
    """The layers of a signature manifest; InvalidImage when it is not one."""
    try:
        data: Any = json.loads(body)
        return [Descriptor.from_json(d) for d in data["layers"]]
    except (ValueError, TypeError, KeyError, InvalidImage) as e:
        raise InvalidImage(f"{what}: not a signature manifest ({e})") from e


def merge_layers(existing: Sequence[Descriptor], added: Sequence[Descriptor]) -> list[Descriptor]:
    """``existing`` and then those of ``added`` it does not hold (same blob, same annotations)."""
    out = list(existing)
    for desc in added:
        if not any(d.digest == desc.digest and d.annotations == desc.annotations for d in out):
            out.append(desc)
    return out
