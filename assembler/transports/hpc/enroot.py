"""Enroot/Pyxis images (``sqsh:FILE``): the image's squashfs with Enroot's own files.

Enroot's image format (NVIDIA/enroot ``doc/image-format.md``): "Enroot container images
are standard squashfs images with the following configuration files influencing the
container runtime behavior: ``/etc/rc`` (command script of the container, the entrypoint;
the command and arguments of ``enroot start`` are passed as input parameters),
``/etc/fstab`` (mount configuration; the target is relative to the container rootfs,
``x-create=dir`` creates it) and ``/etc/environment`` (environment; ``${ENVVAR}`` from the
host is substituted)". ``srun --container-image=FILE.sqsh`` (Pyxis) runs such a file.

What ``enroot import docker://...`` writes, mirrored here (``docker::configure`` in
NVIDIA/enroot ``src/docker.sh``), all laid *over* the image's layers as Enroot's top
overlay layer ``0`` is:

- ``/etc/rc``: the config's Labels as ``# KEY VALUE`` comment lines (and a blank line),
  then ``mkdir -p WORKDIR``, ``cd WORKDIR && unset OLDPWD || exit 1``, sourcing a
  non-empty ``/etc/rc.local``, and ``exec ENTRYPOINT "$@"`` when arguments were given,
  else ``exec ENTRYPOINT CMD``, each word quoted; with neither ENTRYPOINT nor CMD the
  command is ``/bin/sh``. That is ``docker run IMAGE [ARGS...]``: ARGS replace CMD.
- ``/etc/rc.local``: a two-line comment (the hook users edit), sourced by ``/etc/rc``;
- ``/etc/environment``: the config's ``Env``, one ``NAME=VALUE`` a line, as written;
- ``/etc/fstab``: one ``${ENROOT_ROOTFS}VOL VOL none x-create=dir,bind,rw,nosuid,nodev``
  line per config Volume (sorted, as ``jq keys``), else empty;
- the WorkingDir is created in the root filesystem (``mkdir -p``): here a directory
  *under* the layers, so an image's own keeps its attributes; ``/etc`` likewise.

Enroot adds no ``/etc/hosts`` or ``/etc/resolv.conf`` placeholders: its runtime mounts
them (``conf/mounts``) with ``x-create``. Not mirrored: ``-all-root`` (files keep the
layers' owners, as in the SIF; ``enroot create`` unpacks as the user anyway), the
``dev/*`` exclusion (layers carry no device nodes that tar2sqfs could not store), and the
default ``ENROOT_SQUASH_OPTIONS`` of ``-comp lzo -noD`` (``conf/enroot.conf.in``): tar2sqfs
has no uncompressed-data mode, and gzip (the SIF's default) is what every kernel and
squashfuse reads; the compressor is the manifest's ``sif.compressor``.

The squashfs itself is the SIF's (:func:`assembler.transports.hpc.squashfs.write_squashfs`):
the same stream, the same reproducibility (every time is ``epoch``), so the same image
gives the same bytes. The file is written to a temp file next to the output and renamed.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from assembler.archive.compress import usable_cores
from assembler.archive.layer import Member, Opener
from assembler.archive.tar import TarEntry
from assembler.errors import InvalidImage
from assembler.oci.digest import file_digest
from assembler.oci.image import Image
from assembler.proc import Runner
from assembler.transports.common import SourceImage
from assembler.transports.hpc import squash as squashing
from assembler.transports.hpc.apptainer import quote
from assembler.transports.hpc.squash import Squash
from assembler.transports.hpc.squashfs import check_writable, replacing, write_squashfs

__all__ = ["SqshInfo", "enroot_files", "environment", "fstab", "rc_script", "write_sqsh"]

log = logging.getLogger(__name__)

RC_LOCAL = (
    "# This file is sourced by /etc/rc when the container starts.\n"
    "# It can be used to manipulate the entrypoint or the command of the container.\n"
)


@dataclass(frozen=True)
class SqshInfo:
    """What :func:`write_sqsh` wrote."""

    path: Path
    size: int
    digest: str  # sha256 of the file
    image_digest: str
    compressor: str
    entries: int  # entries in the root filesystem (Enroot's files included)
    file_bytes: int


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _one_line(text: str) -> str:
    return " ".join(text.split())


def rc_script(config: Mapping[str, Any]) -> str:
    """``/etc/rc`` for an image config, as ``enroot import`` writes it."""
    lines = []
    labels = config.get("Labels") or {}
    if isinstance(labels, Mapping) and labels:
        # A newline inside a label would end the comment: the value is kept on one line.
        lines += [f"# {k} {_one_line(str(v))}" for k, v in labels.items()] + [""]
    workdir = quote(str(config.get("WorkingDir") or "/"))
    entrypoint = " ".join(quote(a) for a in _strings(config.get("Entrypoint")))
    cmd = _strings(config.get("Cmd"))
    if not entrypoint and not cmd:
        cmd = ["/bin/sh"]
    with_args = " ".join(w for w in (entrypoint, '"$@"') if w)
    without = " ".join(w for w in (entrypoint, *(quote(a) for a in cmd)) if w)
    lines += [
        f"mkdir -p {workdir} 2> /dev/null",
        f"cd {workdir} && unset OLDPWD || exit 1",
        "",
        "if [ -s /etc/rc.local ]; then",
        "    . /etc/rc.local",
        "fi",
        "",
        "if [ $# -gt 0 ]; then",
        f"    exec {with_args}",
        "else",
        f"    exec {without}",
        "fi",
    ]
    return "\n".join(lines) + "\n"


def environment(config: Mapping[str, Any]) -> str:
    """``/etc/environment``: the config's Env, one entry a line."""
    out = []
    for item in _strings(config.get("Env")):
        if "\n" in item:
            log.warning("image Env entry %r holds a newline: it is left out of /etc/environment", item)
            continue
        out.append(item + "\n")
    return "".join(out)


