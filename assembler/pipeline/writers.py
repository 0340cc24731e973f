"""Outputs as writers: one class per output kind, all writing one image.

:func:`writer_for` picks the class of a reference. The writers of one image share a
:class:`Target` (the image, how to read its blobs, and a SIF made once: a ``sif:`` output
and an ``oras://`` push of the same image reuse one file). ``assemble sif`` uses the same
classes for any image. The outputs carry the image's referrers (its SBOM, its
provenance; an untagged ``oci:DIR`` stays one manifest): inside tagged layouts and
oci-archives, registries and SIFs; as files next to docker-archives, untagged
oci-archives and sqsh files. Registry pushes go through
:func:`assembler.transports.write_output` and :func:`assembler.transports.sif_publish.push_sif`,
the registry client's entry points.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from assembler.cache import temp_prefix
from assembler.errors import InputError
from assembler.oci.artifact import Artifact
from assembler.oci.reference import ImageName, Ref
from assembler.transports import Context, Written, check_replaceable, registry_options, write_output
from assembler.transports.common import SourceImage
from assembler.transports.sidecar import check_sidecars, write_sidecars

if TYPE_CHECKING:
    from assembler.transports.sif import SifInfo


@dataclass
class Target:
    """The image the writers write, and what they share: a SIF is made at most once."""

    source: SourceImage
    ctx: Context
    sif_compressor: str = "gzip"
    # The file name of a SIF made for a push alone: the pushed artifact's title names it.
    sif_name: str = "image.sif"
    # Base images in the same registry, whose blobs a push mounts instead of uploading.
    mount_from: Sequence[ImageName] = ()
    sif: SifInfo | None = None
    # SIF writing's byte count (a display shows it as its own bar); else ctx.progress.
    sif_progress: Callable[[int], None] | None = None
    # Artifacts whose subject is the image (its SBOM, its provenance): written into OCI
    # layouts and archives, pushed with the image, put into SIFs as data objects, and
    # written next to docker-archives and sqsh files (transports.sidecar).
    referrers: Sequence[Artifact] = ()
    _tmp: Path | None = field(default=None, repr=False)

    def make_sif(self, path: Path | None = None) -> SifInfo:
        """The SIF of the image: written at ``path``, or (None) the one already made, else
        one in a temporary folder of the cache, removed by :meth:`cleanup`."""
        if path is None and self.sif is not None:
            return self.sif
        if path is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("sif-"), dir=self.ctx.cache.root / "tmp"))
            path = self._tmp / self.sif_name
        from assembler.transports.sif import write_sif  # only SIF outputs need it

        ctx = self.ctx
        self.sif = write_sif(
            self.source,
            path,
            runner=ctx.runner,
            epoch=ctx.epoch,
            compressor=self.sif_compressor,
            progress=self.sif_progress or ctx.progress,
            attached=self.referrers,
        )
        return self.sif

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class Writer(Protocol):
    """Writes the image of a :class:`Target` to one output."""

    @property
    def ref(self) -> Ref:
        """The output."""
        ...

    def check(self, *, force: bool) -> None:
        """Before anything is built: InputError when the output may not be written."""

    def write(self, target: Target) -> list[Written]:
        """Write; what was written (a push may write a referrer too)."""
        ...


@dataclass(frozen=True)
class _FileWriter:
    ref: Ref

    def check(self, *, force: bool) -> None:
        check_replaceable(Path(self.ref.path), self.ref.transport, force=force)

    def write(self, target: Target) -> list[Written]:
        return [write_output(self.ref, target.source.image, target.ctx, blobs=target.source.blobs)]


class LayoutWriter(_FileWriter):
    """``oci:DIR[:TAG]``: an OCI layout (added to when it exists), with the image's referrers.

    An untagged ``oci:DIR`` stays a layout of one manifest, without referrers: skopeo,
    podman and buildah read ``oci:DIR`` only when its index lists one."""

    def write(self, target: Target) -> list[Written]:
        referrers = target.referrers if self.ref.tag else ()
        return [write_output(self.ref, target.source.image, target.ctx, blobs=target.source.blobs, referrers=referrers)]


def _file_of(ref: Ref, target: Target) -> Path:
    """The output file of ``ref``, as write_output places it."""
    path = Path(ref.path).expanduser()
    return path if path.is_absolute() else target.ctx.base_dir / path


def _with_sidecars(written: Written, path: Path, referrers: Sequence[Artifact]) -> list[Written]:
    """``written`` and the referrers written next to ``path`` (stale ones removed)."""
    files = write_sidecars(path, referrers)
    return [written, *(Written(str(f), a.blob.digest) for f, a in zip(files, referrers, strict=True))]


class OciArchiveWriter(_FileWriter):
    """``oci-archive:FILE[:TAG]``: tagged, with the image's referrers inside, as a layout;
    untagged, with them next to it (``FILE.spdx.json``...): skopeo reads an untagged
    archive only when its index lists one manifest."""

    def check(self, *, force: bool) -> None:
        super().check(force=force)
        if not self.ref.tag:
            check_sidecars(Path(self.ref.path), self.ref.transport)

    def write(self, target: Target) -> list[Written]:
        inside = target.referrers if self.ref.tag else ()
        out = write_output(self.ref, target.source.image, target.ctx, blobs=target.source.blobs, referrers=inside)
        return _with_sidecars(out, _file_of(self.ref, target), () if self.ref.tag else target.referrers)


class DockerArchiveWriter(_FileWriter):
    """``docker-archive:FILE[:REF]``, for ``docker load`` (uncompressed layers); the image's
    referrers go next to it (``FILE.spdx.json``, ``FILE.provenance.intoto.json``)."""

    def check(self, *, force: bool) -> None:
        super().check(force=force)
        check_sidecars(Path(self.ref.path), self.ref.transport)

    def write(self, target: Target) -> list[Written]:
        out = write_output(self.ref, target.source.image, target.ctx, blobs=target.source.blobs)
        return _with_sidecars(out, _file_of(self.ref, target), target.referrers)


@dataclass(frozen=True)
class SifWriter:
    """``sif:FILE``: an Apptainer SIF, with the image's referrers as data objects."""

    ref: Ref

    def check(self, *, force: bool) -> None:
        check_replaceable(Path(self.ref.path), "sif", force=force)

    def write(self, target: Target) -> list[Written]:
        return [Written(str(self.ref), target.make_sif(Path(self.ref.path)).digest)]


