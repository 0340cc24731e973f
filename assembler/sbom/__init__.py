"""The SBOM and provenance of an image, as referrer artifacts.

:mod:`~assembler.sbom.packages` reads the packages an image's databases list (streaming
its layers, through the dependency check's view of its files; the databases' formats are
:mod:`~assembler.sbom.databases`' and :mod:`~assembler.sbom.rpmdb`'s) and the licenses they
declare (:mod:`~assembler.sbom.licenses`), :mod:`~assembler.sbom.spdx` writes the SPDX 2.3
document (from the pieces in :mod:`~assembler.sbom.spdxdoc`), :mod:`~assembler.sbom.provenance`
the SLSA v1 statement, both from a build's :class:`~assembler.sbom.facts.BuildFacts`.
:func:`attestations` gives them as OCI artifacts whose subject is the image: written into
OCI layouts and pushed with the image (see :mod:`assembler.pipeline.writers`);
:func:`made_by_assemble` tells them, read back from a file, from anyone else's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assembler.cache import Cache
from assembler.cache.memos import SharedFacts
from assembler.deps.files import BlobOpener
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.mutate import timestamp
from assembler.sbom.databases import Package
from assembler.sbom.facts import (
    ArtifactFact,
    BaseFact,
    BuildFacts,
    CacheEntryFact,
    DownloadFact,
    LayerFact,
    SourceFact,
    StepFact,
)
from assembler.sbom.packages import Inventory, read_packages
from assembler.sbom.provenance import BUILDER, PREDICATE_TYPE, STATEMENT_TYPE, provenance_statement
from assembler.sbom.spdx import spdx_document
from assembler.sbom.spdxdoc import NAMESPACE
from assembler.sbom.testresult import is_test_result

__all__ = [
    "ArtifactFact",
    "BaseFact",
    "BuildFacts",
    "CacheEntryFact",
    "DownloadFact",
    "Inventory",
    "LayerFact",
    "Package",
    "SourceFact",
    "StepFact",
    "attestations",
    "made_by_assemble",
    "provenance_statement",
    "read_packages",
    "spdx_document",
]


def attestations(
    facts: BuildFacts, open_blob: BlobOpener, *, cache: Cache | None, workdir: Path, shared: SharedFacts | None = None
) -> list[Artifact]:
    """The SBOM and the provenance of ``facts.image``, as referrers of it (SBOM first); the
    image's packages remembered in ``cache`` (and ``shared``) or read through ``open_blob``."""
    inventory = read_packages(facts.image, open_blob, cache=cache, workdir=workdir, shared=shared)
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


def _at(doc: Any, *keys: str) -> Any:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc


def made_by_assemble(artifact_type: str, data: bytes) -> bool:
    """Whether ``data`` is an SBOM (``artifact_type`` SPDX JSON) or a provenance statement
    (in-toto JSON) as :func:`attestations` makes them: in this tool's SPDX namespace, or
    naming this tool as the builder, or a test-result statement naming it as the tester
    (:mod:`assembler.sbom.testresult`). A file next to an output under a referrer's name that
    is not one is someone else's (:mod:`assembler.transports.sidecar` leaves it alone)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
        return False
    if artifact_type == mt.SPDX_JSON:
        namespace = _at(doc, "documentNamespace")
        return isinstance(namespace, str) and namespace.startswith(NAMESPACE + "/")
    if artifact_type == mt.IN_TOTO_JSON:
        builder = _at(doc, "predicate", "runDetails", "builder", "id")
        return bool(_at(doc, "_type") == STATEMENT_TYPE and builder == BUILDER) or is_test_result(data)
    return False
