"""The manifest's ``image:`` section made concrete: copy layers, runtime config, annotations.

GPU metadata: the CUDA/ROCm versions and architecture lists a build used are recorded as
labels (``skopeo inspect`` shows them) and as manifest annotations, under
``org.opencontainers.image.*`` and the project's ``io.assemble.*`` namespace.
"""

from __future__ import annotations

import logging
import re
import shutil
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO, cast

from assembler.archive.compress import Compression, decompressed
from assembler.archive.layer import HashingSink, LayerBlob, Member, Opener, iter_tar, recompress, write_layer
from assembler.archive.tar import TarEntry, entry_from_tarinfo
from assembler.archive.tree import iter_host_members
from assembler.archive.view import LayerIndex, TreeView, anchors, fit_members
from assembler.cache import key_of
from assembler.errors import InvalidImage
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.descriptor import Descriptor
from assembler.oci.image import Image
from assembler.oci.reference import ImageName, Ref
from assembler.spec import model as m
from assembler.spec.load import Loaded
from assembler.transports import Context

log = logging.getLogger(__name__)
NAMESPACE = "io.assemble"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# Build env that decides which GPUs an image runs on, by the label it is reported under.
_CUDA_ARCH_VARS = (
    "TORCH_CUDA_ARCH_LIST",
    "CMAKE_CUDA_ARCHITECTURES",
    "CUDA_DOCKER_ARCH",
    "CUDA_ARCHITECTURES",
    "CUDA_ARCHS",
)
_ROCM_ARCH_VARS = ("PYTORCH_ROCM_ARCH", "AMDGPU_TARGETS", "GPU_TARGETS", "GPU_ARCHS", "HIP_ARCHITECTURES")
_FLAG_VARS = (
    "GGML_NATIVE",
    "GGML_CUDA",
    "GGML_HIP",
    "DS_BUILD_OPS",
    "MAX_JOBS",
    "NVCC_THREADS",
    "USE_CUDA",
    "USE_ROCM",
)
_VERSION_PARAMS = {
    "cuda_version": "gpu.cuda.version",
    "rocm_version": "gpu.rocm.version",
    "torch_version": "torch.version",
    "python_version": "python.version",
}


def absolute_ref(ref: Ref, base_dir: Path) -> Ref:
    """``ref`` with a relative path made absolute against ``base_dir``."""
    if ref.path and not Path(ref.path).is_absolute():
        return replace(ref, path=str((base_dir / ref.path).resolve()))
    return ref


def _member_opener(tf: tarfile.TarFile, info: tarfile.TarInfo) -> Opener:
    def opener() -> AbstractContextManager[BinaryIO]:
        data = tf.extractfile(info)
        assert data is not None
        return cast(AbstractContextManager[BinaryIO], data)

    return opener


def _anchors_of(memo: Mapping[str, Any]) -> list[str]:
    found = memo["anchors"]
    if not isinstance(found, list):
        raise TypeError(f"anchors is a {type(found).__name__}, not a list")
    return [str(a) for a in found]


def _owner(owner: str | None) -> tuple[int, int]:
    if not owner:
        return 0, 0
    uid, _, gid = owner.partition(":")
    return int(uid), int(gid or uid)


