"""Referrers (part of the registry client): manifests whose ``subject`` is another one.

oras-py 0.2.43 has no referrers support. A registry with the referrers API
(``GET /v2/<repo>/referrers/<digest>``, ``OCI-Subject`` in a PUT's answer) is used as is;
one without it (distribution 2.8) gets the tag schema's fallback: an index tagged
``sha256-<subject hex>`` listing the referrers, updated on each push.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from assembler.errors import InputError, InvalidImage, NotFound
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, digest_hex, sha256_digest
from assembler.oci.image import Index
from assembler.registry.blobs import fetch_small, json_object
from assembler.registry.http import RegistryClient
from assembler.registry.manifests import MANIFEST_LIMIT, fetch_manifest, put_manifest


def fallback_tag(digest: str) -> str:
    return f"sha256-{digest_hex(digest)}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def list_referrers(
    http: RegistryClient, repository: str, digest: str, artifact_type: str | None = None
) -> list[Descriptor]:
    """Manifests whose subject is ``digest``: the referrers API, else the fallback tag.

    Raises RegistryError; an index that does not parse raises InvalidImage.
    """
    what = f"listing referrers of {digest} in {http.host}/{repository}"
    params = {"artifactType": artifact_type} if artifact_type else {}
    try:
        body, _ = fetch_small(
            http,
            http.url(f"/v2/{repository}/referrers/{digest}", **params),
            what=what,
            limit=MANIFEST_LIMIT,
            headers={"Accept": mt.OCI_INDEX},
        )
    except NotFound:
        # No referrers API (distribution 2.8): the tag schema's index, if any.
        try:
            body, _ = fetch_manifest(http, repository, fallback_tag(digest))
        except NotFound:
            return []
    try:
        found = list(Index(body).manifests)
    except InvalidImage as e:
        raise InvalidImage(f"{what}: not an image index ({e})") from e
    return [d for d in found if not artifact_type or d.artifact_type == artifact_type]


def put_referrer(http: RegistryClient, repository: str, manifest: bytes, media_type: str, subject: Descriptor) -> str:
    """Push ``manifest`` (whose ``subject`` is ``subject``) by digest; returns its digest.

    Without a referrers API (no ``OCI-Subject`` in the answer) the index tagged
    ``sha256-<subject hex>`` is updated too. Its blobs must be pushed first.
    Raises InputError when the manifest's subject is not ``subject``.
    """
    data = json_object(manifest, "referrer manifest")
    named = _mapping(data.get("subject"))
    if named.get("digest") != subject.digest:
        raise InputError(f"referrer manifest: subject is {named.get('digest')!r}, expected {subject.digest}")
    response = put_manifest(http, repository, sha256_digest(manifest), manifest, media_type)
    digest = sha256_digest(manifest)
    if response.headers.get("OCI-Subject"):
        return digest
    tag = fallback_tag(subject.digest)
    try:
        existing, _ = fetch_manifest(http, repository, tag)
        entries: list[Any] = list(json_object(existing, f"referrers index {tag}").get("manifests") or [])
    except NotFound:
        entries = []
    if any(isinstance(e, Mapping) and e.get("digest") == digest for e in entries):
        return digest
    config = _mapping(data.get("config"))
    entry = Descriptor(
        media_type,
        digest,
        len(manifest),
        annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
        artifact_type=str(data.get("artifactType") or config.get("mediaType") or ""),
    )
    index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [*entries, entry.to_json()]}
    put_manifest(http, repository, tag, canonical_json(index), mt.OCI_INDEX)
    return digest
