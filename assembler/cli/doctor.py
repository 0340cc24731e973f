"""``assemble doctor``: the programs assemble drives, each found or not, with its version,
what it is for and the apt package that gives it.

    assemble doctor [--json]

``uv tool install .`` (or ``pipx install .``) installs assemble and its Python parts; the
programs below come from the distribution (Debian 12 names; ``scripts/setup`` installs what
the demo needs). As a user other than root, what a rootless build needs of the host too
(:mod:`assembler.hostuser`: subordinate ids, user namespaces, newuidmap). Where the cache and
buildah's storage are, on which filesystem, with how much room (:mod:`assembler.hostdisk`:
buildah's storage cannot be on NFS or Lustre). Exit 1 when one that every build needs is
missing, a rootless build cannot run, or the storage is on a network filesystem, else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from assembler import hostdisk
from assembler.cli.console import out, size
from assembler.hostuser import problems


@dataclass(frozen=True)
class Tool:
    """A program assemble (or its demo) runs."""

    command: str
    package: str  # the Debian 12 package that gives it
    version: tuple[str, ...]  # the command line that prints its version ("": dpkg's version of the package)
    used_for: str
    needed: bool = False  # every build runs it
    note: str = ""  # what to know about it
    install: str = ""  # how to get it where apt-get install PACKAGE does not
    built: str = ""  # where scripts/setup --test builds it, under the test cache (a glob)

    def how(self) -> str:
        return self.install or f"apt-get install {self.package}"


TOOLS = (
    Tool("buildah", "buildah", ("buildah", "--version"), "every step: compile steps and run: layers", needed=True),
    Tool("mmdebstrap", "mmdebstrap", ("mmdebstrap", "--version"), "bootstrap: bases (the demo's)"),
    Tool("newuidmap", "uidmap", (), "buildah as a user other than root (rootless)"),
    Tool("git", "git", ("git", "--version"), "git sources (git: in sources:)"),
    Tool("skopeo", "skopeo", ("skopeo", "--version"), "scripts/demo: inspecting the pushed image"),
    Tool("docker-registry", "docker-registry", ("docker-registry", "--version"), "scripts/registry (the demo)"),
    Tool("tar2sqfs", "squashfs-tools-ng", ("tar2sqfs", "--version"), "sif: and sqsh: outputs, assemble sif/sqsh"),
    Tool("unsquashfs", "squashfs-tools", ("unsquashfs", "-version"), "reading a SIF's or sqsh's files back"),
    Tool("siftool", "siftool", (), "checking a SIF with the reference reader"),
    Tool(
        "umoci",
        "umoci",
        ("umoci", "--version"),
        "unpacking an OCI layout (not used by assemble itself)",
        note="umoci before 0.5 cannot read zstd layers, assemble's default: build with --compression gzip for it",
    ),
    Tool(
        "apptainer",
        "apptainer",
        ("apptainer", "--version"),
        "tests: on: slurm, running a SIF",
        install="not in Debian 12: Apptainer's .deb from its releases, or scripts/build-apptainer",
        built="apptainer-*/prefix/bin/apptainer",
    ),
    Tool("sbatch", "slurm-client", (), "--executor slurm and tests on: slurm"),
    Tool(
        "qemu-aarch64-static",
        "qemu-user-static",
        (),
        "bootstrap: bases for linux/arm64 on an x86 host (their packages' scripts under qemu-user)",
        note="with binfmt-support and arch-test; `arch-test arm64` says ok when binfmt_misc runs it",
    ),
    Tool("arch-test", "arch-test", (), "mmdebstrap's check that another architecture's programs run here"),
)
_VERSION = re.compile(r"\d+(?:\.\d+)+(?:[-+~][\w.+~-]*)?")


@dataclass(frozen=True)
class Found:
    command: str
    package: str
    install: str
    path: str | None
    version: str | None
    used_for: str
    needed: bool
    note: str


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    p.add_argument("--cache", type=Path, default=None, help="the cache a build would use (default: as a build's)")
    p.add_argument(
        "--storage", type=Path, default=None, help="buildah's storage (default: $ASSEMBLE_STORAGE, else CACHE/buildah)"
    )


def _version(tool: Tool, path: str) -> str | None:
    """The version ``tool`` (the one at ``path``) prints, else dpkg's of its package, else None."""
    if tool.version:
        try:
            argv = [path, *tool.version[1:]]
            ran = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            ran = None
        if ran is not None and (match := _VERSION.search(ran.stdout + ran.stderr)):
            return match.group(0)
    if shutil.which("dpkg-query") is None:
        return None
    ran = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", tool.package], capture_output=True, text=True, timeout=10, check=False
    )
    return (ran.stdout.strip() or None) if ran.returncode == 0 else None


def _note(tool: Tool, version: str | None) -> str:
    if tool.command == "umoci" and version is not None and _older(version, (0, 5)):
        return tool.note
    return ""


def _older(version: str, than: tuple[int, ...]) -> bool:
    numbers = tuple(int(n) for n in re.findall(r"\d+", version.split("+")[0])[: len(than)])
    return numbers < than


# Where scripts/setup --test builds what Debian 12 does not ship (Apptainer): the test cache.
TEST_CACHE_ENV = "ASSEMBLE_TEST_CACHE"
TEST_CACHE_DEFAULT = "/var/tmp/assemble-test-cache"


