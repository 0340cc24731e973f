"""Every command, registered once: its help, the function that adds its arguments and the
function that runs it (``COMMANDS``); the parser built from that table.

A command is one entry here. Its arguments come from a light module, added only to the
parser of the command that runs (every command's, for the whole help); the module that
runs it is imported only when it runs, so a build never loads the signing, inspection or
cache-maintenance code (cryptography alone is 40 ms of a no-change build), nor builds the
other eighteen commands' arguments (35 ms of the demo's no-change build).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from assembler import __version__
from assembler.cli.arguments import Parser


@dataclass(frozen=True)
class Command:
    """One command: ``arguments`` and ``run`` are ``MODULE:FUNCTION`` of ``assembler.cli``."""

    help: str
    arguments: str  # adds the command's arguments to its parser
    run: str  # runs it: argparse.Namespace -> exit status


COMMANDS: dict[str, Command] = {
    "build": Command("build a manifest (the default command)", "buildargs:build_arguments", "uptodate:cmd_build"),
    "plan": Command("show what a build would do; runs nothing", "buildargs:plan_arguments", "build:cmd_plan"),
    "watch": Command(
        "build, then build again on each save in the manifest's folder: only what changed is made and pushed",
        "watch:arguments",
        "watch:cmd_watch",
    ),
    "inspect": Command(
        "show an image's manifest, config and layers", "imageargs:inspect_arguments", "images:cmd_inspect"
    ),
    "validate": Command(
        "recompute every size, digest and diff_id of an image", "imageargs:validate_arguments", "images:cmd_validate"
    ),
    "diff": Command(
        "why two images differ (exit 0 identical, 1 different, 2 trouble)",
        "imageargs:diff_arguments",
        "images:cmd_diff",
    ),
    "deps": Command(
        "check that an image's ELF files find their libraries (exit 1 on a miss)",
        "imageargs:deps_arguments",
        "images:cmd_deps",
    ),
    "referrers": Command(
        "list what is attached to an image: its SBOM, its provenance, a SIF",
        "imageargs:referrers_arguments",
        "referrers:cmd_referrers",
    ),
    "verify": Command(
        "check that an image is signed by a key, as cosign verify does (exit 1 if not)",
        "verify:arguments",
        "verify:cmd_verify",
    ),
    "sif": Command(
        "convert any image to an Apptainer/Singularity SIF file, as a stream",
        "imageargs:sif_arguments",
        "images:cmd_sif",
    ),
    "sqsh": Command(
        "convert any image to an Enroot/Pyxis squashfs image, as a stream",
        "imageargs:sqsh_arguments",
        "images:cmd_sqsh",
    ),
    "init": Command(
        "write a small manifest to start from (python, cpp, cuda), which builds as written",
        "init:arguments",
        "init:run",
    ),
    "registry": Command(
        "start a registry on 127.0.0.1 for watch and pushes (docker-registry), or stop it",
        "registry:arguments",
        "registry:run",
    ),
    "schema": Command(
        "print (or write) the JSON Schemas of manifests and recipes", "imageargs:schema_arguments", "images:cmd_schema"
    ),
    "cache": Command("list, verify or prune the cache", "cache:arguments", "cache:run"),
    "doctor": Command(
        "the programs assemble drives: found, their versions, what to install", "doctor:arguments", "doctor:cmd_doctor"
    ),
    "lock": Command(
        "resolve every Python set of every target and variant into MANIFEST.lock", "lock:arguments", "lock:cmd_lock"
    ),
    "test": Command(
        "run an image's tests (or a manifest's) on it, already built (exit 1 if one fails)",
        "run:test_arguments",
        "run:cmd_test",
    ),
    "run": Command(
        "run the image's entrypoint (or CMD) in a new container, as docker run does", "run:run_arguments", "run:cmd_run"
    ),
    "shell": Command(
        "an interactive shell in a new container of the image, or in a failed step's",
        "run:shell_arguments",
        "run:cmd_shell",
    ),
}


def _function(where: str) -> Any:
    module, name = where.split(":")
    return getattr(importlib.import_module(f"assembler.cli.{module}"), name)


def command(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs the command ``name`` (a key of ``COMMANDS``)."""
    run_it: Callable[[argparse.Namespace], int] = _function(COMMANDS[name].run)
    return run_it


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: one subcommand per entry of ``COMMANDS``, each with its
    arguments; with ``only`` (a command's name), that command's alone (the others are
    listed, with their help, and take no arguments: a parser for that command's line)."""
    top = Parser(prog="assemble", description="Assemble OCI images from a manifest, without Dockerfiles or a daemon.")
    top.add_argument("--version", action="version", version=f"assemble {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, entry in COMMANDS.items():
        command_parser = sub.add_parser(name, help=entry.help)
        if only is None or name == only:
            _function(entry.arguments)(command_parser)
    return top
