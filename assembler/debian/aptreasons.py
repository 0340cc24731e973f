"""What apt said when it would not install what it was asked: each package it refused and
its own reason, read from its output (mmdebstrap's, ``apt-get --simulate``'s, a step's log).

A wrong package name used to fail late and without its cause (issue 67): a bootstrap after a
minute with mmdebstrap's last line, ``E: setup failed: E: apt-get ... install ... failed``,
and ``assemble lock`` with the dry run's last two, ``I: main() received signal PIPE``. apt had
said why a few lines up (``E: Unable to locate package libgomp``); those lines are what a
failure now leads with, each package named once, with what apt says replaces it where it
says so (``python``: ``python-is-python3``).

:func:`refusals` reads them; :func:`refused` makes the error (an
:class:`~assembler.errors.AptRefused`); :func:`is_refusal` tells such an error's text from
another failure's where only its text is kept (a lock's entry).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from assembler.errors import AptRefused

# apt 2.6's (bookworm's) words for a package it cannot install, in the C locale, which
# mmdebstrap and the steps run it in.
_REFUSED = (
    re.compile(r"^E: Unable to locate package (?P<name>\S+)$"),
    re.compile(r"^E: Package '(?P<name>[^']+)' has no installation candidate$"),
    re.compile(r"^E: Version '[^']+' for '(?P<name>[^']+)' was not found$"),
    re.compile(r"^E: Release '[^']+' for '(?P<name>[^']+)' was not found$"),
    re.compile(r"^E: Couldn't find any package by (?:glob|regex) '(?P<name>[^']+)'$"),
)
_UNMET_HEAD = "The following packages have unmet dependencies:"
_UNMET = re.compile(r"^ (?P<name>\S+) : (?P<why>(?:Pre-)?Depends: .+)$")
_UNMET_MORE = re.compile(r"^ +(?P<why>(?:Pre-)?Depends: .+)$")
_NOT_AVAILABLE = re.compile(r"^Package (?P<name>\S+) is not available, but is referred to by another package\.$")
_REPLACED = "However the following packages replace it:"
PREFIX = "apt cannot install "  # how every refusal's message begins (a lock keeps only the text)


@dataclass(frozen=True)
class Refusal:
    """One package apt would not install: apt's own reason, and what it says replaces it."""

    package: str
    reason: str
    instead: tuple[str, ...] = ()

    def said(self) -> str:
        replaced = f"; apt says {', '.join(self.instead)} replace it" if self.instead else ""
        return f"{self.package} ({self.reason}{replaced})"


def refusals(text: str) -> list[Refusal]:
    """Each package apt refused in ``text`` (its output, any other program's lines between),
    in the order apt named them, each once."""
    lines = [line.rstrip() for line in text.splitlines()]
    instead = _replacements(lines)
    found: dict[str, list[str]] = {}
    unmet: str | None = None
    for line in lines:
        if line == _UNMET_HEAD:
            unmet = ""
            continue
        if unmet is not None and (m := _UNMET.match(line) or _UNMET_MORE.match(line)):
            unmet = m.groupdict().get("name") or unmet
            found.setdefault(unmet, []).append(m["why"])
            continue
        unmet = None
        for pattern in _REFUSED:
            if m := pattern.match(line):
                found.setdefault(m["name"], []).append(line[3:])
                break
    return [Refusal(name, "; ".join(dict.fromkeys(why)), instead.get(name, ())) for name, why in found.items()]


def _replacements(lines: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """name -> what apt says replaces it ("Package python is not available ... However the
    following packages replace it:" and the next line's names)."""
    out: dict[str, tuple[str, ...]] = {}
    name = None
    for i, line in enumerate(lines):
        if m := _NOT_AVAILABLE.match(line):
            name = m["name"]
        elif line == _REPLACED and name is not None and i + 1 < len(lines):
            out[name] = tuple(lines[i + 1].split())
            name = None
    return out


def refused(found: Sequence[Refusal], *, what: str, hint: str | None = None) -> AptRefused:
    """The error for packages apt refused (``found``: not empty) of ``what`` (the
    bootstrap's packages, a layer's): "apt cannot install WHAT: NAME (apt's reason)"."""
    message = f"{PREFIX}{what}: " + "; ".join(r.said() for r in found)
    return AptRefused(
        message,
        packages=[r.package for r in found],
        reasons=[r.reason for r in found],
        hint=hint or "check each name for the suite (apt-cache policy NAME on a machine of that suite)",
    )


def is_refusal(text: str) -> bool:
    """Whether ``text`` (an error's message, as a lock keeps it) says apt refused packages."""
    return text.startswith(PREFIX)


def suggestions(found: Iterable[Refusal], served: Iterable[str]) -> str | None:
    """A hint naming, for each refused package, the served name most like it
    (``libgomp``: ``libgomp1``), or None when none is close."""
    import difflib

    names = sorted(set(served))
    guesses = []
    for r in (r for r in found if not r.instead):  # apt named what replaces it already
        bare = re.split(r"[=:/]", r.package, maxsplit=1)[0]
        close = [n for n in difflib.get_close_matches(bare, names, n=2, cutoff=0.8) if n != bare]
        if close:
            guesses.append(f"{r.package}: did you mean {' or '.join(close)}?")
    return "; ".join(guesses) or None
