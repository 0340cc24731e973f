"""``oras://HOST/REPO:TAG``: the image's SIF pushed as an OCI artifact, for ``apptainer pull
oras://`` (:mod:`assembler.transports.hpc.sif_publish`); an output only. The SIF pushed to a
``docker://`` repository as a referrer of the image (``--attach``) is written here too."""

from __future__ import annotations

from assembler.oci.reference import ImageName, Ref
from assembler.transports.context import Written, registry_options
from assembler.transports.formats.base import Format
from assembler.transports.formats.writer import Writer
from assembler.transports.sidecar import Recognizer
from assembler.transports.target import Target


def _push_sif(target: Target, name: ImageName, *, referrer: bool) -> Written:
    from assembler.transports.hpc.sif_publish import push_sif  # imports the registry client

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
    """``oras://HOST/REPO:TAG``: the SIF as an OCI artifact (signed inside with ``--sign``,
    as ``apptainer pull oras://`` then ``apptainer verify`` check it)."""

    signed_inside = True

    def write_image(self, target: Target) -> list[Written]:
        assert self.ref.name is not None
        return [_push_sif(target, self.ref.name, referrer=False)]


class SifReferrerWriter(Writer):
    """The SIF pushed to ``docker://REPO`` as a referrer of the image (``--attach``)."""

    signed_inside = True

    def write_image(self, target: Target) -> list[Written]:
        assert self.ref.name is not None
        return [_push_sif(target, self.ref.name, referrer=True)]

    def write_weights(self, target: Target) -> list[Written]:
        return []  # the image's own output writes them


class OrasFormat(Format):
    """A SIF in a registry."""

    transport = "oras"

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        return OrasWriter(ref, ours)


FORMAT = OrasFormat()
