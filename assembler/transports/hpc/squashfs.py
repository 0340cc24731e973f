"""The squashfs of an image's root filesystem, written as a stream: the SIF partition
(:mod:`assembler.transports.hpc.sif`) and the Enroot image (:mod:`assembler.transports.hpc.enroot`).

No root filesystem is unpacked and no intermediate tar is stored: the layers are merged
(:func:`assembler.archive.flatten.flatten`, with the output kind's own files laid over or
under them) into ``tar2sqfs``'s stdin, which writes the squashfs into a temp file next to
the output. Reproducible: every time field is ``epoch`` and tar2sqfs runs with
``SOURCE_DATE_EPOCH`` and ``--defaults mtime=epoch`` (its superblock time), so the same
image and files give the same bytes whatever the number of compressor threads.
"""

from __future__ import annotations

import fcntl
import functools
import glob
import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

from assembler.archive.compress import Compression
from assembler.archive.flatten import FlattenStats, flatten
from assembler.archive.layer import Member
from assembler.archive.layer_reader import LayerSource
from assembler.archive.tar import TarWriter
from assembler.cache import locked_temp, reclaim
from assembler.errors import InvalidImage, ToolError
from assembler.oci import mediatypes as mt
from assembler.proc import Runner
from assembler.transports.common import SourceImage
from assembler.transports.hpc.squash import Squash

__all__ = ["layer_sources", "replacing", "tar2sqfs_argv", "write_squashfs"]

log = logging.getLogger(__name__)

_F_SETPIPE_SZ = 1031
_CHUNK = 1 << 20
_STDERR_KEEP = 64 << 10


class _PipeSink:
    """Counts what goes to tar2sqfs and reports progress."""

    def __init__(self, pipe: IO[bytes], progress: Callable[[int], None] | None) -> None:
        self._pipe = pipe
        self._progress = progress
        self.count = 0

    def write(self, data: bytes | bytearray, /) -> int:
        self._pipe.write(data)
        self.count += len(data)
        if self._progress is not None:
            self._progress(len(data))
        return len(data)


def layer_sources(source: SourceImage) -> list[LayerSource]:
    layers = source.image.layers
    out = []
    for i, desc in enumerate(layers, start=1):
        what = f"{source.name}: layer {i}/{len(layers)} {desc.digest}"
        try:
            compression = cast(Compression, mt.compression_of(desc.media_type))  # one of COMPRESSIONS
        except InvalidImage as e:  # say which layer
            raise InvalidImage(f"{what}: {e}") from e
        opener = functools.partial(source.blobs.open_blob, desc.digest)
        out.append(LayerSource(what, opener, compression))
    return out


def _drain(stream: IO[bytes], keep: bytearray) -> None:
    for chunk in iter(lambda: stream.read(4096), b""):
        keep.extend(chunk)
        if len(keep) > _STDERR_KEEP:
            del keep[: len(keep) - _STDERR_KEEP]


def tar2sqfs_argv(tmp: Path, squash: Squash, *, jobs: int, epoch: int) -> list[str]:
    """tar2sqfs writing ``tmp`` as ``squash`` says, from a tar on its stdin."""
    return [
        "tar2sqfs",
        "--quiet",
        "--no-skip",  # an entry tar2sqfs cannot store is an error, never silently dropped
        "--force",  # tmp exists already: we created it, so the name is ours
        *squash.argv(),
        "--num-jobs",
        str(jobs),
        "--defaults",
        f"uid=0,gid=0,mode=0755,mtime={epoch}",  # also the superblock time
        str(tmp),
    ]


def write_squashfs(
    source: SourceImage,
    tmp: Path,
    *,
    overlay: Sequence[Member] = (),
    underlay: Sequence[Member] = (),
    runner: Runner,
    epoch: int,
    squash: Squash,
    jobs: int,
    progress: Callable[[int], None] | None,
) -> FlattenStats:
    """Run tar2sqfs writing ``tmp``, feeding it the flattened layers (``overlay`` over them,
    ``underlay`` under them) on stdin."""
    argv = tar2sqfs_argv(tmp, squash, jobs=jobs, epoch=epoch)
    err = bytearray()
    with runner.popen(
        argv,
        env={"SOURCE_DATE_EPOCH": str(epoch)},
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stderr is not None
        drain = threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True)
        drain.start()
        try:
            fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, _CHUNK)  # fewer wake-ups per MiB
        except OSError:
            pass
        sink = _PipeSink(proc.stdin, progress)
        try:
            stats = flatten(layer_sources(source), TarWriter(sink), epoch=epoch, overlay=overlay, underlay=underlay)
            proc.stdin.close()
        except BrokenPipeError as e:
            proc.wait()
            drain.join()
            Runner.finish(proc, argv, bytes(err))  # raises with tar2sqfs's own message
            tail = err.decode(errors="replace")
            raise ToolError("tar2sqfs stopped reading its input", argv=argv, stderr_tail=tail) from e
        proc.wait()
        drain.join()
        Runner.finish(proc, argv, bytes(err))
    log.info(
        "%s: %d entries (%d files, %d bytes of file data, %d hard links) -> %d bytes of squashfs",
        source.name,
        stats.entries,
        stats.files,
        stats.file_bytes,
        stats.hardlinks,
        tmp.stat().st_size,
    )
    return stats


def reclaim_beside(out: Path) -> None:
    """The temp files killed writes of ``out`` left next to it, removed."""
    reclaim(out.parent, f".{glob.escape(out.name)}.*.tmp", locked=True)


@contextmanager
def replacing(out: Path) -> Iterator[Path]:
    """A new empty temp file next to ``out`` (tar2sqfs writes it by name) that replaces
    ``out`` when the block completes, and is removed when it does not: ``out`` is never half
    written. Its ``flock`` is held meanwhile, so the temp files of killed writes (lock
    free, pid gone) are told apart at once and removed first, however recent."""
    out.parent.mkdir(parents=True, exist_ok=True)
    reclaim_beside(out)
    fd, tmp = locked_temp(out.parent, f".{out.name}.", ".tmp")
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)  # the lock goes with it


def check_writable(source: SourceImage, squash: Squash, *, holds: str) -> None:
    """Before a squashfs image file is written: InputError for a compressor tar2sqfs lacks,
    a block size the kernel cannot read or a level the compressor has not, InvalidImage for
    an image not for Linux (``holds``: what the format does with Linux images, for the
    message: "SIF holds")."""
    squash.check()
    if source.image.platform.os != "linux":
        raise InvalidImage(f"{source.name}: {holds} Linux images, this one is for {source.image.platform.os}")