@dataclass(frozen=True)
class SqshWriter:
    """``sqsh:FILE``: an Enroot/Pyxis image (:mod:`assembler.transports.enroot`).

    Its squashfs is written on its own, not shared with a SIF of the same run: the two
    differ by their files (``/.singularity.d`` against ``/etc/rc``...), so they are
    different squashfs bytes; the layers are only read twice. A squashfs has no place for
    the image's referrers: they go next to it (``FILE.spdx.json``...)."""

    ref: Ref

    def check(self, *, force: bool) -> None:
        check_replaceable(Path(self.ref.path), "sqsh", force=force)
        check_sidecars(Path(self.ref.path), "sqsh")

    def write(self, target: Target) -> list[Written]:
        from assembler.transports.enroot import write_sqsh  # only sqsh outputs need it

        ctx = target.ctx
        info = write_sqsh(
            target.source,
            Path(self.ref.path),
            runner=ctx.runner,
            epoch=ctx.epoch,
            compressor=target.sif_compressor,
            progress=target.sif_progress or ctx.progress,
        )
        return _with_sidecars(Written(str(self.ref), info.digest), _file_of(self.ref, target), target.referrers)


def _push_sif(target: Target, name: ImageName, *, referrer: bool) -> Written:
    from assembler.transports.sif_publish import push_sif  # imports the registry client

    info = target.make_sif()
    image = target.source.image
    pub = push_sif(
        info.path,
        info.digest,
        info.size,
        name,
        options=registry_options(target.ctx),
        subject=image.descriptor if referrer else None,
        progress=target.ctx.upload_progress,
    )
    return Written(pub.ref, pub.digest, pub.uploaded_bytes)


@dataclass(frozen=True)
class OrasWriter:
    """``oras://HOST/REPO:TAG``: the SIF as an OCI artifact, for ``apptainer pull oras://``."""

    ref: Ref

    def check(self, *, force: bool) -> None:
        pass

    def write(self, target: Target) -> list[Written]:
        assert self.ref.name is not None
        return [_push_sif(target, self.ref.name, referrer=False)]


@dataclass(frozen=True)
class SifReferrerWriter:
    """The SIF pushed to ``docker://REPO`` as a referrer of the image (``--attach``)."""

    ref: Ref

    def check(self, *, force: bool) -> None:
        pass

    def write(self, target: Target) -> list[Written]:
        assert self.ref.name is not None
        return [_push_sif(target, self.ref.name, referrer=True)]


@dataclass(frozen=True)
class RegistryWriter:
    """``docker://HOST/REPO[:TAG]``: pushed; with ``attach_sif`` its SIF as a referrer too."""

    ref: Ref
    attach_sif: bool = False

    def check(self, *, force: bool) -> None:
        pass

    def write(self, target: Target) -> list[Written]:
        name = self.ref.name
        assert name is not None
        same = [b for b in target.mount_from if b.registry == name.registry]
        out = [
            write_output(
                self.ref,
                target.source.image,
                target.ctx,
                blobs=target.source.blobs,
                mount_from=same,
                referrers=target.referrers,
            )
        ]
        if self.attach_sif:
            (pushed,) = SifReferrerWriter(self.ref).write(target)
            out.append(replace(pushed, ref=f"{pushed.ref} (referrer of {target.source.image.digest[:19]})"))
        return out


def writer_for(ref: Ref, *, attach_sif: bool = False) -> Writer:
    """The writer of output ``ref``; InputError for a reference that is not an output."""
    kinds: dict[str, type[_FileWriter | SifWriter | SqshWriter | OrasWriter]] = {
        "oci": LayoutWriter,
        "oci-archive": OciArchiveWriter,
        "docker-archive": DockerArchiveWriter,
        "sif": SifWriter,
        "sqsh": SqshWriter,
        "oras": OrasWriter,
    }
    if ref.transport == "docker":
        return RegistryWriter(ref, attach_sif=attach_sif)
    if ref.transport in kinds:
        return kinds[ref.transport](ref)
    raise InputError(f"{ref.transport}: {ref} is a base, not an output")
