"""Checking cosign signatures and attestations of one manifest digest, as ``cosign verify
--key`` and ``cosign verify-attestation --key`` check them (the transparency log aside).

A signature counts when its signature verifies with the key over its payload's exact
bytes and that payload names this digest. An attestation counts when its DSSE envelope's
signature verifies over the envelope's pre-authentication encoding, its statement's
subject names this digest, and (when asked) its predicate type is the one asked for.
Nothing here reads a registry or a file: the layers' blobs come through ``read``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import digest_hex
from assembler.sign.cosign import DSSE_ENVELOPE, SIGNATURE_ANNOTATION, SIGNATURE_TYPE, SIMPLE_SIGNING, pae
from assembler.sign.keys import Verifier

# A signature payload is a few hundred bytes, an attestation an SBOM: bounded all the same.
MAX_PAYLOAD = 64 << 20


@dataclass
class Verdict:
    """The layers that verified (their payloads: a simple signing payload, or an in-toto
    statement) and, for each one that did not, why."""

    verified: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def _json(data: bytes) -> Any:
    """``data`` parsed, or None: not JSON, not UTF-8, or nested past the parser's depth."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def _field(value: Any, *names: str) -> Any:
    """``value[names[0]][names[1]]...`` where each step is a JSON object, else None: a
    payload the key signed may still be any JSON at all."""
    for name in names:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _b64(text: Any) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except binascii.Error:
        return None


def _signature(
    payload: bytes, desc: Descriptor, digest: str, verifier: Verifier, annotations: Mapping[str, str]
) -> dict[str, Any] | str:
    """The payload of a signature layer that verifies and carries ``annotations``, else why not."""
    signature = _b64(desc.annotations.get(SIGNATURE_ANNOTATION))
    if not signature:
        return f"{desc.digest[:19]}: no {SIGNATURE_ANNOTATION} annotation"
    if not verifier.verify(signature, payload):
        return f"{desc.digest[:19]}: not signed by this key"
    data = _json(payload)
    named = _field(data, "critical", "image", "docker-manifest-digest")
    if _field(data, "critical", "type") != SIGNATURE_TYPE or not isinstance(named, str):
        return f"{desc.digest[:19]}: not a cosign signature payload"
    if named != digest:
        return f"{desc.digest[:19]}: signs {named[:80]!r}, not {digest}"
    missing = [k for k, v in annotations.items() if _field(data, "optional", k) != v]
    if missing:
        return f"{desc.digest[:19]}: signs it without {', '.join(f'{k}={annotations[k]}' for k in missing)}"
    result: dict[str, Any] = data
    return result


def _statement(
    payload: bytes, desc: Descriptor, digest: str, verifier: Verifier, annotations: Mapping[str, str]
) -> dict[str, Any] | str:
    """The in-toto statement of an attestation layer that verifies, else why not."""
    env = _json(payload)
    if not isinstance(env, dict) or env.get("payloadType") != mt.IN_TOTO_JSON:
        return f"{desc.digest[:19]}: not a DSSE envelope of an in-toto statement"
    body = _b64(env.get("payload"))
    signatures = env.get("signatures")
    if body is None or not isinstance(signatures, list):
        return f"{desc.digest[:19]}: a DSSE envelope without payload or signatures"
    message = pae(mt.IN_TOTO_JSON, body)
    sigs = [_b64(s.get("sig")) if isinstance(s, dict) else None for s in signatures]
    if not any(sig and verifier.verify(sig, message) for sig in sigs):
        return f"{desc.digest[:19]}: not signed by this key"
    statement = _json(body)
    subjects = _field(statement, "subject")
    if not isinstance(subjects, list):
        return f"{desc.digest[:19]}: not an in-toto statement (no subject list)"
    if not any(_field(s, "digest", "sha256") == digest_hex(digest) for s in subjects):
        return f"{desc.digest[:19]}: a statement about another subject"
    result: dict[str, Any] = statement
    return result


def check(
    layers: Sequence[Descriptor],
    read: Callable[[Descriptor], bytes],
    digest: str,
    verifier: Verifier,
    *,
    attestations: bool,
    predicate_type: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Verdict:
    """Which of a ``.sig`` (or, with ``attestations``, ``.att``) manifest's ``layers``
    verify for manifest ``digest`` with ``verifier``'s key; with ``predicate_type``, only
    statements of that type count; with ``annotations``, only signatures whose payload
    carries them (as ``cosign verify -a KEY=VALUE``). ``read`` gives a layer's blob (verified)."""
    verdict = Verdict()
    kind, checker = (DSSE_ENVELOPE, _statement) if attestations else (SIMPLE_SIGNING, _signature)
    for desc in layers:
        if desc.media_type != kind or desc.size > MAX_PAYLOAD:
            verdict.rejected.append(f"{desc.digest[:19]}: a {desc.media_type} layer of {desc.size} bytes")
            continue
        found = checker(read(desc), desc, digest, verifier, annotations or {})
        if isinstance(found, str):
            verdict.rejected.append(found)
        elif predicate_type and found.get("predicateType") != predicate_type:
            verdict.rejected.append(f"{desc.digest[:19]}: predicate type {str(found.get('predicateType'))[:80]!r}")
        else:
            verdict.verified.append(found)
    return verdict
