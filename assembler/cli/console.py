"""The two consoles of the command line: results on stdout, messages and progress on stderr."""

from __future__ import annotations

import argparse

from rich.console import Console

# No ``file``: rich looks sys.stdout/sys.stderr up at each print, so a caller's redirection works.
# No emoji codes: a reference such as oci:out:x: would print as "oci:out❌".
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
out = Console(highlight=False, soft_wrap=True, emoji=False)


def say(text: str) -> None:
    """One line of results on stdout (never markup: digests and paths are printed as they are)."""
    out.print(text, markup=False)


def size(n: int) -> str:
    """``n`` bytes for people: 512 B, 1.5 KiB, 3.2 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def mode_of(args: argparse.Namespace) -> str:
    """``tty``, ``plain``, ``json``, ``quiet`` or ``none``, from the command's flags and stderr."""
    if args.quiet:
        return "quiet"
    mode: str | None = args.progress
    if mode is None:
        mode = "none" if args.json else "auto"
    if mode == "auto":
        return "tty" if err.is_terminal else "plain"
    return mode
