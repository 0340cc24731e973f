"""Layers in one streaming pass: tar -> diff_id hash -> compressor -> digest hash -> file.

Memory stays flat whatever the layer size: file data moves in 1 MiB chunks and only
entry metadata is held (to sort it). zstd's own workers compress (one more than cores); the
diff_id is hashed by the writing thread on two cores, where a helper thread only adds work,
and by a thread of its own on more, where the writing thread is the critical path.
"""

from __future__ import annotations

import hashlib
import posixpath
import queue
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, BinaryIO

from assembler.archive.compress import Compression, Writable, compressor, decompressed, usable_cores
from assembler.archive.tar import CHUNK, Buffer, TarEntry, TarWriter, normalize, sort_key
from assembler.archive.tar import Member as Member
from assembler.archive.tar import Opener as Opener
from assembler.archive.tarread import reading
from assembler.errors import InvalidArchive
from assembler.oci.layer import Layer

if TYPE_CHECKING:
    from assembler.archive.headers import LayerHeaders  # it imports view, which imports this

ProgressFn = Callable[[int], None]
"""Called with the number of uncompressed bytes just written (for progress bars)."""


class HashingSink:
    """A writable that hashes and counts what passes through to ``sink``."""

    def __init__(self, sink: Writable | None, *, hashing: bool = True) -> None:
        self._sink = sink
        self._sha = hashlib.sha256() if hashing else None
        self.count = 0

    @property
    def hashing(self) -> bool:
        return self._sha is not None

    def write(self, data: bytes | bytearray, /) -> int:
        if self._sha is not None:
            self._sha.update(data)
        self.count += len(data)
        if self._sink is not None:
            self._sink.write(data)
        return len(data)

    @property
    def digest(self) -> str:
        if self._sha is None:
            raise ValueError("this sink only counts")
        return "sha256:" + self._sha.hexdigest()


class _InlineHash:
    """sha256 of the uncompressed stream in the writing thread: where zstd's workers keep
    every core busy (two cores), a helper thread only adds work (it reads each buffer on
    another core and waits for the GIL: about 0.3 core-seconds a GiB), and the writing thread
    has time to spare. A buffer is given back as soon as it is hashed: it is filled again
    once the compressor, which copies it, is done with it."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.count = 0
        self.spare: queue.SimpleQueue[Buffer] = queue.SimpleQueue()

    def update(self, data: bytes | bytearray) -> None:
        self._sha.update(data)
        self.count += len(data)
        if type(data) is Buffer and len(data) == CHUNK:
            self.spare.put(data)

    def close(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()


class _BackgroundHash:
    """An :class:`_InlineHash` fed by a helper thread. hashlib releases the GIL on big
    buffers, so hashing the uncompressed stream overlaps with reading files and writing
    headers: worth it where cores are to spare (see :func:`_diff_id_hash`). At most
    ``depth`` chunks wait (bounded memory). A chunk is kept, not copied: its writer never
    changes it afterwards (``bytes``, or a buffer a :class:`TarWriter` has handed on)."""

    def __init__(self, depth: int = 8) -> None:
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(maxsize=depth)
        self._hash = _InlineHash()
        self.count = 0
        self.spare = self._hash.spare  # the buffers hashed, given back from the helper thread
        self._thread = threading.Thread(target=self._run, name="diff-id-hash", daemon=True)
        self._thread.start()
        self._done = False

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def update(self, data: bytes | bytearray) -> None:
        self._queue.put(data)
        self.count += len(data)

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._queue.put(None)
            self._thread.join()

    @property
    def digest(self) -> str:
        self.close()
        return self._hash.digest


def _diff_id_hash() -> _InlineHash | _BackgroundHash:
    """Where the diff_id is hashed. The writing thread reads files, writes headers and
    hands buffers to the compressor (about 0.8 core-seconds a GiB); zstd's workers spend
    about 3.5 together (level 3). On two cores both are busy throughout, and the
    writing thread can take the sha256 (0.5 a GiB with SHA-NI, about 2 without) and stay
    off the critical path, where a helper thread would only add its overhead. With more
    cores zstd's workers finish sooner and the writing thread becomes the critical path:
    the hash then goes to a thread of its own. ``bench-layers`` measures the two-core case."""
    return _BackgroundHash() if usable_cores() > 2 else _InlineHash()


class _TarSink:
    """Uncompressed side: hash (diff_id), count, report progress, feed the compressor."""

    def __init__(self, inner: Writable, progress: ProgressFn | None) -> None:
        self._inner = inner
        self.hash = _diff_id_hash()
        self._progress = progress

    def write(self, data: bytes | bytearray, /) -> int:
        self._inner.write(data)  # first: a zstd job is handed to a worker without waiting for the hash
        self.hash.update(data)
        if self._progress is not None:
            self._progress(len(data))
        return len(data)


def sorted_members(members: Iterable[Member]) -> list[Member]:
    """Members in the contract's order (path components, bytewise); duplicates: last wins."""
    by_path: dict[str, Member] = {}
    for member in members:
        by_path[member[0].path] = member
    return [by_path[p] for p in sorted(by_path, key=sort_key)]


