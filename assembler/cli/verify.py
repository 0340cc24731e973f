"""``assemble verify REF --key PUB``: is the image REF names signed by that key in cosign's
format (``--sign``), and (``--type``) are its SBOM and provenance attested by it; checked as
``cosign verify --key PUB --insecure-ignore-tlog`` and ``cosign verify-attestation`` check
them, without cosign. For ``sif:FILE``: is the SIF signed by that key as ``apptainer verify
--key PUB`` checks it (every object group, every digest the file's now)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cli.arguments import common_args, reader_cache_args, registry_options
from assembler.cli.console import out, say
from assembler.cli.keys import verifier_of
from assembler.errors import InputError, SignatureError
from assembler.oci.mediatypes import PREDICATE_TYPES
from assembler.oci.reference import absolute_ref, parse_ref

if TYPE_CHECKING:
    from assembler.oci.reference import Ref
    from assembler.sign import Verdict, Verifier
    from assembler.transports.formats import Format


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="the image: docker://HOST/REPO:TAG or oci:DIR:TAG; or a SIF file: sif:FILE")
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


def _required(verdict: Verdict, what: str, key: Verifier) -> None:
    if not verdict.verified:
        rejected = "; ".join(verdict.rejected) or "none found"
        raise SignatureError(f"{what}: none by key {key.key_id}", rejected=verdict.rejected, hint=rejected)


def cmd_verify(args: argparse.Namespace) -> int:
    # The parser is built for every command (a build too): what checks signatures
    # (cryptography among it) is imported only here.
    from assembler.cli.reading import reading_cache, source_of
    from assembler.transports.formats import format_of, holds_signatures, verify_signatures

    ref = absolute_ref(parse_ref(args.ref), Path.cwd())
    fmt = format_of(ref)
    if fmt.signed_within:
        return _verify_within(args, fmt, ref)
    if not holds_signatures(ref):
        raise InputError(
            f"{args.ref}: signatures live in registries (docker://...), OCI layouts (oci:DIR:TAG)"
            " and SIF files (sif:FILE)"
        )
    key = verifier_of(args.key, "--key")
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


def _verify_within(args: argparse.Namespace, fmt: Format, ref: Ref) -> int:
    """A file that holds its signatures inside itself (a SIF), checked by its format."""
    if args.type:
        raise InputError(
            f"--type: a {ref.transport}: file holds its SBOM and provenance inside, which its signature covers"
        )
    key = verifier_of(args.key, "--key")
    verdict = fmt.verify_within(ref, key)
    if not verdict.ok:
        rejected = "; ".join(verdict.rejected)
        raise SignatureError(f"{args.ref}: not signed by key {key.key_id}", rejected=verdict.rejected, hint=rejected)
    if args.json:
        result = {"ref": args.ref, "key": key.key_id, "fingerprint": key.ssh_fingerprint, "verified": verdict.verified}
        out.print(json.dumps(result, indent=2), markup=False)
        return 0
    for line in verdict.said(key.key_id):
        say(f"{args.ref}: {line}")
    return 0
    for v in verdict.verified:
        objects = ", ".join(str(i) for i in v["objects"])
        by = f"signed by key {key.key_id} (signature object {v['signature']})"
        say(f"{args.ref}: object group {v['group']} (objects {objects}) {by}")
    return 0
