"""Where a build keeps what it makes, as an HPC node's filesystems decide it: the cache and
buildah's storage (``--storage``, ``$ASSEMBLE_STORAGE``, else ``CACHE/buildah``), each on a
filesystem read from ``/proc/self/mountinfo``. buildah's overlay storage needs a local
filesystem: on NFS, Lustre, GPFS, BeeGFS or CephFS (a home or project folder on most
clusters) overlay mounts fail, and rootless id mapping with them; the cache's blobs and
locks are safest there too. :func:`problems` says which is on such a filesystem and what to
do; ``doctor`` lists them with how much room each has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Filesystems served over the network or by a parallel file system (mountinfo's type field).
NETWORK = {
    "nfs",
    "nfs4",
    "lustre",
    "gpfs",
    "beegfs",
    "ceph",
    "cifs",
    "smb3",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "fuse.beegfs",
    "fuse.cephfs",
    "panfs",
    "wekafs",
    "9p",
}


@dataclass(frozen=True)
class Place:
    """A folder a build writes, and the filesystem under it."""

    what: str  # "the cache", "buildah's storage"
    path: Path
    mount: str  # the mount point it is under
    fstype: str
    size: int  # bytes of that filesystem
    free: int  # bytes this user may still write there (statvfs f_bavail)

    @property
    def network(self) -> bool:
        return self.fstype in NETWORK or self.fstype.startswith("nfs")


def _existing(path: Path) -> Path:
    probe = path.expanduser().absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.resolve()


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are written as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount ``path`` (its nearest existing folder,
    links resolved) is on, as ``/proc/self/mountinfo`` says."""
    return mount_in(str(_existing(path)), Path("/proc/self/mountinfo").read_text())


def mount_in(target: str, mountinfo: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount the absolute path ``target`` is on in
    ``mountinfo`` (``/proc/self/mountinfo``'s text): the longest mount point above it, the
    last one listed where one is mounted over another."""
    best = ("/", "unknown")
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        fstype = line.split(" - ", 1)[1].split(" ")[0]
        under = target == point or target.startswith(point.rstrip("/") + "/")
        if under and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def place(what: str, path: Path) -> Place:
    mount, fstype = mount_of(path)
    st = os.statvfs(_existing(path))
    return Place(what, path, mount, fstype, st.f_frsize * st.f_blocks, st.f_frsize * st.f_bavail)


def problems(places: list[Place]) -> list[str]:
    """What of ``places`` keeps builds from working, each with what to do: buildah's storage
    on a network filesystem (the cache's own blobs work there, slower)."""
    return [
        f"buildah's storage {p.path} is on {p.fstype} ({p.mount}), a network filesystem: overlay mounts (and "
        "rootless id mapping) fail there: put it on node-local disk with --storage DIR or ASSEMBLE_STORAGE=DIR "
        "(/tmp, $TMPDIR or the node's scratch), or the whole cache with --cache DIR"
        for p in places
        if p.network and p.what == "buildah's storage"
    ]
