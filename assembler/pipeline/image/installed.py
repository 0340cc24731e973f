"""What a runtime step installed into Python, against what the lock pins for it.

The export agent writes a step's changes as a layer and records every entry's path
(:func:`assembler.cache.memos.entries_key`): each new ``NAME-VERSION.dist-info`` in a
``site-packages`` (or pip's ``/usr/local/.../dist-packages``) is a distribution the step
installed. One the step's locked sets do not pin, or pin at another version, went in
unlocked: with ``--locked`` that fails the build, naming the step and the package; else it
is a warning. A distribution installed from a file or URL (pip writes its
``direct_url.json``: a wheel a compile step built, an editable tree) is pinned by the step's
own inputs, and a venv's own pip and setuptools (ensurepip) by the interpreter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assembler.cache import Cache
from assembler.cache.memos import entries_key
from assembler.errors import InputError
from assembler.manifest.lock.file import LOCK_ENV

_DIST_INFO = re.compile(r"^(?P<site>.*/(?:site-packages|dist-packages))/(?P<dir>[^/]+)\.dist-info/(?P<file>[^/]+)$")
# Anywhere: what a compile step's artifact holds (pip --target writes no site-packages).
_ANY_DIST_INFO = re.compile(r"^(?P<site>.*)/(?P<dir>[^/]+)\.dist-info/(?P<file>[^/]+)$")
_APT = "/usr/lib/python3/dist-packages"  # Debian's packages: apt's, not pip's
_BOOTSTRAP = frozenset({"pip", "setuptools"})  # what `python -m venv` puts in a venv (ensurepip)


@dataclass(frozen=True)
class Installed:
    """A distribution a step's layer holds a dist-info of."""

    name: str  # canonical
    version: str
    where: str  # its site-packages
    direct: bool  # installed from a file or URL (direct_url.json)


def installed(cache: Cache, diff_id: str, *, anywhere: bool = False) -> list[Installed] | None:
    """The distributions whose dist-info the layer ``diff_id`` writes into a site-packages
    (``anywhere``: into any folder) (None: its entry list was not recorded)."""
    memo = cache.memo(entries_key(diff_id))
    if memo is None:
        return None
    pattern = _ANY_DIST_INFO if anywhere else _DIST_INFO
    found: dict[tuple[str, str], dict[str, object]] = {}
    for entry in memo.get("entries", []):
        match = pattern.match("/" + str(entry[0]).lstrip("/"))
        if match is None or match.group("site").startswith(_APT) or "-" not in match.group("dir"):
            continue
        item = found.setdefault((match.group("site"), match.group("dir")), {"direct": False})
        item["direct"] = bool(item["direct"]) or match.group("file") == "direct_url.json"
    out = []
    for (site, folder), item in sorted(found.items()):
        name, version = folder.rsplit("-", 1)
        out.append(Installed(canonicalize_name(name), version, site, bool(item["direct"])))
    return out


def unlocked(step: str, env: Mapping[str, str], dists: Sequence[Installed]) -> list[str]:
    """What ``dists`` (installed by runtime step ``step``, whose env holds its locked pins)
    holds that the lock did not pin, one line each."""
    pins = _pins(env.get(LOCK_ENV, ""))
    out = []
    for dist in dists:
        if dist.direct or dist.name in _BOOTSTRAP:
            continue
        pinned = pins.get(dist.name)
        if pinned is None:
            out.append(f"step {step} installed {dist.name} {dist.version}, which none of its python sets declares")
        elif _normal(pinned) != _normal(dist.version):
            out.append(f"step {step} installed {dist.name} {dist.version}, and the lock pins {pinned}")
    return out


def _pins(text: str) -> dict[str, str]:
    """Canonical name -> version of each ``name==version`` line of locked pins (a
    require_hashes set's --hash options follow on the same line)."""
    pins: dict[str, str] = {}
    for line in text.splitlines():
        found = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;\\]+)", line)
        if found:
            pins[canonicalize_name(found.group(1))] = found.group(2)
    return pins


def pinned_names(text: str) -> set[str]:
    """The canonical names locked pins (``LOCK_ENV``'s text) pin, but pip's own tools."""
    return set(_pins(text)) - _BOOTSTRAP


def _normal(version: str) -> str:
    """A version without its local label (2.9.0+cu129 is the lock's 2.9.0)."""
    return version.split("+", 1)[0]


def canonicalize_name(name: str) -> str:
    """PEP 503's normal form of a distribution's name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def check_installed(step: str, env: Mapping[str, str], cache: Cache, diff_id: str, *, locked: bool) -> list[str]:
    """The warnings for what runtime step ``step`` installed unlocked; InputError (exit 2)
    naming them under ``locked``."""
    dists = installed(cache, diff_id)
    found = unlocked(step, env, dists or [])
    if found and locked:
        raise InputError(
            "--locked: " + "; ".join(found),
            hint="declare what the step's commands install in its python_sets, then assemble lock",
        )
    return found
