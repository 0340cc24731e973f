"""Debian packages locked: what a bootstrapped base and each ``packages:`` layer on it
install, resolved by apt itself without installing anything, and checked again when the
lock is built.

``assemble lock`` asks mmdebstrap for a dry run (``--simulate``) of the base: apt fetches the
mirror's index (``InRelease`` checked against the keyring, then the ``Packages`` it names)
into a folder and prints what it would install. The ``Packages`` index gives each package's
sha256, which apt checks every downloaded ``.deb`` against. A ``packages:`` layer on that
base is resolved by ``apt-get --simulate`` on this host, against a dpkg status made of the
base's locked packages and the same index: the packages it adds, with their versions.

A build with the lock (:func:`check_served`) fetches the index the same way before it
bootstraps and refuses, naming them, packages the mirror no longer serves as locked (a
point release moved them, or a package was rebuilt); the bootstrapped base's dpkg status is
then checked to hold nothing the lock does not name (:func:`check_installed`). A layer
installs each locked package at its version and checks its sha256 in the container
(:func:`pinned_install`). A mirror that keeps every state (Debian's snapshot archive) builds
the lock years later; the refusal names the snapshot of the day the lock was written.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from assembler.debian import aptreasons
from assembler.errors import AssemblerError, InputError, ToolError
from assembler.hostuser import host_cause
from assembler.manifest.lock.debpins import Deb
from assembler.proc import Result, Runner

log = logging.getLogger(__name__)

# apt's simulated install: ``Inst NAME [OLD] (VERSION ARCHIVES [ARCH])``
_INST = re.compile(
    r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[[^\]]*\] )?\((?P<version>\S+) .*\[(?P<arch>[^\]]+)\]\)", re.M
)
_FIELD = re.compile(r"^(Package|Version|Architecture|SHA256): *(.*)$", re.M)
SNAPSHOT = "http://snapshot.debian.org/archive/debian"
_INDEX_LIMIT = 1 << 30  # a Packages file apt fetched: read whole, so bounded


class MirrorIndex:
    """What one mirror's suite serves, read from the ``Packages`` files apt fetched and
    checked into ``lists``: each package version's sha256 and stanza, and the date in the
    suite's ``InRelease``."""

    def __init__(self, lists: Path) -> None:
        self.lists = lists
        # (name, version, arch) -> the one served: a multiarch base's index lists the same
        # version of a package for each architecture, each its own file
        self.debs: dict[tuple[str, str, str], Deb] = {}
        self.newest: dict[str, str] = {}  # name -> the version served (the last listed)
        self._stanzas: dict[tuple[str, str, str], str] = {}
        files = sorted(lists.glob("*_Packages"))
        if not files:
            raise ToolError(f"apt fetched no Packages index into {lists}")
        for file in files:
            if file.stat().st_size > _INDEX_LIMIT:  # bookworm's main/amd64 index: 50 MB
                raise ToolError(f"{file.name}: {file.stat().st_size} bytes, more than a Packages index holds")
            self._read(file.read_text(encoding="utf-8", errors="replace"))
        self.date = ""
        for release in sorted(lists.glob("*Release")):
            found = re.search(r"^Date: *(.+)$", release.read_text(errors="replace"), re.M)
            if found:
                self.date = found.group(1).strip()

    def _read(self, text: str) -> None:
        for stanza in text.split("\n\n"):
            fields = dict(_FIELD.findall(stanza))
            if "Package" in fields and "SHA256" in fields:
                deb = Deb(
                    fields["Package"], fields.get("Architecture", ""), fields.get("Version", ""), fields["SHA256"]
                )
                self.debs[(deb.name, deb.version, deb.arch)] = deb
                self.newest[deb.name] = deb.version
                self._stanzas[(deb.name, deb.version, deb.arch)] = stanza.strip("\n")

    def status(self, debs: Iterable[Deb]) -> str:
        """A dpkg status file in which ``debs`` are installed (for apt's simulation)."""
        out = []
        for deb in sorted(debs):
            stanza = self._stanzas.get((deb.name, deb.version, deb.arch))
            if stanza is not None:
                out.append(re.sub(r"^(Package: .*)$", r"\1\nStatus: install ok installed", stanza, count=1, flags=re.M))
        return "\n\n".join(out) + "\n"


