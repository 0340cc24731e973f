"""``docker://HOST/REPO:TAG``: an image in a registry (:mod:`assembler.transports.remote`,
through the registry client): read, pushed (a base's blobs mounted on the same registry),
its referrers pushed after it and cosign's signatures under its ``.sig``/``.att`` tags."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from assembler.oci.artifact import FilesArtifact
from assembler.oci.image import Image
from assembler.oci.reference import ImageName, Ref
from assembler.transports import index
from assembler.transports.common import BlobReader, RegistryOptions, SourceImage
from assembler.transports.context import Context, Written, named_key, registry_options, resolved_key
from assembler.transports.formats.base import Format
from assembler.transports.formats.oras import SifReferrerWriter
from assembler.transports.formats.writer import Writer, digests
from assembler.transports.sidecar import Recognizer
from assembler.transports.target import Target

if TYPE_CHECKING:
    from assembler.sign import Signed, Verdict, Verifier
    from assembler.transports.referrers import Listing


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

    def _push(self, target: Target, what: Image | FilesArtifact, name: ImageName | None = None) -> Written:
        """Push ``what`` to ``name`` (default: the output's reference)."""
        from assembler.transports import remote  # the registry client, only when pushing

        name = name or self.ref.name
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
        image = target.source.image
        if target.weights and self.ref.name.tag:  # the tag names the index of the image and its weights
            by_digest = replace(self.ref.name, tag="", digest=image.digest)
            pushed = replace(self._push(target, image, by_digest), ref=str(self.ref))
        else:
            pushed = self._push(target, image)
        if target.referrers:  # after the image: a registry may refuse a subject it does not have
            options = registry_options(target.ctx)
            pushed = replace(pushed, referrers=tuple(push_referrers(self.ref.name, target.referrers, options=options)))
        out = [pushed]
        if self.attach_sif:
            (sif,) = SifReferrerWriter(self.ref).write(target)
            out.append(replace(sif, ref=f"{sif.ref} (referrer of {target.source.image.digest[:19]})"))
        return out

    def write_weights(self, target: Target) -> list[Written]:
        from assembler.transports import beside  # the registry client, only when pushing

        name = self.ref.name
        assert name is not None
        options, image = registry_options(target.ctx), target.source.image
        pushed = beside.push(
            name, target.weights, image.descriptor, options=options, progress=target.ctx.upload_progress
        )
        if not name.tag:
            return pushed  # by digest: referrers of the image alone
        digest = beside.put_index(name, image, target.weights, options=options)
        return [*pushed, Written(f"{self.ref} (an index: the image and its weights)", digest, tagged_index=True)]

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
            weights=target.weights,
        )
        return [Written(str(self.ref), digest, uploaded, referrers=digests(*per_platform))]

    def write_artifact(self, artifact: FilesArtifact, target: Target) -> list[Written]:
        return [self._push(target, artifact)]


class RegistryFormat(Format):
    """A registry repository."""

    transport = "docker"
    referrers = "manifests"

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        from assembler.transports import remote  # the registry client, only when reading one

        assert ref.name is not None
        return remote.read(ref.name, platform=ctx.platform, options=registry_options(ctx), progress=ctx.progress)

    def known(self, ref: Ref, ctx: Context) -> Image | None:
        """The image the name was last resolved to (its layers fetched), else the manifest
        it was last resolved to (read as manifest and config only), else None."""
        found = ctx.cache.base_image(resolved_key(ref, ctx.platform))
        if found is not None:
            return found
        named = ctx.cache.memo(named_key(ref, ctx.platform))
        digest = named.get("manifest") if named is not None else None
        return ctx.cache.get_image(digest, layers=False) if isinstance(digest, str) else None

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        return RegistryWriter(ref, ours, attach_sif=attach_sif)

    def list_referrers(self, ref: Ref, image: str, blobs: BlobReader, *, options: RegistryOptions) -> Listing:
        from assembler.transports.referrers import list_remote

        assert ref.name is not None
        return list_remote(ref.name, image, blobs, options=options)

    def holds_signatures(self, ref: Ref) -> bool:
        return True

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
        from assembler.transports.signatures import verify_remote  # cryptography, only when verifying

        assert ref.name is not None
        return verify_remote(
            ref.name, digest, verifier, options=options, attestations=attestations, predicate_type=predicate_type
        )


FORMAT = RegistryFormat()
