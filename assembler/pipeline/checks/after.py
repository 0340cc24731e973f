"""What runs on a built image before any output is written, as one list
(:data:`AFTER_BUILD`): each check takes the run and what it built and gives the artifacts
that go with the image as its referrers (none: it only checks). In order: the dependency
check (an image whose files cannot load is not written), the SBOM and provenance, the
image's tests (a failed test writes nothing; their result is an attestation). A new check
is one function and one entry here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from assembler.oci.artifact import Artifact
from assembler.oci.descriptor import Platform
from assembler.pipeline.checks.attest import describe_built
from assembler.pipeline.checks.depcheck import check_built
from assembler.pipeline.checks.runimage import tested
from assembler.pipeline.options import Reporter
from assembler.pipeline.runs.builder import Build, Built
from assembler.pipeline.runs.run import Run


class AfterBuild(Protocol):
    """A check of ``built`` (``run``'s image, made by ``build``): the image's referrers it gives."""

    def __call__(self, run: Run, built: Built, build: Build, report: Reporter) -> list[Artifact]: ...


def dependencies(run: Run, built: Built, build: Build, report: Reporter) -> list[Artifact]:
    """The dependency check (``--no-deps-check``: none): MissingDependencies stops the build."""
    if run.options.deps_check:
        plat = run.ctx.platform
        absent = [
            a
            for a in run.loaded.manifest.absent_libraries
            if a.platforms is None or any(Platform.parse(text).matches(plat) for text in a.platforms)
        ]
        check_built(built, run.cache, report=report, shared=build.facts, absent=absent)
    return []


def sbom(run: Run, built: Built, build: Build, report: Reporter) -> list[Artifact]:
    """The SBOM and provenance (``--no-sbom``: none)."""
    return describe_built(built, run, report=report, shared=build.facts) if run.options.sbom else []


def tests(run: Run, built: Built, build: Build, report: Reporter) -> list[Artifact]:
    """The image's tests and their result's attestation (``--no-tests``: none)."""
    return tested(built, run, build, report=report)


AFTER_BUILD: Sequence[AfterBuild] = (dependencies, sbom, tests)
