"""``assemble verify REF --key PUB``: is the image REF names signed by that key in cosign's
format (``--sign``), and (``--type``) are its SBOM and provenance attested by it; checked as
``cosign verify --key PUB --insecure-ignore-tlog`` and ``cosign verify-attestation`` check
them, without cosign."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cli.arguments import common_args, reader_cache_args, registry_options
from assembler.cli.console import out, say
from assembler.errors import InputError, SignatureError
from assembler.oci.mediatypes import PREDICATE_TYPES
from assembler.oci.reference import absolute_ref, parse_ref

if TYPE_CHECKING:
    from assembler.sign import Verdict, Verifier


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="the image: docker://HOST/REPO:TAG or oci:DIR:TAG")
    p.add_argument("--key", type=Path, required=True, metavar="PUB", help="the public key (cosign.pub, or PEM)")
    p.add_argument(
        "--type",
        action="append",
        default=[],
        choices=sorted(PREDICATE_TYPES),
        help="also check an attestation of this type (repeatable), as cosign verify-attestation --type",
    )
    reader_cache_args(p)
    common_args(p)


def read_key(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{what}: {e.strerror or e}") from None


def _required(verdict: Verdict, what: str, key: Verifier) -> None:
    if not verdict.verified:
        rejected = "; ".join(verdict.rejected) or "none found"
        raise SignatureError(f"{what}: none by key {key.key_id}", rejected=verdict.rejected, hint=rejected)


def cmd_verify(args: argparse.Namespace) -> int:
    # The parser is built for every command (a build too): what checks signatures
    # (cryptography among it) is imported only here.
    from assembler.cli.reading import reading_cache, source_of
    from assembler.sign import load_public_key
    from assembler.transports.formats import holds_signatures, verify_signatures

    ref = absolute_ref(parse_ref(args.ref), Path.cwd())
    if not holds_signatures(ref):
        raise InputError(f"{args.ref}: signatures live in registries (docker://...) and OCI layouts (oci:DIR:TAG)")
    key = load_public_key(read_key(args.key, f"--key {args.key}"), what=f"--key {args.key}")
    options = registry_options(args)
    with reading_cache(args) as cache_dir:
        source = source_of(args, cache_dir)
        digest = source.index_digest or source.image.digest  # what REF names: an index, else the image
        found = verify_signatures(ref, digest, key, options=options)
        _required(found, f"{args.ref} ({digest}): signatures", key)
        attested = {}
        for kind in args.type:  # of the image (for an index: of --platform's), as the SBOM describes it
            image = source.image.digest
            verdict = verify_signatures(
                ref, image, key, options=options, attestations=True, predicate_type=PREDICATE_TYPES[kind]
            )
            _required(verdict, f"{args.ref} ({image}): {kind} attestations", key)
            attested[kind] = len(verdict.verified)
    if args.json:
        result = {"ref": args.ref, "digest": digest, "key": key.key_id, "signatures": len(found.verified)}
        out.print(json.dumps({**result, "attestations": attested}, indent=2), markup=False)
        return 0
    say(f"{args.ref} {digest}: {len(found.verified)} signature(s) by key {key.key_id}")
    for kind, count in attested.items():
        say(f"  {kind}: {count} attestation(s) by key {key.key_id}")
    return 0
