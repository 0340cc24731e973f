"""Debian packages in the lock (issue 50): what each bootstrapped base, ``packages:`` layer
and compile step's ``packages:`` install is locked with every ``.deb``'s sha256, resolved by
apt without installing (mmdebstrap ``--simulate``, ``apt-get --simulate``); a build with the
lock installs exactly those and refuses, naming them, packages the mirror no longer serves as
locked. The builds run against the apt mirror this machine is configured with; a mirror that
"moved" is a lock naming another version or file than the mirror serves, which is what the
mirror's next point release looks like to a lock written today.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assembler.archive.compress import decompressed
from assembler.debian import aptlock
from assembler.errors import InputError
from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.lock.debpins import Deb, DebEntry
from assembler.manifest.lock.file import Lock, read_lock, write_lock
from assembler.oci.descriptor import Platform
from assembler.pipeline.lock.aptpins import debian_uses
from tests.helpers import ROOT, Ran, layout_digest, manifest_of, run_cli, run_cli_here, sh
from tests.plugins.user import User
from tests.test_golden import base_packages

SHA_A = "a" * 64
SHA_B = "b" * 64

PACKAGES = f"""\
Package: libgomp1
Source: gcc-12
Version: 12.2.0-14+deb12u1
Architecture: amd64
Filename: pool/main/g/gcc-12/libgomp1_12.2.0-14+deb12u1_amd64.deb
SHA256: {SHA_A}

Package: tzdata
Version: 2025b-0+deb12u1
Architecture: all
SHA256: {SHA_B}
"""

# A bootstrapped base with python3-minimal (its bytecode is what once made root's and a
# user's bases differ), a packages layer and a runtime step that says who it ran as.
SMALL = """\
name: deblock
bases:
  runtime:
    bootstrap: {suite: bookworm, variant: minbase, packages: [python3-minimal]}
compile:
  - name: tool
    base: runtime
    packages: [libgomp1]
    run: ['mkdir -p /out && dpkg-query -W libgomp1 > /out/gomp']
    artifacts:
      gomp: {path: /out/gomp, to: /usr/share/deblock/gomp}
image:
  base: runtime
  layers:
    - packages: [libgomp1]
    - run: ['echo built-by-uid-$(id -u) > /etc/assemble-marker']
    - artifact: tool.gomp
  config: {cmd: [sh, -c, "dpkg-query -W libgomp1"]}
