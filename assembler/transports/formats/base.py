"""One image format as one object: every verb a reference of it takes.

A :class:`Format` says, for its transport: how a reference of it is written (its
:class:`~assembler.oci.reference.Syntax`, which the pure model parses), how it is read as a
source image (or why it cannot be), what a plan knows of it without reading, how it is
written (its :class:`~assembler.transports.formats.writer.Writer`), where it keeps an image's
referrers (none, as manifests whose subject is the image, or as files) and whether it holds
cosign's signatures. The defaults are those of a format that does none of these; each
format's module overrides what it does, and :data:`assembler.transports.formats.FORMATS`
is the one table of them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from assembler.errors import InputError, NotFound
from assembler.oci.reference import Ref, Syntax, syntax_of

if TYPE_CHECKING:
    from assembler.oci.image import Image
    from assembler.sign import Verdict, Verifier
    from assembler.transports.common import BlobReader, RegistryOptions, SourceImage
    from assembler.transports.context import Context
    from assembler.transports.formats.writer import Writer
    from assembler.transports.referrers import Listing
    from assembler.transports.sidecar import Recognizer

# Where a format keeps an image's referrers: nowhere, as manifests whose subject is the image
# (a layout, an archive, a registry), or as files (inside a SIF; next to a docker-archive or
# sqsh file).
Referrers = Literal["none", "manifests", "files"]


class WithinVerdict(Protocol):
    """What checking the signatures a file holds inside itself found (a SIF's signature
    objects: :class:`assembler.transports.hpc.sif_sign.SifVerdict`)."""

    @property
    def ok(self) -> bool: ...

    @property
    def verified(self) -> list[dict[str, Any]]: ...

    @property
    def rejected(self) -> list[str]: ...

    def said(self, key_id: str) -> list[str]:
        """One line per part that verified, as ``assemble verify`` reports it."""
        ...


class Format:
    """An image format: its transport's verbs. Subclasses set ``transport`` and override
    what they do; a format from elsewhere also sets ``syntax``."""

    transport: ClassVar[str]
    # How its references are written; None: the built-in syntax of ``transport`` (oci.reference).
    own_syntax: ClassVar[Syntax | None] = None
    referrers: ClassVar[Referrers] = "none"

    @property
    def syntax(self) -> Syntax:
        """How a reference of this format is written."""
        syntax = self.own_syntax or syntax_of(self.transport)
        if syntax is None:
            raise TypeError(f"{type(self).__name__}: no syntax for {self.transport}: set own_syntax")
        return syntax

    def read(self, ref: Ref, ctx: Context) -> SourceImage:
        """The image ``ref`` names, with a reader for its blobs; InputError saying why not."""
        raise InputError(f"{ref} cannot be read as an image")

    def known(self, ref: Ref, ctx: Context) -> Image | None:
        """What a plan knows of the image without converting or downloading anything: None
        where that would take a read the plan does not make. By default the image is read
        (a layout's index and config are small and local)."""
        return self.read(ref, ctx).image

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        """The writer of output ``ref`` (``ours``: which files next to it are this tool's
        SBOM and provenance); InputError for a format that is not an output."""
        raise InputError(f"{ref.transport}: {ref} is a base, not an output")

    def list_referrers(self, ref: Ref, image: str, blobs: BlobReader, *, options: RegistryOptions) -> Listing:
        """The referrers of ``image`` (a digest read from ``ref``, whose blobs ``blobs``
        reads); NotFound where this format keeps none as manifests."""
        raise NotFound(f"{ref}: referrers live in OCI layouts and archives (oci:, oci-archive:) and registries")

    def read_referrers(
        self, ref: Ref, source: Callable[[], SourceImage], *, options: RegistryOptions
    ) -> tuple[str, Listing]:
        """The name of what ``ref`` names and the referrers of its image; ``source`` opens
        that image where its referrers are manifests (files are read without it)."""
        opened = source()
        return opened.name, self.list_referrers(ref, opened.image.digest, opened.blobs, options=options)

    def holds_signatures(self, ref: Ref) -> bool:
        """Whether ``ref`` can hold cosign's signatures and attestations."""
        return False

    # Whether its files hold their signatures inside themselves (a SIF's signature objects,
    # over its SBOM and provenance objects too), checked by :meth:`verify_within`.
    signed_within: ClassVar[bool] = False

    def verify_within(self, ref: Ref, verifier: Verifier) -> WithinVerdict:
        """The signatures inside the file ``ref`` names, checked with ``verifier``; only for a
        format that is ``signed_within``."""
        raise InputError(f"{ref}: a {self.transport}: file holds no signatures of its own")

    def layout_folder(self, ref: Ref, ctx: Context) -> Path | None:
        """The OCI layout folder whose index ``ref`` names by tag (what was written with the
        image is read from that index); None for a reference that is no such folder."""
        return None

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
        """Which signatures (or attestations) of manifest ``digest`` in ``ref`` verify with
        ``verifier`` (:func:`assembler.transports.signatures.verify`); NotFound where none
        can be."""
        raise NotFound(f"{ref}: signatures live in registries (docker://) and OCI layouts (oci:DIR:TAG)")
