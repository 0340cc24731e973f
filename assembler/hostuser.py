"""What an unprivileged user needs of the host to build rootless (an HPC login node): a
range of subordinate uids and gids (``/etc/subuid``, ``/etc/subgid``: rootless buildah and
mmdebstrap's unshare mode map the image's users onto them), user namespaces allowed, and
the setuid ``newuidmap``/``newgidmap`` (Debian's ``uidmap``). :func:`problems` says which
is missing and what to ask for; ``doctor`` lists them, and a bootstrap, a lock's dry run or a
step that fails for one names it (:func:`host_cause`). Root needs none of them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

NEEDED = 65536  # ids a rootless container maps: every uid and gid an image may hold
# What mmdebstrap, buildah and the kernel say when a user namespace or its id maps cannot be
# made (mmdebstrap: "unable to pick chroot mode automatically"; buildah: "cannot find
# mappings for user", "insufficient UIDs or GIDs", "newuidmap: write to uid_map failed").
_HOST_SIGNS = (
    "newuidmap",
    "newgidmap",
    "/etc/subuid",
    "/etc/subgid",
    "mappings for user",
    "chroot mode",
    "user namespace",
    "uid_map",
    "gid_map",
    "insufficient uids",
    "not enough ids",
    "clone_newuser",
)


def _ids(path: Path, user: str, uid: int) -> int:
    """How many subordinate ids ``path`` gives the user (by name or by number)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user, str(uid)) and fields[2].isdigit():
            count += int(fields[2])
    return count


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def problems(etc: Path = Path("/etc")) -> list[str]:
    """What keeps this (unprivileged) user from building rootless, each with what to do;
    none for root."""
    uid = os.geteuid()
    if uid == 0:
        return []
    user = pwd.getpwuid(uid).pw_name
    found = []
    for kind in ("uid", "gid"):
        have = _ids(etc / f"sub{kind}", user, uid)
        if have < NEEDED:
            found.append(
                f"{etc / f'sub{kind}'} gives {user} {have} subordinate {kind}s, where rootless builds map {NEEDED}: "
                f"ask the admin for `usermod --add-sub{kind}s 100000-165535 {user}` (or a range of your site's); "
                "without them only bases given as rootfs: or oci: with copy:, artifact: and pip: layers build "
                "(no bootstrap:, no run: or compile step)"
            )
    if _sysctl("user.max_user_namespaces") == "0" or _sysctl("kernel.unprivileged_userns_clone") == "0":
        found.append(
            "user namespaces are off for unprivileged users (sysctl user.max_user_namespaces or "
            "kernel.unprivileged_userns_clone): ask the admin to allow them"
        )
    for tool in ("newuidmap", "newgidmap"):
        path = shutil.which(tool)
        if path is None:
            found.append(f"{tool} is missing: apt-get install uidmap (as root)")
        elif not os.stat(path).st_mode & stat.S_ISUID:
            found.append(f"{path} is not set-uid: reinstall uidmap (as root)")
    return found


def host_cause(text: str, etc: Path = Path("/etc")) -> str | None:
    """doctor's fix (:func:`problems`, each what is missing and what to ask for) where
    ``text``, a failed program's output, shows this host kept it from making a user
    namespace or mapping its ids; None for root, for output without such a sign, or where
    nothing is missing (then the cause is elsewhere)."""
    lowered = text.lower()
    if os.geteuid() == 0 or not any(sign in lowered for sign in _HOST_SIGNS):
        return None
    return "; ".join(problems(etc)) or None
