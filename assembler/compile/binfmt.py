"""Another architecture's programs run here under qemu-user, where the kernel's binfmt_misc
has an interpreter for them (``scripts/setup --test``: qemu-user-static, binfmt-support).

What a container needs for it: the interpreter at the path binfmt_misc names, since the kernel
opens that path inside the container when a program starts, unless the entry was registered
with the ``F`` flag (the kernel opened it at registration). :func:`emulator` says what to bind;
a run under it is an emulated run, never a run on the target
(:mod:`assembler.pipeline.image.imagetests` reports it so).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
# OCI architectures and the machines (uname -m) that run them natively.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "386": "i686", "arm": "armv7l", "ppc64le": "ppc64le"}
# The names qemu's binfmt entries have (qemu-NAME: Debian's binfmt-support, systemd's
# binfmt.d), where they are not the machine's.
ENTRIES = {"amd64": "x86_64", "arm64": "aarch64", "386": "i386", "arm": "arm"}
_MAX_ENTRY = 4096  # a binfmt_misc entry is a few lines
# What a test's timeout is multiplied by under qemu-user: an interpreter's work (Python
# importing torch) runs 5-15 times slower there than on the machine it was written for.
SLOWDOWN = 10


@dataclass(frozen=True)
class Emulator:
    """qemu-user for ``machine``: ``interpreter`` as binfmt_misc names it, and the binds
    (host file, path in the container, read-only) that let a container's programs start."""

    machine: str
    interpreter: str
    mounts: tuple[tuple[str, str, bool], ...]

    @property
    def said(self) -> str:
        return f"qemu-user ({Path(os.path.realpath(self.interpreter)).name}) for {self.machine}"


def machine_of(architecture: str) -> str:
    """The ``uname -m`` of an OCI architecture's machines."""
    return MACHINES.get(architecture, architecture)


def native(architecture: str, machine: str | None = None) -> bool:
    """Whether ``machine`` (default: this one's ``uname -m``) runs ``architecture``'s programs
    itself: its own, and i686's on x86_64 (every x86_64 CPU runs them; an aarch64 one may
    lack AArch32, as Grace does, so arm's are not counted native there)."""
    here = machine or os.uname().machine
    runs = machine_of(architecture)
    return runs == here or (here, runs) == ("x86_64", "i686")


def emulator(architecture: str, *, root: Path = BINFMT_MISC) -> Emulator | None:
    """The qemu-user interpreter binfmt_misc runs ``architecture``'s programs with here
    (None: no entry, the entry disabled, or, for an entry without the F flag, its
    interpreter missing from the path the kernel opens at each start)."""
    machine = machine_of(architecture)
    try:
        with open(root / f"qemu-{ENTRIES.get(architecture, architecture)}", encoding="utf-8", errors="replace") as f:
            lines = f.read(_MAX_ENTRY).splitlines()
    except OSError:
        return None
    fields = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
    interpreter = fields.get("interpreter", "").strip()
    if not lines or lines[0].strip() != "enabled" or not interpreter:
        return None
    if "F" in fields.get("flags:", ""):  # opened by the kernel when it was registered: nothing to bind
        return Emulator(machine, interpreter, ())
    if not os.path.isfile(interpreter):
        return None
    # The file itself at the path the kernel opens (Debian's is a link to qemu-*-static).
    return Emulator(machine, interpreter, ((os.path.realpath(interpreter), interpreter, True),))
