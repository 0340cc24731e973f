"""Where a build keeps what it makes, as an HPC node's filesystems decide it: the cache and
buildah's storage (``--storage``, ``$ASSEMBLE_STORAGE``, else ``CACHE/buildah``), each on a
filesystem read from ``/proc/self/mountinfo``. buildah's overlay storage needs a local
filesystem: on NFS, Lustre, GPFS, BeeGFS or CephFS (a home or project folder on most
clusters) overlay mounts fail, and rootless id mapping with them; the cache's blobs and
locks are safest there too. :func:`problems` says which is on such a filesystem and what to
do; ``doctor`` lists them with how much room each has.

A build that checks a folder's filesystem (:func:`place`) notes what it found as a fact for
the up-to-date check (:func:`assembler.trace.learned`, kind :data:`MOUNT`): the mount table
is no file whose time tells a change, so a replay reads it again (:func:`mount_fact`) and
compares.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.trace import learned

if TYPE_CHECKING:  # a replay reads the mount table without importing the runner
    from assembler.proc import Runner

MOUNTINFO = Path("/proc/self/mountinfo")
MOUNT = "mount"  # the kind of fact a build learns here: [mount point, type, source] of a folder

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


@dataclass(frozen=True)
class Quota:
    """This user's disk quota on one filesystem, as its quota tool reports it."""

    mount: str
    used: int  # bytes
    limit: int  # bytes: the soft limit, else the hard one
    tool: str  # the command that said so

    @property
    def room(self) -> int:
        return max(self.limit - self.used, 0)


def user_quota(path: Path, runner: Runner) -> Quota | None:
    """This user's block quota on the network filesystem ``path`` is on, where one is set: Lustre's
    from ``lfs quota -q -u UID MOUNT`` (statvfs there reports the whole filesystem, often
    petabytes, never a user's share of it), others' from ``quota -w -v -u`` (the quota
    package: ext4, XFS, NFS through rquotad). None where neither tool is installed, the tool
    fails, or it lists no limit for the filesystem."""
    mount, fstype = mount_of(path)
    if fstype not in NETWORK and not fstype.startswith("nfs"):
        return None  # a local disk's statvfs is what this user may fill, near enough
    uid = str(os.getuid())
    if fstype == "lustre" and runner.which("lfs") is not None:
        argv = ["lfs", "quota", "-q", "-u", uid, mount]
    elif runner.which("quota") is not None:
        argv = ["quota", "-w", "-v", "-u", uid]
    else:
        return None
    try:
        result = runner.run(argv, check=False, timeout=20)
    except Exception:  # a hung or missing tool is no quota; doctor and the budget go on without one
        return None
    # quota exits 1 when the user is over a limit, and still lists it
    found = parse_quota(result.stdout or "", mount, device=mount_source(path))
    if found is None:
        return None
    return Quota(mount, found[0], found[1], " ".join(argv[:2]))


def parse_quota(text: str, mount: str, *, device: str = "") -> tuple[int, int] | None:
    """(bytes used, the soft limit, else the hard one) of ``mount`` (or its ``device``) in
    the output of ``lfs quota`` or ``quota -w -v``: a line FILESYSTEM KBYTES QUOTA LIMIT ...
    (a ``*`` after a number that is over its limit); None for no line or no limit (0)."""
    words = text.split()
    for i, word in enumerate(words):
        if word not in (mount, device) or not word:
            continue
        numbers = [w.rstrip("*") for w in words[i + 1 : i + 4]]
        if len(numbers) < 3 or not all(n.isdigit() for n in numbers):
            continue
        used, soft, hard = (int(n) * 1024 for n in numbers)
        limit = soft or hard
        return (used, limit) if limit else None
    return None


def mount_source(path: Path) -> str:
    """The device or server the mount ``path`` is on is mounted from (mountinfo's source)."""
    return _entry(str(_existing(path)), MOUNTINFO.read_text())[2]


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount ``path`` (its nearest existing folder,
    links resolved) is on, as ``/proc/self/mountinfo`` says."""
    return mount_in(str(_existing(path)), MOUNTINFO.read_text())


def mount_in(target: str, mountinfo: str) -> tuple[str, str]:
    """(mount point, filesystem type) of the mount the absolute path ``target`` is on in
    ``mountinfo`` (``/proc/self/mountinfo``'s text): the longest mount point above it, the
    last one listed where one is mounted over another."""
    point, fstype, _ = _entry(target, mountinfo)
    return point, fstype


def _entry(target: str, mountinfo: str) -> tuple[str, str, str]:
    """(mount point, filesystem type, source) of the mount ``target`` is on (:func:`mount_in`)."""
    best = ("/", "unknown", "")
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        point = _unescape(fields[4])
        after = line.split(" - ", 1)[1].split(" ")
        under = target == point or target.startswith(point.rstrip("/") + "/")
        if under and len(point) >= len(best[0]):
            best = (point, after[0], _unescape(after[1]) if len(after) > 1 else "")
    return best


def mount_fact(path: Path) -> list[str]:
    """The filesystem ``path`` is on, as the fact the up-to-date check compares
    (:data:`MOUNT`): [mount point, filesystem type, source]. A folder on another filesystem
    since (a tmpfs or a scratch disk mounted there, NFS) is another fact, where the
    folder's own identity may look the same. The point and type are :func:`mount_of`'s,
    the one answer a build's decision and ``doctor`` take."""
    mount, fstype = mount_of(path)
    return [mount, fstype, mount_source(path)]


def place(what: str, path: Path) -> Place:
    """``path``'s filesystem, learned as a fact of the running build (the module's doc)."""
    fact = mount_fact(path)
    learned(MOUNT, str(path.expanduser().absolute()), fact)
    mount, fstype = fact[0], fact[1]
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
