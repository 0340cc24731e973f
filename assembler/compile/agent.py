"""The export agent: reads a container's root filesystem and writes layers as tar streams.

Run as ``python -m assembler.compile.agent`` against a mounted container root (as root
after ``buildah mount``; rootless inside ``buildah unshare --mount``, where the root is
only visible from that namespace). It writes each layer, normalised, compressed and
hashed, straight into the cache, and prints the layers' records as JSON. Three commands:

- ``export``: the files an artifact declares (a path or a glob), placed at ``--to``;
- ``snapshot``: the metadata of every file, saved before a runtime step runs;
- ``diff``: what changed since the snapshot, as a changeset (:mod:`assembler.compile.changes`).

Paths inside the container are resolved inside its root: a symlink pointing to
``/usr/lib`` means the container's ``/usr/lib``, never the host's. What readers above
``compile`` need of each layer is read as it is written when :func:`main` is given them
(:class:`LayerReaders`; ``python -m assembler.pipeline.layers.exportagent``).
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from assembler.archive.headers import LayerObserver
from assembler.archive.layer import Member
from assembler.archive.tree import host_members_at
from assembler.compile.changes import diff_members, excluded, snapshot
from assembler.compile.rootpaths import GLOB_CHARS, glob_in_root, holds, resolve_in_root
from assembler.errors import AssemblerError

if TYPE_CHECKING:
    from assembler.cache import Cache


class AgentError(Exception):
    """Reported on stderr with exit status 3; the parent turns it into a build error."""


def under_mount(path: str, mounts: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """(host folder, path inside it) when container ``path`` lies in a mounted folder."""
    norm = "/" + "/".join(p for p in path.split("/") if p not in ("", "."))
    for ctr, host in sorted(mounts, key=lambda m: -len(m[0])):
        top = "/" + ctr.strip("/")
        if norm == top or norm.startswith(top.rstrip("/") + "/"):
            return host, norm[len(top) :] or "/"
    return None


def export_members(
    root: str,
    path: str,
    to: str,
    *,
    mode: int | None,
    owner: tuple[int, int] | None,
    exclude: Sequence[str],
    mounts: Sequence[tuple[str, str]] = (),
) -> list[Member]:
    """Members for an artifact: ``path`` (file, folder or glob) in the container, at ``to``.

    A path inside one of the step's ``cache:`` folders (``mounts``: container folder,
    host folder) is read from the host folder: the container's root does not hold it.
    """
    mounted, shown = under_mount(path, mounts), ""
    if mounted is not None:
        (root, path), shown = mounted, path[: len(path) - len(mounted[1])] or "/"
    keep_owner = owner is None
    uid, gid = owner or (0, 0)
    if GLOB_CHARS & set(path):
        matches = glob_in_root(root, path)
        if not matches:
            raise AgentError(f"{path}: no file in the container matches ({holds(root, path, prefix=shown)})")
        members: list[Member] = []
        for host, ctr in matches:
            dest = posixpath.join(to, posixpath.basename(ctr))
            members += host_members_at(host, dest, mode=mode, uid=uid, gid=gid, keep_owner=keep_owner, follow=False)
    else:
        host = resolve_in_root(root, path)
        if not os.path.lexists(host):
            raise AgentError(f"{path}: does not exist in the container ({holds(root, path, prefix=shown)})")
        members = host_members_at(host, to, mode=mode, uid=uid, gid=gid, keep_owner=keep_owner, follow=True)
    if exclude:
        base = to.strip("/")
        members = [
            (e, o)
            for e, o in members
            if not (e.path.startswith(base + "/") and excluded(e.path[len(base) + 1 :], exclude))
        ]
    return members


# -- command line ----------------------------------------------------------------------


_DPKG_STATUS = "/var/lib/dpkg/status"
_STATUS_LIMIT = 64 << 20  # a devel base's dpkg status: a few MB (CUDA's: 1.3 MB)


def installed_lines(root: str) -> list[str]:
    """``name:arch=version`` of each package dpkg's status in ``root`` says is installed,
    sorted (none: no status)."""
    from assembler.debian.aptlock import installed_in

    path = resolve_in_root(root, _DPKG_STATUS)
    if not os.path.isfile(path):  # none (not a Debian root), or not a file to read
        return []
    with open(path, "rb") as f:
        text = f.read(_STATUS_LIMIT + 1)
    if len(text) > _STATUS_LIMIT:
        raise AgentError(f"{_DPKG_STATUS}: over {_STATUS_LIMIT >> 20} MiB")
    found = installed_in(text.decode("utf-8", "replace"))
    return sorted(f"{name}:{arch}={version}" for (name, arch), version in found.items())


def _owner(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    u, _, g = text.partition(":")
    return int(u), int(g or u)


class LayerReaders(Protocol):
    """What reads each layer the agent writes, as it is written: the layer observers of
    readers that live above ``compile`` (the dependency check's, the SBOM's, the labels'),
    so that its layers are not read back for them (:mod:`assembler.pipeline.layers.exportagent`
    runs the agent with them)."""

    def observers(self, cache: Cache, job: Mapping[str, Any], artifact: str | None) -> Sequence[LayerObserver]:
        """The observers of a layer of ``job`` written into ``cache``: the artifact named
        so (``export``), or the changes (``diff``: None)."""
        ...


def _layer(
    cache: Cache, members: Iterable[Member], job: dict[str, Any], artifact: str | None, readers: LayerReaders | None
) -> dict[str, object]:
    """``members`` (the artifact named so, or the changes: None) as a layer blob in ``cache``
    (what its headers and observers tell remembered there); its JSON."""
    from assembler.cache.memos import write_remembered

    blob = write_remembered(
        cache,
        members,
        compression=job["compression"],
        epoch=job["epoch"],
        observers=() if readers is None else readers.observers(cache, job, artifact),
    )
    return blob.to_json()


def main(argv: Sequence[str] | None = None, *, readers: LayerReaders | None = None) -> int:
    """Run one job (a JSON file the parent wrote) against a container root.

    ``export``: every artifact of a step, each written as a layer blob straight into the
    cache; ``snapshot``: file metadata to a JSON file; ``diff``: the changes since the
    snapshot as one layer blob in the cache. Layer results are printed as JSON. With
    ``readers``, what they read of each layer as it is written is recorded too.
    Exit 3 with a one-line reason on stderr when something is wrong.
    """
    p = argparse.ArgumentParser(prog="assembler.compile.agent")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--root")
    where.add_argument("--root-env")
    p.add_argument("command", choices=("export", "snapshot", "diff"))
    p.add_argument("--job", required=True, help="the JSON job file")
    args = p.parse_args(argv)
    root = args.root or os.environ.get(args.root_env or "", "")
    if not root or not os.path.isdir(root):
        print(f"agent: container root {root!r} is not a folder", file=sys.stderr)
        return 3
    from assembler.cache import Cache

    with open(args.job) as f:
        job = json.load(f)
    what = ""
    try:
        if args.command == "snapshot":
            with open(job["out"], "w") as f:
                json.dump(snapshot(root, job["exclude"]), f)
            return 0
        cache = Cache(Path(job["cache"]))
        results: dict[str, object] = {}
        if args.command == "export":
            for art in job["artifacts"]:
                what = f"artifact {art['name']} ({art['path']}): "
                members = export_members(
                    root,
                    art["path"],
                    art["to"],
                    mode=art.get("mode"),
                    owner=_owner(art.get("owner")),
                    exclude=art.get("exclude") or [],
                    mounts=[(c, h) for c, h in art.get("mounts") or []],
                )
                results[art["name"]] = _layer(cache, members, job, art["name"], readers)
            if job.get("installed"):
                what = "dpkg's status: "
                cache.put_memo(job["installed"], {"installed": installed_lines(root)})
        else:
            what = "changes: "
            with open(job["snapshot"]) as f:
                before = {k: tuple(v) for k, v in json.load(f).items()}
            members = diff_members(root, before, job["exclude"], job["mountpoints"])
            results["changes"] = _layer(cache, members, job, None, readers)
    except (AgentError, OSError, AssemblerError) as err:  # AssemblerError: UnsafePath, InvalidArchive
        print(f"agent: {what}{err}", file=sys.stderr)
        return 3
    sys.stdout.write(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
