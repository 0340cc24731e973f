"""A model's files packed as an OCI artifact with CNCF ModelPack's media types.

A file of :data:`FILE_LAYER_MIN` bytes or more is a layer of its own; smaller files are
bundled, in path order, into layers of at most :data:`BUNDLE_MAX` bytes (as Cog packs
them). Every layer is an uncompressed tar (weights barely compress, and a reader can
take a file straight out of it), written byte for byte the same for the same files:
entries in lexicographic order, each folder a ``0755`` entry, each file ``0644``, owner
0:0, time 0, PAX headers only where a name needs one. A layer's digest is its diff ID, as
ModelPack's config lists it (``modelfs.diffIds``).

The tars are never stored: :class:`WeightsBlobs` reads each from the headers and the
files' blobs in the cache, so a 10 GB model costs the cache its 10 GB once. Their digests
are computed once per set of files and kept in the cache's keys.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

from assembler.cache import Cache, key_of
from assembler.errors import NotFound
from assembler.manifest.text.urls import redacted
from assembler.oci.artifact import FilesArtifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json
from assembler.proc import Runner
from assembler.transports.beside import ANNOTATION_AT, ANNOTATION_NAME, ANNOTATION_SET
from assembler.transports.hpc.squash import Squash
from assembler.weights.files import WeightFile, set_digest

FILE_LAYER_MIN = 64 << 20
BUNDLE_MAX = 256 << 20

ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
WEIGHT_CONFIG_TAR = "application/vnd.cncf.model.weight.config.v1.tar"
ANNOTATION_FILEPATH = "org.cncf.model.filepath"
ANNOTATION_FILE_METADATA = "org.cncf.model.file.metadata+json"
ANNOTATION_UNTESTED = "org.cncf.model.file.mediatype.untested"
ANNOTATION_TITLE = "org.opencontainers.image.title"

# Files that configure a model rather than hold its tensors (a bundle of only these is
# ModelPack's weight.config): tokenizers, generation and model configs, chat templates.
CONFIG_SUFFIXES = (".json", ".txt", ".model", ".tiktoken", ".jinja", ".yaml", ".yml", ".md")
FORMATS = {".safetensors": "safetensors", ".gguf": "gguf", ".onnx": "onnx", ".bin": "pytorch", ".pt": "pytorch"}
_BLOCK = 512


def groups(
    files: Sequence[WeightFile], *, file_layer_min: int = FILE_LAYER_MIN, bundle_max: int = BUNDLE_MAX
) -> list[tuple[WeightFile, ...]]:
    """The files of each layer: each large file alone, small ones bundled in path order;
    the layers in the order of their first paths."""
    out: list[tuple[WeightFile, ...]] = [(f,) for f in files if f.size >= file_layer_min]
    bundle: list[WeightFile] = []
    size = 0
    for f in sorted(f for f in files if f.size < file_layer_min):
        if bundle and size + f.size > bundle_max:
            out.append(tuple(bundle))
            bundle, size = [], 0
        bundle.append(f)
        size += f.size
    if bundle:
        out.append(tuple(bundle))
    return sorted(out, key=lambda g: g[0].path)


def _header(name: str, size: int, *, folder: bool) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o755 if folder else 0o644
    info.size = 0 if folder else size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


Piece = bytes | WeightFile  # header or padding bytes, or a file's content (its blob)


def tar_pieces(files: Sequence[WeightFile]) -> list[Piece]:
    """The tar of ``files`` as pieces: its folders' and files' entries in path order."""
    folders = {str(p) for f in files for p in PurePosixPath(f.path).parents if str(p) != "."}
    entries: list[tuple[str, WeightFile | None]] = [(d, None) for d in folders] + [(f.path, f) for f in files]
    pieces: list[Piece] = []
    for name, file in sorted(entries, key=lambda e: e[0]):
        if file is None:
            pieces.append(_header(name + "/", 0, folder=True))
            continue
        pieces += [_header(name, file.size, folder=False), file]
        if pad := -file.size % _BLOCK:
            pieces.append(bytes(pad))
    pieces.append(bytes(2 * _BLOCK))
    return pieces


class _Concat(io.RawIOBase):
    """The pieces of a tar read as one stream, each file's blob from the cache (verified as
    it is read, unless ``verified`` is False: a hash of the whole stream checks it anyway)."""

    def __init__(self, pieces: Sequence[Piece], cache: Cache, *, verified: bool = True) -> None:
        self._pieces = iter(pieces)
        self._cache = cache
        self._verified = verified
        self._current: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while True:
            if self._current is None:
                piece = next(self._pieces, None)
                if piece is None:
                    return 0
                self._current = io.BytesIO(piece) if isinstance(piece, bytes) else self._open(piece)
            data = self._current.read(len(buffer))
            if data:
                buffer[: len(data)] = data
                return len(data)
            self._current.close()
            self._current = None

    def _open(self, file: WeightFile) -> BinaryIO:
        if self._verified:
            return self._cache.open_blob(file.digest)
        return open(self._cache.blob_path(file.digest), "rb")

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
        super().close()


@dataclass(frozen=True)
class Layer:
    """One layer: its descriptor and the files it holds."""

    descriptor: Descriptor
    files: tuple[WeightFile, ...]

    @property
    def pieces(self) -> list[Piece]:
        return tar_pieces(self.files)


def _layer_key(files: Sequence[WeightFile]) -> str:
    return key_of({"weights-layer": 1, "files": [f.to_json() for f in files]})


class LayerHasher:
    """The digest of the layer a large file is alone in, hashed as the file is read the
    first time (:mod:`.sources` copying it into the cache): :func:`pack` then finds it kept
    and reads the file no more. None for a file below :data:`FILE_LAYER_MIN` (bundled)."""

    def __init__(self, path: str, size: int) -> None:
        pieces = tar_pieces([WeightFile(path, size, "0" * 64)])
        at = next(i for i, p in enumerate(pieces) if isinstance(p, WeightFile))
        before = b"".join(p for p in pieces[:at] if isinstance(p, bytes))
        self._after = b"".join(p for p in pieces[at + 1 :] if isinstance(p, bytes))
        self._sha = hashlib.sha256(before)
        self._path, self._size = path, size
        self._total = len(before) + size + len(self._after)

    @classmethod
    def for_file(cls, path: str, size: int) -> LayerHasher | None:
        return cls(path, size) if size >= FILE_LAYER_MIN else None

    def update(self, chunk: bytes) -> None:
        self._sha.update(chunk)

    def keep(self, cache: Cache, sha256: str) -> None:
        """Keep the layer's digest for the file, now that its own ``sha256`` is known."""
        self._sha.update(self._after)
        file = WeightFile(self._path, self._size, sha256)
        cache.put_key(_layer_key([file]), {"digest": "sha256:" + self._sha.hexdigest(), "size": self._total})