def order_hardlinks(members: list[Member]) -> list[Member]:
    """Make every hard link point *back*: after sorting, the first path of a link group
    carries the data and the others link to it (a link before its target is invalid).

    A hard link is the same file as its target, so its header says what the target's does
    (mode, owner, time): readers differ on a link whose header says otherwise (podman and
    buildah give the file the link's mode and owner, umoci and squashfs keep the target's),
    and a tarball from elsewhere may hold such a link."""
    by_path = {entry.path: (entry, opener) for entry, opener in members}
    group_head: dict[str, TarEntry] = {}  # original target -> the entry now carrying the data
    out: list[Member] = []
    for entry, opener in members:
        if entry.kind == "hardlink":
            target = entry.linkname
            while target in by_path and by_path[target][0].kind == "hardlink" and by_path[target][0].linkname != target:
                target = by_path[target][0].linkname  # a link to a link: follow to the file
            if target in group_head:
                out.append((_link_to(entry, group_head[target]), None))
                continue
            if target not in by_path or by_path[target][0].kind != "file":
                raise InvalidArchive(
                    f"hard link {entry.path} points at {entry.linkname}, which is not a file in the archive"
                )
            head, head_opener = by_path[target]
            group_head[target] = replace(head, path=entry.path)
            out.append((group_head[target], head_opener))
            continue
        if entry.path in group_head:
            # The data went out earlier under another name: this path becomes a link.
            out.append((_link_to(entry, group_head[entry.path]), None))
            continue
        if entry.kind == "file":
            group_head.setdefault(entry.path, entry)
        out.append((entry, opener))
    return out


def _link_to(entry: TarEntry, carrier: TarEntry) -> TarEntry:
    """``entry`` as a hard link to ``carrier``, its header saying what the carrier's says."""
    return replace(
        entry,
        kind="hardlink",
        linkname=carrier.path,
        size=0,
        mode=carrier.mode,
        uid=carrier.uid,
        gid=carrier.gid,
        mtime=carrier.mtime,
        xattrs={},
    )


def with_parents(members: Iterable[Member], *, epoch: int) -> list[Member]:
    """``members`` with a folder entry (0755) for every parent none of them names."""
    out = list(members)
    named = {entry.path for entry, _ in out}
    for entry, _ in list(out):
        parent = posixpath.dirname(entry.path)
        while parent and parent not in named:
            named.add(parent)
            out.append((TarEntry(parent, "dir", mode=0o755, mtime=epoch), None))
            parent = posixpath.dirname(parent)
    return out


def write_layer(
    members: Iterable[Member],
    out: Writable,
    *,
    compression: Compression,
    epoch: int,
    presorted: bool = False,
    progress: ProgressFn | None = None,
    headers: LayerHeaders | None = None,
) -> Layer:
    """Write ``members`` as one layer blob into ``out``, normalising every entry.

    Members are sorted unless ``presorted``; ``headers`` is given every entry as written.
    ``out`` must not keep what it is given once its ``write`` returns: the tar writer's
    buffers are filled again once hashed. Raises InvalidArchive when a file's data ends
    before its recorded size (it changed while being read) or a hard link has no target.
    """
    plain = compression == "none"  # the blob is the tar: one digest serves as both
    if isinstance(out, HashingSink) and out.hashing and not out.count:
        digest_sink = out  # it hashes already (the cache's blob writer): the blob is hashed once
    else:
        digest_sink = HashingSink(out, hashing=not plain)
    comp = compressor(compression, digest_sink)
    tar_sink = _TarSink(comp, progress)
    writer = TarWriter(tar_sink, spare=tar_sink.hash.spare)
    try:
        for entry, opener in members if presorted else order_hardlinks(sorted_members(members)):
            entry = normalize(entry, epoch=epoch)
            if headers is not None:
                headers.add(entry)
            if entry.kind == "file" and entry.size and opener is not None:
                with opener() as data:
                    if headers is None:
                        writer.add(entry, data)
                    else:
                        writer.add(entry, headers.data(data))
                        headers.read()
            else:
                writer.add(entry)
        writer.close()
        comp.finish()
    finally:
        tar_sink.hash.close()
        if headers is not None:
            headers.close()
    diff_id = tar_sink.hash.digest
    digest = diff_id if plain else digest_sink.digest
    return Layer.of(
        digest,
        digest_sink.count,
        diff_id,
        compression,
        uncompressed_size=tar_sink.hash.count,
        annotations=comp.annotations(),
    )


def recompress(src: BinaryIO, src_compression: Compression | None, out: Writable, *, compression: Compression) -> Layer:
    """The same tar bytes in another compression (diff_id unchanged), streamed."""
    digest_sink = HashingSink(out)
    comp = compressor(compression, digest_sink)
    tar_hash = HashingSink(comp)
    with decompressed(src, src_compression) as plain:
        while chunk := plain.read(1 << 20):
            tar_hash.write(chunk)
    comp.finish()
    return Layer.of(
        digest_sink.digest,
        digest_sink.count,
        tar_hash.digest,
        compression,
        uncompressed_size=tar_hash.count,
        annotations=comp.annotations(),
    )


def iter_tar(stream: BinaryIO, *, what: str) -> Iterator[tuple[TarEntry, tarfile.TarFile, tarfile.TarInfo]]:
    """Entries of an uncompressed tar *stream*, in archive order, with what reads their data,
    read by the one reader of tars from elsewhere (:mod:`assembler.archive.tarread`).

    Uses tarfile's stream mode, so the data of an entry must be read before moving on.
    Raises UnsafePath for members that climb out of the root, InvalidArchive for damage.
    """
    with reading(stream, what=what) as (tf, entries):
        for entry, info in entries:
            if entry.path:
                yield entry, tf, info
