"""Image formats, one object each (:class:`Format`), in one table (:data:`FORMATS`).

A format is one module here holding its :class:`Format` and its writer; this table is the
one place a reference's transport is dispatched on: :func:`assembler.transports.open_source`
and :func:`~assembler.transports.known_image` read through it, the referrers and signatures
modules ask it where a reference keeps them, and ``assembler.pipeline.writers.writer_for``
takes its writer from it. How a reference is written is the format's syntax, which
:mod:`assembler.oci.reference` parses (the manifest checks below this floor need it).

Adding a format: one module here, one entry in :data:`FORMATS` (and, for a built-in, its
syntax line in :mod:`assembler.oci.reference`); a format from elsewhere calls
:func:`register` with ``own_syntax`` set, nothing else edited.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from assembler.errors import InputError
from assembler.oci.reference import Ref, register_syntax
from assembler.transports.common import BlobReader, RegistryOptions, SourceImage
from assembler.transports.formats import (
    artifact,
    docker,
    docker_archive,
    oci,
    oci_archive,
    oras,
    rootfs,
    scratch,
    sif,
    sqsh,
)
from assembler.transports.formats.base import Format, Referrers
from assembler.transports.formats.writer import Writer
from assembler.transports.referrers import Listing

if TYPE_CHECKING:
    from assembler.sign import Verdict, Verifier  # cryptography: only where signatures are checked

__all__ = [
    "FORMATS",
    "Format",
    "Referrers",
    "Writer",
    "attached_to",
    "format_of",
    "holds_referrers",
    "holds_signatures",
    "list_referrers",
    "read_referrers",
    "register",
    "verify_signatures",
]

# Every format, by transport: the one table.
FORMATS: dict[str, Format] = {
    f.transport: f
    for f in (
        docker.FORMAT,
        oci.FORMAT,
        oci_archive.FORMAT,
        docker_archive.FORMAT,
        rootfs.FORMAT,
        sif.FORMAT,
        sqsh.FORMAT,
        oras.FORMAT,
        artifact.FORMAT,
        scratch.FORMAT,
    )
}


def register(fmt: Format) -> None:
    """Add ``fmt`` to the table, and its syntax to what :func:`~assembler.oci.reference.parse_ref`
    accepts; ValueError for a transport another format has."""
    known = FORMATS.get(fmt.transport)
    if known is not None and known is not fmt:
        raise ValueError(f"{fmt.transport}: already the transport of {type(known).__name__}")
    register_syntax(fmt.transport, fmt.syntax)
    FORMATS[fmt.transport] = fmt


def format_of(ref: Ref) -> Format:
    """The format of ``ref``; InputError for a transport no format has."""
    fmt = FORMATS.get(ref.transport)
    if fmt is None:
        raise InputError(f"{ref}: no format reads or writes {ref.transport}: references")
    return fmt


# Asking a reference's format: where it keeps referrers and signatures.


def holds_referrers(ref: Ref) -> bool:
    """Whether ``ref`` can hold an image's referrers (:func:`read_referrers` reads them)."""
    return format_of(ref).referrers != "none"


def read_referrers(ref: Ref, source: Callable[[], SourceImage], *, options: RegistryOptions) -> tuple[str, Listing]:
    """The name of what ``ref`` names and the referrers of its image; ``source`` opens that
    image where its referrers are manifests (a SIF, docker-archive or sqsh file is not opened)."""
    return format_of(ref).read_referrers(ref, source, options=options)


def attached_to(ref: Ref, source: SourceImage, *, options: RegistryOptions) -> Listing | None:
    """The referrers of ``source`` (read from ``ref``) where ``ref`` keeps them as manifests
    (``oci:``, ``oci-archive:``, ``docker://``); None for any other reference."""
    fmt = format_of(ref)
    if fmt.referrers != "manifests":
        return None
    return fmt.list_referrers(ref, source.image.digest, source.blobs, options=options)


def list_referrers(ref: Ref, image: str, blobs: BlobReader, *, options: RegistryOptions) -> Listing:
    """The referrers of ``image`` (a digest, read from ``ref``, whose blobs ``blobs`` reads)
    in an ``oci:`` layout, an ``oci-archive:`` or a registry (``docker://``); a SIF and a
    docker-archive have :func:`list_sif` and :func:`list_sidecars`. NotFound for other references."""
    return format_of(ref).list_referrers(ref, image, blobs, options=options)


def holds_signatures(ref: Ref) -> bool:
    """Whether ``ref`` can hold cosign's signatures: a registry repository (``docker://``)
    or a tag of an OCI layout (``oci:DIR:TAG``): as its format says."""
    return format_of(ref).holds_signatures(ref)


def verify_signatures(
    ref: Ref,
    digest: str,
    verifier: Verifier,
    *,
    options: RegistryOptions,
    attestations: bool = False,
    predicate_type: str | None = None,
) -> Verdict:
    """Which signatures (or, with ``attestations``, attestations of ``predicate_type`` or
    any) of manifest ``digest`` in ``ref``'s repository or layout verify with ``verifier``.
    NotFound for a reference that cannot hold them; InvalidImage for a tag that holds
    something else."""
    return format_of(ref).verify_signatures(
        ref, digest, verifier, options=options, attestations=attestations, predicate_type=predicate_type
    )