def _built(tool: Tool, environ: Mapping[str, str]) -> Path | None:
    """The newest of ``tool`` that scripts/setup --test built into the test cache, if any."""
    if not tool.built:
        return None
    cache = Path(environ.get(TEST_CACHE_ENV) or TEST_CACHE_DEFAULT)
    found = sorted(p for p in cache.glob(tool.built) if p.is_file() and os.access(p, os.X_OK))
    return found[-1] if found else None


def check(environ: Mapping[str, str] = os.environ) -> list[Found]:
    """Each of :data:`TOOLS`, found on PATH or (one scripts/setup --test builds) in the test
    cache, or not, with its version and where it was found."""
    found = []
    for tool in TOOLS:
        path = shutil.which(tool.command)
        note = f"{path} (on PATH)" if path is not None and tool.built else ""
        if path is None and (built := _built(tool, environ)) is not None:
            path = str(built)
            note = f"{built}: not on PATH, built by scripts/setup --test; PATH={built.parent}:$PATH runs it"
        version = _version(tool, path) if path is not None else None
        note = note or _note(tool, version)
        found.append(Found(tool.command, tool.package, tool.how(), path, version, tool.used_for, tool.needed, note))
    return found


def _uv() -> str:
    """uv, which ``assemble lock`` runs: the one installed with assemble, else PATH's."""
    here = Path(sys.executable).parent / "uv"
    return str(here) if here.is_file() else shutil.which("uv") or "missing (pip install uv)"


def _places(args: argparse.Namespace) -> tuple[list[hostdisk.Place], int, hostdisk.Quota | None]:
    """Where a build would keep what it makes (the cache, buildah's storage), the cache's
    budget, and this user's quota where the cache is."""
    from assembler.cache import default_root
    from assembler.cli.userconfig import cache_budget, default_quota

    cache = (args.cache or default_root()).expanduser()
    chosen = args.storage or (Path(v) if (v := os.environ.get("ASSEMBLE_STORAGE")) else None)
    storage = chosen.expanduser() if chosen is not None else cache / "buildah"  # looked at, not made
    places = [hostdisk.place("the cache", cache), hostdisk.place("buildah's storage", storage)]
    return places, cache_budget(None, cache), default_quota(cache)


def _disk_lines(places: list[hostdisk.Place], budget: int, quota: hostdisk.Quota | None) -> list[str]:
    lines = []
    for p in places:
        room = f"{size(p.free)} free of {size(p.size)}"
        lines.append(f"{p.what}: {p.path} on {p.fstype} ({p.mount}), {room}")
    cache = places[0]
    if quota is not None:
        lines.append(
            f"your quota on {quota.mount}: {size(quota.used)} used of {size(quota.limit)} ({quota.tool}), "
            f"{size(quota.room)} left"
        )
    free = min(cache.free, quota.room) if quota is not None else cache.free
    half = " (half your quota)" if quota is not None and budget == quota.limit // 2 else ""
    lines.append(
        f"the cache's budget: {size(budget)}{half}"
        + (
            f", more than the {size(free)} free there{'' if quota else ' (a quota?)'}: --cache-max-size SIZE"
            if budget > free
            else ""
        )
    )
    return lines


def cmd_doctor(args: argparse.Namespace) -> int:
    from assembler import __version__

    found = check()
    missing = [f for f in found if f.path is None]
    rootless = problems()
    places, budget, quota = _places(args)
    disk = hostdisk.problems(places)
    if args.json:
        data: dict[str, object] = {
            "assemble": __version__,
            "python": sys.executable,
            "uv": _uv(),
            "tools": [asdict(f) for f in found],
        }
        data["rootless"] = rootless
        data["disk"] = {
            "places": [{**asdict(p), "path": str(p.path), "network": p.network} for p in places],
            "budget": budget,
            "quota": asdict(quota) if quota is not None else None,
            "problems": disk,
        }
        out.print(json.dumps(data, indent=2), markup=False)
    else:
        out.print(f"assemble {__version__} (Python {sys.version.split()[0]}, {sys.executable})", markup=False)
        out.print(f"  {'ok':<8} {'uv':<16} {_uv()}  assemble lock", markup=False)
        for f in found:
            state = "ok" if f.path else "missing"
            shown = f.version or ("?" if f.path else f.install)
            out.print(f"  {state:<8} {f.command:<16} {shown:<24} {f.used_for}", markup=False)
            if f.note:
                out.print(f"  {'':<8} {'':<16} note: {f.note}", markup=False)
        if missing:
            apt = " ".join(dict.fromkeys(f.package for f in missing if f.install.startswith("apt-get ")))
            root = "" if os.geteuid() == 0 else "sudo "
            if apt:
                out.print(
                    f"to install what is missing: {root}apt-get install --no-install-recommends {apt}", markup=False
                )
        for problem in rootless:
            out.print(f"  {'rootless':<8} {problem}", markup=False)
        for line in _disk_lines(places, budget, quota):
            out.print(f"  {'disk':<8} {line}", markup=False)
        for problem in disk:
            out.print(f"  {'disk':<8} {problem}", markup=False)
    return 1 if any(f.needed for f in missing) or rootless or disk else 0
