"""apt inside build containers: the host-kept caches of its lists and packages (one set
per package step running at the same time) and the install command for any base's package
manager."""

from __future__ import annotations

import fcntl
import os
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from assembler.cache import Cache
from assembler.cache.maintain import APT_SLOT_LOCK
from assembler.compile.buildah import Volume
from assembler.debian.aptlock import pinned_install
from assembler.manifest.lock.debpins import DebLocked

# apt's lists and downloaded packages live on the host between builds (like ccache): a
# runtime step on a new base then fetches only what changed. They are mounts, so never in
# a layer; the sandbox user cannot write a host folder, so apt downloads as root.
APT_LISTS = "/var/lib/apt/lists"
APT_ARCHIVES = "/var/cache/apt/archives"
_APT_OPTS = "-o APT::Sandbox::User=root -o APT::Keep-Downloaded-Packages=true -o DPkg::Lock::Timeout=300"


def package_cache(cache: Cache, slot: int = 0) -> list[Volume]:
    """The host folders that keep apt's lists and packages between builds (``slot``: one
    set per package step running at the same time, see :meth:`Workspace.apt_slot`)."""
    folder = _apt_folder(slot)
    return [
        Volume(cache.path("step-caches", folder, "lists"), APT_LISTS, readonly=False),
        Volume(cache.path("step-caches", folder, "archives"), APT_ARCHIVES, readonly=False),
    ]


def _apt_folder(slot: int) -> str:
    return "_apt" if slot == 0 else f"_apt-{slot}"


@contextmanager
def claim_slot(cache: Cache) -> Iterator[int]:
    """A set of apt caches no other running step uses: apt locks its lists and archives
    folders (and fails at once on the archives' lock, not waiting), so two package steps
    at the same time each need their own. Claimed with ``flock`` on the set's ``slot.lock``,
    so that steps of other processes sharing the cache count too (Slurm jobs, a second
    build), and ``cache prune`` leaves a set in use alone."""
    slot = 0
    while True:
        fd = os.open(slot_lock(cache, slot), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            os.close(fd)
            slot += 1
    try:
        yield slot
    finally:
        os.close(fd)  # releases the lock


def slot_lock(cache: Cache, slot: int) -> Path:
    return cache.path("step-caches", _apt_folder(slot)) / APT_SLOT_LOCK


def apt_install(packages: Sequence[str]) -> str:
    """A shell command installing ``packages`` with the base's package manager (apt-get on
    Debian/Ubuntu with the host-kept caches of :func:`package_cache`, dnf/microdnf/yum on
    RHEL-likes such as manylinux, apk on Alpine), leaving no index or cache in the layer."""
    names = " ".join(shlex.quote(p) for p in packages)
    return (
        f"if command -v apt-get >/dev/null; then apt-get {_APT_OPTS} update -qq && DEBIAN_FRONTEND=noninteractive "
        f"apt-get {_APT_OPTS} install -y -qq --no-install-recommends {names}; "
        f"elif command -v dnf >/dev/null; then dnf install -y -q {names} && dnf clean all; "
        f"elif command -v microdnf >/dev/null; then microdnf install -y {names} && microdnf clean all; "
        f"elif command -v yum >/dev/null; then yum install -y -q {names} && yum clean all; "
        f"elif command -v apk >/dev/null; then apk add --no-cache {names}; "
        'else echo "no package manager (apt-get, dnf, microdnf, yum, apk) in this image" >&2; exit 127; fi'
    )


def apt_install_locked(locked: DebLocked) -> str:
    """A shell command installing exactly the packages the lock gives (a Debian base's
    ``packages:`` layer), each checked against its locked sha256 first, with the host-kept
    caches of :func:`package_cache`, leaving no index or cache in the layer."""
    return f"apt-get {_APT_OPTS} update -qq && " + pinned_install(locked.debs, locked.packages, _APT_OPTS)