def _layer_digest(files: Sequence[WeightFile], cache: Cache) -> tuple[str, int]:
    """The digest and size of the tar of ``files`` (computed once, then kept)."""
    key = _layer_key(files)
    known = cache.get_key(key)
    if known is not None and isinstance(known.get("digest"), str) and isinstance(known.get("size"), int):
        return known["digest"], known["size"]
    sha, size = hashlib.sha256(), 0
    # Read once, unverified: the files were hashed as they came in; what this hash says is
    # checked again wherever the layer is read (verified) or sent (the registry's digest).
    with io.BufferedReader(_Concat(tar_pieces(files), cache, verified=False), 1 << 20) as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            size += len(chunk)
    digest = "sha256:" + sha.hexdigest()
    cache.put_key(key, {"digest": digest, "size": size})
    return digest, size


def _media_type(files: Sequence[WeightFile]) -> str:
    if all(f.path.endswith(CONFIG_SUFFIXES) for f in files):
        return WEIGHT_CONFIG_TAR
    return WEIGHT_TAR


def _annotations(files: Sequence[WeightFile]) -> dict[str, str]:
    if len(files) > 1:  # a bundle: its type said by suffix, not checked further
        return {ANNOTATION_UNTESTED: "true"}
    (f,) = files
    meta = {"name": f.path, "mode": 0o644, "uid": 0, "gid": 0, "size": f.size, "mtime": "1970-01-01T00:00:00Z"}
    return {
        ANNOTATION_FILEPATH: f.path,
        ANNOTATION_FILE_METADATA: json.dumps({**meta, "typeflag": ord(tarfile.REGTYPE)}, sort_keys=True),
    }


