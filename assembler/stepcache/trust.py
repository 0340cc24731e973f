"""Who made a registry step cache entry: entries signed on export (``--cache-sign``, else
``--sign``'s key) and, with ``--cache-trust PUB``, used only when a trusted key signed them.

An entry (the manifest tagged ``step-<key>`` or ``base-<key>``, see
:mod:`assembler.stepcache.steps`) is signed as ``cosign sign`` signs an image: a
manifest tagged ``sha256-<hex>.sig`` in the cache repository whose layer is the simple
signing payload naming the entry's manifest digest and the repository, with the entry's
tag as the annotation ``io.assemble.cache.tag`` (cosign's ``-a``), so a signed entry moved
under another key's tag does not count. ``cosign verify --key PUB -a
io.assemble.cache.tag=TAG REG/REPO:TAG`` checks one.

Nothing is read from an entry that does not verify: its manifest digest is all the check
needs, so a forged record or layer is never parsed, downloaded or imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from assembler.cache import Cache, StepResult
from assembler.errors import AssemblerError
from assembler.oci.reference import ImageName
from assembler.registry.client import Registry
from assembler.sign import Signed, Signer, Verifier
from assembler.sign.cosign import sig_tag, signature_layer
from assembler.transports import signatures

TAG_ANNOTATION = "io.assemble.cache.tag"

# What a caller checks a fetched step result with before it is used: given the result and
# its blobs (downloaded to files, verified by digest, not in the cache yet), why it is
# refused, or None. (``url:``/``pip:`` layers: against the manifest's pins.)
Check = Callable[[StepResult, Mapping[str, Path]], str | None]


@dataclass(frozen=True)
class Trust:
    """The key that signs exported entries (None: they go unsigned) and the keys an entry
    must be signed by to be used (none: every entry is used, as before signing existed)."""

    signer: Signer | None = None
    keys: tuple[Verifier, ...] = ()


def sign_entry(client: Registry, name: ImageName, tag: str, digest: str, signer: Signer) -> None:
    """Add ``signer``'s signature of the entry ``digest`` (tagged ``tag``) to the cache
    repository's ``sha256-<hex>.sig``, unless it holds it already (signatures are
    deterministic). Raises what the client raises."""
    layer = signature_layer(signer, signatures.identity_of(name), digest, {TAG_ANNOTATION: tag})
    signatures.push_with(client, name, [Signed(digest, layer)])


def vouched(client: Registry, name: ImageName, tag: str, digest: str, keys: Sequence[Verifier]) -> tuple[str, str]:
    """(the key id of the first of ``keys`` that signed the entry ``digest`` under ``tag``,
    "") or ("", why none did). Without ``keys``: ("", "") (nothing is asked)."""
    if not keys:
        return "", ""
    why = ""
    for key in keys:
        try:
            verdict = signatures.verify_with(client, name, digest, key, annotations={TAG_ANNOTATION: tag})
        except AssemblerError as e:  # a .sig tag holding something else, a registry error
            return "", f"its signatures cannot be read ({e})"
        if verdict.verified:
            return key.key_id, ""
        why = why or _reason(verdict.rejected, digest)
    return "", why


def _reason(rejected: Sequence[str], digest: str) -> str:
    if not rejected or rejected[0].endswith(f"has no {sig_tag(digest)}"):
        return f"no signature ({sig_tag(digest)})"
    return f"not signed by a trusted key: {rejected[0]}"


def download(client: Registry, name: ImageName, result: StepResult, into: Path, cache: Cache) -> dict[str, Path]:
    """The blobs of ``result`` as files in ``into`` (each verified by digest as it streams;
    those in ``cache`` already are copied from there). Raises what a download raises."""
    paths = {}
    for blob in result.layers():
        path = paths[blob.digest] = into / blob.digest.removeprefix("sha256:")
        if cache.has_blob(blob.digest, blob.size):
            cache.copy_out(blob.digest, path)
            continue
        with client.open_blob(name.repository, blob.digest, size=blob.size) as stream, open(path, "wb") as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
    return paths
