"""Outputs as writers: one class per transport, each writing through that transport's
own module (``layout``, ``archive``, ``sif``, ``enroot``, ``remote``), as
go-containerregistry's ``layout``, ``tarball`` and ``remote`` each read and write.

:data:`WRITERS` maps a reference's transport to its writer class: the one place writing
dispatches on the transport. A writer writes a :class:`Target`: one image; the images of
several platforms as one index (``oci:``, ``docker://``); or a step's artifacts as an OCI
artifact (``--artifact``: ``oci:``, ``docker://``). The writers of one target share it
(a SIF made once: a ``sif:`` output and an ``oras://`` push of the same image reuse one
file). ``assemble sif`` uses the same classes for any image. The outputs carry the
image's referrers (its SBOM, its provenance; an untagged ``oci:DIR`` stays one manifest):
inside tagged layouts and oci-archives, registries and SIFs; as files next to
docker-archives, untagged oci-archives and sqsh files (only where those names are free or
ours: :mod:`assembler.transports.sidecar`). An output path that is a symlink is refused,
or with ``--force`` replaced as a link, never written through. With ``--sign``
(``Target.signer``) the ``docker://`` and tagged ``oci:`` writers sign what they wrote and
attest its referrers, in cosign's format (:mod:`assembler.transports.signatures`).
Registry pushes go through
:func:`assembler.transports.remote.push` and
:func:`assembler.transports.sif_publish.push_sif`, the registry client's entry points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from assembler.cache import Cache
from assembler.errors import InputError
from assembler.oci.artifact import Artifact, FilesArtifact
from assembler.oci.image import Image
from assembler.oci.reference import ImageName, Ref
from assembler.pipeline.target import Target
from assembler.sbom import made_by_assemble
from assembler.transports import Written, archive, check_replaceable, index, layout, registry_options
from assembler.transports.sidecar import check_sidecars, write_sidecars

if TYPE_CHECKING:
    from assembler.sign import Signed

__all__ = ["WRITERS", "Target", "Writer", "writer_for"]


@dataclass(frozen=True)
class Writer:
    """Writes a :class:`Target` to the output ``ref``: an image, else (where the output can
    hold one, else InputError) an index or an OCI artifact of files."""

    ref: Ref
    # Whether the output can hold an OCI artifact of files (--artifact), not only images.
    holds_artifact: ClassVar[bool] = False
    # Whether it can hold the images of several platforms as one index.
    holds_index: ClassVar[bool] = False

    @property
    def image_name(self) -> str | None:
        """Where the image can be found again by name after it is written (a registry's
        reference); None for a file or folder."""
        return None

    def check(self, *, force: bool, sbom: bool = True) -> None:
        """Before anything is built: InputError when the output (``sbom``: its SBOM files too) may not be written."""

    @property
    def signs(self) -> bool:
        """Whether ``--sign`` signs what it writes (cosign's signatures beside it)."""
        return False

    def write(self, target: Target) -> list[Written]:
        """Write; what was written (a push may write a referrer too), signed with
        ``target.signer`` where the output can hold signatures."""
        if target.artifact is not None:
            out = self.write_artifact(target.artifact, target)
        elif target.platforms:
            out = self.write_index(target)
        else:
            out = self.write_image(target)
        if target.signer is not None and self.signs:
            from assembler.sign import sign_manifest  # cryptography, only when signing

            signer, name = target.signer, self.identity(target)
            signed = [sign_manifest(signer, d, name, arts) for d, arts in _signed_subjects(target, out[0].digest)]
            out[0] = replace(out[0], signatures=tuple(self.write_signatures(signed, target)))
        return out

    def identity(self, target: Target) -> str:
        """The name a signature gives what this output holds (``HOST/REPO``)."""
        raise NotImplementedError

    def write_signatures(self, signed: Sequence[Signed], target: Target) -> list[str]:
        """Write ``signed`` beside what was written; the digests of the manifests written."""
        raise NotImplementedError

    def write_image(self, target: Target) -> list[Written]:
        raise NotImplementedError

    def write_index(self, target: Target) -> list[Written]:
        raise InputError(f"{self.ref}: images of several platforms under one name go to oci: or docker:// outputs only")

    def write_artifact(self, artifact: FilesArtifact, target: Target) -> list[Written]:
        raise InputError(
            f"{self.ref}: artifacts are written to oci:DIR[:TAG] or docker://REF (or as files: artifact:DIR:STEP)"
        )


def _signed_subjects(target: Target, digest: str) -> list[tuple[str, Sequence[Artifact]]]:
    """What ``--sign`` signs of ``target`` written as ``digest``, with the referrers it
    attests: the image and its referrers; an index, then each platform's image and its
    referrers; an artifact of files."""
    if target.artifact is None and not target.platforms:
        return [(digest, target.referrers)]
    images = [image.digest for image in target.platforms]
    return [(digest, ()), *zip(images, target.per_platform(), strict=True)]


def _file_of(ref: Ref, target: Target) -> Path:
    """The output file or folder of ``ref`` (a relative path: against the context's folder)."""
    path = Path(ref.path).expanduser()
    return path if path.is_absolute() else target.ctx.base_dir / path


def _check_sidecars(ref: Ref, sbom: bool) -> None:
    if sbom:
        check_sidecars(Path(ref.path), ref.transport, ours=made_by_assemble)


def _with_sidecars(written: Written, ref: Ref, target: Target, referrers: Sequence[Artifact]) -> list[Written]:
    """``written`` and the referrers written next to its file (stale ones of ours removed)."""
    files = write_sidecars(_file_of(ref, target), ref.transport, referrers, ours=made_by_assemble)
    return [written, *(Written(str(f), a.blob.digest) for f, a in zip(files, referrers, strict=True))]


def _digests(*referrers: Sequence[Artifact]) -> tuple[str, ...]:
    return tuple(a.digest for arts in referrers for a in arts)


class LayoutWriter(Writer):
    """``oci:DIR[:TAG]``: an OCI layout (added to when it exists), with the image's referrers.

    An untagged ``oci:DIR`` stays a layout of one manifest, without referrers: skopeo,
    podman and buildah read ``oci:DIR`` only when its index lists one."""

    holds_artifact = True
    holds_index = True

    @property
    def signs(self) -> bool:
        return bool(self.ref.tag)  # an untagged layout holds one manifest

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "oci", force=force)

    def identity(self, target: Target) -> str:
        from assembler.transports import signatures  # cosign's format: only when signing

        return signatures.layout_identity(_file_of(self.ref, target))

    def write_signatures(self, signed: Sequence[Signed], target: Target) -> list[str]:
        from assembler.transports import signatures  # cosign's format: only when signing

        return signatures.write_layout(_file_of(self.ref, target), signed)

    def write_image(self, target: Target) -> list[Written]:
        image = target.source.image
        referrers = target.referrers if self.ref.tag else ()
        layout.write(_file_of(self.ref, target), image, tag=self.ref.tag, blobs=target.blobs, referrers=referrers)
        return [Written(str(self.ref), image.digest, referrers=_digests(referrers))]

    def write_index(self, target: Target) -> list[Written]:
        per_platform = target.per_platform()
        digest = index.write_layout(
            _file_of(self.ref, target), self.ref.tag, target.platforms, blobs=target.blobs, referrers=per_platform
        )
        return [Written(str(self.ref), digest, referrers=_digests(*per_platform))]

    def write_artifact(self, artifact: FilesArtifact, target: Target) -> list[Written]:
        entry = layout.write_artifact(_file_of(self.ref, target), artifact, tag=self.ref.tag, blobs=target.blobs)
        return [Written(str(self.ref), entry.digest)]


