"""The command line's network options: TLS, logins, retries, time limits and
registries.conf, shared by every command that reads or writes a registry or downloads
(``args._common`` adds them)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from pathlib import Path

from assembler.errors import InputError
from assembler.registry.conffiles import load as load_registries_conf
from assembler.registry.types import NetworkLimits
from assembler.transports.common import RegistryOptions

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


def add_registry_args(p: argparse.ArgumentParser) -> None:
    """``--tls-verify``, ``--authfile``, ``--registries-conf``, ``--cert`` and ``--retries``."""
    p.add_argument(
        "--tls-verify",
        type=bool_arg,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="--tls-verify=false talks plain HTTP to the registry (loopback registries)",
    )
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
        f"size per {NetworkLimits.min_rate >> 10} KiB (default ${DEADLINE_ENV}, else {NetworkLimits.deadline:g})",
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
