"""The arguments of ``build`` and ``plan``: what to build, how, the registry step cache,
the outputs, the lock and the image's tests. Light at import, as every module the parser
reads (:mod:`assembler.cli.arguments`)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from assembler.cli.arguments import DEFAULT_JOBS, Arguments, common_args, jobs_arg, pair, param_args, progress_args
from assembler.oci.reference import output_forms


def build_arguments(p: argparse.ArgumentParser) -> None:
    """``build``'s: a plan's, and how its result is shown."""
    plan_arguments(p)
    progress_args(p, digest="the image digest")


def plan_arguments(p: argparse.ArgumentParser) -> None:
    """``plan``'s (and ``build``'s), in groups ``--help`` shows apart."""
    _what_args(p.add_argument_group("what to build", "the manifest, where the image goes, params, bases, sources"))
    _how_args(p.add_argument_group("how to build", "the cache, the epoch, which steps run again, where, the network"))
    _cache_args(p.add_argument_group("registry step cache", "step results shared through a registry"))
    _output_args(p.add_argument_group("what goes with the image", "a SIF, the SBOM, signing, checks, compression"))
    _lock_args(p.add_argument_group("lock", "the lock of the Python sets and Debian packages"))
    _test_args(p.add_argument_group("tests", "the image's tests: before any output is written"))
    common_args(p, platforms=True)


def _what_args(p: Arguments) -> None:
    """What to build: the manifest, its outputs, params, bases, sources and targets."""
    p.add_argument("manifest", type=Path, help="the manifest (YAML)")
    p.add_argument(
        "-o",
        "--output",
        action="append",
        dest="outputs",
        metavar="OUTPUT",
        help=f"{', '.join(output_forms())} (repeatable; replaces the manifest's outputs)",
    )
    param_args(p)
    p.add_argument("--base", action="append", type=pair, default=[], metavar="NAME=REF", help="replace a base")
    p.add_argument("--source", action="append", type=pair, default=[], metavar="NAME=PATH", help="replace a source")
    p.add_argument(
        "--target",
        action="append",
        dest="targets",
        default=[],
        metavar="TARGET",
        help="build this target of the manifest (repeatable: one image per target)",
    )
    p.add_argument("--all-targets", action="store_true", help="build every target of the manifest")


def _how_args(p: Arguments) -> None:
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
        "--full-check",
        action="store_true",
        help="check every input and output as a first build does, not the record of the last build that "
        "changed nothing (which answers a rebuild when none of the paths it read has changed)",
    )
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


def _cache_args(p: Arguments) -> None:
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


def _output_args(p: Arguments) -> None:
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
        "format, and the sif: and oras:// outputs' SIF inside it, as apptainer sign --key does, with KEY "
        "(cosign.key, its password in $COSIGN_PASSWORD; or a PEM Ed25519/ECDSA key)",
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
        help="cut a layer holding more than SIZE of files (default 512M) along its packages (Python's, "
        "Debian's), so that a pull fetches and unpacks them side by side and a bump moves only the packages "
        "that changed; 0: no cut",
    )


def _lock_args(p: Arguments) -> None:
    """The lock's options of ``build`` and ``plan``."""
    p.add_argument(
        "--lock",
        type=Path,
        default=None,
        metavar="FILE",
        help="the lock of the Python sets (default: MANIFEST.lock, used when it exists)",
    )
    p.add_argument(
        "--locked",
        action="store_true",
        help="fail (exit 2) when the lock is missing or stale, or cannot vouch for a set, as cargo --locked does",
    )
    p.add_argument(
        "--allow-unresolved",
        action="append",
        default=[],
        metavar="SET",
        help="with --locked: install this set unlocked where the lock could not resolve it (STEP:SET, "
        "layers.NAME:SET or the set's name; repeatable)",
    )


def _test_args(p: Arguments) -> None:
    """A build's (and a plan's) test flags."""
    p.add_argument(
        "--test-on",
        choices=("local", "slurm"),
        default="local",
        help="where the image's tests run when a test does not say (on:): here in buildah, or each as a Slurm "
        "job on a node, as a SIF under Apptainer (--nv for GPU tests); the cache must be shared by the nodes",
    )
    slurm_sif_arg(p)
    p.add_argument("--no-tests", action="store_true", help="do not run the image's tests (tests:) before writing it")
    p.add_argument(
        "--keep-failed",
        action="store_true",
        help="keep the container of a compile step that fails, with its mounts; the error says how to enter it "
        "(assemble shell --step STEP)",
    )


def slurm_sif_arg(p: Arguments) -> None:
    """``--slurm-sif``: how a test's Slurm job reaches the image's SIF (build and ``assemble test``)."""
    p.add_argument(
        "--slurm-sif",
        choices=("shared", "sbcast"),
        default="shared",
        help="how a test's Slurm job reaches the image's SIF: read in place from the shared cache, or copied "
        "by sbcast to /tmp on each of its nodes first (one read of the shared folder, fanned out by Slurm)",
    )


def redo_command(args: argparse.Namespace) -> str:
    """The ``assemble lock`` command line that brings the lock of a build or plan up to date:
    its targets, params and lock file, and the cache, epoch and compression its bases are
    keyed by (the lock takes a build's options, and records there the bases a build made
    before it that hold what it locks)."""
    argv = ["assemble", "lock", str(args.manifest)]
    for target in args.targets:
        argv += ["--target", target]
    for key, value in args.set:
        argv += ["--set", f"{key}={value}"]
    for key, value in args.set_unlocked:
        argv += ["--set-unlocked", f"{key}={value}"]
    for flag in ("lock", "cache", "epoch", "compression"):
        if getattr(args, flag, None) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    return shlex.join(argv)
