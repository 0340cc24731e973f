"""``assemble referrers REF``: what is attached to an image (its SBOM, its provenance, a
SIF), in a registry, an OCI layout or oci-archive, a SIF, or next to a docker-archive or
sqsh file; ``--save DIR`` writes their files there (made if absent; never replacing a file
that is there already, never through a link)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembler.cli.arguments import registry_options
from assembler.cli.console import out, say, size
from assembler.cli.reading import reading_cache, source_of
from assembler.errors import InputError
from assembler.oci import mediatypes as mt
from assembler.oci.reference import Ref, absolute_ref, parse_ref

if TYPE_CHECKING:
    from assembler.oci.descriptor import Descriptor
    from assembler.transports.referrers import Listing

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def _listing(args: argparse.Namespace, ref: Ref, cache_dir: Path) -> tuple[str, Listing]:
    """The name of what ``ref`` names and the referrers of its image."""
    from assembler.transports.formats import read_referrers

    return read_referrers(ref, lambda: source_of(args, cache_dir), options=registry_options(args))


def _save(folder: Path, title: str, blob: Descriptor, listing: Listing, taken: set[str]) -> Path:
    """A referrer's blob saved in ``folder`` as a new file, under its title when that is a
    plain file name no other blob of this run took, else under its digest. The title is
    the image author's: never a path, never a file that is there already, never through a
    link (InputError)."""
    from assembler.archive.extract import write_new

    name = title if _SAFE_NAME.match(title) and title not in taken else blob.digest.replace(":", "-")
    taken.add(name)
    [path] = write_new(folder, [(name, [listing.read(blob)])], what=f"--save {folder}")
    return path


def cmd_referrers(args: argparse.Namespace) -> int:
    from assembler.transports.formats import holds_referrers

    ref = absolute_ref(parse_ref(args.ref), Path.cwd())
    if not holds_referrers(ref):
        raise InputError(
            f"{args.ref}: referrers live in OCI layouts (oci:), oci-archives, registries (docker://), "
            "SIF files and next to docker-archives and sqsh files"
        )
    if args.save is not None:
        try:
            args.save.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"--save {args.save}: cannot make that folder ({e.strerror})") from None
    with reading_cache(args) as cache_dir:
        name, listing = _listing(args, ref, cache_dir)
        shown: list[dict[str, Any]] = []
        taken: set[str] = set()  # names saved by this run: a second blob of one title is saved by digest
        for r in sorted(listing.referrers, key=lambda r: (r.descriptor.artifact_type, r.descriptor.digest)):
            files = []
            for blob in r.blobs:
                title = blob.annotations.get(mt.ANNOTATION_TITLE, "")
                entry = {"media_type": blob.media_type, "digest": blob.digest, "size": blob.size, "title": title}
                if args.save is not None:
                    entry["saved"] = str(_save(args.save, title, blob, listing, taken))
                files.append(entry)
            shown.append(
                {
                    "digest": r.descriptor.digest,
                    "artifact_type": r.descriptor.artifact_type,
                    "annotations": dict(r.descriptor.annotations),
                    "files": files,
                }
            )
    if args.json:
        out.print(json.dumps({"subject": listing.subject, "referrers": shown}, indent=2), markup=False)
        return 0
    say(f"{name} {listing.subject or '(no provenance names the image)'}: {len(shown)} referrer(s)")
    for item in shown:
        say(f"  {item['digest']}  {item['artifact_type'] or '(no artifact type)'}")
        for f in item["files"]:
            saved = f"  -> {f['saved']}" if "saved" in f else ""
            say(f"    {size(f['size']):>10}  {f['title'] or f['digest']}{saved}")
    return 0