class OciArchiveWriter(Writer):
    """``oci-archive:FILE[:TAG]``: tagged, with the image's referrers inside, as a layout;
    untagged, with them next to it (``FILE.spdx.json``...): skopeo reads an untagged
    archive only when its index lists one manifest."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "oci-archive", force=force)
        _check_sidecars(self.ref, sbom and not self.ref.tag)

    def write_image(self, target: Target) -> list[Written]:
        image, path = target.source.image, _file_of(self.ref, target)
        inside = target.referrers if self.ref.tag else ()
        archive.write_oci_archive(
            path, image, tag=self.ref.tag, blobs=target.blobs, epoch=target.ctx.epoch, referrers=inside
        )
        written = Written(str(self.ref), image.digest, referrers=_digests(inside))
        return _with_sidecars(written, self.ref, target, () if self.ref.tag else target.referrers)


def _size_key(diff_id: str) -> str:
    return "usize-" + diff_id.split(":", 1)[1]


def _known_size(cache: Cache, diff_id: str) -> int | None:
    hit = cache.memo(_size_key(diff_id))
    size = hit.get("size") if hit else None
    return size if isinstance(size, int) else None


class DockerArchiveWriter(Writer):
    """``docker-archive:FILE[:REF]``, for ``docker load`` (uncompressed layers, whose sizes
    the cache remembers); the image's referrers go next to it (``FILE.spdx.json``,
    ``FILE.provenance.intoto.json``)."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "docker-archive", force=force)
        _check_sidecars(self.ref, sbom)

    def write_image(self, target: Target) -> list[Written]:
        image, path, cache = target.source.image, _file_of(self.ref, target), target.ctx.cache
        sizes = archive.uncompressed_sizes(image, target.blobs, known=lambda diff_id: _known_size(cache, diff_id))
        for layer in sizes:
            cache.put_memo(_size_key(layer.diff_id), {"size": layer.size})
        archive.write_docker_archive(
            path, image, ref=self.ref.tag, blobs=target.blobs, epoch=target.ctx.epoch, sizes=sizes
        )
        return _with_sidecars(Written(str(self.ref), image.digest), self.ref, target, target.referrers)


