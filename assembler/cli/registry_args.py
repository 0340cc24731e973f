"""The command line's registry options: TLS, logins, retries and registries.conf, shared
by every command that reads or writes a registry (``args._common`` adds them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from assembler.errors import InputError
from assembler.registry.conffiles import load as load_registries_conf
from assembler.transports.common import RegistryOptions


def bool_arg(text: str) -> bool:
    """A true-or-false option value (true, 1, yes, on; false, 0, no, off)."""
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_registry_args(p: argparse.ArgumentParser) -> None:
    """``--tls-verify``, ``--authfile``, ``--registries-conf`` and ``--retries``."""
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
        "--retries",
        type=int,
        default=RegistryOptions.retries,
        help=f"registry tries in a row without progress before giving up (default {RegistryOptions.retries})",
    )


def registry_options(args: argparse.Namespace) -> RegistryOptions:
    """How to talk to registries, from ``--tls-verify``, ``--authfile``, ``--retries`` and
    ``--registries-conf`` (InputError for a registries.conf that is wrong)."""
    if args.retries < 1:
        raise InputError("--retries must be at least 1")
    return RegistryOptions(
        tls_verify=args.tls_verify,
        auth_file=args.authfile,
        retries=args.retries,
        conf=load_registries_conf(args.registries_conf),
    )
