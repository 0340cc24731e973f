"""SIF signatures as Apptainer writes and checks them with a PEM key (``apptainer sign
--key``, ``apptainer verify --key``): apptainer/sif's ``pkg/integrity`` with a sigstore
signer, its DSSE encoder (``dsse.go``) and image metadata (``metadata.go``).

A signature is one data object (type 0x4005, in no group, linked to object group 1, hash
type SHA-256, an empty entity) appended after the last object. Its bytes are a DSSE
envelope (JSON, one line) whose payload, of type
``application/vnd.sylabs.sif-metadata+json``, is the image metadata::

    {"version":1,"header":{"digest":"sha256:HEX"},
     "objects":[{"relativeId":0,"descriptorDigest":"sha256:HEX","objectDigest":"sha256:HEX"},...]}

- the header's digest: sha256 of its launch script (32 bytes), magic (10), version (3) and
  UUID (16), as the file holds them (``header.GetIntegrityReader``);
- per object of the group, in ID order: its ID less the group's smallest, the sha256 of
  its descriptor's stable fields (type int32, used bool, relative ID uint32, link uint32,
  size, created, uid, gid int64, little-endian, then name[128] and extra[384]:
  ``Descriptor.GetIntegrityReader``) and the sha256 of its data.

The envelope's signature is over DSSE's pre-authentication encoding of that payload, made
as sigstore's signer of the key makes it (Ed25519 over the bytes, ECDSA P-256/384/521 over
their SHA-256, ASN.1), its ``keyid`` the key's SSH SHA-256 fingerprint
(go-securesystemslib's ``SHA256KeyID``). Verifying reads the same back: the envelope
signed by the key, and every digest the file's now; the signed objects exactly the
group's. Deterministic (Ed25519, and RFC 6979 ECDSA): the same SIF and key give the same
bytes; the header's modified time and the signature's times are the SIF's epoch.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from assembler.errors import InputError, InvalidImage
from assembler.sign.cosign import pae
from assembler.sign.keys import Signer, Verifier
from assembler.transports.hpc.sif_format import (
    DATA_SIGNATURE,
    DEFAULT_GROUP,
    DESCRIPTOR,
    GROUP_MASK,
    HEADER,
    SifObject,
    read_sif_header,
)

METADATA_TYPE = "application/vnd.sylabs.sif-metadata+json"
HASH_SHA256 = 1  # sif.go hashType: hashSHA256 = iota + 1
_SIGNATURE_EXTRA = struct.Struct("<i256s")  # type signature struct { Hashtype; Entity [256]byte }
_INTEGRITY_FIELDS = struct.Struct("<iBIIqqqq")  # DataType, Used, relative ID, LinkedID, Size, CreatedAt, UID, GID
_CHUNK = 1 << 20
# An envelope is a few hundred bytes; a signature object larger than this is not one of ours or theirs.
MAX_SIGNATURE = 1 << 20


@dataclass(frozen=True)
class _Raw:
    """A used descriptor's fields as the file holds them (uid and gid too: Apptainer's
    older SIFs may carry them, and they are in what is signed)."""

    obj: SifObject
    uid: int
    gid: int
    name: bytes
    extra: bytes


@dataclass
class SifVerdict:
    """What :func:`verify_sif` found: the signatures that verified (their key IDs and the
    object IDs each covers) and, for each that did not, why."""

    verified: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.verified) and not self.rejected

    def said(self, key_id: str) -> list[str]:
        """Each object group that verified, with its objects and signature object."""
        return [
            f"object group {v['group']} (objects {', '.join(str(i) for i in v['objects'])}) signed by key"
            f" {key_id} (signature object {v['signature']})"
            for v in self.verified
        ]


def _descriptors(f: BinaryIO, path: Path) -> tuple[bytes, list[_Raw]]:
    header = read_sif_header(path)
    f.seek(0)
    head = f.read(HEADER.size)
    f.seek(header.descriptors_offset)
    table = f.read(header.descriptors_size)
    raws = []
    by_id = {o.id: o for o in header.objects}
    for i in range(header.descriptors_total):
        fields = DESCRIPTOR.unpack_from(table, i * DESCRIPTOR.size)
        if fields[1] and fields[2] in by_id:
            raws.append(_Raw(by_id[fields[2]], fields[10], fields[11], fields[12], fields[13]))
    return head, raws


def _header_digest(head: bytes) -> str:
    launch, magic, version, _arch, ident = HEADER.unpack_from(head)[:5]
    return "sha256:" + hashlib.sha256(launch + magic + version + ident).hexdigest()


def _data_digest(f: BinaryIO, obj: SifObject) -> str:
    h = hashlib.sha256()
    f.seek(obj.offset)
    left = obj.size
    while left:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            raise InvalidImage(f"SIF object {obj.id} is cut short")
        h.update(chunk)
        left -= len(chunk)
    return "sha256:" + h.hexdigest()


def _descriptor_digest(raw: _Raw, relative_id: int) -> str:
    o = raw.obj
    fixed = _INTEGRITY_FIELDS.pack(o.data_type, 1, relative_id, o.link, o.size, o.created, raw.uid, raw.gid)
    return "sha256:" + hashlib.sha256(fixed + raw.name + raw.extra).hexdigest()


def _group(raws: list[_Raw], group: int) -> list[_Raw]:
    return sorted((r for r in raws if r.obj.group == group), key=lambda r: r.obj.id)


def _metadata(f: BinaryIO, head: bytes, members: list[_Raw]) -> dict[str, Any]:
    low = min(r.obj.id for r in members)
    return {
        "version": 1,
        "header": {"digest": _header_digest(head)},
        "objects": [
            {
                "relativeId": r.obj.id - low,
                "descriptorDigest": _descriptor_digest(r, r.obj.id - low),
                "objectDigest": _data_digest(f, r.obj),
            }
            for r in members
        ],
    }


def _go_json(value: Any) -> bytes:
    """Compact JSON as Go's encoding/json writes these values (no HTML characters in them)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def signature_object(path: Path, signer: Signer, *, group: int = DEFAULT_GROUP) -> bytes:
    """The bytes of the signature object :func:`sign_sif` appends for ``group``: a DSSE
    envelope over the group's metadata, one JSON line as Go's json.Encoder ends it."""
    with open(path, "rb") as f:
        head, raws = _descriptors(f, path)
        members = _group(raws, group)
        if not members:
            raise InvalidImage(f"{path}: SIF has no object in group {group} to sign")
        payload = _go_json(_metadata(f, head, members))
    sig = signer.sign(pae(METADATA_TYPE, payload))
    envelope = {
        "payloadType": METADATA_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [{"keyid": signer.verifier.ssh_fingerprint, "sig": base64.b64encode(sig).decode()}],
    }
    return _go_json(envelope) + b"\n"