@dataclass(frozen=True)
class Packed:
    """A model packed: its layers, config, and a reader of its blobs (:class:`WeightsBlobs`)."""

    name: str
    at: str
    files: tuple[WeightFile, ...]
    layers: tuple[Layer, ...]
    config_bytes: bytes
    source: str
    revision: str | None = None
    cache: Cache | None = field(default=None, repr=False, compare=False)

    @property
    def set_digest(self) -> str:
        return set_digest(self.files)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def artifact(self, subject: Descriptor | None) -> FilesArtifact:
        """Its manifest, referring to ``subject`` (the image it goes with)."""
        return FilesArtifact(
            ARTIFACT_TYPE,
            tuple(layer.descriptor for layer in self.layers),
            {
                ANNOTATION_TITLE: self.name,
                ANNOTATION_NAME: self.name,
                ANNOTATION_AT: self.at,
                ANNOTATION_SET: self.set_digest,
            },
            config_bytes=self.config_bytes,
            config_type=CONFIG_TYPE,
            subject=subject,
        )

    def blobs(self) -> WeightsBlobs:
        assert self.cache is not None
        return WeightsBlobs({layer.descriptor.digest: layer for layer in self.layers}, self.cache)

    def write_squashfs(self, out: Path, *, runner: Runner, squash: Squash) -> None:
        """The files as the squashfs ``out``, beside a SIF (``apptainer --bind OUT:AT:image-src=/``):
        every file 0644 under 0755 folders, owned by 0:0, time 0 (the same files, the same bytes);
        compressed as ``squash`` says, in 128 KiB blocks whatever the image's."""
        from assembler.transports.hpc.squash import BLOCK_SIZE
        from assembler.transports.hpc.squashfs import replacing, tar2sqfs_argv  # tar2sqfs: only for a SIF

        assert self.cache is not None
        with replacing(out) as tmp:
            argv = tar2sqfs_argv(tmp, replace(squash, block_size=BLOCK_SIZE), jobs=1, epoch=0)
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
            with runner.popen(argv, env={"SOURCE_DATE_EPOCH": "0"}, **pipes) as proc:
                assert proc.stdin is not None and proc.stderr is not None
                with io.BufferedReader(_Concat(tar_pieces(self.files), self.cache), 1 << 20) as tar:
                    try:
                        shutil.copyfileobj(tar, proc.stdin, 1 << 20)
                        proc.stdin.close()
                    except BrokenPipeError:
                        pass  # tar2sqfs stopped: its own message says why
                err = proc.stderr.read()
                proc.wait()
                Runner.finish(proc, argv, err)


def pack(
    name: str,
    at: str,
    files: Sequence[WeightFile],
    *,
    source: str,
    revision: str | None,
    cache: Cache,
    file_layer_min: int = FILE_LAYER_MIN,
    bundle_max: int = BUNDLE_MAX,
) -> Packed:
    """Pack ``files`` (all in ``cache``'s store) as model ``name``'s layers and config.

    ``source`` is named in the config only when it is a URL (``hf://`` or https), never a
    host path: the same files give the same artifact on every machine; and never with its
    credentials or a presigned query string (:func:`redacted`): the config is pushed."""
    source = redacted(source)
    layers = []
    for group in groups(files, file_layer_min=file_layer_min, bundle_max=bundle_max):
        digest, size = _layer_digest(group, cache)
        desc = Descriptor(_media_type(group), digest, size, _annotations(group))
        layers.append(Layer(desc, group))
    descriptor: dict[str, object] = {"name": name}
    if "://" in source:
        descriptor["sourceURL"] = source.split("@", 1)[0] if source.startswith("hf://") else source
    if revision is not None:
        descriptor["revision"] = revision
    formats = sorted({FORMATS[s] for f in files if (s := PurePosixPath(f.path).suffix) in FORMATS})
    config = {
        "descriptor": descriptor,
        "config": {"format": formats[0]} if len(formats) == 1 else {},
        "modelfs": {"type": "layers", "diffIds": [layer.descriptor.digest for layer in layers]},
    }
    return Packed(name, at, tuple(sorted(files)), tuple(layers), canonical_json(config), source, revision, cache)


class WeightsBlobs:
    """The layers of packed models as a BlobReader: each tar read from its pieces."""

    def __init__(self, layers: dict[str, Layer], cache: Cache) -> None:
        self._layers = layers
        self._cache = cache

    def blob_file(self, digest: str) -> None:
        return None  # never a file: read through open_blob

    def open_blob(self, digest: str) -> BinaryIO:
        layer = self._layers.get(digest)
        if layer is None:
            raise NotFound(f"blob {digest} is no layer of the weights")
        return cast(BinaryIO, io.BufferedReader(_Concat(layer.pieces, self._cache), 1 << 20))