def fstab(config: Mapping[str, Any]) -> str:
    """``/etc/fstab``: each Volume a bind mount of a folder of the container's own rootfs."""
    volumes = config.get("Volumes") or {}
    names = sorted(str(v) for v in volumes) if isinstance(volumes, Mapping) else []
    return "".join(f"${{ENROOT_ROOTFS}}{v} {v} none x-create=dir,bind,rw,nosuid,nodev\n" for v in names)


def _opener(data: bytes) -> Opener:
    def opener() -> AbstractContextManager[BinaryIO]:
        return cast(AbstractContextManager[BinaryIO], io.BytesIO(data))

    return opener


def enroot_files(image: Image, *, epoch: int) -> tuple[tuple[Member, ...], tuple[Member, ...]]:
    """Enroot's files (over the layers) and the folders they and the WorkingDir need
    (under the layers), all dated ``epoch`` and owned by root."""
    config = image.container_config

    def file(path: str, text: str) -> Member:
        data = text.encode("utf-8")
        return TarEntry(path=path, kind="file", mode=0o644, size=len(data), mtime=epoch), _opener(data)

    overlay = (
        file("etc/environment", environment(config)),
        file("etc/fstab", fstab(config)),
        file("etc/rc", rc_script(config)),
        file("etc/rc.local", RC_LOCAL),
    )
    parts = [p for p in str(config.get("WorkingDir") or "").split("/") if p and p != "."]
    if ".." in parts:
        raise InvalidImage(f"image WorkingDir {config.get('WorkingDir')!r} climbs out of the root")
    dirs = {"etc"} | {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
    underlay = tuple((TarEntry(path=d, kind="dir", mode=0o755, mtime=epoch), None) for d in sorted(dirs))
    return overlay, underlay


def write_sqsh(
    source: SourceImage,
    out: Path,
    *,
    runner: Runner,
    epoch: int,
    squash: Squash = squashing.DEFAULT,
    progress: Callable[[int], None] | None = None,
    jobs: int | None = None,
) -> SqshInfo:
    """Write ``source``'s image as the Enroot image ``out`` (replaced atomically).

    Raises InputError for an unknown compressor, block size or level, InvalidImage for an image
    Enroot cannot run (not Linux, unreadable layers), ToolError when tar2sqfs fails,
    OSError for the file.
    """
    check_writable(source, squash, holds="Enroot runs")
    image = source.image
    overlay, underlay = enroot_files(image, epoch=epoch)
    out = Path(out)
    with replacing(out) as tmp:
        stats = write_squashfs(
            source,
            tmp,
            overlay=overlay,
            underlay=underlay,
            runner=runner,
            epoch=epoch,
            squash=squash,
            jobs=jobs or usable_cores(),
            progress=progress,
        )
        os.chmod(tmp, 0o644)  # mkstemp made it 0600; an image file is read by others (Pyxis, shared folders)
        digest = file_digest(tmp)
        size = tmp.stat().st_size
    log.info("wrote %s: %d bytes, %s", out, size, digest)
    return SqshInfo(out, size, digest, image.digest, squash.compressor, stats.entries, stats.file_bytes)