outputs: ['oci:out:deblock']
"""


def _index(tmp_path: Path) -> aptlock.MirrorIndex:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text(PACKAGES)
    (lists / "deb.debian.org_debian_dists_bookworm_InRelease").write_text("Origin: Debian\nDate: Sat, 11 Jul 2026\n")
    return aptlock.MirrorIndex(lists)


def test_the_mirror_index_names_each_locked_package_it_no_longer_serves(tmp_path: Path) -> None:
    index = _index(tmp_path)
    assert index.date == "Sat, 11 Jul 2026"
    served = Deb("libgomp1", "amd64", "12.2.0-14+deb12u1", SHA_A)
    assert aptlock.check_served([served, Deb("tzdata", "all", "2025b-0+deb12u1", SHA_B)], index) == []
    moved = Deb("libgomp1", "amd64", "12.2.0-14", SHA_A)  # the last point release's
    rebuilt = Deb("tzdata", "all", "2025b-0+deb12u1", SHA_A)  # same version, another file
    gone = Deb("libfoo1", "amd64", "1.0", SHA_A)
    assert aptlock.check_served([moved, rebuilt, gone], index) == [
        "libfoo1:amd64=1.0: no longer served",
        "libgomp1:amd64=12.2.0-14: the mirror serves 12.2.0-14+deb12u1 now",
        f"tzdata:all=2025b-0+deb12u1: the mirror's file changed (sha256 {SHA_B}, locked {SHA_A})",
    ]
    # a dpkg status made of locked packages (what apt --simulate resolves a layer over)
    status = index.status([served])
    assert aptlock.installed_in(status) == {("libgomp1", "amd64"): "12.2.0-14+deb12u1"}
    assert aptlock.check_installed(
        {("libgomp1", "amd64"): "12.2.0-14+deb12u1", ("less", "amd64"): "590-2"}, [served]
    ) == ["less:amd64=590-2: installed, not in the lock"]
    error = aptlock.refuse("apt:bases.runtime", "http://m/debian", ["x"], locked_at="2026-11-27T22:17:51Z")
    assert "http://snapshot.debian.org/archive/debian/20261127T221751Z" in (error.hint or "")


def test_a_lock_keeps_its_debian_packages_and_refuses_an_edited_one(tmp_path: Path) -> None:
    definition = {"kind": "bootstrap", "mirror": "http://deb.debian.org/debian", "suite": "bookworm", "arch": "amd64"}
    from assembler.manifest.schema.setuses import set_key

    key = set_key(definition)
    lock = Lock("m.yaml", variants={"m": {"apt:bases.b": key}})
    line = Deb("libc6", "amd64", "2.36-9+deb12u14", SHA_A).line()
    lock.debian[key] = DebEntry(definition, (line,), "2026-11-27T22:17:51Z", "Sat, 11 Jul 2026")
    path = tmp_path / "m.lock"
    write_lock(path, lock)
    text = path.read_text()
    assert f"      - {line}\n" in text and "Under debian:" in text
    back = read_lock(path)
    assert back.debian == lock.debian
    write_lock(tmp_path / "again.lock", back)
    assert (tmp_path / "again.lock").read_text() == text.replace("# m.lock", "# again.lock")
    path.write_text(text.replace("suite: bookworm", "suite: trixie"))
    with pytest.raises(InputError, match="edited by hand"):
        read_lock(path)
    path.write_text(text.replace(line, "libc6 2.36"))
    with pytest.raises(InputError, match="name:arch=version sha256:HEX"):
        read_lock(path)


def test_what_a_manifest_installs_with_apt_is_keyed_by_what_decides_it() -> None:
    loaded = load_manifest(ROOT / "manifests" / "demo.yaml")
    uses = debian_uses(loaded.manifest, Platform.parse("linux/amd64"))
    # its two bases, the cuda step's packages (the recipe's) on devel, the runtime layer
    assert list(uses) == ["apt:bases.devel", "apt:bases.runtime", "apt:cuda", "apt:packages-1"]
    assert uses["apt:cuda"].definition["below"] == [uses["apt:bases.devel"].key]
    layer = uses["apt:packages-1"]
    assert layer.packages == ("python3-minimal", "libgomp1")  # from-steps, then its own
    assert layer.definition["below"] == [uses["apt:bases.runtime"].key]
    arm = debian_uses(loaded.manifest, Platform.parse("linux/arm64"))
    assert arm["apt:bases.devel"].key != uses["apt:bases.devel"].key


def test_the_pinned_install_checks_each_sha256_before_it_installs(tmp_path: Path) -> None:
    """The layer's check, run by the host's sh and awk over what apt-cache shows (the
    container's own apt does the same in the integration test below)."""
    stanzas = PACKAGES
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-cache").write_text(f"#!/bin/sh\ncat <<'EOF'\n{stanzas}EOF\n")
    (fake / "apt-get").write_text('#!/bin/sh\necho "apt-get $*"\n')
    (fake / "apt-mark").write_text('#!/bin/sh\necho "apt-mark $*" >&2\n')
    for f in fake.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    good = [Deb("libgomp1", "amd64", "12.2.0-14+deb12u1", SHA_A), Deb("tzdata", "all", "2025b-0+deb12u1", SHA_B)]
    ran = subprocess.run(
        ["sh", "-c", aptlock.pinned_install(good, ["libgomp1"], "-q")], env=env, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    assert "install -y -qq --no-install-recommends --allow-downgrades libgomp1=12.2.0-14+deb12u1" in ran.stdout
    assert "apt-mark auto tzdata" in ran.stderr
    bad = [good[0], Deb("tzdata", "all", "2025b-0+deb12u1", SHA_A), Deb("libfoo1", "amd64", "1.0", SHA_A)]
    ran = subprocess.run(["sh", "-c", aptlock.pinned_install(bad, [], "-q")], env=env, capture_output=True, text=True)
    assert ran.returncode != 0 and "apt-get" not in ran.stdout  # nothing installed
    assert f"assemble: locked tzdata=2025b-0+deb12u1 changed on the mirror: sha256 {SHA_B}" in ran.stderr
    assert "assemble: locked libfoo1=1.0 is not served by the mirror" in ran.stderr
    assert aptlock.mirror_moved_hint(ran.stderr) is not None


def test_the_demo_lock_holds_every_debian_package_of_its_bases(demo_bases: dict[str, Path]) -> None:
    """The demo's shipped lock names exactly what its bootstrapped bases hold (the test bases
    are the demo's bases, made by assemble on this machine), each with its sha256."""
    lock = read_lock(ROOT / "manifests" / "demo.lock")
    uses = debian_uses(load_manifest(ROOT / "manifests" / "demo.yaml").manifest, Platform.parse("linux/amd64"))
    assert set(lock.variants["demo"]) >= set(uses)
    for name in ("devel", "runtime"):
        entry = lock.debian[uses[f"apt:bases.{name}"].key]
        debs = [Deb.parse(line) for line in entry.installed]
        assert all(re.fullmatch(r"[0-9a-f]{64}", d.sha256) for d in debs)
        assert {f"{d.name} {d.version}" for d in debs} == base_packages(demo_bases[name]), name
    layer = lock.debian[uses["apt:packages-1"].key]
    assert {Deb.parse(line).name for line in layer.installed} >= {"python3-minimal", "libgomp1"}


def _file_of(layout: Path, tag: str, name: str) -> str:
    """``name`` as the image's top layer that writes it leaves it ("" where none does)."""
    found = ""
    for desc in manifest_of(layout, tag)["layers"]:
        blob = layout / "blobs" / "sha256" / desc["digest"].split(":", 1)[1]
        with open(blob, "rb") as raw, decompressed(raw) as data, tarfile.open(fileobj=data, mode="r|") as tar:
            for member in tar:
                if member.name.lstrip("./") == name:
                    found = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    return found


def _status_of(layout: Path, tag: str) -> dict[tuple[str, str], str]:
    """dpkg's status as the image's top layer that writes it leaves it."""
    return aptlock.installed_in(_file_of(layout, tag, "var/lib/dpkg/status"))


def _resolved(lock: Lock) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """Each Debian entry's definition and what apt resolved it to."""
    return {key: (e.definition, tuple(e.installed)) for key, e in lock.debian.items()}


@dataclass(frozen=True)
class RootBuilt:
    """SMALL locked and built with its lock by root, in ``folder`` (out/, cache/, m.lock)."""

    folder: Path
    lock_text: str
    lock: Lock
    digest: str
    locked: Ran


@pytest.fixture(scope="module")
def root_built(tmp_path_factory: pytest.TempPathFactory) -> RootBuilt:
    """One bootstrap as root for the module, as a user goes: built, locked into the build's
    cache, built under the lock. The locked build's test goes on from it, and the
    unprivileged user's lock and build are compared with it. Built with
    PYTHONDONTWRITEBYTECODE set, which the user's environment does not have.

    The build after the first lock made the bases and ran the packages step and layer
    again, to what they were (issue 67): the lock takes what the build made where it holds
    what the lock installs, and the locked build then makes nothing."""
    folder = tmp_path_factory.mktemp("root-built")
    (folder / "m.yaml").write_text(SMALL)
    cache = ["--cache", str(folder / "cache")]
    first = run_cli(["m.yaml", *cache], cwd=folder, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert first.code == 0, str(first)
    locked = run_cli(["lock", "m.yaml", *cache], cwd=folder)
    assert locked.code == 0, str(locked)
    kept = re.findall(r"(base|step) (\S+): the one built before the lock \S+ what it locks", locked.out + locked.err)
    assert sorted(kept) == [("base", "runtime"), ("step", "packages-1"), ("step", "tool")], str(locked)
    plan = run_cli_here(["plan", "m.yaml", "--locked", *cache], cwd=folder)
    assert plan.code == 0 and "will-" not in plan.out and "not pulled or made yet" not in plan.out, str(plan)
    built = run_cli(["m.yaml", "--locked", *cache], cwd=folder, env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert built.code == 0, str(built)
    text = (folder / "m.lock").read_text()
    return RootBuilt(folder, text, read_lock(folder / "m.lock"), layout_digest(folder / "out", "deblock"), locked)


@pytest.mark.integration
@pytest.mark.slow  # a bootstrap and an apt step, minutes
@pytest.mark.timeout(1200)
def test_a_locked_build_installs_the_lock_and_refuses_what_the_mirror_moved(root_built: RootBuilt) -> None:
    tmp_path = root_built.folder
    cache = ["--cache", str(tmp_path / "cache")]
    locked = root_built.locked
    assert re.search(r"apt:bases\.runtime +resolved +\d+ debs", locked.out + locked.err), str(locked)
    text, lock = root_built.lock_text, root_built.lock
    entries = {e.definition["kind"]: e for e in lock.debian.values()}
    base = [Deb.parse(line) for line in entries["bootstrap"].installed]
    layer = [Deb.parse(line) for line in entries["packages"].installed]
    assert [d.name for d in layer] == ["libgomp1"] and len(base) > 50
    assert run_cli(["lock", "m.yaml"], cwd=tmp_path).code == 0
    assert (tmp_path / "m.lock").read_text() == text  # locking again moves nothing

    plan = run_cli_here(["plan", "m.yaml", "--locked", *cache], cwd=tmp_path)
    assert plan.code == 0 and re.search(r"apt:packages-1 +locked, 1 packages of ", plan.out), str(plan)

    installed = _status_of(tmp_path / "out", "deblock")
    assert installed == {(d.name, d.arch): d.version for d in base + layer}

    # The next point release, as the lock sees it: a base package at another version, one
    # rebuilt under the same version. Refused before anything is bootstrapped, both named.
    libc = next(d for d in base if d.name == "libc6")
    other = next(d for d in base if d.name not in ("libc6",))
    moved = text.replace(libc.line(), Deb(libc.name, libc.arch, libc.version + "~old", libc.sha256).line())
    moved = moved.replace(other.line(), Deb(other.name, other.arch, other.version, SHA_A).line())
    (tmp_path / "m.lock").write_text(moved)
    refused = run_cli(["m.yaml", "--locked", *cache], cwd=tmp_path)
    assert refused.code == 2, str(refused)
    assert f"{libc.ident}~old: the mirror serves {libc.version} now" in refused.err, str(refused)
    assert f"{other.ident}: the mirror's file changed (sha256 {other.sha256}, locked {SHA_A})" in refused.err
    assert "snapshot.debian.org/archive/debian/" in refused.err

    # The layer's package rebuilt on the mirror: the step checks it before apt installs it.
    gomp = layer[0]
    (tmp_path / "m.lock").write_text(text.replace(gomp.line(), Deb(gomp.name, gomp.arch, gomp.version, SHA_B).line()))
    failed = run_cli(["m.yaml", "--locked", *cache], cwd=tmp_path)
    assert failed.code != 0, str(failed)
    assert f"assemble: locked libgomp1={gomp.version} changed on the mirror: sha256 {gomp.sha256}" in failed.err
    assert "snapshot archive" in failed.err  # the hint says what to do, not "fix the command"


@pytest.mark.slow  # a bootstrap as an unprivileged user, minutes
@pytest.mark.timeout(1200)
def test_an_unprivileged_user_locks_and_builds_the_same_packages(user: User, root_built: RootBuilt) -> None:
    """On a login node: mmdebstrap's dry run works as the user's subordinate root, whose
    files only a user namespace removes, and its bootstrap in unshare mode (subuids); the
    lock is the same as root's, and so is the image, byte for byte (issue 36: Python's
    bytecode once made root's and a user's bases differ), whatever either's environment
    holds (root's build had PYTHONDONTWRITEBYTECODE set). The runtime step ran as root
    inside the build's container, the user outside."""
    project = user.home / "debian-lock"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir()
    (project / "m.yaml").write_text(SMALL)
    shutil.chown(project, user.name, user.name)
    shutil.chown(project / "m.yaml", user.name, user.name)
    py = [sys.executable, "-m", "assembler"]
    locked = user.run([*py, "lock", "m.yaml"], cwd=project)
    assert locked.returncode == 0, locked.stderr
    lock = read_lock(project / "m.lock")
    assert all(not e.error and e.installed for e in lock.debian.values()), lock.debian
    # what root resolved (as its lock was written: its test edits the file), but when
    assert _resolved(lock) == _resolved(root_built.lock)
    built = user.run([*py, "m.yaml", "--locked", "--cache", str(project / "cache")], cwd=project)
    assert built.returncode == 0, built.stderr
    out = project / "out"
    assert _status_of(out, "deblock") == {
        (d.name, d.arch): d.version for e in lock.debian.values() for d in map(Deb.parse, e.installed)
    }
    assert _file_of(out, "deblock", "etc/assemble-marker") == "built-by-uid-0\n"
    assert layout_digest(out, "deblock") == root_built.digest, "root and a user built other bytes"
    # the dry runs left nothing of the subordinate root's (only buildah's rootless storage
    # holds its files, as it always does)
    theirs = [p for p in project.rglob("*") if "buildah" not in p.parts and p.owner() != user.name]
    assert not theirs, theirs[:5]
    assert not [p for p in Path(tempfile.gettempdir()).glob("assemble-lock-*") if p.owner() == user.name]
    sh(["rm", "-rf", str(project)])


# Issue 67: a wrong package name failed late and without apt's reason, and the lock exited 0.
# What mmdebstrap 1.3.5 printed for `mmdebstrap --variant=minbase --include=nosuchpkg
# --simulate bookworm /dev/null` on Debian 12 (its last lines, as captured; the lock's dry
# run adds --verbose, which prints each "Inst" line before these).
MMDEBSTRAP_REFUSED = """\
I: skip extracting packages because of --dry-run
W: skipping mounting of sysfs because the /sys directory is missing in the target
W: skipping mounting of proc because the /proc directory is missing in the target
I: no essential packages -- skipping...
I: simulate installing remaining packages inside the chroot...
Reading package lists...
Building dependency tree...
E: Unable to locate package nosuchpkg
E: setup failed: E: apt-get --yes -oAPT::Get::Simulate=true install -oAPT::Status-Fd=<$fd> -oDpkg::Use-Pty=false \
nosuchpkg ?narrow(?or(?archive(^bookworm$),?codename(^bookworm$)),?architecture(amd64),?and(?priority(required),\
?not(?essential))) failed
I: main() received signal PIPE: waiting for setup...
I: removing tempdir /tmp/cap67/mmdebstrap.j0AGok8gBT...
E: mmdebstrap failed to run
"""
# `apt-get -s install nosuchpkg python libgomp1=0.1` on Debian 12 (LC_ALL=C.UTF-8), as captured.
APT_GET_REFUSED = """\
Reading package lists...
Building dependency tree...
Reading state information...
Package python is not available, but is referred to by another package.
This may mean that the package is missing, has been obsoleted, or
is only available from another source
However the following packages replace it:
  python-is-python3 2to3

E: Unable to locate package nosuchpkg
E: Package 'python' has no installation candidate
E: Version '0.1' for 'libgomp1' was not found
"""
# What a user without subordinate ids gets of mmdebstrap (as captured, setpriv to such a user).
MMDEBSTRAP_NO_SUBIDS = "E: unable to pick chroot mode automatically (use --mode for manual selection)\n"
BAD_NAME = """\
name: badname
bases:
  runtime:
    bootstrap: {suite: bookworm, variant: minbase, packages: [python3, nosuchpkg]}
image:
  base: runtime
outputs: ['oci:out:badname']
"""


def test_apts_refusals_are_read_with_its_reasons_from_what_it_printed() -> None:
    from assembler.debian.aptreasons import Refusal, is_refusal, refusals, refused, suggestions

    assert refusals(MMDEBSTRAP_REFUSED) == [Refusal("nosuchpkg", "Unable to locate package nosuchpkg")]
    assert refusals(APT_GET_REFUSED) == [
        Refusal("nosuchpkg", "Unable to locate package nosuchpkg"),
        Refusal("python", "Package 'python' has no installation candidate", ("python-is-python3", "2to3")),
        Refusal("libgomp1", "Version '0.1' for 'libgomp1' was not found"),
    ]
    # apt's resolver giving up (its words, as apt 2.6 lays them out)
    unmet = (
        "The following packages have unmet dependencies:\n"
        " libfoo1 : Depends: libbar2 (>= 2.0) but it is not installable\n"
        "           Depends: libbaz1 but it is not going to be installed\n"
        "E: Unable to correct problems, you have held broken packages.\n"
    )
    (foo,) = refusals(unmet)
    assert foo.package == "libfoo1" and "libbar2 (>= 2.0) but it is not installable" in foo.reason
    assert "libbaz1" in foo.reason
    error = refused(refusals(APT_GET_REFUSED), what="the packages")
    assert error.packages == ("nosuchpkg", "python", "libgomp1") and error.exit_code == 2
    assert "python (Package 'python' has no installation candidate; apt says python-is-python3, 2to3" in str(error)
    assert is_refusal(error.message) and not refusals("E: mmdebstrap failed to run\n")
    # the served names most like each, where apt did not name what replaces it
    served = ["nosuchpkg1", "python3", "libgomp1", "less"]
    assert suggestions(refusals(APT_GET_REFUSED), served) == "nosuchpkg: did you mean nosuchpkg1?"


class _FailingMmdebstrap:
    """A Runner standing in for mmdebstrap's dry run (a unit test runs no outside program):
    it fails as ``said`` shows, writing no index."""

    def __init__(self, said: str) -> None:
        self.said = said

    def run(self, argv: list[str], **_: object) -> Any:
        from assembler.proc import Result

        assert "--simulate" in argv, argv
        return Result(tuple(argv), 25, "", self.said)


def _fake_dry_run(monkeypatch: pytest.MonkeyPatch, said: str) -> None:
    """mmdebstrap's dry run, in this process, failing as ``said`` shows."""
    from assembler.proc import Result, Runner

    real = Runner.run

    def run(self: Runner, argv: list[str], **kwargs: Any) -> Result:
        if "--simulate" in argv:
            return _FailingMmdebstrap(said).run(argv)
        return real(self, argv, **kwargs)

    monkeypatch.setattr(Runner, "run", run)


def test_a_package_apt_cannot_find_fails_the_lock_with_apts_reason_and_then_the_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock said "mmdebstrap --simulate failed (exit 25): I: main() received signal PIPE"
    and exited 0; the build then failed a minute in. The lock names the package, apt's reason
    and the manifest's field, exits 2, and the plan and the build refuse it at once."""
    (tmp_path / "m.yaml").write_text(BAD_NAME)
    _fake_dry_run(monkeypatch, MMDEBSTRAP_REFUSED)
    locked = run_cli_here(["lock", "m.yaml", "--cache", str(tmp_path / "cache")], cwd=tmp_path)
    assert locked.code == 2, str(locked)
    said = "m.yaml:4: bases.runtime.bootstrap.packages: apt cannot install the bootstrap's packages: nosuchpkg"
    assert said in locked.err and "(Unable to locate package nosuchpkg)" in locked.err, str(locked)
    assert "signal PIPE" not in locked.err + locked.out, str(locked)
    (entry,) = read_lock(tmp_path / "m.lock").debian.values()
    assert entry.error is not None and entry.error.startswith("apt cannot install the bootstrap's packages: nosuchpkg")
    for command in (["plan", "m.yaml"], ["m.yaml", "--cache", str(tmp_path / "cache")]):
        refused = run_cli_here(command, cwd=tmp_path)
        assert refused.code == 2 and said in refused.err and "as m.lock records it" in refused.err, str(refused)
        assert "assemble lock m.yaml" in refused.err, str(refused)


def test_a_lock_whose_dry_run_the_host_keeps_from_running_fails_with_doctors_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without subordinate ids mmdebstrap says only "unable to pick chroot mode": the lock
    exits 1 saying so, with what doctor says to ask the admin for."""
    import assembler.hostuser as hostuser

    (tmp_path / "m.yaml").write_text(BAD_NAME)
    _fake_dry_run(monkeypatch, MMDEBSTRAP_NO_SUBIDS)
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    fix = "/etc/subuid gives alice 0 subordinate uids, where rootless builds map 65536: ask the admin for ..."
    monkeypatch.setattr(hostuser, "problems", lambda etc=None: [fix])
    locked = run_cli_here(["lock", "m.yaml"], cwd=tmp_path)
    assert locked.code == 1, str(locked)
    assert "Debian packages could not be locked: m.yaml:4: bases.runtime.bootstrap: mmdebstrap" in locked.err
    assert "E: unable to pick chroot mode automatically" in locked.err and f"hint: {fix}" in locked.err, str(locked)


def test_a_bootstraps_failure_leads_with_what_apt_refused(tmp_path: Path) -> None:
    """mmdebstrap's --quiet hid apt's own line: the build's error was "E: setup failed: E:
    apt-get ... failed" alone. Run without it, the bootstrap's error is apt's reason."""
    from assembler.debian import bootstrap as boot
    from assembler.errors import AptRefused
    from assembler.proc import Result

    class Mmdebstrap:
        def which(self, name: str) -> Path:
            return Path("/usr/bin/mmdebstrap")

        def run(self, argv: list[str], **_: object) -> Result:
            assert "--quiet" not in argv, argv
            return Result(tuple(argv), 25, "", MMDEBSTRAP_REFUSED.replace("Simulate=true ", ""))

    spec = boot.BootstrapSpec("bookworm", packages=("nosuchpkg",))
    with pytest.raises(AptRefused) as info:
        boot._mmdebstrap(spec, tmp_path, runner=Mmdebstrap(), arch="amd64", mirror="http://m", epoch=0, log_tail=30)  # type: ignore[arg-type]
    assert info.value.packages == ("nosuchpkg",), info.value
    assert "nosuchpkg (Unable to locate package nosuchpkg)" in str(info.value)


def test_a_steps_apt_failure_leads_with_apts_reason() -> None:
    from assembler.compile.container import _failed

    last = "Reading package lists...\nE: Unable to locate package libgomp\n"
    error = _failed("packages-1", "apt-get install libgomp", 100, True, last, Path("/c/logs/x.log"), ["buildah"])
    first = str(error).splitlines()
    assert first[1] == "apt cannot install: libgomp (Unable to locate package libgomp)", first
    assert error.hint is not None and "package's name" in error.hint


@pytest.mark.integration  # mmdebstrap's real dry run against Debian's mirror: what the fixtures above stand for
def test_a_real_lock_names_the_package_apt_cannot_find(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(BAD_NAME)
    locked = run_cli(["lock", "m.yaml"], cwd=tmp_path)
    assert locked.code == 2, str(locked)
    assert "nosuchpkg (Unable to locate package nosuchpkg)" in locked.err, str(locked)


REUSED = """\
name: reused
bases:
  runtime:
    bootstrap: {suite: bookworm, variant: minbase, packages: [libgomp1]}
image: {base: runtime}
outputs: ['oci:out:reused']
"""
STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u14

Package: libgomp1
Status: install ok installed
Architecture: amd64
Version: 12.2.0-14+deb12u1
"""


class _NoMmdebstrap:
    """A Runner that finds no mmdebstrap (its version in a base's key: "missing", the same
    for the lock and the build here) and runs nothing."""

    def which(self, name: str) -> None:
        return None


def test_a_lock_takes_the_base_a_build_made_before_it_where_it_holds_what_the_lock_names(tmp_path: Path) -> None:
    """The build after the first lock bootstrapped both bases again (94 s and 137 s) to the
    digests they had: the locked key was new. ``assemble lock --cache`` records the base
    built without the lock under the lock's key when its dpkg status is exactly the lock's."""
    from typing import cast

    from assembler.assemble import Options, open_run
    from assembler.cache import Cache
    from assembler.manifest.schema import model as m
    from assembler.pipeline.image.bases import bootstrap_key
    from assembler.pipeline.lock.lockbases import reuse_bases
    from assembler.pipeline.lock.locking import lock_name, with_lock
    from assembler.pipeline.variants import load_variants
    from assembler.proc import Runner
    from assembler.transports.rootfs import image_from_layer, layer_from_tar

    (tmp_path / "m.yaml").write_text(REUSED)
    root = tmp_path / "root.tar"
    with tarfile.open(root, "w") as tar:
        info = tarfile.TarInfo("var/lib/dpkg/status")
        info.size = len(STATUS)
        tar.addfile(info, io.BytesIO(STATUS.encode()))
    cache, runner = Cache(tmp_path / "cache"), cast(Runner, _NoMmdebstrap())
    (variant,) = load_variants(tmp_path / "m.yaml", sets={})
    spec = variant.loaded.manifest.bases["runtime"]
    assert isinstance(spec, m.BootstrapBase)
    options = Options(cache_dir=cache.root, epoch=0)
    built = open_run(variant.loaded, variant.options(options), runner=runner, check=False)
    blob = layer_from_tar(root, cache=cache, compression="zstd", epoch=0, what="a base")
    image = image_from_layer(blob, platform=Platform.parse("linux/amd64"), epoch=0, created_by="mmdebstrap")
    cache.put_base_image(bootstrap_key(built.ctx, spec, record=False)[0], image)  # built before the lock

    def locked_run(versions: dict[str, str]) -> Any:
        use = debian_uses(variant.loaded.manifest, Platform.parse("linux/amd64"))["apt:bases.runtime"]
        lines = tuple(Deb(n, "amd64", v, SHA_A).line() for n, v in versions.items())
        lock = Lock("m.yaml", variants={lock_name(variant, {}): {use.where: use.key}})
        lock.debian[use.key] = DebEntry(use.definition, lines, "2026-11-27T22:17:51Z", "Sat, 11 Jul 2026", use.mirror)
        write_lock(tmp_path / "m.lock", lock)
        (applied,), _ = with_lock([variant], path=tmp_path / "m.lock", locked=False, redo="")
        return open_run(applied.loaded, applied.options(options), runner=runner, check=False)

    # a lock naming another version of one package: not what that base holds, left to be made
    run = locked_run({"libc6": "2.36-9+deb12u14", "libgomp1": "12.2.0-14"})
    assert reuse_bases(run) == []
    run = locked_run({"libc6": "2.36-9+deb12u14", "libgomp1": "12.2.0-14+deb12u1"})
    assert reuse_bases(run) == ["runtime"]
    key, _ = bootstrap_key(run.ctx, spec, record=False, locked=run.loaded.lock.debian["apt:bases.runtime"])
    taken = cache.base_image(key)
    assert taken is not None and taken.digest == image.digest  # the very base: nothing made again
    assert reuse_bases(run) == []  # there already


STEPPED = """\
name: stepped
bases:
  runtime:
    bootstrap: {suite: bookworm, variant: minbase}
compile:
  - name: tool
    base: runtime
    packages: [libgomp1]
    run: ['mkdir -p /out && dpkg-query -W libgomp1 > /out/v']
    artifacts:
      v: {path: /out/v, to: /usr/share/stepped/v}
image:
  base: runtime
  layers:
    - packages: [libgomp1]
    - run: ['echo on-top > /etc/on-top']
    - artifact: tool.v
outputs: ['oci:out:stepped']
"""
GOMP = "libgomp1:amd64=12.2.0-14+deb12u1"


def _tar_blob(tmp_path: Path, cache: Any, files: dict[str, str]) -> Any:
    """A layer blob in ``cache`` holding ``files`` (path -> text)."""
    from assembler.transports.rootfs import layer_from_tar

    path = tmp_path / f"{len(list(tmp_path.glob('*.tar')))}.tar"
    with tarfile.open(path, "w") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return layer_from_tar(path, cache=cache, compression="zstd", epoch=0, what="a test layer")


def test_a_lock_takes_the_steps_a_build_made_before_it_where_they_installed_what_it_locks(tmp_path: Path) -> None:
    """The build after the first lock ran the demo's packages step and its packages: layer
    again (their keys name the lock's versions), though apt had installed those very ones.
    ``assemble lock --cache`` takes each for its locked key where dpkg's status (the step's
    root when exported, the layer's own) is exactly what the lock installs; what follows
    them is then cached too, and a step that installed another version is left to run."""
    from typing import cast

    from assembler.assemble import Options, open_run, resolve
    from assembler.cache import Cache
    from assembler.cache.entries import StepResult
    from assembler.compile.steps import installed_memo
    from assembler.manifest.schema import model as m
    from assembler.pipeline.image.bases import bootstrap_key
    from assembler.pipeline.lock.lockbases import reuse_bases
    from assembler.pipeline.lock.locking import lock_name, with_lock
    from assembler.pipeline.lock.locksteps import reuse_steps
    from assembler.pipeline.variants import load_variants
    from assembler.proc import Runner
    from assembler.transports.rootfs import image_from_layer

    (tmp_path / "m.yaml").write_text(STEPPED)
    cache, runner = Cache(tmp_path / "cache"), cast(Runner, _NoMmdebstrap())
    (variant,) = load_variants(tmp_path / "m.yaml", sets={})
    options = Options(cache_dir=cache.root, epoch=0)
    before = open_run(variant.loaded, variant.options(options), runner=runner, check=False)
    spec = variant.loaded.manifest.bases["runtime"]
    assert isinstance(spec, m.BootstrapBase)
    base = _tar_blob(tmp_path, cache, {"var/lib/dpkg/status": STATUS.split("\n\n")[0] + "\n"})
    image = image_from_layer(base, platform=Platform.parse("linux/amd64"), epoch=0, created_by="mmdebstrap")
    cache.put_base_image(bootstrap_key(before.ctx, spec, record=False)[0], image)

    def made(name: str, result: StepResult) -> str:  # the unlocked build's step: its key
        (report,) = [s for s in resolve(before).steps if s.name == name]
        assert report.key is not None and report.state == "will-run", report
        cache.put_step_result(report.key, result)
        return report.key

    tool = made("tool", StepResult("tool", {"v": _tar_blob(tmp_path, cache, {"out/v": "libgomp1 12.2.0\n"})}))
    layer = _tar_blob(tmp_path, cache, {"var/lib/dpkg/status": STATUS})
    made("packages-1", StepResult("packages-1", layer=layer))
    made("run-2", StepResult("run-2", layer=_tar_blob(tmp_path, cache, {"etc/on-top": "on-top\n"})))

    uses = debian_uses(variant.loaded.manifest, Platform.parse("linux/amd64"))
    libc = Deb("libc6", "amd64", "2.36-9+deb12u14", SHA_A)
    gomp = Deb("libgomp1", "amd64", "12.2.0-14+deb12u1", SHA_B)
    debs = {"apt:bases.runtime": [libc], "apt:tool": [gomp], "apt:packages-1": [gomp]}
    lock = Lock("m.yaml", variants={lock_name(variant, {}): {w: u.key for w, u in uses.items()}})
    for where, use in uses.items():
        lines = tuple(d.line() for d in debs[where])
        lock.debian[use.key] = DebEntry(use.definition, lines, "2026-11-27T22:17:51Z", "Sat, 11 Jul 2026", use.mirror)
    write_lock(tmp_path / "m.lock", lock)
    (applied,), _ = with_lock([variant], path=tmp_path / "m.lock", locked=False, redo="")
    after = open_run(applied.loaded, applied.options(options), runner=runner, check=False)

    def states() -> list[str]:
        return sorted(f"{s.name} {s.state}" for s in resolve(after).steps)

    assert states() == ["packages-1 will-run", "run-2 will-run", "tool will-run"]

    cache.put_memo(installed_memo(tool), {"installed": ["libc6:amd64=2.36-9+deb12u14", GOMP + "~other"]})
    assert reuse_bases(after) == ["runtime"]
    # A step under the lock made to other bytes before (a locked build of another day): a
    # layer on top of the image that holds it is another thing, whatever dpkg says.
    from assembler.pipeline.lock.locksteps import _Check, _wanted

    planned, now = resolve(before), resolve(after)
    check = _Check(before, after, _wanted(after, after.loaded.lock.debian), planned.bases)
    (layer_now,) = [s for s in now.steps if s.name == "packages-1"]
    (layer_was,) = [s.key for s in planned.steps if s.name == "packages-1"]
    assert not check.take(layer_was, layer_now, now.bases, {"tool"})
    # the layer installed the lock's libgomp1 (what follows it is the same then); the step another: it runs
    assert reuse_steps(before, after, resolve) == ["packages-1"]
    assert states() == ["packages-1 cached", "run-2 cached", "tool will-run"]
    cache.put_memo(installed_memo(tool), {"installed": ["libc6:amd64=2.36-9+deb12u14", GOMP]})
    assert reuse_steps(before, after, resolve) == ["tool"]
    assert states() == ["packages-1 cached", "run-2 cached", "tool cached"]
    assert reuse_steps(before, after, resolve) == []  # there already

    def unplannable(run: Any) -> Any:  # a pip: layer's locked: true, without the lock
        raise ValueError("vllm==0.12.0 has no --hash=sha256:...")

    assert reuse_steps(before, after, unplannable) == []  # the lock is written all the same


def test_a_step_the_lock_pins_python_for_is_taken_where_its_artifacts_hold_exactly_the_pins(
    tmp_path: Path,
) -> None:
    """The journey's deps step (pip --target of requirements.txt) ran again after the first
    lock: its Python pins are in its env. It is taken where its artifacts hold a dist-info
    of every distribution the pins name, at the pinned version, and of none other."""
    from assembler.cache import Cache
    from assembler.cache.entries import StepResult
    from assembler.cache.memos import entries_key
    from assembler.manifest.lock.file import LOCK_ENV
    from assembler.pipeline.lock.locksteps import _python_pinned

    cache = Cache(tmp_path / "cache")
    layer = _tar_blob(tmp_path, cache, {"opt/site/idna/__init__.py": ""})
    result = StepResult("deps", {"site": layer})
    (tmp_path / "m.yaml").write_text(STEPPED)
    plain = load_manifest(tmp_path / "m.yaml").manifest.compile[0]

    def taken(pins: str, *dists: str) -> bool:
        entries = [[f"opt/site/{d}.dist-info/{f}", "file"] for d in dists for f in ("METADATA", "RECORD")]
        cache.put_memo(entries_key(layer.diff_id), {"entries": entries})
        return _python_pinned(cache, result, plain.model_copy(update={"env": {LOCK_ENV: pins}}), pins)

    assert not _python_pinned(cache, result, plain, "idna==3.10\n")  # its entries never recorded
    assert taken("idna==3.10\n", "idna-3.10")
    assert not taken("idna==3.11\n", "idna-3.10")  # the lock moved it
    assert not taken("idna==3.10\n", "idna-3.10", "six-1.16.0")  # one it does not pin
    assert not taken("idna==3.10\ncmake==3.31.1\n", "idna-3.10")  # a build tool outside the artifacts


def test_the_export_agent_records_what_dpkg_says_a_steps_root_holds(tmp_path: Path, capsys: Any) -> None:
    """What the lock compares: the step's installed packages, from its root's dpkg status
    (one removed but not purged is not installed), kept as a memo under the step's key."""
    import json

    from assembler.cache import Cache
    from assembler.compile import agent

    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "out").mkdir()
    (root / "out/v").write_text("x\n")
    gone = "Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n"
    (root / "var/lib/dpkg/status").write_text(STATUS + "\n" + gone)
    artifact = {"name": "v", "path": "/out/v", "to": "/v", "mode": None, "owner": None, "exclude": [], "mounts": []}
    job = {"cache": str(tmp_path / "c"), "epoch": 0, "compression": "zstd", "step": "tool", "artifacts": [artifact]}
    (tmp_path / "job.json").write_text(json.dumps({**job, "installed": "installed-k"}))
    assert agent.main(["--root", str(root), "export", "--job", str(tmp_path / "job.json")]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"v"}
    memo = Cache(tmp_path / "c").memo("installed-k")
    assert memo is not None and memo["installed"] == ["libc6:amd64=2.36-9+deb12u14", GOMP], memo


def test_lock_takes_a_builds_command_line_and_a_build_says_how_to_lock_into_its_cache() -> None:
    """``assemble lock --cache`` was "unrecognized arguments": a build's line locks as it is."""
    from assembler.cli.buildargs import redo_command
    from assembler.cli.commands import parser

    line = ["m.yaml", "--cache", "/c", "--epoch", "7", "--compression", "gzip", "-o", "oci:out:x", "--no-tests"]
    args = parser("lock").parse_args(["lock", *line, "--upgrade"])
    assert (args.cache, args.epoch, args.compression, args.upgrade) == (Path("/c"), 7, "gzip", True)
    build = parser("build").parse_args(["build", *line, "--set", "a=b"])
    assert redo_command(build) == "assemble lock m.yaml --set a=b --cache /c --epoch 7 --compression gzip"


def test_a_locked_package_the_mirror_dropped_is_said_as_the_mirror_moving(tmp_path: Path) -> None:
    """A locked build's dry run that apt refuses a name the lock holds: the name was right,
    the mirror moved (a package dropped at a point release); the hint is the snapshot's."""
    from typing import cast

    from assembler.debian import bootstrap as boot
    from assembler.manifest.lock.debpins import DebLocked
    from assembler.proc import Runner

    spec = boot.BootstrapSpec("bookworm", packages=("nosuchpkg",))
    locked = DebLocked("apt:bases.runtime", "k", (), "2026-11-27T22:17:51Z", ("nosuchpkg",))
    with pytest.raises(InputError) as info:
        boot._check_mirror(
            spec,
            locked,
            tmp_path,
            runner=cast(Runner, _FailingMmdebstrap(MMDEBSTRAP_REFUSED)),
            arch="amd64",
            mirror="http://m/debian",
            epoch=0,
        )
    assert "nosuchpkg: Unable to locate package nosuchpkg" in str(info.value), info.value
    assert "snapshot.debian.org/archive/debian/20261127T221751Z" in (info.value.hint or "")


_FAKE_APT_GET = """#!/bin/sh
case " $* " in
  *" --simulate "*) echo "Inst curl (7.88.1-10 Debian:12/stable [amd64])"
                     echo "Inst libcurl4:amd64 (7.88.1-10 Debian:12/stable [amd64])" ;;
  *) echo "installed: $*" ;;
esac
"""


def _fake_apt(folder: Path, debs: list[Deb]) -> dict[str, str]:
    """An environment whose apt-get resolves curl to curl and libcurl4, and whose apt-cache
    serves ``debs`` as locked: the install's shell runs on the host, no container."""
    folder.mkdir()
    stanzas = "".join(f"Package: {d.name}\nVersion: {d.version}\nSHA256: {d.sha256}\n\n" for d in debs)
    for name, text in (("apt-get", _FAKE_APT_GET), ("apt-cache", f"#!/bin/sh\ncat <<'E'\n{stanzas}E\n")):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    (folder / "apt-mark").symlink_to("/bin/true")
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def test_a_package_added_to_a_lock_by_hand_is_refused_not_installed(tmp_path: Path) -> None:
    """A lock pins what the manifest asks for and its dependencies: a package neither asked
    for nor resolved by apt (added to a ``packages:`` entry by hand) stops the install."""
    resolved = [Deb("curl", "amd64", "7.88.1-10", SHA_A), Deb("libcurl4", "amd64", "7.88.1-10", SHA_B)]
    added = Deb("netcat-openbsd", "amd64", "1.219-1", SHA_A)
    for debs, fails in ((resolved, False), ([*resolved, added], True)):
        env = _fake_apt(tmp_path / str(len(debs)), debs)
        shell = aptlock.pinned_install(debs, ["curl"], "-q")
        done = subprocess.run(["sh", "-c", shell], env=env, capture_output=True, text=True)
        assert (done.returncode != 0) is fails, done
        assert ("installed:" in done.stdout) is not fails
        if fails:
            assert "the lock installs netcat-openbsd, which the manifest does not ask for" in done.stderr
