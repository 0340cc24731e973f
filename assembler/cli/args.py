"""The command line's arguments: one parser with a subcommand per verb."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from assembler import __version__
from assembler.cli import cache as cli_cache
from assembler.cli import doctor as cli_doctor
from assembler.cli import lock as cli_lock
from assembler.cli import run as cli_run
from assembler.cli.console import err
from assembler.cli.registry_args import add_registry_args
from assembler.cli.registry_args import registry_options as registry_options
from assembler.oci.descriptor import Platform


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        err.print(f"error: {message}", markup=False)
        err.print(f"hint: see `{self.prog} --help`", markup=False)
        raise SystemExit(2)


# Two steps at once by default: one compiling while another waits on the network (apt,
# pip) or the disk (a commit); each compile step already uses every core itself.
DEFAULT_JOBS = 2


def jobs_arg(text: str) -> int:
    """``--jobs``'s value: a whole number from 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1, got {text!r}")
    return int(text)


def platform_arg(text: str) -> Platform:
    """``--platform``'s value; bad input raises InputError."""
    return Platform.parse(text)  # BadPlatform (exit 2) quotes the text


def _progress_args(p: argparse.ArgumentParser, *, digest: str) -> None:
    shown = p.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        choices=("auto", "tty", "plain", "json"),
        default=None,
        help="how progress is shown on stderr: a live view on a terminal (tty), timestamped lines "
        "(plain), one JSON object per event (json); default auto: tty on a terminal, else plain "
        "(none with --json)",
    )
    shown.add_argument("-q", "--quiet", action="store_true", help=f"print only errors and {digest}")
    p.add_argument("--digestfile", type=Path, default=None, metavar="FILE", help=f"write {digest} to FILE")


def _reader_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder for what reading needs (a rootfs: conversion); default: a temporary one, removed afterwards",
    )