class ImageSetup:
    """Builds the layers that need no container (``copy``) and fits layers onto the
    image below (:mod:`assembler.archive.view`)."""

    def __init__(self, loaded: Loaded, ctx: Context, *, lookup_only: bool = False) -> None:
        self.loaded = loaded
        self.ctx = ctx
        # A plan reads layers (their headers, cached) but writes none: a layer that would
        # have to be written is None, "not known until built". A build never gets None.
        self.lookup_only = lookup_only

    def _cached_blob(self, key: str) -> LayerBlob | None:
        return self.ctx.cache.layer(key)

    # -- compression -------------------------------------------------------------------

    def convert(self, blob: LayerBlob) -> LayerBlob | None:
        """``blob`` in gzip when the image wants gzip and it is zstd (old clients cannot read
        zstd), converted once and cached; otherwise ``blob`` itself. Same diff_id."""
        if self.ctx.compression != "gzip" or blob.compression != "zstd":
            return blob
        key = "gzip-of-" + blob.digest.split(":", 1)[1]
        done = self._cached_blob(key)
        if done is not None or self.lookup_only:
            return done
        with self.ctx.cache.open_blob(blob.digest) as raw, self.ctx.cache.blob_writer() as w:
            done = recompress(raw, "zstd", w, compression="gzip")
        if done.diff_id != blob.diff_id:
            raise InvalidImage(f"layer {blob.digest} does not decompress to its diff_id {blob.diff_id}")
        self.ctx.cache.put_layer(key, done)
        return done

    def convert_image(self, image: Image) -> tuple[Image, list[LayerBlob | None]]:
        """``image`` with every zstd layer in gzip when the image wants gzip, and its layers
        (None: a plan does not know the converted layer yet; the image keeps the original)."""
        layers = [self.convert(LayerBlob(d.digest, d.size, i, 0, cast(Compression, mt.compression_of(d.media_type))))
                  for d, i in zip(image.layers, image.diff_ids, strict=True)]  # fmt: skip
        known = [b for b in layers if b is not None]
        if len(known) < len(layers) or all(b.digest == d.digest for b, d in zip(known, image.layers, strict=True)):
            return image, layers
        converted = mutate.with_layers(image, [b.descriptor() for b in known])
        if not self.lookup_only:
            self.ctx.cache.put_image(converted)
        return converted, layers

    # -- the image below a layer ---------------------------------------------------------

    def _headers(self, desc: Descriptor) -> Iterator[TarEntry]:
        with self.ctx.cache.open_blob(desc.digest) as raw:
            comp = cast(Compression, mt.compression_of(desc.media_type))
            with decompressed(raw, comp) as plain:
                for entry, _, _ in iter_tar(plain, what=f"layer {desc.digest}"):
                    yield entry

    def index(self, desc: Descriptor, diff_id: str) -> LayerIndex:
        """A layer's folders and symlinks (read once from its headers, then cached)."""
        key = "treeindex-" + diff_id.split(":", 1)[1]
        hit = self.ctx.cache.memo_as(key, LayerIndex.from_json)
        if hit is not None:
            return hit
        index = LayerIndex.of(self._headers(desc))
        self.ctx.cache.put_memo(key, index.to_json())
        return index

    def view(self, image: Image) -> TreeView:
        return TreeView.of([self.index(d, i) for d, i in zip(image.layers, image.diff_ids, strict=True)])

    def fit(self, blob: LayerBlob, view: TreeView) -> LayerBlob | None:
        """``blob`` as it must be written onto the image ``view`` describes: through its
        symlinks, its parents named as that image has them. Usually the same blob."""
        key = "anchors-" + blob.digest.split(":", 1)[1]
        found = self.ctx.cache.memo_as(key, _anchors_of)
        if found is None:
            found = sorted(anchors(e.path for e in self._headers(blob.descriptor())))
            self.ctx.cache.put_memo(key, {"anchors": found})
        if not view.needs_fitting(found):
            return blob
        # "format" 2: new parents are named with the epoch's mtime (they had 0 before).
        fit_key = key_of({"fit": blob.digest, "format": 2, "view": view.relevant(found), "epoch": self.ctx.epoch,
                          "compression": self.ctx.compression})  # fmt: skip
        fitted = self._cached_blob(fit_key)
        if fitted is not None or self.lookup_only:
            return fitted
        log.info("layer %s lands under a symlink, a non-default or a missing folder: rewriting it", blob.digest)
        with self.ctx.cache.workdir("fit-") as work:
            plain = work / "layer.tar"
            with (
                self.ctx.cache.open_blob(blob.digest) as raw,
                decompressed(raw, blob.compression) as data,
                open(plain, "wb") as out,
            ):
                shutil.copyfileobj(data, out, 1 << 20)
            with tarfile.open(plain, mode="r:") as tf:
                members: list[Member] = []
                for info in tf.getmembers():
                    entry = entry_from_tarinfo(info, what=f"layer {blob.digest}")
                    if entry is None or not entry.path:
                        continue
                    members.append((entry, _member_opener(tf, info) if entry.kind == "file" else None))
                fitted_members = fit_members(members, view, epoch=self.ctx.epoch)
                with self.ctx.cache.blob_writer() as w:
                    fitted = write_layer(fitted_members, w, compression=self.ctx.compression, epoch=self.ctx.epoch)
        self.ctx.cache.put_layer(fit_key, fitted)
        return fitted

    def copy_layer(self, spec: m.CopySpec, path: tuple[str | int, ...]) -> LayerBlob | None:
        """A layer of host files; a ManifestError (file:line) when they cannot be read.

        A plan hashes the files (writing nothing) and finds the layer a build made of the
        same content; a build writes it and records it under that content."""
        src = self.loaded.folder / spec.from_
        uid, gid = _owner(spec.owner)
        try:
            members = iter_host_members(
                src, spec.to, mode=spec.mode, uid=uid, gid=gid, git_modes=True, mtime=self.ctx.epoch
            )
            if self.lookup_only:
                diff_id = write_layer(members, HashingSink(None), compression="none", epoch=self.ctx.epoch,
                                      presorted=True).diff_id  # fmt: skip
                return self._cached_blob(self._copy_key(diff_id))
            with self.ctx.cache.blob_writer() as w:
                blob = write_layer(members, w, compression=self.ctx.compression, epoch=self.ctx.epoch,
                                   presorted=True, progress=self.ctx.progress)  # fmt: skip
        except FileNotFoundError as e:
            raise self.loaded.error((*path, "copy", "from"), f"path does not exist: {e.filename}") from None
        except PermissionError as e:
            raise self.loaded.error((*path, "copy", "from"), f"cannot read {e.filename}: permission denied") from None
        self.ctx.cache.put_layer(self._copy_key(blob.diff_id), blob)
        return blob

    def _copy_key(self, diff_id: str) -> str:
        return "copy-" + key_of({"diff_id": diff_id, "compression": self.ctx.compression})


