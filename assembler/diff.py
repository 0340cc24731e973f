"""Why two images differ: their manifests, configs, layers, and the files in those layers.

:func:`diff_images` compares two images read from any transport, as diffoci does: the
manifest and config field by field, the layers by position (digest and diff_id), and
inside each pair of layers whose diff_ids differ, every entry (added, removed, or which of
kind, mode, owner, size, mtime, link target, xattrs and content changed). Layer tars are
streamed once each; only one record per entry (metadata and a content digest) is kept,
never file data, so memory does not grow with the layers' size.

Images built another way (a Dockerfile's layers against ours) do not pair by position:
``rootfs=True`` compares what a container sees instead, each image's layers merged as
:mod:`assembler.archive.flatten` merges them for a SIF (whiteouts applied), optionally
only under some paths (``/app``: upstream's install folder).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, BinaryIO, Literal

from assembler.archive.compress import DECOMPRESS_ERRORS, decompressed
from assembler.archive.flatten import flatten
from assembler.archive.layer import iter_tar
from assembler.archive.tar import TarEntry, TarWriter
from assembler.errors import InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.transports.common import BlobReader, SourceImage

_CHUNK = 1 << 20
Change = Literal["added", "removed", "changed"]
LayerStatus = Literal["same", "recompressed", "changed", "added", "removed"]


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: ``path`` like ``config.Env[2]``; ``None`` where it is absent."""

    path: str
    a: Any
    b: Any


