"""What the writers of one build write (:class:`Target`): an image, the images of several
platforms, or an OCI artifact of files; the blob reader, the referrers, the key that signs
them, and a SIF made at most once for the writers that need one."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cache import temp_prefix
from assembler.oci.artifact import Artifact, FilesArtifact
from assembler.oci.image import Image
from assembler.oci.reference import ImageName
from assembler.transports.common import BlobReader, SourceImage
from assembler.transports.context import Context
from assembler.transports.hpc import squash as squashing
from assembler.transports.hpc.squash import Squash

if TYPE_CHECKING:
    from assembler.sign import Signer
    from assembler.transports.beside import Beside
    from assembler.transports.hpc.sif import SifInfo


@dataclass
class Target:
    """What the writers write, and what they share: a SIF is made at most once.

    ``source`` is the image, with the reader of its blobs; with ``platforms``, the images of
    several platforms are written instead, as one index (``source`` reads their blobs);
    with ``artifact``, that OCI artifact (``source`` reads its blobs)."""

    source: SourceImage
    ctx: Context
    # How the squashfs of a SIF, an Enroot image and the weights beside them is compressed.
    squash: Squash = squashing.DEFAULT
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
    # An index: each platform's image and its referrers (platform_referrers[i] are platforms[i]'s).
    platforms: Sequence[Image] = ()
    platform_referrers: Sequence[Sequence[Artifact]] = ()
    artifact: FilesArtifact | None = None
    # The model weights that go with the image (manifest's weights:), packed: each output
    # that can holds them beside the image (Writer.write_weights), never in it.
    weights: Sequence[Beside] = ()
    # --sign: the key that signs what the docker:// and tagged oci: outputs write, in cosign's
    # format (the image, or the index and each platform's image, or the artifact), and attests
    # the referrers (see transports.signatures); and the SIF, inside it, as Apptainer signs.
    signer: Signer | None = None
    _tmp: Path | None = field(default=None, repr=False)

    @property
    def blobs(self) -> BlobReader:
        return self.source.blobs

    def per_platform(self) -> list[Sequence[Artifact]]:
        """The referrers of each of ``platforms`` (none for one not given)."""
        given = self.platform_referrers
        return [given[i] if i < len(given) else () for i in range(len(self.platforms))]

    def make_sif(self, path: Path | None = None) -> SifInfo:
        """The SIF of the image: written at ``path``, or (None) the one already made, else
        one in a temporary folder of the cache, removed by :meth:`cleanup`."""
        if path is None and self.sif is not None:
            return self.sif
        if path is None:
            self._tmp = Path(tempfile.mkdtemp(prefix=temp_prefix("sif-"), dir=self.ctx.cache.root / "tmp"))
            path = self._tmp / self.sif_name
        from assembler.transports.hpc import sifkept  # only SIF outputs need it
        from assembler.transports.hpc.sif import image_uuid, write_sif
        from assembler.transports.hpc.squashfs import reclaim_beside

        ctx = self.ctx
        attached = [a.blob.digest for a in self.referrers]
        sif_uuid = image_uuid(self.source.image.digest, self.squash, ctx.epoch, attached)
        keeps = self.signer is None and self._tmp is None  # a signature is made anew; a temp file is new
        if keeps and (found := sifkept.kept(ctx.cache, path, str(sif_uuid), self.source.name)) is not None:
            reclaim_beside(path)  # what killed writes left next to it goes, as a write removes it
            self.sif = found
            return found
        self.sif = write_sif(
            self.source,
            path,
            runner=ctx.runner,
            epoch=ctx.epoch,
            squash=self.squash,
            progress=self.sif_progress or ctx.progress,
            attached=self.referrers,
            signer=self.signer,
        )
        if keeps:
            sifkept.remember(ctx.cache, self.sif, self.source.name)
        return self.sif

    def cleanup(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