def simulate_bootstrap(
    argv: Sequence[str], env: Mapping[str, str], *, runner: Runner, work: Path, log_tail: int = 30
) -> tuple[list[tuple[str, str, str]], MirrorIndex]:
    """(name, version, arch) of every package mmdebstrap would install, and the index it
    fetched, from a dry run of ``argv`` (mmdebstrap's arguments, its output last but one:
    replaced by a folder in ``work``). The index's files are copied into ``work/lists``
    and the dry run's folder removed: unprivileged, its files belong to the user's
    subordinate root, which only a user namespace removes."""
    root = work / "simulated"
    root.mkdir(mode=0o755)
    *head, _output, mirror = argv
    cmd = [
        "env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        *head,
        "--simulate",
        "--verbose",
        "--skip=cleanup/apt/lists",
        str(root),
        mirror,
    ]
    try:
        result = runner.run(cmd, check=False)
        if result.returncode != 0:
            raise _dry_run_failed(result, cmd, root / "var" / "lib" / "apt" / "lists", log_tail=log_tail)
        lists = work / "lists"
        lists.mkdir()
        for file in (root / "var" / "lib" / "apt" / "lists").iterdir():
            if file.is_file() and (file.name.endswith("_Packages") or file.name.endswith("Release")):
                shutil.copyfile(file, lists / file.name)
    finally:
        remove_tree(root, runner)
    text = (result.stdout or "") + (result.stderr or "")
    return _inst(text), MirrorIndex(lists)


def _dry_run_failed(result: Result, cmd: Sequence[str], lists: Path, *, log_tail: int) -> AssemblerError:
    """Why mmdebstrap's dry run failed: the packages apt refused, with apt's reasons and the
    served names most like them (the index it fetched is still in ``lists``), else the
    output's tail, with doctor's fix where the host is the cause."""
    text = (result.stdout or "") + "\n" + (result.stderr or "")
    found = aptreasons.refusals(text)
    if found:
        hint = aptreasons.suggestions(found, served_names(lists))
        return aptreasons.refused(found, what="the bootstrap's packages", hint=hint)
    tail = "\n".join((result.stderr or result.stdout or "").splitlines()[-log_tail:])
    return ToolError(
        f"mmdebstrap --simulate failed (exit {result.returncode}):\n{tail}",
        argv=cmd,
        returncode=result.returncode,
        stderr_tail=tail,
        hint=host_cause(text),
    )


def served_names(lists: Path) -> list[str]:
    """Every package name the ``Packages`` indexes in ``lists`` name: none where there are
    none, or where they cannot be read (an unprivileged dry run's folder, the subordinate
    root's): a guess is a help, never a failure of its own."""
    names: list[str] = []
    try:
        for file in sorted(lists.glob("*_Packages")):
            if file.stat().st_size <= _INDEX_LIMIT:
                names += re.findall(r"^Package: *(\S+)", file.read_text(encoding="utf-8", errors="replace"), re.M)
    except OSError:
        return []
    return names


def remove_tree(path: Path, runner: Runner) -> None:
    """Remove ``path``, made by mmdebstrap: as the user's subordinate root's files (an
    unprivileged run) from inside a user namespace of the user's (``buildah unshare``)."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except PermissionError:
        if os.geteuid() == 0:
            raise
        runner.run(["buildah", "unshare", "rm", "-rf", "--", str(path)], check=False)


def _inst(text: str) -> list[tuple[str, str, str]]:
    return sorted({(m["name"], m["version"], m["arch"]) for m in _INST.finditer(text)})


def locked_debs(wanted: Iterable[tuple[str, str, str]], index: MirrorIndex) -> list[Deb]:
    """The index's entry (sha256 and all) of each (name, version, arch) apt chose."""
    out = set()
    for name, version, arch in wanted:
        deb = index.debs.get((name, version, arch))
        if deb is None:
            raise ToolError(f"apt chose {name} {version} ({arch}), which the mirror's index does not list")
        out.add(deb)
    return sorted(out)


