"""What every output format's writer shares: :class:`Writer`, the verbs a format's writer
overrides (an image; an index of several platforms; an OCI artifact of files; cosign's
signatures where the output holds them), and the helpers of file outputs (their path,
referrers written next to them).

A writer writes a :class:`~assembler.transports.target.Target`. The writers of one target
share it (a SIF made once: a ``sif:`` output and an ``oras://`` push of the same image reuse
one file). The outputs carry the image's referrers (its SBOM, its provenance; an untagged
``oci:DIR`` stays one manifest): inside tagged layouts and oci-archives, registries and
SIFs; as files next to docker-archives, untagged oci-archives and sqsh files (only where
those names are free or ours: :mod:`assembler.transports.sidecar`; which files are ours,
the SBOM's code says, above this floor: ``ours``). An output path that is a symlink is
refused, or with ``--force`` replaced as a link, never written through. With ``--sign``
(``Target.signer``) the writers whose output holds signatures sign what they wrote and
attest its referrers, in cosign's format (:mod:`assembler.transports.signatures`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from assembler.errors import InputError
from assembler.oci.artifact import Artifact, FilesArtifact
from assembler.oci.reference import Ref
from assembler.transports.context import Written
from assembler.transports.sidecar import Recognizer, check_sidecars, write_sidecars
from assembler.transports.target import Target

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from assembler.sign import Signed


def nothing_is_ours(artifact_type: str, data: bytes) -> bool:
    """The recognizer of a writer not told which files are ours: none is (none is replaced)."""
    return False


@dataclass(frozen=True)
class Writer:
    """Writes a :class:`Target` to the output ``ref``: an image, else (where the output can
    hold one, else InputError) an index or an OCI artifact of files."""

    ref: Ref
    # Which files next to the output are this tool's SBOM and provenance (replaced, removed).
    ours: Recognizer = field(default=nothing_is_ours, compare=False, repr=False)
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

    # Whether what it writes holds its own signature (a SIF's, made as the file is written:
    # Target.make_sif), which ``--sign`` then makes instead of cosign's beside it.
    signed_inside: ClassVar[bool] = False

    @property
    def signs(self) -> bool:
        """Whether ``--sign`` signs what it writes (cosign's signatures beside it, or its own)."""
        return self.signed_inside

    def write(self, target: Target) -> list[Written]:
        """Write; what was written (a push may write a referrer too), signed with
        ``target.signer`` where the output can hold signatures."""
        if target.artifact is not None:
            out = self.write_artifact(target.artifact, target)
        elif target.platforms:
            out = self.write_index(target)
        else:
            out = self.write_image(target)
            if target.weights:  # after the image: their subject
                out += self.write_weights(target)
        if target.signer is not None and self.signs and not self.signed_inside:
            from assembler.sign import sign_manifest  # cryptography, only when signing

            signer, name = target.signer, self.identity(target)
            subjects = _signed_subjects(target, out[0].digest) + [(w.digest, ()) for w in out if w.tagged_index]
            signed = [sign_manifest(signer, d, name, arts) for d, arts in subjects]
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

    def write_weights(self, target: Target) -> list[Written]:
        """Write the model weights that go with the image (``target.weights``) beside it,
        where this output can hold them; an output that cannot says so, once."""
        names = ", ".join(p.name for p in target.weights)
        log.warning(
            "%s: holds no weights (%s): docker://, oci:DIR:TAG, sif: and sqsh: outputs carry them", self.ref, names
        )
        return []

    def write_index(self, target: Target) -> list[Written]:
        raise InputError(f"{self.ref}: images of several platforms under one name go to oci: or docker:// outputs only")

    def write_artifact(self, artifact: FilesArtifact, target: Target) -> list[Written]:
        raise InputError(
            f"{self.ref}: artifacts are written to oci:DIR[:TAG] or docker://REF (or as files: artifact:DIR:STEP)"
        )

    def file_of(self, target: Target) -> Path:
        """The output file or folder (a relative path: against the context's folder)."""
        path = Path(self.ref.path).expanduser()
        return path if path.is_absolute() else target.ctx.base_dir / path

    def check_sidecars(self, sbom: bool) -> None:
        """InputError when the referrers' files next to the output may not be written."""
        if sbom:
            check_sidecars(Path(self.ref.path), self.ref.transport, ours=self.ours)

    def with_sidecars(self, written: Written, target: Target, referrers: Sequence[Artifact]) -> list[Written]:
        """``written`` and the referrers written next to its file (stale ones of ours removed)."""
        files = write_sidecars(self.file_of(target), self.ref.transport, referrers, ours=self.ours)
        return [written, *(Written(str(f), a.blob.digest) for f, a in zip(files, referrers, strict=True))]


def _signed_subjects(target: Target, digest: str) -> list[tuple[str, Sequence[Artifact]]]:
    """What ``--sign`` signs of ``target`` written as ``digest``, with the referrers it
    attests: the image and its referrers; an index, then each platform's image and its
    referrers; an artifact of files."""
    if target.artifact is None and not target.platforms:
        return [(digest, target.referrers)]
    images = [image.digest for image in target.platforms]
    return [(digest, ()), *zip(images, target.per_platform(), strict=True)]


def digests(*referrers: Sequence[Artifact]) -> tuple[str, ...]:
    """The digests of the referrers written (for :class:`Written`)."""
    return tuple(a.digest for arts in referrers for a in arts)
