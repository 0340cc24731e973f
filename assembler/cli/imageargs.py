"""The arguments of the commands that read an image: ``inspect``, ``validate``, ``diff``,
``deps``, ``referrers``, ``sif`` and ``sqsh`` (both stream the image into tar2sqfs), and
``schema``. Light at import, as every module the parser reads."""

from __future__ import annotations

import argparse
from pathlib import Path

from assembler.cli.arguments import common_args, progress_args, reader_cache_args


def inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="docker://..., oci:DIR[:TAG], oci-archive:..., docker-archive:..., rootfs:...")
    p.add_argument("--raw", action="store_true", help="print the manifest bytes as they are")
    reader_cache_args(p)
    common_args(p)


def validate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref")
    reader_cache_args(p)
    common_args(p)


def diff_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="an image reference, as for inspect")
    p.add_argument("b", help="another image reference")
    p.add_argument(
        "--rootfs",
        action="store_true",
        help="compare what a container sees, each image's layers merged (for images built another way, "
        "whose layers do not pair by position)",
    )
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        help="with --rootfs, only what is under DIR (repeatable), e.g. --path /app",
    )
    reader_cache_args(p)
    common_args(p)


def deps_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="an image reference, as for inspect")
    p.add_argument(
        "--all-layers",
        action="store_true",
        help="check the ELF files of every layer (default: the artifact, copy, pip and url layers assemble "
        "added, else every layer)",
    )
    reader_cache_args(p)
    common_args(p)


def schema_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=("manifest", "recipe"), default="manifest")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="write manifest.schema.json and recipe.schema.json here"
    )


def referrers_arguments(p: argparse.ArgumentParser) -> None:
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
    reader_cache_args(p)
    common_args(p)


def sif_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="the image: docker://..., oci:DIR[:TAG], oci-archive:..., docker-archive:...")
    p.add_argument("out", type=Path, help="the SIF file to write")
    _squashfs_args(p, readers="every Apptainer", replaces="replace OUT.sif even if it is not a SIF file")
    p.add_argument(
        "--sign",
        type=Path,
        default=None,
        metavar="KEY",
        help="sign the SIF as apptainer sign --key does (apptainer verify --key PUB checks it), with KEY "
        "(a PEM Ed25519/ECDSA key, or cosign.key with its password in $COSIGN_PASSWORD)",
    )
    p.add_argument("--push", default=None, metavar="oras://HOST/REPO:TAG", help="also push the SIF there")
    p.add_argument(
        "--attach",
        default=None,
        metavar="docker://HOST/REPO",
        help="also push the SIF as a referrer of the image, in this repository",
    )
    progress_args(p, digest="the SIF's digest")
    reader_cache_args(p)
    common_args(p)


def _block_size(text: str) -> int:
    from assembler.transports.hpc.squash import block_size_of

    try:
        return block_size_of(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _squashfs_args(p: argparse.ArgumentParser, *, readers: str, replaces: str) -> None:
    """What sif and sqsh share: both stream the image into tar2sqfs."""
    p.add_argument(
        "--compressor",
        default="gzip",
        choices=("gzip", "xz", "zstd", "lz4", "lzo"),
        help=f"squashfs compression (default gzip, which {readers} reads; zstd: Apptainer 1.4 or later)",
    )
    p.add_argument(
        "--block-size",
        type=_block_size,
        default="128K",
        metavar="SIZE",
        help="squashfs data block size, a power of two from 4K to 1M (default 128K, as mksquashfs writes)",
    )
    p.add_argument(
        "--level",
        type=int,
        default=None,
        metavar="N",
        help="the compressor's level (gzip 1-9, xz 0-9, zstd 1-22, lzo 1-9; default tar2sqfs's: gzip 9, as "
        "mksquashfs): gzip 1 took 13%% of level 9's CPU for a squashfs 9%% larger",
    )
    p.add_argument("--epoch", type=int, default=None, help="timestamps (default: $SOURCE_DATE_EPOCH, else 0)")
    p.add_argument("--force", action="store_true", help=replaces)
    p.add_argument("--no-sbom", action="store_true", help="leave out the image's SBOM and provenance")


def sqsh_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", help="the image: docker://..., oci:DIR[:TAG], oci-archive:..., docker-archive:...")
    p.add_argument("out", type=Path, help="the .sqsh file to write")
    _squashfs_args(p, readers="every kernel and squashfuse", replaces="replace OUT even if it is not a squashfs file")
    progress_args(p, digest="the file's digest")
    reader_cache_args(p)
    common_args(p)