def simulate_install(
    index: MirrorIndex,
    installed: Iterable[Deb],
    packages: Sequence[str],
    *,
    arch: str,
    sources: str,
    work: Path,
    runner: Runner,
) -> list[Deb]:
    """What ``apt-get install --no-install-recommends packages`` adds (or upgrades) on a root
    in which ``installed`` are: apt on this host, run with a private configuration over
    ``index``'s lists (``sources``: their one-line sources entry)."""
    folder = work / "apt-simulate"
    for sub in ("cache", "etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "status").write_text(index.status(installed))
    (folder / "sources.list").write_text(sources + "\n")
    options = {
        "Dir::State::status": folder / "status",
        "Dir::State::Lists": index.lists,
        "Dir::Cache": folder / "cache",
        "Dir::Etc::SourceList": folder / "sources.list",
        "Dir::Etc::SourceParts": folder / "etc/sources.list.d",
        "Dir::Etc::Preferences": "/dev/null",
        "Dir::Etc::PreferencesParts": folder / "etc/preferences.d",
        "Dir::Etc::Parts": folder / "etc/apt.conf.d",
        "Debug::NoLocking": "1",
        "APT::Architecture": arch,
        "APT::Architectures": arch,
        "APT::Install-Recommends": "false",
    }
    argv = ["apt-get", "--simulate", *(f"-o{k}={v}" for k, v in options.items()), "install", *packages]
    result = runner.run(argv, check=False, env={"LC_ALL": "C.UTF-8"})
    if result.returncode != 0:
        found = aptreasons.refusals((result.stdout or "") + "\n" + (result.stderr or ""))
        if found:
            hint = aptreasons.suggestions(found, index.newest)
            raise aptreasons.refused(found, what=f"{' '.join(packages)} on the base", hint=hint)
        tail = "\n".join((result.stdout or result.stderr or "").splitlines()[-15:])
        raise InputError(
            f"apt cannot install {' '.join(packages)} on the base: {tail}",
            hint="check the package names for this suite",
        )
    return locked_debs(_inst(result.stdout or ""), index)


def check_served(locked: Iterable[Deb], index: MirrorIndex) -> list[str]:
    """What of ``locked`` the mirror no longer serves as it was locked, one line each."""
    problems = []
    for deb in sorted(locked):
        now = index.debs.get((deb.name, deb.version, deb.arch))
        if now is None:
            served = index.newest.get(deb.name)
            problems.append(f"{deb.ident}: " + (f"the mirror serves {served} now" if served else "no longer served"))
        elif now.sha256 != deb.sha256:
            problems.append(f"{deb.ident}: the mirror's file changed (sha256 {now.sha256}, locked {deb.sha256})")
    return problems


_STATUS_FIELD = re.compile(r"^(Package|Version|Architecture|Status): *(.*)$", re.M)


def installed_in(status: str) -> dict[tuple[str, str], str]:
    """(name, arch) -> version of each package a dpkg status file says is installed."""
    out = {}
    for stanza in status.split("\n\n"):
        fields = dict(_STATUS_FIELD.findall(stanza))
        if "Package" in fields and fields.get("Status", "").endswith(" installed"):
            out[(fields["Package"], fields.get("Architecture", ""))] = fields.get("Version", "")
    return out


def check_installed(installed: Mapping[tuple[str, str], str], locked: Iterable[Deb]) -> list[str]:
    """What dpkg's status (``installed_versions``: (name, arch) -> version) holds that the
    lock does not name, one line each."""
    known = {(d.name, d.arch, d.version) for d in locked}
    return [
        f"{name}:{arch}={version}: installed, not in the lock"
        for (name, arch), version in sorted(installed.items())
        if (name, arch, version) not in known
    ]


def snapshot_of(locked_at: str) -> str:
    """Debian's snapshot archive as it was at ``locked_at`` (``2026-11-27T22:40:00Z``)."""
    return f"{SNAPSHOT}/{re.sub(r'[-:]', '', locked_at)}"


def refuse(where: str, mirror: str, problems: Sequence[str], *, locked_at: str) -> InputError:
    """The error for locked packages ``mirror`` no longer serves."""
    shown = list(problems[:12]) + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
    return InputError(
        f"{where}: the lock's Debian packages are not what {mirror} serves now:\n  " + "\n  ".join(shown),
        hint=(
            f"build the lock from Debian's snapshot archive of the day it was written (mirror: "
            f"{snapshot_of(locked_at)} in the bootstrap), or lock what the mirror serves now: "
            "assemble lock MANIFEST --upgrade"
        ),
    )


_MOVED = "assemble: locked "  # how pinned_install's check names a package the mirror moved


def mirror_moved_hint(log_tail: str) -> str | None:
    """The hint for a step whose locked packages the mirror no longer serves as locked."""
    if _MOVED not in log_tail:
        return None
    return (
        "the mirror no longer serves what the lock installs: build from Debian's snapshot archive of the day "
        f"the lock was written (its locked_at: {SNAPSHOT}/YYYYMMDDTHHMMSSZ as the bootstrap's mirror), "
        "or lock what the mirror serves now: assemble lock MANIFEST --upgrade"
    )


def pinned_install(locked: Sequence[Deb], explicit: Sequence[str], apt_opts: str) -> str:
    """Shell that installs exactly ``locked`` with apt-get (``explicit``: the names asked for;
    the others marked automatically installed, as apt marks dependencies) after checking
    each one's sha256 in the index apt just fetched, and that each is asked for or a
    dependency apt resolves (:func:`only_resolved`). Run after ``apt-get update``."""
    want = " ".join(f"{d.name}={d.version}={d.sha256}" for d in locked)
    versions = " ".join(shlex.quote(f"{d.name}={d.version}") for d in locked)
    auto = " ".join(shlex.quote(d.name) for d in locked if d.name not in explicit)
    check = (
        'BEGIN{n=split(want,w," ");for(i=1;i<=n;i++){split(w[i],f,"=");sum[f[1]"="f[2]]=f[3]}}'
        "/^Package: /{p=$2} /^Version: /{v=$2} "
        '/^SHA256: /{k=p"="v;if(k in sum){seen[k]=1;if(sum[k]!=$2){print "assemble: locked "k" changed on the mirror: '
        'sha256 "$2", locked "sum[k]>"/dev/stderr";bad=1}}} '
        'END{for(k in sum)if(!(k in seen)){print "assemble: locked "k" is not served by the mirror"'
        '>"/dev/stderr";bad=1}'
        "exit bad}"
    )
    command = (
        f"apt-cache show --no-all-versions {versions} 2>/dev/null"
        f" | awk -v want={shlex.quote(want)} {shlex.quote(check)}"
        f" && {only_resolved(locked, explicit, apt_opts)}"
        f" && DEBIAN_FRONTEND=noninteractive apt-get {apt_opts} install -y -qq --no-install-recommends"
        f" --allow-downgrades {versions}"
    )
    if auto:
        command += f" && apt-mark auto {auto} >/dev/null"
    return command


# Reads apt-get --simulate: each locked name apt would not install is refused. No Inst line
# at all (apt failed to resolve): left to the install itself, which says why.
_RESOLVED = (
    'BEGIN{n=split(locked,l," ");for(i=1;i<=n;i++)want[l[i]]=1} '
    '/^Inst /{name=$2;sub(/:.*/,"",name);got[name]=1;any=1} '
    'END{if(!any)exit 0;for(k in want)if(!(k in got)){print "assemble: the lock installs "k", which the manifest '
    "does not ask for and apt does not resolve as a dependency of what it asks for: a lock pins what is asked "
    'and its dependencies, nothing else (edited by hand? lock again: assemble lock MANIFEST)">"/dev/stderr";bad=1}'
    "exit bad}"
)


def only_resolved(locked: Sequence[Deb], explicit: Sequence[str], apt_opts: str) -> str:
    """Shell that fails, naming it, where the lock installs a package neither asked for
    (``explicit``) nor a dependency apt resolves for those (``apt-get --simulate`` of the
    asked names at their locked versions): a lock may pin what the manifest asks for and
    its dependencies, and a package added to it by hand is refused, not installed unsaid."""
    version = {d.name: d.version for d in locked}
    asked = [f"{n}={version[n]}" if n in version else n for n in explicit]
    names = " ".join(sorted({d.name for d in locked}))
    return (
        f"apt-get {apt_opts} --simulate install --no-install-recommends"
        f" {' '.join(shlex.quote(a) for a in asked)} 2>/dev/null"
        f" | awk -v locked={shlex.quote(names)} {shlex.quote(_RESOLVED)}"
    )
