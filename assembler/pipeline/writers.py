"""An output reference's writer (:func:`writer_for`): its format's
(:mod:`assembler.transports.formats`, the one table of formats), told which files next to
an output are this tool's SBOM and provenance (:func:`assembler.sbom.made_by_assemble`,
above the formats' floor), so that stale ones are replaced or removed and nobody else's.
A run's writers are one :class:`Tee`: one target written to every output, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from assembler.oci.reference import Ref
from assembler.pipeline.options import Event, Reporter, quiet
from assembler.sbom import made_by_assemble
from assembler.transports.context import Written
from assembler.transports.formats import Writer, format_of
from assembler.transports.target import Target

__all__ = ["Tee", "writer_for"]


def writer_for(ref: Ref, *, attach_sif: bool = False) -> Writer:
    """The writer of output ``ref`` (``attach_sif``: a registry push gets the image's SIF as
    a referrer too); InputError for a reference that is not an output."""
    return format_of(ref).writer(ref, attach_sif=attach_sif, ours=made_by_assemble)


@dataclass(frozen=True)
class Tee:
    """The writers of a run as one: :meth:`write` gives one target to each, in order (a
    SIF, where several want one, is made once: the target keeps it), reporting each output
    as it is written and done."""

    writers: Sequence[Writer]

    def write(self, target: Target, *, report: Reporter = quiet) -> list[Written]:
        """Write ``target`` to every output; the target's temporary files go afterwards."""
        written: list[Written] = []
        try:
            for writer in self.writers:
                report(Event("output", {"ref": str(writer.ref), "state": "writing"}))
                for w in writer.write(target):
                    fields = {"ref": w.ref, "state": "done", "digest": w.digest, "uploaded": w.uploaded_bytes}
                    report(Event("output", fields))
                    written.append(w)
        finally:
            target.cleanup()
        return written
