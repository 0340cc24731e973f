"""The in-toto test-result statement of an image's tests
(``https://in-toto.io/attestation/test-result/v0.1``), as a referrer artifact of the image.

- ``subject``: the image manifest's digest, named as the provenance names it;
- ``predicate.result``: ``PASSED``, ``WARNED`` or ``FAILED`` (the predicate's enum):
  ``FAILED`` when a test failed (a failing test stops the build before any output, so only
  ``assemble test`` writes it), ``WARNED`` when one passed only under an emulator, else
  ``PASSED``;
- ``predicate.passedTests``, ``warnedTests`` and ``failedTests``: the names of the tests
  that ran, ``warnedTests`` those that passed under an emulator (another architecture's
  image run under qemu-user: not on the target); a test not run (a GPU test where there is
  no GPU) is in none of them, never counted as passed;
- ``predicate.configuration``: the manifest file (name and sha256) and its target, the
  tester (assemble and its version), and each test as a resource descriptor named
  ``test:NAME`` whose annotations say what ran, where, and with what result (or why it
  did not run), and what the test is (``definition``: ``assemble test REF`` runs the tests
  an image carries again).

Nothing in it depends on the clock or on how long a test took: the same tests of the same
image give the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, digest_hex
from assembler.oci.mutate import timestamp
from assembler.sbom.provenance import BUILDER, STATEMENT_TYPE

PREDICATE_TYPE = mt.PREDICATE_TYPES["testresult"]
TITLE_SUFFIX = ".tests.intoto.json"


@dataclass(frozen=True)
class Outcome:
    """How one test went: ``passed``, ``failed``, ``not-run`` or ``emulated`` (passed under
    an emulator: not a pass on the target); ``reason`` says why it failed, did not run, or
    how it was emulated."""

    name: str
    status: str
    argv: tuple[str, ...]
    where: str  # local | slurm
    gpu: bool
    exit: int | None = None
    reason: str = ""
    # What the test is (as spec.imagetests.definition writes it): ``assemble test REF`` runs it again.
    definition: Mapping[str, Any] = field(default_factory=dict)

    def annotations(self) -> dict[str, Any]:
        out: dict[str, Any] = {"command": list(self.argv), "on": self.where, "gpu": self.gpu, "status": self.status}
        if self.exit is not None:
            out["exit"] = self.exit
        if self.reason:
            out["reason"] = self.reason
        if self.definition:
            out["definition"] = dict(self.definition)
        return out


@dataclass(frozen=True)
class Suite:
    """The tests of one image: which manifest (file name and digest) and target named them."""

    name: str
    manifest: str
    manifest_digest: str
    target: str | None
    tool: str


def statement(subject: Descriptor, suite: Suite, outcomes: Sequence[Outcome]) -> bytes:
    """The test-result statement of ``outcomes`` about the image ``subject``."""
    manifest: dict[str, Any] = {"name": suite.manifest, "digest": {"sha256": digest_hex(suite.manifest_digest)}}
    if suite.target:
        manifest["annotations"] = {"target": suite.target}
    configuration = [
        manifest,
        {"name": "tester", "uri": BUILDER, "annotations": {"assemble": suite.tool}},
        *({"name": f"test:{o.name}", "annotations": o.annotations()} for o in outcomes),
    ]
    failed = [o.name for o in outcomes if o.status == "failed"]
    warned = [o.name for o in outcomes if o.status == "emulated"]
    predicate = {
        "result": "FAILED" if failed else "WARNED" if warned else "PASSED",
        "configuration": configuration,
        "passedTests": [o.name for o in outcomes if o.status == "passed"],
        "warnedTests": warned,
        "failedTests": failed,
    }
    return canonical_json(
        {
            "_type": STATEMENT_TYPE,
            "subject": [{"name": suite.name, "digest": {"sha256": digest_hex(subject.digest)}}],
            "predicateType": PREDICATE_TYPE,
            "predicate": predicate,
        }
    )


def attestation(subject: Descriptor, suite: Suite, outcomes: Sequence[Outcome], *, epoch: int) -> Artifact:
    """The statement as a referrer of ``subject`` (``NAME.tests.intoto.json``)."""
    notes = {mt.ANNOTATION_CREATED: timestamp(epoch), mt.ANNOTATION_PREDICATE_TYPE: PREDICATE_TYPE}
    data = statement(subject, suite, outcomes)
    return Artifact(mt.IN_TOTO_JSON, data, f"{suite.name}{TITLE_SUFFIX}", subject, notes)


def is_test_result(data: bytes) -> bool:
    """Whether ``data`` is a test-result statement this tool wrote (its tester is assemble)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return False
    if not isinstance(doc, dict) or doc.get("predicateType") != PREDICATE_TYPE:
        return False
    configuration = (doc.get("predicate") or {}).get("configuration") if isinstance(doc.get("predicate"), dict) else []
    return any(isinstance(c, dict) and c.get("uri") == BUILDER for c in configuration or [])
