"""An output reference's writer (:func:`writer_for`): its format's
(:mod:`assembler.transports.formats`, the one table of formats), told which files next to
an output are this tool's SBOM and provenance (:func:`assembler.sbom.made_by_assemble`,
above the formats' floor), so that stale ones are replaced or removed and nobody else's.
"""

from __future__ import annotations

from assembler.oci.reference import Ref
from assembler.sbom import made_by_assemble
from assembler.transports.formats import Writer, format_of

__all__ = ["writer_for"]


def writer_for(ref: Ref, *, attach_sif: bool = False) -> Writer:
    """The writer of output ``ref`` (``attach_sif``: a registry push gets the image's SIF as
    a referrer too); InputError for a reference that is not an output."""
    return format_of(ref).writer(ref, attach_sif=attach_sif, ours=made_by_assemble)
