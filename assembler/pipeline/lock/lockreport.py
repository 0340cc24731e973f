"""What ``assemble lock`` is asked besides the variants (``Asked``) and what it did to each
set, base or git ref (``Locked``): shared by :mod:`.locking` and :mod:`.lockenvs`, and light,
since a build imports :mod:`.locking` (to apply the lock) but never resolves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Locked:
    """What ``assemble lock`` did to one set (or base, or git ref) of one variant."""

    variant: str
    where: str
    key: str
    state: str  # kept | resolved | stand-in | unresolved | unresolvable | pinned
    pins: int
    why: str = ""
    # a Python set's environment: its name, and the date it was resolved as of and why
    environment: str = ""
    as_of: str = ""


@dataclass(frozen=True)
class Asked:
    """What the command line asks of the lock besides the variants."""

    upgrade: bool = False
    upgrade_packages: Sequence[str] = ()
    retry: bool = False
    tls_verify: bool = True
