"""cosign signatures and attestations (:mod:`assembler.sign`) in a registry or an OCI layout:
written next to what was pushed or written, and read back to be checked.

In a registry they are what ``cosign sign`` and ``cosign attest`` push: manifests tagged
``sha256-<hex>.sig`` and ``sha256-<hex>.att`` in the image's repository, whose layers are
added to what those tags held (through the registry client). In an OCI layout they are
manifests of ``index.json`` under the same tags, annotated ``kind`` as ``cosign save``
annotates its layouts, so ``cosign verify --local-image DIR`` reads them: cosign takes the
first entry of each kind, so only the image last signed into a layout keeps the ``kind``
annotations (``assemble verify oci:DIR:TAG`` finds any image's by their tags).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembler.errors import NotFound
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import sha256_digest
from assembler.oci.reference import ImageName
from assembler.sign import Signed, Verdict, Verifier
from assembler.sign.cosign import SigLayer, att_tag, manifest_layers, merge_layers, sig_tag, signature_manifest
from assembler.sign.verify import MAX_PAYLOAD, check
from assembler.transports import layout
from assembler.transports.common import RegistryOptions

if TYPE_CHECKING:
    from assembler.registry.client import Registry

KIND = "kind"  # cosign's layout annotation, and its values
KIND_IMAGE = "dev.cosignproject.cosign/image"
KIND_INDEX = "dev.cosignproject.cosign/imageIndex"
KIND_SIGS = "dev.cosignproject.cosign/sigs"
KIND_ATTS = "dev.cosignproject.cosign/atts"
_NOT_NAME = re.compile(r"[^a-z0-9._-]+")


def identity_of(name: ImageName) -> str:
    """What a signature names an image in ``name``'s repository by, as cosign does
    (go-containerregistry's ``Repository.Name()``: Docker Hub is ``index.docker.io``)."""
    host = "index.docker.io" if name.registry == "docker.io" else name.registry
    return f"{host}/{name.repository}"


def layout_identity(path: Path) -> str:
    """What a signature in the layout at ``path`` names its image by: the folder's name,
    made a repository name (cosign reads the name back as one)."""
    return _NOT_NAME.sub("-", path.resolve().name.lower()).strip("._-") or "image"


def _tags(signed: Signed) -> list[tuple[str, str, Sequence[SigLayer]]]:
    """(tag, kind, layers) of what ``signed`` adds: its signature, its attestations."""
    out: list[tuple[str, str, Sequence[SigLayer]]] = [(sig_tag(signed.digest), KIND_SIGS, [signed.signature])]
    if signed.attestations:
        out.append((att_tag(signed.digest), KIND_ATTS, signed.attestations))
    return out


def push(name: ImageName, signed: Sequence[Signed], *, options: RegistryOptions) -> list[str]:
    """Add ``signed`` to ``name``'s repository (its ``.sig`` and ``.att`` tags); the digests
    of the manifests those tags name now. Raises RegistryError, InvalidImage (a tag that
    holds something else)."""
    from assembler.registry.client import Registry  # the registry client, only when pushing

    with Registry(name.registry, options=options) as reg:
        return push_with(reg, name, signed)


def push_with(reg: Registry, name: ImageName, signed: Sequence[Signed]) -> list[str]:
    """:func:`push` through an open client of ``name``'s registry. A tag that holds every
    layer of ``signed`` already is left as it is (nothing is uploaded)."""
    from assembler.registry.blobs import FileBlobs

    pushed = []
    for s in signed:
        for tag, _, layers in _tags(s):
            try:
                body, _ = reg.fetch_manifest(name.repository, tag)
                existing = manifest_layers(body, f"docker://{name.registry}/{name.repository}:{tag}")
            except NotFound:
                body, existing = b"", []
            descs = merge_layers(existing, [layer.descriptor for layer in layers])
            if body and descs == existing:
                pushed.append(sha256_digest(body))
                continue
            manifest, config = signature_manifest(descs)
            data = {layer.descriptor.digest: layer.data for layer in layers}
            config_desc = Descriptor(mt.OCI_CONFIG, sha256_digest(config), len(config))
            blobs = FileBlobs({}, {**data, config_desc.digest: config})
            for desc in [d for d in descs if d.digest in data] + [config_desc]:
                reg.push_blob(name.repository, desc, blobs)
            pushed.append(reg.put_manifest(name.repository, tag, manifest, mt.OCI_MANIFEST))
    return pushed


def _entry_tag(entry: Any) -> str:
    return str((entry.get("annotations") or {}).get(mt.ANNOTATION_REF_NAME, "")) if isinstance(entry, dict) else ""


def _layout_layers(path: Path, entries: list[Any], tag: str) -> list[Descriptor]:
    """The layers of the manifest tagged ``tag`` in the layout at ``path`` (none if none)."""
    for entry in entries:
        if _entry_tag(entry) == tag:
            digest = str(entry.get("digest", ""))
            return manifest_layers(layout.read_blob(path, digest, limit=MAX_PAYLOAD), f"oci:{path}:{tag}")
    return []


def _with_kinds(entries: list[Any], subject: str, written: dict[str, str]) -> list[Any]:
    """``entries`` with cosign's ``kind`` annotation on ``subject`` (an image or an index)
    and on its signature manifests (``written``: digest to kind), and on no other entry."""
    out = []
    for entry in entries:
        annotations = {k: v for k, v in (entry.get("annotations") or {}).items() if k != KIND}
        digest = entry.get("digest")
        if digest == subject:
            annotations[KIND] = KIND_INDEX if entry.get("mediaType") in mt.INDEX_TYPES else KIND_IMAGE
        elif digest in written:
            annotations[KIND] = written[digest]
        bare = {k: v for k, v in entry.items() if k != "annotations"}
        out.append({**bare, "annotations": annotations} if annotations else bare)
    return out


def write_layout(path: Path, signed: Sequence[Signed]) -> list[str]:
    """Add ``signed`` (the first: the image or index just written) to the OCI layout at
    ``path``, under their ``.sig`` and ``.att`` tags; the digests of those manifests."""
    written: list[str] = []
    kinds: dict[str, str] = {}
    with layout.index_lock(path):
        existing = layout.read_index(path)
        entries = list(existing["manifests"])
        for s in signed:
            for tag, kind, layers in _tags(s):
                descs = merge_layers(_layout_layers(path, entries, tag), [layer.descriptor for layer in layers])
                manifest, config = signature_manifest(descs)
                for blob in (*(layer.data for layer in layers), config):
                    layout.write_blob_bytes(path, blob)
                digest = layout.write_blob_bytes(path, manifest)
                entry = Descriptor(mt.OCI_MANIFEST, digest, len(manifest), {mt.ANNOTATION_REF_NAME: tag})
                entries = [e for e in entries if _entry_tag(e) != tag] + [entry.to_json()]
                written.append(digest)
                kinds.update({digest: kind} if s is signed[0] else {})
        layout.write_index(path, _with_kinds(entries, signed[0].digest, kinds), existing)
    return written


def verify_layout(
    path: Path, digest: str, verifier: Verifier, *, attestations: bool = False, predicate_type: str | None = None
) -> Verdict:
    """:func:`~assembler.transports.formats.verify_signatures` in the OCI layout at ``path``."""
    tag = att_tag(digest) if attestations else sig_tag(digest)
    entries = layout.read_index(path)["manifests"]
    if not any(_entry_tag(e) == tag for e in entries):
        return Verdict(rejected=[f"oci:{path} has no {tag}"])
    layers = _layout_layers(path, entries, tag)
    return check(
        layers,
        lambda d: layout.read_blob(path, d.digest, limit=MAX_PAYLOAD),
        digest,
        verifier,
        attestations=attestations,
        predicate_type=predicate_type,
    )


def verify_remote(
    name: ImageName,
    digest: str,
    verifier: Verifier,
    *,
    options: RegistryOptions,
    attestations: bool = False,
    predicate_type: str | None = None,
) -> Verdict:
    """:func:`~assembler.transports.formats.verify_signatures` in ``name``'s repository (a
    client of its registry opened for it)."""
    from assembler.registry.client import Registry

    with Registry(name.registry, options=options) as reg:
        return verify_with(reg, name, digest, verifier, attestations=attestations, predicate_type=predicate_type)


def verify_with(
    reg: Registry,
    name: ImageName,
    digest: str,
    verifier: Verifier,
    *,
    attestations: bool = False,
    predicate_type: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Verdict:
    """:func:`~assembler.transports.formats.verify_signatures` in ``name``'s repository,
    through an open client of its registry; with ``annotations``, only signatures whose
    payload carries them count (``cosign verify -a``).
    InvalidImage for a tag that holds something else."""
    tag = att_tag(digest) if attestations else sig_tag(digest)
    where = f"docker://{name.registry}/{name.repository}"
    try:
        body, _ = reg.fetch_manifest(name.repository, tag)
    except NotFound:
        return Verdict(rejected=[f"{where} has no {tag}"])

    def read(desc: Descriptor) -> bytes:
        return reg.blob_bytes(name.repository, desc, limit=MAX_PAYLOAD, what=f"{where}: reading {desc.digest}")

    layers = manifest_layers(body, f"{where}:{tag}")
    return check(
        layers,
        read,
        digest,
        verifier,
        attestations=attestations,
        predicate_type=predicate_type,
        annotations=annotations,
    )


def statements(verdict: Verdict) -> list[str]:
    """The predicate types of the statements that verified (for messages)."""
    return [str(s.get("predicateType", "")) for s in verdict.verified]