def _common(p: argparse.ArgumentParser, *, platforms: bool = False) -> None:
    if platforms:  # a build or plan: one image per platform, under one index
        p.add_argument(
            "--platform",
            action="append",
            dest="platforms",
            default=[],
            metavar="PLATFORM",
            help="os/arch[/variant] (default: the manifest's, else linux/amd64); repeatable: one image "
            "per platform, written as one index",
        )
    else:
        p.add_argument("--platform", default=None, help="os/arch[/variant] (default: linux/amd64)")
    add_registry_args(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (twice: debug)")


def _manifest_args(p: argparse.ArgumentParser) -> None:
    _what_args(p)
    _how_args(p)
    _cache_args(p)
    _output_args(p)
    cli_lock.add_lock_args(p)
    cli_run.add_build_args(p)
    _common(p, platforms=True)


def _what_args(p: argparse.ArgumentParser) -> None:
    """What to build: the manifest, its outputs, params, bases, sources and targets."""
    p.add_argument("manifest", type=Path, help="the manifest (YAML)")
    p.add_argument(
        "-o",
        "--output",
        action="append",
        dest="outputs",
        metavar="OUTPUT",
        help="oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:REF], docker://REF "
        "(repeatable; replaces the manifest's outputs)",
    )
    p.add_argument(
        "--set",
        action="append",
        type=_pair,
        default=[],
        metavar="K=V",
        help="override a param (not one the target or a chosen choice fixes)",
    )
    p.add_argument(
        "--set-unlocked",
        action="append",
        type=_pair,
        default=[],
        metavar="K=V",
        help="override a param even where the target or a chosen choice fixes it",
    )
    p.add_argument("--base", action="append", type=_pair, default=[], metavar="NAME=REF", help="replace a base")
    p.add_argument("--source", action="append", type=_pair, default=[], metavar="NAME=PATH", help="replace a source")
    p.add_argument(
        "--target",
        action="append",
        dest="targets",
        default=[],
        metavar="TARGET",
        help="build this target of the manifest (repeatable: one image per target)",
    )
    p.add_argument("--all-targets", action="store_true", help="build every target of the manifest")


def _how_args(p: argparse.ArgumentParser) -> None:
    """How to build: the cache, the epoch, which steps run again, where and how many at once."""
    p.add_argument("--cache", type=Path, default=None, help="cache folder (default: $XDG_CACHE_HOME/assembler)")
    p.add_argument(
        "--cache-max-size",
        default=None,
        metavar="SIZE",
        help="after a build, remove the least recently used of the cache (buildah's storage in it included) "
        "until it holds at most SIZE (e.g. 50G, or 10%% of its disk), never what the build used (default: "
        "cache-max-size of ~/.config/assemble/config.toml, else 10%% of the cache's disk, at most 100G)",
    )
    p.add_argument(
        "--epoch", type=int, default=None, help="timestamps (default: $SOURCE_DATE_EPOCH, the manifest's, 0)"
    )
    p.add_argument("--no-cache", action="store_true", help="run every step again")
    p.add_argument(
        "--force", action="store_true", help="let outputs replace existing files that are not image archives or SIFs"
    )
    p.add_argument("--rebuild", action="append", default=[], metavar="STEP", help="run this step again")
    p.add_argument(
        "-j",
        "--jobs",
        type=jobs_arg,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"run up to N independent steps at once (default {DEFAULT_JOBS}; 1: one by one)",
    )
    p.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="where compile steps run: here, or each as a Slurm job on a node (the cache folder must be "
        "shared by the nodes, at the same path)",
    )
    p.add_argument(
        "--slurm-args",
        default="",
        metavar="ARGS",
        help='more sbatch arguments for each step\'s job, e.g. "-p gpu --gres=gpu:1 -t 2:00"',
    )
    p.add_argument("--storage-driver", default="overlay", choices=("overlay", "vfs"), help="buildah storage driver")
    p.add_argument(
        "--storage",
        type=Path,
        default=None,
        metavar="DIR",
        help="where buildah keeps the bases and toolchains steps run on (default: $ASSEMBLE_STORAGE, else "
        "CACHE/buildah): a node-local folder several caches share pulls each base once",
    )
    p.add_argument("--no-host-ca", action="store_true", help="do not mount the host CA bundle into build containers")
    p.add_argument("--offline", action="store_true", help="reach no host: refuse a build that would (plan: say so)")
    p.add_argument("--no-preflight", action="store_true", help="build without first checking the hosts it reaches")


def _cache_args(p: argparse.ArgumentParser) -> None:
    """The step cache in a registry: where it is, who signs its entries, whose are taken."""
    p.add_argument(
        "--cache-to",
        default=None,
        metavar="docker://REG/REPO",
        help="export step results to this registry repository (a step cache other machines read)",
    )
    p.add_argument(
        "--cache-from",
        action="append",
        default=[],
        metavar="docker://REG/REPO",
        help="take step results from this registry repository (repeatable; first hit wins)",
    )
    p.add_argument(
        "--cache-max",
        default="5G",
        metavar="SIZE",
        help="what one exported compile cache (a step's cache: or shared_cache: folder) holds at most; "
        "the oldest files are left out (default 5G)",
    )
    p.add_argument(
        "--cache-sign",
        type=Path,
        default=None,
        metavar="KEY",
        help="sign the entries exported to --cache-to with KEY, in cosign's format (default: --sign's key; "
        "a cosign key's password in $COSIGN_PASSWORD)",
    )
    p.add_argument(
        "--cache-trust",
        action="append",
        type=Path,
        default=[],
        metavar="PUB",
        help="take only step cache entries signed by this public key (repeatable; replaces the cache-trust "
        "of ~/.config/assemble/config.toml); an entry it did not sign is a warning and the step is built here",
    )