class SifWriter(Writer):
    """``sif:FILE``: an Apptainer SIF, with the image's referrers as data objects."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "sif", force=force)

    def write_image(self, target: Target) -> list[Written]:
        return [Written(str(self.ref), target.make_sif(Path(self.ref.path)).digest)]


class SqshWriter(Writer):
    """``sqsh:FILE``: an Enroot/Pyxis image (:mod:`assembler.transports.enroot`).

    Its squashfs is written on its own, not shared with a SIF of the same run: the two
    differ by their files (``/.singularity.d`` against ``/etc/rc``...), so they are
    different squashfs bytes; the layers are only read twice. A squashfs has no place for
    the image's referrers: they go next to it (``FILE.spdx.json``...)."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "sqsh", force=force)
        _check_sidecars(self.ref, sbom)

    def write_image(self, target: Target) -> list[Written]:
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
        return _with_sidecars(Written(str(self.ref), info.digest), self.ref, target, target.referrers)


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


class OrasWriter(Writer):
    """``oras://HOST/REPO:TAG``: the SIF as an OCI artifact, for ``apptainer pull oras://``."""

    def write_image(self, target: Target) -> list[Written]:
        assert self.ref.name is not None
        return [_push_sif(target, self.ref.name, referrer=False)]


class SifReferrerWriter(Writer):
    """The SIF pushed to ``docker://REPO`` as a referrer of the image (``--attach``)."""

    def write_image(self, target: Target) -> list[Written]:
        assert self.ref.name is not None
        return [_push_sif(target, self.ref.name, referrer=True)]


@dataclass(frozen=True)
class RegistryWriter(Writer):
    """``docker://HOST/REPO[:TAG]``: pushed, then the image's referrers; with ``attach_sif``
    its SIF as a referrer too. A push mounts the blobs of ``mount_from`` on the same registry."""

    attach_sif: bool = False
    holds_artifact = True
    holds_index = True

    @property
    def image_name(self) -> str | None:
        return str(self.ref)

    @property
    def signs(self) -> bool:
        return True

    def identity(self, target: Target) -> str:
        from assembler.transports import signatures  # cosign's format: only when signing

        assert self.ref.name is not None
        return signatures.identity_of(self.ref.name)

    def write_signatures(self, signed: Sequence[Signed], target: Target) -> list[str]:
        from assembler.transports import signatures  # cosign's format: only when signing

        assert self.ref.name is not None
        return signatures.push(self.ref.name, signed, options=registry_options(target.ctx))

    def _push(self, target: Target, what: Image | FilesArtifact) -> Written:
        from assembler.transports import remote  # the registry client, only when pushing

        name = self.ref.name
        assert name is not None
        ctx = target.ctx
        result = remote.push(
            what,
            name,
            blobs=target.blobs,
            options=registry_options(ctx),
            mount_from=target.mount_from,  # those on name's registry
            progress=ctx.upload_progress or ctx.progress,
        )
        s = result.stats
        return Written(
            str(self.ref), result.digest, s.uploaded_bytes, s.uploaded_blobs, s.mounted_blobs, s.skipped_blobs
        )

    def write_image(self, target: Target) -> list[Written]:
        from assembler.transports.referrers import push_referrers

        assert self.ref.name is not None
        pushed = self._push(target, target.source.image)
        if target.referrers:  # after the image: a registry may refuse a subject it does not have
            options = registry_options(target.ctx)
            pushed = replace(pushed, referrers=tuple(push_referrers(self.ref.name, target.referrers, options=options)))
        out = [pushed]
        if self.attach_sif:
            (sif,) = SifReferrerWriter(self.ref).write(target)
            out.append(replace(sif, ref=f"{sif.ref} (referrer of {target.source.image.digest[:19]})"))
        return out

    def write_index(self, target: Target) -> list[Written]:
        assert self.ref.name is not None
        ctx, per_platform = target.ctx, target.per_platform()
        digest, uploaded = index.push(
            self.ref.name,
            target.platforms,
            blobs=target.blobs,
            referrers=per_platform,
            options=registry_options(ctx),
            progress=ctx.upload_progress or ctx.progress,
        )
        return [Written(str(self.ref), digest, uploaded, referrers=_digests(*per_platform))]

    def write_artifact(self, artifact: FilesArtifact, target: Target) -> list[Written]:
        return [self._push(target, artifact)]


# The one place writing dispatches on a reference's transport (docker:// is RegistryWriter,
# which takes attach_sif; rootfs: and scratch are bases; artifact: is pipeline.artifacts').
WRITERS: dict[str, type[Writer]] = {
    "oci": LayoutWriter,
    "oci-archive": OciArchiveWriter,
    "docker-archive": DockerArchiveWriter,
    "sif": SifWriter,
    "sqsh": SqshWriter,
    "oras": OrasWriter,
    "docker": RegistryWriter,
}


def writer_for(ref: Ref, *, attach_sif: bool = False) -> Writer:
    """The writer of output ``ref``; InputError for a reference that is not an output."""
    kind = WRITERS.get(ref.transport)
    if kind is None:
        raise InputError(f"{ref.transport}: {ref} is a base, not an output")
    return RegistryWriter(ref, attach_sif=attach_sif) if kind is RegistryWriter else kind(ref)
