"""Why two images differ: their manifests, configs, layers, and the files in those layers.

:func:`diff_images` compares two images read from any transport, as diffoci does: the
manifest and config field by field, the layers by position (digest and diff_id), and
inside each pair of layers whose diff_ids differ, every entry (added, removed, or which of
kind, mode, owner, size, mtime, link target, xattrs and content changed). Layer tars are
streamed once each; only one record per entry (metadata and a content digest) is kept,
never file data, so memory does not grow with the layers' size.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, BinaryIO, Literal

from assembler.archive.compress import DECOMPRESS_ERRORS, decompressed
from assembler.archive.layer import iter_tar
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

    @property
    def identical(self) -> bool:
        return self.a_digest == self.b_digest

    def to_json(self) -> dict[str, Any]:
        def fc(c: FieldChange) -> dict[str, Any]:
            return {"path": c.path, "a": c.a, "b": c.b}

        def desc(d: Descriptor | None) -> dict[str, Any] | None:
            return None if d is None else {"digest": d.digest, "size": d.size, "media_type": d.media_type}

        return {
            "identical": self.identical,
            "a": self.a_digest,
            "b": self.b_digest,
            "manifest": [fc(c) for c in self.manifest],
            "config": [fc(c) for c in self.config],
            "layers": [
                {"index": x.index, "status": x.status, "a": desc(x.a), "b": desc(x.b), "a_diff_id": x.a_diff_id,
                 "b_diff_id": x.b_diff_id, "order_differs": x.order_differs, "note": x.note,
                 "files": [{"path": f.path, "change": f.change, "fields": [fc(c) for c in f.fields]} for f in x.files]}
                for x in self.layers
            ],
        }  # fmt: skip


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
        entries[entry.path] = EntryState(
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
        order.append(entry.path)


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


def _layer_diff(i: int, a: SourceImage, b: SourceImage) -> LayerDiff:
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
    if da.media_type not in mt.LAYER_TYPES or db.media_type not in mt.LAYER_TYPES:
        return LayerDiff(i, "changed", da, db, ia, ib, note="not filesystem layers: their contents are not compared")
    entries_a, order_a = layer_entries(a.blobs, da)
    entries_b, order_b = layer_entries(b.blobs, db)
    files = entry_changes(entries_a, entries_b)
    return LayerDiff(i, "changed", da, db, ia, ib, files, order_differs=not files and order_a != order_b)


def diff_images(a: SourceImage, b: SourceImage) -> ImageDiff:
    """How ``b`` differs from ``a``. Reads only the layers whose digests differ."""
    manifest_a = {k: v for k, v in a.image.manifest.items() if k != "layers"}
    manifest_b = {k: v for k, v in b.image.manifest.items() if k != "layers"}
    count = max(len(a.image.layers), len(b.image.layers))
    return ImageDiff(
        a_digest=a.image.digest,
        b_digest=b.image.digest,
        manifest=json_changes(manifest_a, manifest_b),
        config=json_changes(a.image.config, b.image.config),
        layers=tuple(_layer_diff(i, a, b) for i in range(count)),
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
        for f in layer.files[:max_files]:
            mark = {"added": "+", "removed": "-", "changed": "~"}[f.change]
            detail = "; ".join(_entry_field(c) for c in f.fields)
            lines.append(f"    {mark} {f.path}" + (f": {detail}" if detail else ""))
        if len(layer.files) > max_files:
            lines.append(f"    ... and {len(layer.files) - max_files} more (--json lists every one)")
    return lines
