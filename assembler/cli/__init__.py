"""The command line: the only package that prints, reads the terminal, or exits.

    assemble MANIFEST [-o OUTPUT]... [--set K=V]... [--base NAME=REF]... [--platform P]
             [--cache DIR] [--epoch N] [--tls-verify=false] [--registries-conf FILE] [--json] [-v]
             [--progress auto|tty|plain|json | -q] [--digestfile FILE]
    assemble plan MANIFEST ...        what would run, what is cached, the layers, the outputs
    assemble inspect REF              manifest, config and layers of any image reference
    assemble validate REF             recompute every size, digest and diff_id of an image
    assemble diff A B                 why two images differ: config fields, layers, files
    assemble deps REF                 can the ELF files an image adds load in it (libraries, versions)
    assemble referrers REF [--save D] what is attached to an image: its SBOM, its provenance, a SIF
    assemble verify REF --key PUB     is the image signed by that key (cosign's format; --type: attested)
    assemble sif SOURCE OUT.sif       an Apptainer/Singularity SIF of any image, written as a stream
    assemble sqsh SOURCE OUT.sqsh     an Enroot/Pyxis squashfs image of any image, written as a stream
    assemble lock MANIFEST [--set K=V]... [--cache DIR]  every Python set and Debian package, into MANIFEST.lock
    assemble schema [-o DIR]          JSON Schemas of manifests and recipes (for editors)
    assemble cache ls|verify|prune    the cache: list, check, remove by age or size
    assemble doctor                   the programs assemble drives: found, versions, what to install
    assemble test REF MANIFEST        run a manifest's tests on an image already built
    assemble run REF [-- CMD...]      run the image's entrypoint (or CMD) in a new container
    assemble shell REF | --step STEP  a shell in a new container, or in a failed step's kept one

Exit status: 0 ok, 1 build/runtime failure, 2 bad input, 130 interrupted (Ctrl-C), 143 and
129 terminated (SIGTERM, SIGHUP: stopped as Ctrl-C stops a build). ``diff`` exits
as diff(1) and cmp(1) do: 0 identical, 1 different, 2 trouble (bad input or a failure).

Here: ``main``. ``commands`` registers every command (``COMMANDS``: its help, arguments
and runner) and builds the parser, ``arguments`` holds the argument helpers they share,
``build`` and ``images`` run the commands, ``progress`` and ``live`` show a build's
progress, ``console`` the two streams.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import NoReturn

from assembler.cli.commands import COMMANDS, command, parser
from assembler.cli.console import err
from assembler.errors import AssemblerError

__all__ = ["COMMANDS", "command", "main", "parser", "run"]

# Commands whose arguments after ``--`` are a command to run in a container (``assemble run
# REF -e K=V -- CMD...``): argparse reads no positional after an option.
TRAILING = frozenset({"run"})


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (``timeout``, a CI cancel, Slurm's time limit, Kubernetes, a closed
    terminal): the build stops as Ctrl-C stops it, its programs killed and its containers
    and mounts removed, and exits 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum


# The stopping signal that arrived while a command ran (its number), if one did: a program
# the build ran gets Ctrl-C too (the terminal's process group) and fails of it, and its
# failure may reach the command before the KeyboardInterrupt does (mmdebstrap in a worker
# thread): the stop is what is said then, not the program's failure.
_STOPPED: list[int] = []


def _terminate(signum: int, frame: object) -> None:
    _STOPPED.append(signum)
    raise Terminated(signum)


def _interrupt(signum: int, frame: object) -> None:
    _STOPPED.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stopping_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` while a command runs, SIGINT
    KeyboardInterrupt as Python's own handler does, each remembered (in the main thread; one
    ignored where the command was started, as ``nohup`` ignores SIGHUP, stays ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) is signal.SIG_DFL:
            saved[sig] = signal.signal(sig, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        saved[signal.SIGINT] = signal.signal(signal.SIGINT, _interrupt)
    _STOPPED.clear()
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    with _stopping_signals():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and not args_list[0].startswith("-") and args_list[0] not in COMMANDS:  # build is the default
        args_list.insert(0, "build")
    trailing: list[str] | None = None
    if args_list and args_list[0] in TRAILING and "--" in args_list:  # the container's argv, whatever it holds
        cut = args_list.index("--")
        args_list, trailing = args_list[:cut], args_list[cut + 1 :]
    args = parser(args_list[0] if args_list and args_list[0] in COMMANDS else None).parse_args(args_list)
    if trailing is not None:
        args.cmd = [*args.cmd, *trailing]
    logging.basicConfig(
        level=logging.DEBUG if args.__dict__.get("verbose", 0) > 1 else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser().print_help(sys.stderr)
        return 2
    try:
        return command(args.command)(args)
    except AssemblerError as e:
        if _STOPPED:  # a program stopped by the same signal failed first: the stop is the news
            logging.getLogger(__name__).debug("stopped; a program failed of it: %s", e)
            return _stopped(_STOPPED[0], kept=_kept(args))
        # diff's 1 means "different": any failure is 2 there, as in diff(1).
        code = 2 if args.command == "diff" else e.exit_code
        from assembler.manifest.text.urls import scrubbed  # a failed command only: the manifest's package by then

        # a program's stderr quoted in it may name a URL with its credentials: never said
        text, hint = scrubbed(str(e)), scrubbed(e.hint) if e.hint else None
        if getattr(args, "progress", None) == "json" and not getattr(args, "quiet", False):
            from assembler.cli.progress import json_error

            json_error(text, hint, code)
        else:
            err.print(f"error: {text}", markup=False)
            if hint:
                err.print(f"hint: {hint}", markup=False)
        if os.environ.get("ASSEMBLE_TRACEBACK"):
            raise
        return code
    except Terminated as e:
        return _stopped(e.signum, kept=_kept(args))
    except KeyboardInterrupt:
        return _stopped(signal.SIGINT, kept=_kept(args))


def _kept(args: argparse.Namespace) -> str:
    """What a stopped build leaves for the next one (nothing for another command): what it
    finished, in its cache. "interrupted" alone left the user to guess whether a minute of
    bootstrapping was lost (issue 67)."""
    if args.command not in ("build", "watch"):
        return ""
    from assembler.cache import default_root

    cache = args.cache or default_root()
    return (
        f"kept: the bases, steps and layers that finished, in the cache {cache} (building again goes on "
        "from there); the steps that were running stopped, their containers removed"
    )


def _stopped(signum: int, *, during: str = "", kept: str = "") -> int:
    """Say the command was stopped by ``signum`` (``during``: what a program it ran said as
    it stopped too; ``kept``: what it leaves, said first: the stop is the last line);
    128 + its number."""
    if kept:
        err.print(kept, markup=False)
    if signum == signal.SIGINT:
        text = "interrupted"
    else:
        text = (
            f"terminated by {signal.Signals(signum).name}: stopped, as Ctrl-C stops it (its steps' containers removed)"
        )
    err.print(text + (f" (while: {during})" if during else ""), markup=False)
    return 128 + signum


def run() -> NoReturn:
    code = main()
    if _STOPPED:
        # Stopped by a signal, its cleanup done (containers, mounts, temp files): leave without
        # the interpreter's finalization. A daemon thread still blocked reading a stopped
        # program's pipe holds that reader's lock, and the collector closing the pipe then
        # aborts the interpreter ("Fatal Python error: _enter_buffered_busy", SIGABRT): the
        # exit status said -6, not 128 + the signal (test_signals, once in a suite's run).
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    raise SystemExit(code)
