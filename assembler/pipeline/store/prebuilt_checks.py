"""``pip:`` and ``url:`` layers taken from a registry step cache, checked against the
manifest's pins before a build uses them (:mod:`assembler.pipeline.layers.prebuilt_layers`).

A layer is a function of its pinned files, so it is checked by making it again from them
here and comparing what its tar holds (diff_ids: the downloaded blob's, recomputed, the
record's and the one made here must all agree):

- a ``url:`` file: its layer holds the file itself, so the file is taken out of it (it must
  be the one regular file there, with the pinned sha256: it is stored as the pinned file,
  as a download would) and the layer made from it;
- an unpacked ``url:`` archive or a ``pip:`` layer: its tar no longer holds the pinned
  archive or wheels, so it is checked only when those are in the local cache already;
  otherwise the entry is taken as it is (``--cache-trust`` vouches for who made it).

A layer that does not come out the same is refused: the step cache warns and the layer is
made here from the pinned files.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path

from assembler.archive.compress import DECOMPRESS_ERRORS, decompressed
from assembler.archive.layer import iter_tar
from assembler.cache import Cache, StepResult
from assembler.errors import AssemblerError, DigestMismatch
from assembler.manifest.schema import model as m
from assembler.manifest.schema.prebuilt import size_bytes
from assembler.oci.layer import Layer

Remake = Callable[[], Layer]  # a layer made again from the pinned files here
Paths = Mapping[str, Path]  # a result's blobs, downloaded: digest -> file
# What a step cache's result is checked with before a build uses it (stepcache.trust.Check).
Check = Callable[[StepResult, Paths], str | None]
_CHUNK = 1 << 20
# What checking a damaged or hostile layer raises: ours, tarfile's, the decompressors'.
_DAMAGED: tuple[type[Exception], ...] = (AssemblerError, tarfile.TarError, ValueError, *DECOMPRESS_ERRORS)


def url_layer(spec: m.UrlLayer, result: StepResult, paths: Paths, *, cache: Cache, remake: Remake) -> str | None:
    """Why the ``url:`` layer ``result`` is not the one ``spec``'s pinned file makes
    (``remake``: from the file in ``cache``), if it is not."""
    what = f"url layer {spec.url} from a step cache"
    try:
        if result.layer is None:
            return "its record holds no layer"
        if not spec.extract:  # the layer carries the file itself: taken out, it must be the pinned one
            blob, limit = paths[result.layer.digest], size_bytes(spec.max_size)
            why = carried_file(blob, sha256=spec.sha256, cache=cache, max_bytes=limit, what=what)
            if why is not None:
                return why
        elif not cache.has_blob("sha256:" + spec.sha256):
            return None  # an unpacked archive, and the archive is not here: nothing to check it against
        return same_layer(result, paths, remake)
    except _DAMAGED as e:
        return f"it cannot be checked ({e})"


def remade(result: StepResult, paths: Paths, remake: Remake, *, if_: bool) -> str | None:
    """:func:`same_layer` when ``if_`` (the pinned files are here), else None (nothing to check against)."""
    if not if_:
        return None
    try:
        return same_layer(result, paths, remake)
    except _DAMAGED as e:
        return f"it cannot be checked ({e})"


def layer_diff_id(path: Path) -> str:
    """The diff_id (sha256 of the uncompressed tar) of the layer blob at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as raw, decompressed(raw) as plain:
        while chunk := plain.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def carried_file(path: Path, *, sha256: str, cache: Cache, max_bytes: int, what: str) -> str | None:
    """Store the one regular file of the layer blob at ``path`` as the pinned file
    ``sha256`` (of at most ``max_bytes``); why not, if it cannot be. Raises what reading a
    damaged layer raises."""
    found = 0
    with open(path, "rb") as raw, decompressed(raw) as plain:
        for entry, tf, info in iter_tar(plain, what=what):
            if entry.kind == "dir":
                continue
            if entry.kind != "file" or found:
                return f"its layer holds more than the one file ({entry.path})"
            if entry.size > max_bytes:
                return f"its file {entry.path} is bigger than the {max_bytes} bytes the layer allows"
            found += 1
            data = tf.extractfile(info)
            assert data is not None
            try:
                with cache.blob_writer(expected="sha256:" + sha256) as w:
                    while chunk := data.read(_CHUNK):
                        w.write(chunk)
            except DigestMismatch as e:
                return f"its file {entry.path} has {e.actual}, not the pinned sha256:{sha256}"
    return None if found else "its layer holds no file"


def same_layer(result: StepResult, paths: Paths, remake: Remake) -> str | None:
    """Why ``result``'s layer (downloaded to ``paths``) is not the one ``remake`` makes from
    the pinned files, if it is not."""
    layer = result.layer
    if layer is None:
        return "its record holds no layer"
    made = remake()
    actual = layer_diff_id(paths[layer.digest])
    if made.diff_id == actual == layer.diff_id:
        return None
    return f"its layer ({actual[:19]}, recorded as {layer.diff_id[:19]}) is not the {made.diff_id[:19]} its pins make"
