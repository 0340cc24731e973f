"""The command line's shared arguments: the parser class, value types, the flag groups
every command that reads or writes an image takes (``common_args``: platform, the network
options, ``--json``, ``-v``), and the values several commands parse the same way.

Light at import: the parser is built for every command, so nothing here imports what a
command runs. The network options: TLS, logins, retries, time limits and registries.conf,
shared by every command that reads or writes a registry or downloads.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn, Protocol

from assembler.cli.console import err
from assembler.errors import InputError
from assembler.oci.descriptor import Platform
from assembler.registry.conffiles import load as load_registries_conf
from assembler.registry.types import NetworkLimits, RegistryOptions


def pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value


class Parser(argparse.ArgumentParser):
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


def progress_args(p: argparse.ArgumentParser, *, digest: str) -> None:
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


def reader_cache_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="cache folder for what reading needs (a rootfs: conversion); default: a temporary one, removed afterwards",
    )


def common_args(p: argparse.ArgumentParser, *, platforms: bool = False) -> None:
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
    registry_args(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail (twice: debug)")


def storage_arg(arg: Path | None) -> Path | None:
    """buildah's storage: ``--storage``, else ``$ASSEMBLE_STORAGE``, else None (the cache's)."""
    chosen = arg or (Path(v) if (v := os.environ.get("ASSEMBLE_STORAGE")) else None)
    if chosen is None:
        return None
    what = f"--storage {arg}" if arg else f"$ASSEMBLE_STORAGE={chosen}"
    try:
        chosen.expanduser().mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"{what}: {e.strerror or e}", hint="name a folder buildah can write (node-local disk)"
        ) from None
    return chosen.expanduser().resolve()


def slurm_args(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError as e:
        raise InputError(f"--slurm-args {text!r}: {e}") from None


class Arguments(Protocol):
    """A parser or one of its argument groups: what adds an argument."""

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action: ...


def param_args(p: Arguments) -> None:
    """``--set`` and ``--set-unlocked`` (what :func:`param_sets` reads), as build, plan and
    lock take them."""
    p.add_argument(
        "--set",
        action="append",
        type=pair,
        default=[],
        metavar="K=V",
        help="override a param (not one the target or a chosen choice fixes)",
    )
    p.add_argument(
        "--set-unlocked",
        action="append",
        type=pair,
        default=[],
        metavar="K=V",
        help="override a param even where the target or a chosen choice fixes it",
    )


def param_sets(args: argparse.Namespace) -> dict[str, str]:
    """The ``--set`` and ``--set-unlocked`` values. One param given both ways with different
    values is refused: --set-unlocked would win whatever the order, silently."""
    sets, unlocked = dict(args.set), dict(args.set_unlocked)
    for name, value in unlocked.items():
        if sets.get(name, value) != value:
            raise InputError(
                f"--set {name}={sets[name]} and --set-unlocked {name}={value} disagree", hint=f"give {name} once"
            )
    return {**sets, **unlocked}


# The variables that give --network-timeout and --network-deadline their defaults.
TIMEOUT_ENV = "ASSEMBLE_NETWORK_TIMEOUT"
DEADLINE_ENV = "ASSEMBLE_NETWORK_DEADLINE"


def bool_arg(text: str) -> bool:
    """A true-or-false option value (true, 1, yes, on; false, 0, no, off)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def tls_verify_arg(p: argparse.ArgumentParser, *, help: str) -> None:
    """``--tls-verify[=BOOL]`` (default true), as skopeo and podman take it."""
    p.add_argument("--tls-verify", type=bool_arg, nargs="?", const=True, default=True, metavar="BOOL", help=help)


def registry_args(p: argparse.ArgumentParser) -> None:
    """``--tls-verify``, ``--authfile``, ``--registries-conf``, ``--cert`` and ``--retries``."""
    tls_verify_arg(p, help="--tls-verify=false talks plain HTTP to the registry (loopback registries)")
    p.add_argument(
        "--authfile",
        type=Path,
        default=None,
        help="registry credentials file (default: $REGISTRY_AUTH_FILE, containers', Docker's)",
    )
    p.add_argument(
        "--registries-conf",
        type=Path,
        default=None,
        metavar="FILE",
        help="registries.conf with mirrors, insecure and blocked registries, short-name search, as podman reads "
        "it (default: $CONTAINERS_REGISTRIES_CONF, ~/.config/containers/registries.conf, "
        "/etc/containers/registries.conf; their registries.conf.d drop-ins too)",
    )
    p.add_argument(
        "--cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="PEM file of CAs every HTTPS connection trusts besides the system's trust store (default: "
        "$REQUESTS_CA_BUNDLE; SSL_CERT_FILE and SSL_CERT_DIR move the system's); build steps get them too",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=RegistryOptions.retries,
        help=f"registry tries in a row without progress before giving up (default {RegistryOptions.retries})",
    )
    p.add_argument(
        "--network-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds a registry or a download's server may send nothing before the try fails (and is "
        f"retried) (default ${TIMEOUT_ENV}, else {NetworkLimits.idle:g})",
    )
    p.add_argument(
        "--network-deadline",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds one registry operation or one download may take, retries included, however slowly "
        f"its server sends; a blob gets 1 s more per {RegistryOptions.min_rate >> 10} KiB, a download of known "
        f"size per {NetworkLimits.min_rate >> 10} KiB, up to {NetworkLimits.longest / 3600:g} h "
        f"(default ${DEADLINE_ENV}, else {NetworkLimits.deadline:g})",
    )


def registry_options(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> RegistryOptions:
    """How to talk to registries (and download), from ``--tls-verify``, ``--authfile``,
    ``--retries``, ``--network-timeout``, ``--network-deadline`` (else their variables in
    ``environ``) and ``--registries-conf``. InputError for a registries.conf that is wrong
    or a limit that is not a positive number of seconds."""
    if args.retries < 1:
        raise InputError("--retries must be at least 1")
    from assembler.registry import trust  # ssl: only for a command that reads --cert

    # One trust for the whole process: its registries, downloads and build steps (registry.trust).
    trust.use_bundle(args.cert)
    return RegistryOptions(
        tls_verify=args.tls_verify,
        auth_file=args.authfile,
        retries=args.retries,
        timeout=_seconds(args.network_timeout, "--network-timeout", TIMEOUT_ENV, NetworkLimits.idle, environ),
        deadline=_seconds(args.network_deadline, "--network-deadline", DEADLINE_ENV, NetworkLimits.deadline, environ),
        conf=load_registries_conf(args.registries_conf),
    )


def _seconds(value: float | None, flag: str, env: str, default: float, environ: Mapping[str, str]) -> float:
    """``flag``'s value, else ``env``'s, else ``default``: InputError unless a positive, finite number."""
    where = flag
    if value is None and environ.get(env, "").strip():
        where = env
        try:
            value = float(environ[env])
        except ValueError:
            raise InputError(f"{env} must be a number of seconds, got {environ[env]!r}") from None
    if value is None:
        return default
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{where} must be a positive number of seconds, got {value:g}")
    return value