@dataclass(frozen=True)
class EntryState:
    """What a layer says about one path (no data, only its sha256)."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    linkname: str
    content: str | None  # sha256 of a regular file's data
    xattrs: tuple[tuple[str, str], ...]
    device: tuple[int, int]


@dataclass(frozen=True)
class FileChange:
    path: str
    change: Change
    fields: tuple[FieldChange, ...] = ()  # for "changed": the fields of EntryState that differ


@dataclass(frozen=True)
class LayerDiff:
    """The layers at one position: ``a``/``b`` are None when one image has fewer layers."""

    index: int
    status: LayerStatus
    a: Descriptor | None
    b: Descriptor | None
    a_diff_id: str | None
    b_diff_id: str | None
    files: tuple[FileChange, ...] = ()
    order_differs: bool = False  # same entries, written in another order
    note: str = ""  # why the entries were not compared


@dataclass(frozen=True)
class ImageDiff:
    a_digest: str
    b_digest: str
    manifest: tuple[FieldChange, ...]
    config: tuple[FieldChange, ...]
    layers: tuple[LayerDiff, ...]
    # With rootfs=True: the merged filesystems' differences (under ``paths``, if any);
    # the layers are then listed by status only.
    rootfs: tuple[FileChange, ...] | None = None
    paths: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        return self.a_digest == self.b_digest

    def to_json(self) -> dict[str, Any]:
        def fc(c: FieldChange) -> dict[str, Any]:
            return {"path": c.path, "a": c.a, "b": c.b}

        def fc_file(f: FileChange) -> dict[str, Any]:
            return {"path": f.path, "change": f.change, "fields": [fc(c) for c in f.fields]}

        def desc(d: Descriptor | None) -> dict[str, Any] | None:
            return None if d is None else {"digest": d.digest, "size": d.size, "media_type": d.media_type}

        return {
            "identical": self.identical,
            "a": self.a_digest,
            "b": self.b_digest,
            "manifest": [fc(c) for c in self.manifest],
            "config": [fc(c) for c in self.config],
            "layers": [
                {
                    "index": x.index,
                    "status": x.status,
                    "a": desc(x.a),
                    "b": desc(x.b),
                    "a_diff_id": x.a_diff_id,
                    "b_diff_id": x.b_diff_id,
                    "order_differs": x.order_differs,
                    "note": x.note,
                    "files": [fc_file(f) for f in x.files],
                }
                for x in self.layers
            ],
            **(
                {}
                if self.rootfs is None
                else {"paths": ["/" + p for p in self.paths], "rootfs": [fc_file(f) for f in self.rootfs]}
            ),
        }


# -- JSON documents ----------------------------------------------------------------------


def _flatten(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Leaves of a JSON value as ``(path, value)``: ``a.b[2].c``. Empty containers are leaves."""
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _flatten(value[key], f"{path}.{key}" if path else str(key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from _flatten(item, f"{path}[{i}]")
    else:
        yield path, value


def json_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """The leaves of two JSON documents that differ, in path order."""
    left, right = dict(_flatten(dict(a), "")), dict(_flatten(dict(b), ""))
    paths = sorted(set(left) | set(right))
    return tuple(FieldChange(p, left.get(p), right.get(p)) for p in paths if left.get(p) != right.get(p))


# -- layers ------------------------------------------------------------------------------


def _content(stream: Any) -> str:
    h = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


_UNREADABLE: tuple[type[Exception], ...] = (tarfile.TarError, *DECOMPRESS_ERRORS)


def layer_entries(blobs: BlobReader, desc: Descriptor) -> tuple[dict[str, EntryState], list[str]]:
    """Every entry of a layer (a later entry for the same path wins, as on extraction) and
    the order of paths, read as one stream."""
    entries: dict[str, EntryState] = {}
    order: list[str] = []
    try:
        with blobs.open_blob(desc.digest) as raw, decompressed(raw) as plain:
            _read_entries(plain, desc, entries, order)
    except _UNREADABLE as e:
        raise InvalidImage(f"layer {desc.digest} is not a readable (compressed) tar: {e}") from e
    return entries, order


def _read_entries(plain: BinaryIO, desc: Descriptor, entries: dict[str, EntryState], order: list[str]) -> None:
    for entry, tf, info in iter_tar(plain, what=f"layer {desc.digest}"):
        content = None
        if entry.kind == "file":
            data = tf.extractfile(info)
            content = _content(data) if data is not None else None
        entries[entry.path] = _state(entry, content)
        order.append(entry.path)


def _state(entry: TarEntry, content: str | None) -> EntryState:
    return EntryState(
        kind=entry.kind,
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        size=entry.size,
        mtime=entry.mtime,
        linkname=entry.linkname,
        content=content,
        xattrs=tuple(sorted((k, v.hex()) for k, v in entry.xattrs.items())),
        device=(entry.devmajor, entry.devminor),
    )


class _Recorder(TarWriter):
    """A TarWriter that keeps one EntryState per member (data hashed, never kept)."""

    def __init__(self, keep: Callable[[str], bool]) -> None:
        super().__init__(out=io.BytesIO())
        self.keep = keep
        self.entries: dict[str, EntryState] = {}

    def add(self, entry: TarEntry, data: BinaryIO | None = None) -> None:
        if self.keep(entry.path):
            # flatten passes no data for an empty file
            content = None if entry.kind != "file" else _EMPTY if data is None else _content(data)
            self.entries[entry.path] = _state(entry, content)

    def close(self) -> None:
        pass


_EMPTY = "sha256:" + hashlib.sha256(b"").hexdigest()


def _under(paths: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda path: not paths or any(path == p or path.startswith(p + "/") for p in paths)


def rootfs_entries(source: SourceImage, paths: tuple[str, ...] = ()) -> dict[str, EntryState]:
    """Every entry a container of ``source`` sees (under ``paths``: relative, clean), its
    layers merged bottom first, whiteouts applied; read as one stream per layer."""
    from assembler.transports.hpc.squashfs import layer_sources

    recorder = _Recorder(_under(paths))
    try:
        flatten(layer_sources(source), recorder, epoch=0)
    except _UNREADABLE as e:
        raise InvalidImage(f"{source.name}: a layer is not a readable (compressed) tar: {e}") from e
    return recorder.entries


def entry_changes(a: Mapping[str, EntryState], b: Mapping[str, EntryState]) -> tuple[FileChange, ...]:
    """Added, removed and changed paths between two layers' entries, in path order."""
    out: list[FileChange] = []
    for path in sorted(set(a) | set(b)):
        left, right = a.get(path), b.get(path)
        if left is None:
            out.append(FileChange(path, "added"))
        elif right is None:
            out.append(FileChange(path, "removed"))
        elif left != right:
            changed = tuple(
                FieldChange(f.name, getattr(left, f.name), getattr(right, f.name))
                for f in fields(EntryState)
                if getattr(left, f.name) != getattr(right, f.name)
            )
            out.append(FileChange(path, "changed", changed))
    return tuple(out)


def _layer_status(i: int, a: SourceImage, b: SourceImage) -> LayerDiff:
    """The layers at ``i`` compared by descriptor only (``changed``: entries not read yet)."""
    da = a.image.layers[i] if i < len(a.image.layers) else None
    db = b.image.layers[i] if i < len(b.image.layers) else None
    ia = a.image.diff_ids[i] if i < len(a.image.diff_ids) else None
    ib = b.image.diff_ids[i] if i < len(b.image.diff_ids) else None
    if da is None or db is None:
        return LayerDiff(i, "added" if da is None else "removed", da, db, ia, ib)
    if da.digest == db.digest:
        return LayerDiff(i, "same", da, db, ia, ib)
    if ia is not None and ia == ib:
        return LayerDiff(i, "recompressed", da, db, ia, ib)  # same tar, other compression bytes
    return LayerDiff(i, "changed", da, db, ia, ib)


def _layer_diff(i: int, a: SourceImage, b: SourceImage) -> LayerDiff:
    layer = _layer_status(i, a, b)
    if layer.status != "changed":
        return layer
    da, db, ia, ib = layer.a, layer.b, layer.a_diff_id, layer.b_diff_id
    assert da is not None and db is not None
    if da.media_type not in mt.LAYER_TYPES or db.media_type not in mt.LAYER_TYPES:
        return LayerDiff(i, "changed", da, db, ia, ib, note="not filesystem layers: their contents are not compared")
    entries_a, order_a = layer_entries(a.blobs, da)
    entries_b, order_b = layer_entries(b.blobs, db)
    files = entry_changes(entries_a, entries_b)
    return LayerDiff(i, "changed", da, db, ia, ib, files, order_differs=not files and order_a != order_b)


def _listed(i: int, a: SourceImage, b: SourceImage) -> LayerDiff:
    """The layers at ``i`` by status only (their entries are compared as one filesystem)."""
    layer = _layer_status(i, a, b)
    return layer if layer.status != "changed" else replace(layer, note="compared as one filesystem (rootfs)")


def diff_images(a: SourceImage, b: SourceImage, *, rootfs: bool = False, paths: Sequence[str] = ()) -> ImageDiff:
    """How ``b`` differs from ``a``. Reads only the layers whose digests differ; with
    ``rootfs``, each image's merged filesystem (under ``paths``, like ``/app``) instead."""
    clean = tuple(sorted({p.strip("/") for p in paths} - {""}))
    manifest_a = {k: v for k, v in a.image.manifest.items() if k != "layers"}
    manifest_b = {k: v for k, v in b.image.manifest.items() if k != "layers"}
    count = max(len(a.image.layers), len(b.image.layers))
    return ImageDiff(
        a_digest=a.image.digest,
        b_digest=b.image.digest,
        manifest=json_changes(manifest_a, manifest_b),
        config=json_changes(a.image.config, b.image.config),
        layers=tuple((_listed if rootfs else _layer_diff)(i, a, b) for i in range(count)),
        rootfs=entry_changes(rootfs_entries(a, clean), rootfs_entries(b, clean)) if rootfs else None,
        paths=clean,
    )


def differing(image_diff: ImageDiff) -> list[LayerDiff]:
    """The layers that are not the same."""
    return [x for x in image_diff.layers if x.status != "same"]


# -- text --------------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = "(absent)" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _entry_field(change: FieldChange) -> str:
    if change.path == "mode":
        return f"mode {change.a:04o} -> {change.b:04o}"
    if change.path == "content":
        return f"content {change.a} -> {change.b}"
    return f"{change.path} {_short(change.a)} -> {_short(change.b)}"


def render(image_diff: ImageDiff, *, max_files: int = 50) -> list[str]:
    """The difference as lines of text for a terminal (``max_files`` per layer)."""
    lines = [f"a {image_diff.a_digest}", f"b {image_diff.b_digest}"]
    if image_diff.identical:
        return [*lines, "identical"]
    for title, changes in (("manifest", image_diff.manifest), ("config", image_diff.config)):
        lines.append(f"{title}: {len(changes)} field(s) differ" if changes else f"{title}: same")
        lines += [f"  {c.path}: {_short(c.a)} -> {_short(c.b)}" for c in changes]
    changed = differing(image_diff)
    lines.append(f"layers: {len(changed)} of {len(image_diff.layers)} differ")
    if image_diff.rootfs is not None:
        where = ", ".join("/" + p for p in image_diff.paths) or "/"
        lines.append(f"files (merged filesystems, under {where}): {len(image_diff.rootfs)} differ")
        lines += _file_lines(image_diff.rootfs, max_files, "  ")
    for layer in changed:
        lines.append(f"  layer {layer.index}: {layer.status}")
        for side, desc, diff_id in (("a", layer.a, layer.a_diff_id), ("b", layer.b, layer.b_diff_id)):
            if desc is not None:
                lines.append(f"    {side} digest {desc.digest} diff_id {diff_id}")
        if layer.note:
            lines.append(f"    {layer.note}")
        elif layer.status == "changed" and not layer.files:
            why = "in another order" if layer.order_differs else "with other tar headers"
            lines.append(f"    same entries and contents, written {why}")
        lines += _file_lines(layer.files, max_files, "    ")
    return lines


def _file_lines(files: Sequence[FileChange], max_files: int, indent: str) -> list[str]:
    lines = []
    for f in files[:max_files]:
        mark = {"added": "+", "removed": "-", "changed": "~"}[f.change]
        detail = "; ".join(_entry_field(c) for c in f.fields)
        lines.append(f"{indent}{mark} {f.path}" + (f": {detail}" if detail else ""))
    if len(files) > max_files:
        lines.append(f"{indent}... and {len(files) - max_files} more (--json lists every one)")
    return lines
