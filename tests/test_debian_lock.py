"""Debian packages in the lock (issue 50): what each bootstrapped base, ``packages:`` layer
and compile step's ``packages:`` install is locked with every ``.deb``'s sha256, resolved by
apt without installing (mmdebstrap ``--simulate``, ``apt-get --simulate``); a build with the
lock installs exactly those and refuses, naming them, packages the mirror no longer serves as
locked. The builds run against the apt mirror this machine is configured with; a mirror that
"moved" is a lock naming another version or file than the mirror serves, which is what the
mirror's next point release looks like to a lock written today.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from assembler.archive.compress import decompressed
from assembler.errors import InputError
from assembler.oci.descriptor import Platform
from assembler.pipeline.lock.aptpins import debian_uses
from assembler.spec.debs import Deb, DebEntry
from assembler.spec.load import load_manifest
from assembler.spec.lockfile import Lock, read_lock, write_lock
from assembler.transports import aptlock
from tests.helpers import ROOT, manifest_of, run_cli, run_cli_here, sh
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

SMALL = """\
name: deblock
bases:
  runtime:
    bootstrap: {suite: bookworm, variant: minbase}
image:
  base: runtime
  layers:
    - packages: [libgomp1]
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
    from assembler.spec.setuses import set_key

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


def _status_of(layout: Path, tag: str) -> dict[tuple[str, str], str]:
    """dpkg's status as the image's top layer that writes it leaves it."""
    found = ""
    for desc in manifest_of(layout, tag)["layers"]:
        blob = layout / "blobs" / "sha256" / desc["digest"].split(":", 1)[1]
        with open(blob, "rb") as raw, decompressed(raw) as data, tarfile.open(fileobj=data, mode="r|") as tar:
            for member in tar:
                if member.name.lstrip("./") == "var/lib/dpkg/status":
                    found = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    return aptlock.installed_in(found)


@pytest.mark.integration
@pytest.mark.slow  # two bootstraps and an apt step, minutes
@pytest.mark.timeout(1200)
def test_a_locked_build_installs_the_lock_and_refuses_what_the_mirror_moved(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(SMALL)
    cache = ["--cache", str(tmp_path / "cache")]
    locked = run_cli(["lock", "m.yaml"], cwd=tmp_path)
    assert locked.code == 0, str(locked)
    assert re.search(r"apt:bases\.runtime +resolved +\d+ debs", locked.out + locked.err), str(locked)
    text = (tmp_path / "m.lock").read_text()
    lock = read_lock(tmp_path / "m.lock")
    entries = {e.definition["kind"]: e for e in lock.debian.values()}
    base = [Deb.parse(line) for line in entries["bootstrap"].installed]
    layer = [Deb.parse(line) for line in entries["packages"].installed]
    assert [d.name for d in layer] == ["libgomp1"] and len(base) > 50
    assert run_cli(["lock", "m.yaml"], cwd=tmp_path).code == 0
    assert (tmp_path / "m.lock").read_text() == text  # locking again moves nothing

    plan = run_cli_here(["plan", "m.yaml", "--locked", *cache], cwd=tmp_path)
    assert plan.code == 0 and re.search(r"apt:packages-1 +locked, 1 packages of ", plan.out), str(plan)

    built = run_cli(["m.yaml", "--locked", *cache], cwd=tmp_path)
    assert built.code == 0, str(built)
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
def test_an_unprivileged_user_locks_and_builds_the_same_packages(user: User) -> None:
    """On a login node: mmdebstrap's dry run works as the user's subordinate root, whose
    files only a user namespace removes; the lock is the same as root's and so is the image."""
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
    built = user.run([*py, "m.yaml", "--locked", "--cache", str(project / "cache")], cwd=project)
    assert built.returncode == 0, built.stderr
    assert _status_of(project / "out", "deblock") == {
        (d.name, d.arch): d.version for e in lock.debian.values() for d in map(Deb.parse, e.installed)
    }
    # the dry runs left nothing of the subordinate root's (only buildah's rootless storage
    # holds its files, as it always does)
    theirs = [p for p in project.rglob("*") if p.owner() != user.name and "buildah" not in p.parts]
    assert not theirs, theirs[:5]
    assert not [p for p in Path(tempfile.gettempdir()).glob("assemble-lock-*") if p.owner() == user.name]
    sh(["rm", "-rf", str(project)])