def _output_args(p: argparse.ArgumentParser) -> None:
    """What goes with the image (a SIF, the SBOM), what is checked, and how layers are compressed."""
    p.add_argument(
        "--attach-sif", action="store_true", help="also push a SIF of the image as a referrer of each docker:// output"
    )
    p.add_argument(
        "--no-deps-check",
        action="store_true",
        help="do not check that the ELF files of artifact, copy, pip and url layers find their libraries "
        "and symbol versions in the image",
    )
    p.add_argument(
        "--no-sbom",
        action="store_true",
        help="do not attach an SPDX SBOM and a SLSA provenance to the image (as referrers in OCI "
        "layouts, oci-archives and registries, as SIF objects, as files next to other "
        "outputs)",
    )
    p.add_argument(
        "--sign",
        type=Path,
        default=None,
        metavar="KEY",
        help="sign the docker:// and oci:DIR:TAG outputs and attest their SBOM and provenance, in cosign's "
        "format, with KEY (cosign.key, its password in $COSIGN_PASSWORD; or a PEM Ed25519/ECDSA key)",
    )
    p.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="STEP[.NAME]",
        help="write these compile step artifacts (repeatable) to the oci: and docker:// outputs as one "
        "OCI artifact, and no image",
    )
    p.add_argument(
        "--compression",
        choices=("zstd", "zstd:chunked", "gzip"),
        default=None,
        help="layer compression (default: the manifest's, else zstd; zstd:chunked for partial pulls by podman "
        "and CRI-O, read as zstd by the others; gzip for old clients)",
    )
    p.add_argument(
        "--layer-budget",
        default=None,
        metavar="SIZE",
        help="cut a layer holding more than SIZE of files (default 512M) along its Python packages, so that a "
        "pull fetches and unpacks them side by side and a bump moves only the packages that changed; 0: no cut",
    )


def _schema_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("schema", help="print (or write) the JSON Schemas of manifests and recipes")
    p.add_argument("kind", nargs="?", choices=("manifest", "recipe"), default="manifest")
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="write manifest.schema.json and recipe.schema.json here"
    )


def parser() -> argparse.ArgumentParser:
    from assembler.cli import imageargs as cli_imageargs  # these import this module's helpers
    from assembler.cli import verify as cli_verify

    top = _Parser(prog="assemble", description="Assemble OCI images from a manifest, without Dockerfiles or a daemon.")
    top.add_argument("--version", action="version", version=f"assemble {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("build", help="build a manifest (the default command)")
    _manifest_args(p)
    _progress_args(p, digest="the image digest")
    _manifest_args(sub.add_parser("plan", help="show what a build would do; runs nothing"))
    p = sub.add_parser("inspect", help="show an image's manifest, config and layers")
    p.add_argument("ref", help="docker://..., oci:DIR[:TAG], oci-archive:..., docker-archive:..., rootfs:...")
    p.add_argument("--raw", action="store_true", help="print the manifest bytes as they are")
    _reader_cache(p)
    _common(p)
    p = sub.add_parser("validate", help="recompute every size, digest and diff_id of an image")
    p.add_argument("ref")
    _reader_cache(p)
    _common(p)
    p = sub.add_parser("diff", help="why two images differ (exit 0 identical, 1 different, 2 trouble)")
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
    _reader_cache(p)
    _common(p)
    p = sub.add_parser("deps", help="check that an image's ELF files find their libraries (exit 1 on a miss)")
    p.add_argument("ref", help="an image reference, as for inspect")
    p.add_argument(
        "--all-layers",
        action="store_true",
        help="check the ELF files of every layer (default: the artifact, copy, pip and url layers assemble "
        "added, else every layer)",
    )
    _reader_cache(p)
    _common(p)
    cli_imageargs.add_referrers_parser(sub)
    cli_verify.add_parser(sub)
    cli_imageargs.add_squashfs_parsers(sub)
    _schema_parser(sub)
    cli_cache.add_parser(sub)
    cli_doctor.add_parser(sub)
    cli_lock.add_parser(sub)
    cli_run.add_parsers(sub)
    return top