def sign_sif(path: Path, signer: Signer, *, epoch: int) -> SifObject:
    """Append a signature of object group 1 to the SIF file at ``path``, in place, as
    ``apptainer sign --key`` adds it; the new descriptor. Raises InvalidImage for a SIF
    with no free descriptor or nothing in the group."""
    header = read_sif_header(path)
    if header.descriptors_free <= 0:
        raise InvalidImage(f"{path}: SIF has no free descriptor for a signature")
    data = signature_object(path, signer)
    offset = header.data_offset + header.data_size
    new_id = len(header.objects) + 1
    if any(o.id == new_id for o in header.objects) or len(header.objects) >= header.descriptors_total:
        raise InvalidImage(f"{path}: SIF descriptors are not numbered 1..{len(header.objects)}")
    obj = SifObject(
        DATA_SIGNATURE,
        new_id,
        offset,
        len(data),
        len(data),
        epoch,
        epoch,
        group=0,
        link=DEFAULT_GROUP | GROUP_MASK,
        extra=_SIGNATURE_EXTRA.pack(HASH_SHA256, b""),
    )
    updated = dataclasses.replace(
        header, modified=epoch, descriptors_free=header.descriptors_free - 1, data_size=header.data_size + len(data)
    )
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.truncate()
        f.seek(header.descriptors_offset + len(header.objects) * DESCRIPTOR.size)
        f.write(obj.pack())
        f.seek(0)
        f.write(updated.pack())
        f.flush()
        os.fsync(f.fileno())
    return next(o for o in read_sif_header(path).objects if o.id == new_id)


def _envelope(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(value, dict) or value.get("payloadType") != METADATA_TYPE:
        return None
    return value


def _b64(text: Any) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None)
    except (binascii.Error, ValueError):
        return None