def expand_env(value: str, env: Mapping[str, str], *, keep_unknown: bool = False) -> str:
    """Dockerfile ``ENV`` expansion: ``$VAR`` and ``${VAR}`` from the environment so far
    (unknown ones are empty, as in Docker; ``keep_unknown`` leaves them as written)."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env[name] if name in env else (match.group(0) if keep_unknown else "")

    return _VAR.sub(repl, value)


def config_changes(
    spec: m.ConfigSpec,
    base_env: Sequence[str],
    labels: Mapping[str, str] | None = None,
    *,
    keep_unknown: bool = False,
) -> mutate.ConfigChanges:
    """The runtime config the manifest asks for, env expanded against the base's env."""
    env: dict[str, str] = dict(item.partition("=")[::2] for item in base_env)
    new_env: dict[str, str] = {}
    for name, value in spec.env.items():
        expanded = expand_env(value, env, keep_unknown=keep_unknown)
        env[name] = expanded
        new_env[name] = expanded
    health: dict[str, Any] | None = None
    if spec.healthcheck is not None:
        h = spec.healthcheck
        health = {"Test": list(h.test)}
        for key, val in (
            ("Interval", h.interval),
            ("Timeout", h.timeout),
            ("StartPeriod", h.start_period),
            ("StartInterval", h.start_interval),
            ("Retries", h.retries),
        ):
            if val is not None:
                health[key] = val
    return mutate.ConfigChanges(
        env=new_env,
        entrypoint=spec.entrypoint,
        cmd=spec.cmd,
        workdir=spec.workdir,
        user=spec.user,
        exposed_ports=spec.exposed_ports,
        volumes=spec.volumes,
        labels={**(labels or {}), **spec.labels},
        healthcheck=health,
        stop_signal=spec.stop_signal,
    )


def default_annotations(base: Image, base_name: ImageName | None, title: str, epoch: int) -> dict[str, str]:
    out = {mt.ANNOTATION_CREATED: mutate.timestamp(epoch), mt.ANNOTATION_TITLE: title}
    if base.layers:
        out[mt.ANNOTATION_BASE_DIGEST] = base.digest
        if base_name is not None:
            out[mt.ANNOTATION_BASE_NAME] = str(base_name)
    return out


def _archs(value: str) -> list[str]:
    return [a for a in re.split(r"[;,\s]+", value.strip()) if a]


def gpu_metadata(loaded: Loaded, steps: Sequence[m.CompileStep]) -> dict[str, str]:
    """What hardware the image's compiled code targets and how it was built.

    Arch lists are the union over the steps that made the image's artifacts; versions
    come from the manifest's params (``cuda_version``, ``rocm_version``, ...).
    """
    out: dict[str, str] = {}
    cuda: list[str] = []
    rocm: list[str] = []
    for step in steps:
        for var in _CUDA_ARCH_VARS:
            if var in step.env:
                cuda += [a for a in _archs(step.env[var]) if a not in cuda]
        for var in _ROCM_ARCH_VARS:
            if var in step.env:
                rocm += [a for a in _archs(step.env[var]) if a not in rocm]
        flags = {var: step.env[var] for var in _FLAG_VARS if var in step.env}
        if flags:
            out[f"{NAMESPACE}.build.{step.name}"] = " ".join(f"{k}={v}" for k, v in sorted(flags.items()))
    if cuda:
        out[f"{NAMESPACE}.gpu.cuda.archs"] = ";".join(cuda)
    if rocm:
        out[f"{NAMESPACE}.gpu.rocm.archs"] = ";".join(rocm)
    for param, label in _VERSION_PARAMS.items():
        if loaded.params.get(param):  # an empty param means "not this stack" (cuda_version on ROCm)
            out[f"{NAMESPACE}.{label}"] = loaded.params[param]
    if loaded.target:
        out[f"{NAMESPACE}.target"] = loaded.target
    if out:
        out[f"{NAMESPACE}.manifest"] = loaded.manifest.name
    return out
