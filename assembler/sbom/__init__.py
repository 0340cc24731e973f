"""The SBOM and provenance of an image, as referrer artifacts.

:mod:`~assembler.sbom.packages` reads the packages an image's databases list (streaming
its layers, through the dependency check's view of its files; the databases' formats are
:mod:`~assembler.sbom.databases`' and :mod:`~assembler.sbom.rpmdb`'s) and the licenses they
declare (:mod:`~assembler.sbom.licenses`), :mod:`~assembler.sbom.spdx` writes the SPDX 2.3
document (from the pieces in :mod:`~assembler.sbom.spdxdoc`), :mod:`~assembler.sbom.provenance`
the SLSA v1 statement, both from a build's :class:`~assembler.sbom.facts.BuildFacts`.
:func:`attestations` gives them as OCI artifacts whose subject is the image: written into
OCI layouts and pushed with the image (see :mod:`assembler.pipeline.writers`).
"""

from __future__ import annotations

from pathlib import Path

from assembler.cache import Cache
from assembler.deps.files import BlobOpener
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.mutate import timestamp
from assembler.sbom.databases import Package
from assembler.sbom.facts import (
    ArtifactFact,
    BaseFact,
    BuildFacts,
    DownloadFact,
    LayerFact,
    SourceFact,
    StepFact,
)
from assembler.sbom.packages import Inventory, read_packages
from assembler.sbom.provenance import PREDICATE_TYPE, provenance_statement
from assembler.sbom.spdx import spdx_document

__all__ = [
    "ArtifactFact",
    "BaseFact",
    "BuildFacts",
    "DownloadFact",
    "Inventory",
    "LayerFact",
    "Package",
    "SourceFact",
    "StepFact",
    "attestations",
    "provenance_statement",
    "read_packages",
    "spdx_document",
]


def attestations(facts: BuildFacts, open_blob: BlobOpener, *, cache: Cache | None, workdir: Path) -> list[Artifact]:
    """The SBOM and the provenance of ``facts.image``, as referrers of it (SBOM first)."""
    inventory = read_packages(facts.image, open_blob, cache=cache, workdir=workdir)
    created = {mt.ANNOTATION_CREATED: timestamp(facts.epoch)}
    subject = facts.image.descriptor
    sbom = Artifact(mt.SPDX_JSON, spdx_document(facts, inventory), f"{facts.name}.spdx.json", subject, created)
    provenance = Artifact(
        mt.IN_TOTO_JSON,
        provenance_statement(facts),
        f"{facts.name}.provenance.intoto.json",
        subject,
        {**created, mt.ANNOTATION_PREDICATE_TYPE: PREDICATE_TYPE},
    )
    return [sbom, provenance]
