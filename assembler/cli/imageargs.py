"""The arguments of the commands that read an image another way than a build writes it:
``referrers``, and ``sif`` and ``sqsh`` (both stream the image into tar2sqfs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from assembler.cli.args import _common, _progress_args, _reader_cache


def add_squashfs_parsers(sub: Any) -> None:
    """The ``sif`` and ``sqsh`` commands, on the CLI's subparsers ``sub``."""
    _sif_parser(sub)
    _sqsh_parser(sub)


def add_referrers_parser(sub: Any) -> None:
    p = sub.add_parser("referrers", help="list what is attached to an image: its SBOM, its provenance, a SIF")
    p.add_argument(
        "ref",
        help="an image: docker://HOST/REPO:TAG, oci:DIR[:TAG], oci-archive:FILE[:TAG], "
        "sif:FILE, docker-archive:FILE or sqsh:FILE (the files next to it)",
    )
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each referrer's files into DIR (made if absent), named by their titles; "
        "a file already there is never replaced",
    )
    _reader_cache(p)
    _common(p)


def _sif_parser(sub: Any) -> None:
    p = sub.add_parser("sif", help="convert any image to an Apptainer/Singularity SIF file, as a stream")
    p.add_argument("ref", help="the image: docker://..., oci:DIR[:TAG], oci-archive:..., docker-archive:...")
    p.add_argument("out", type=Path, help="the SIF file to write")
    _squashfs_args(p, readers="every Apptainer", replaces="replace OUT.sif even if it is not a SIF file")
    p.add_argument("--push", default=None, metavar="oras://HOST/REPO:TAG", help="also push the SIF there")
    p.add_argument(
        "--attach",
        default=None,
        metavar="docker://HOST/REPO",
        help="also push the SIF as a referrer of the image, in this repository",
    )
    _progress_args(p, digest="the SIF's digest")
    _reader_cache(p)
    _common(p)


def _squashfs_args(p: argparse.ArgumentParser, *, readers: str, replaces: str) -> None:
    """What sif and sqsh share: both stream the image into tar2sqfs."""
    p.add_argument(
        "--compressor",
        default="gzip",
        choices=("gzip", "xz", "zstd", "lz4", "lzo"),
        help=f"squashfs compression (default gzip, which {readers} reads)",
    )
    p.add_argument("--epoch", type=int, default=None, help="timestamps (default: $SOURCE_DATE_EPOCH, else 0)")
    p.add_argument("--force", action="store_true", help=replaces)
    p.add_argument("--no-sbom", action="store_true", help="leave out the image's SBOM and provenance")


def _sqsh_parser(sub: Any) -> None:
    p = sub.add_parser("sqsh", help="convert any image to an Enroot/Pyxis squashfs image, as a stream")
    p.add_argument("ref", help="the image: docker://..., oci:DIR[:TAG], oci-archive:..., docker-archive:...")
    p.add_argument("out", type=Path, help="the .sqsh file to write")
    _squashfs_args(p, readers="every kernel and squashfuse", replaces="replace OUT even if it is not a squashfs file")
    _progress_args(p, digest="the file's digest")
    _reader_cache(p)
    _common(p)
