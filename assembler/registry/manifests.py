"""Manifests and indexes as their exact bytes (part of the registry client).

oras-py re-serialises the JSON it pushes (the digest changes) and cannot push an index;
here the bytes go up as they are and the registry's ``Docker-Content-Digest`` is compared
with sha256 of those bytes. A manifest fetched by digest, or one whose digest the
registry announces, is checked against it.
"""

from __future__ import annotations

import logging

import requests

from assembler.errors import DigestMismatch, InputError, InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.digest import is_digest, sha256_digest
from assembler.oci.image import parse_manifest_or_index
from assembler.registry.blobs import fetch_small, json_object
from assembler.registry.http import RegistryClient

log = logging.getLogger(__name__)

MANIFEST_LIMIT = 4 << 20  # what containerd accepts for a manifest
MANIFEST_TYPES = (mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST)


def where(http: RegistryClient, repository: str) -> str:
    """``HOST/REPO``, as messages name a repository."""
    return f"{http.host}/{repository}"


def fetch_manifest(http: RegistryClient, repository: str, reference: str) -> tuple[bytes, str]:
    """The exact manifest (or index) bytes and their media type.

    Raises NotFound, RegistryError, or DigestMismatch when the bytes do not hash to the
    digest asked for (or to the digest the registry announces).
    """
    what = f"reading manifest {reference} of {where(http, repository)}"
    body, headers = fetch_small(
        http,
        http.url(f"/v2/{repository}/manifests/{reference}"),
        what=what,
        limit=MANIFEST_LIMIT,
        headers={"Accept": ", ".join(MANIFEST_TYPES)},
    )
    actual = sha256_digest(body)
    announced = headers.get("Docker-Content-Digest", "")
    expected = reference if is_digest(reference) else announced if is_digest(announced) else actual
    if actual != expected:
        raise DigestMismatch(what, expected=expected, actual=actual)
    media_type = headers.get("Content-Type", "").split(";", 1)[0].strip()
    if media_type not in MANIFEST_TYPES:
        media_type = _media_type_of(body, what)
    return body, media_type


def manifest_digest(http: RegistryClient, repository: str, reference: str, media_type: str) -> str | None:
    """The digest the registry announces for the manifest ``reference`` (HEAD, asking for
    ``media_type``); None when it has none, or does not say."""
    response = http.request(
        "HEAD",
        http.url(f"/v2/{repository}/manifests/{reference}"),
        what=f"checking manifest {reference} in {where(http, repository)}",
        ok=(200, 404),
        headers={"Accept": media_type},
    )
    announced = response.headers.get("Docker-Content-Digest", "")
    return announced if response.status_code == 200 and is_digest(announced) else None


def put_manifest(
    http: RegistryClient, repository: str, reference: str, body: bytes, media_type: str
) -> requests.Response:
    """PUT ``body`` as is under ``reference`` (tag or digest); the registry's answer
    (``OCI-Subject``...).

    Raises DigestMismatch when the registry stored other bytes, InputError when a digest
    reference is not the digest of ``body``, RegistryError when refused.
    """
    digest = sha256_digest(body)
    if is_digest(reference) and reference != digest:
        raise InputError(f"manifest pushed as {reference} hashes to {digest}")
    what = f"pushing manifest {reference} to {where(http, repository)}"
    response = http.request(
        "PUT",
        http.url(f"/v2/{repository}/manifests/{reference}"),
        what=what,
        ok=(200, 201),
        headers={"Content-Type": media_type},
        data=body,
    )
    stored = response.headers.get("Docker-Content-Digest", "")
    if stored and stored != digest:
        raise DigestMismatch(f"{what}: the registry stored", expected=digest, actual=stored)
    log.info("pushed %s@%s", where(http, repository), digest)
    return response


def _media_type_of(body: bytes, what: str) -> str:
    explicit = json_object(body, what).get("mediaType")
    if isinstance(explicit, str) and explicit in MANIFEST_TYPES:
        return explicit
    try:
        kind = parse_manifest_or_index(body)
    except InvalidImage as e:
        raise InvalidImage(f"{what}: {e}", hint="schema 1 manifests are not supported") from e
    return mt.OCI_INDEX if kind == "index" else mt.OCI_MANIFEST