def _signed_by(envelope: dict[str, Any], verifier: Verifier) -> bytes | None:
    """The payload when one of the envelope's signatures verifies with the key."""
    payload = _b64(envelope.get("payload"))
    signatures = envelope.get("signatures")
    if payload is None or not isinstance(signatures, list):
        return None
    message = pae(METADATA_TYPE, payload)
    for s in signatures:
        sig = _b64(s.get("sig")) if isinstance(s, dict) else None
        if sig is not None and verifier.verify(sig, message):
            return payload
    return None


def _signatures(f: BinaryIO, raws: list[_Raw]) -> Iterator[tuple[_Raw, bytes]]:
    for r in raws:
        if r.obj.data_type != DATA_SIGNATURE:
            continue
        if r.obj.size > MAX_SIGNATURE:
            yield r, b""
            continue
        f.seek(r.obj.offset)
        yield r, f.read(r.obj.size)


def _check(f: BinaryIO, head: bytes, raws: list[_Raw], group: int, metadata: Any) -> str | None:
    """Why the signed metadata does not match the file now (None when it does)."""
    if not isinstance(metadata, dict) or metadata.get("version") != 1:
        return "its metadata is not version 1"
    header = metadata.get("header")
    if not isinstance(header, dict) or header.get("digest") != _header_digest(head):
        return "the SIF header changed since it was signed"
    members = _group(raws, group)
    if not members:
        return f"object group {group} is empty"
    now = _metadata(f, head, members)["objects"]
    signed = metadata.get("objects")
    if not isinstance(signed, list) or not all(isinstance(o, dict) for o in signed):
        return "its metadata's objects are not a list of objects"
    if len(signed) != len(now):
        return f"it covers other objects than group {group} holds now"
    low = min(r.obj.id for r in members)
    order = sorted(signed, key=lambda o: o["relativeId"] if isinstance(o.get("relativeId"), int) else -1)
    for was, is_ in zip(order, now, strict=True):
        oid = low + is_["relativeId"]
        if was.get("relativeId") != is_["relativeId"]:
            return f"it covers other objects than group {group} holds now"
        if was.get("descriptorDigest") != is_["descriptorDigest"]:
            return f"object {oid}'s descriptor changed since it was signed"
        if was.get("objectDigest") != is_["objectDigest"]:
            return f"object {oid}'s data changed since it was signed"
    return None


def verify_sif(path: Path, verifier: Verifier) -> SifVerdict:
    """Check the SIF at ``path`` as ``apptainer verify --key`` does: every object group
    has a signature that verifies with the key and whose digests match the file now.
    Raises NotFound/InputError for a file that is not a SIF."""
    verdict = SifVerdict()
    with open(path, "rb") as f:
        head, raws = _descriptors(f, path)
        verdict.rejected += [
            f"object {r.obj.id} is in no object group and is not a signature"
            for r in raws
            if not r.obj.group and r.obj.data_type != DATA_SIGNATURE
        ]
        groups = sorted({r.obj.group for r in raws if r.obj.group})
        for group in groups:
            found = False
            for sig, data in _signatures(f, raws):
                if sig.obj.link != group | GROUP_MASK:
                    continue
                found = True
                envelope = _envelope(data)
                if envelope is None:
                    verdict.rejected.append(f"signature object {sig.obj.id}: not a DSSE envelope of SIF metadata")
                    continue
                payload = _signed_by(envelope, verifier)
                if payload is None:
                    verdict.rejected.append(f"signature object {sig.obj.id}: not signed by this key")
                    continue
                try:
                    metadata = json.loads(payload)
                except (ValueError, UnicodeDecodeError, RecursionError):
                    verdict.rejected.append(f"signature object {sig.obj.id}: its payload is not JSON")
                    continue
                why = _check(f, head, raws, group, metadata)
                if why:
                    verdict.rejected.append(f"signature object {sig.obj.id}: {why}")
                    continue
                objects = sorted(r.obj.id for r in _group(raws, group))
                verdict.verified.append({"signature": sig.obj.id, "group": group, "objects": objects})
            if not found:
                verdict.rejected.append(f"object group {group} has no signature")
    if not verdict.verified and not verdict.rejected:
        raise InputError(f"{path}: SIF has no object group to verify")
    return verdict
