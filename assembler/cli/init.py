"""``assemble init KIND [DIR]``: a small manifest to start from, which builds as written,
and the few files it compiles or copies (the starters: :mod:`assembler.cli.starters`).
Files already there are kept (an existing ``requirements.txt`` is the one the manifest
installs); ``assemble.yaml`` is replaced only with ``--force``. The manifest's first line
names the JSON Schema written beside it (``.assemble/manifest.schema.json``), so an editor
with yaml-language-server completes and checks it."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
from pathlib import Path

from assembler.cli.console import err, say
from assembler.cli.starters import STARTERS, files_of
from assembler.errors import InputError

MANIFEST = "assemble.yaml"
SCHEMA = Path(".assemble") / "manifest.schema.json"


def arguments(p: argparse.ArgumentParser) -> None:
    kinds = ", ".join(f"{kind} ({starter.describe})" for kind, starter in STARTERS.items())
    p.add_argument("kind", choices=sorted(STARTERS), metavar="KIND", help=f"what to start from: {kinds}")
    p.add_argument("dir", nargs="?", type=Path, default=Path("."), help="the project's folder (default: this one)")
    p.add_argument("--name", help="the image's name (default: the folder's name)")
    p.add_argument(
        "--requirements",
        type=Path,
        metavar="FILE",
        help="python: the requirements.txt the image installs (copied in; default: the folder's own, else empty)",
    )
    p.add_argument("--force", action="store_true", help=f"replace an existing {MANIFEST}")


def project_name(folder: Path) -> str:
    """An image name from a folder's name: lower case, runs of other characters as one ``-``."""
    name = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")
    return name or "app"


def run(args: argparse.Namespace) -> int:
    from assembler.manifest.load.manifest import load_manifest
    from assembler.manifest.schema.model import json_schemas

    folder: Path = args.dir
    name = args.name or project_name(folder)
    if args.requirements is not None and args.kind != "python":
        raise InputError(f"--requirements is for the python starter, not {args.kind}")
    if args.requirements is not None and not args.requirements.is_file():
        raise InputError(f"--requirements {args.requirements}: no such file")
    manifest = folder / MANIFEST
    if manifest.exists() and not args.force:
        raise InputError(f"{manifest} exists", hint="--force replaces it (the other files are kept)")
    folder.mkdir(parents=True, exist_ok=True)
    if args.requirements is not None and args.requirements.resolve() != (folder / "requirements.txt").resolve():
        _write(folder, Path("requirements.txt"), args.requirements.read_bytes())
        say(f"copied {args.requirements} to {folder / 'requirements.txt'}")
    for rel, text in files_of(args.kind, name).items():
        path = folder / rel
        if path.exists() and rel != MANIFEST:
            say(f"kept {path} (there already)")
            continue
        _write(folder, Path(rel), text.encode())
        say(f"wrote {path}")
    _write(folder, SCHEMA, (json.dumps(json_schemas()["manifest"], indent=2, sort_keys=True) + "\n").encode())
    load_manifest(manifest)  # what was written loads (a name the schema refuses is said here)
    err.print(
        f"next: assemble plan {manifest}   # what will run\n"
        f"      assemble {manifest}        # build into {folder / 'out'}, run its tests\n"
        f"      assemble run oci:{folder / 'out'}:{name}",
        markup=False,
    )
    return 0


def _write(folder: Path, rel: Path, data: bytes) -> None:
    """``data`` as the file ``rel`` of the project ``folder``, never written through a link:
    a cloned project whose ``.assemble/manifest.schema.json`` (or ``.assemble``) links to a
    file of the host's (``~/.bashrc``) would have init overwrite it. InputError naming the link."""
    path = folder / rel
    if not path.parent.resolve().is_relative_to(folder.resolve()):
        raise InputError(f"{path.parent} links outside {folder}: {path} not written", hint="remove the link")
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{path} is a link: not written through it", hint="remove the link") from None
        raise InputError(f"{path}: cannot be written: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
