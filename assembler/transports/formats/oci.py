"""``oci:DIR[:TAG]``: an OCI layout folder (:mod:`assembler.transports.layout`), read and
written (added to when it exists), its referrers untagged entries of ``index.json`` and,
when tagged, cosign's signatures under their tags."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.oci.artifact import FilesArtifact
from assembler.oci.reference import Ref
from assembler.transports import index, layout
from assembler.transports.common import BlobReader, RegistryOptions, SourceImage
from assembler.transports.context import Context, Written, check_replaceable, local_path
from assembler.transports.formats.base import Format
from assembler.transports.formats.writer import Writer, digests
from assembler.transports.sidecar import Recognizer
from assembler.transports.target import Target

if TYPE_CHECKING:
    from assembler.sign import Signed, Verdict, Verifier
    from assembler.transports.referrers import Listing


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

        return signatures.layout_identity(self.file_of(target))

    def write_signatures(self, signed: Sequence[Signed], target: Target) -> list[str]:
        from assembler.transports import signatures  # cosign's format: only when signing

        return signatures.write_layout(self.file_of(target), signed)

    def write_image(self, target: Target) -> list[Written]:
        image = target.source.image
        referrers = target.referrers if self.ref.tag else ()
        layout.write(self.file_of(target), image, tag=self.ref.tag, blobs=target.blobs, referrers=referrers)
        return [Written(str(self.ref), image.digest, referrers=digests(referrers))]

    def write_weights(self, target: Target) -> list[Written]:
        from assembler.transports import beside

        if not self.ref.tag:  # skopeo, podman and buildah read an untagged layout of one manifest only
            return super().write_weights(target)
        image = target.source.image.descriptor
        return beside.write_layout(self.file_of(target), target.weights, image, ref=str(self.ref))

    def write_index(self, target: Target) -> list[Written]:
        per_platform = target.per_platform()
        digest = index.write_layout(
            self.file_of(target),
            self.ref.tag,
            target.platforms,
            blobs=target.blobs,
            referrers=per_platform,
            weights=target.weights,
        )
        return [Written(str(self.ref), digest, referrers=digests(*per_platform))]

    def write_artifact(self, artifact: FilesArtifact, target: Target) -> list[Written]:
        entry = layout.write_artifact(self.file_of(target), artifact, tag=self.ref.tag, blobs=target.blobs)
        return [Written(str(self.ref), entry.digest)]


class LayoutFormat(Format):
    """An OCI layout folder."""

    transport = "oci"
    referrers = "manifests"

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        return layout.read(local_path(ctx, ref.path), ref.tag, platform=ctx.platform)

    def layout_folder(self, ref: Ref, ctx: Context) -> Path | None:
        return local_path(ctx, ref.path) if ref.tag else None

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        return LayoutWriter(ref, ours)

    def list_referrers(self, ref: Ref, image: str, blobs: BlobReader, *, options: RegistryOptions) -> Listing:
        from assembler.transports.referrers import list_layout

        return list_layout(Path(ref.path), ref.tag, image)

    def holds_signatures(self, ref: Ref) -> bool:
        return bool(ref.tag)  # cosign's tags sit beside a tagged image; an untagged layout holds one manifest

    def verify_signatures(
        self,
        ref: Ref,
        digest: str,
        verifier: Verifier,
        *,
        options: RegistryOptions,
        attestations: bool = False,
        predicate_type: str | None = None,
    ) -> Verdict:
        from assembler.transports.signatures import verify_layout  # cryptography, only when verifying

        return verify_layout(Path(ref.path), digest, verifier, attestations=attestations, predicate_type=predicate_type)


FORMAT = LayoutFormat()
