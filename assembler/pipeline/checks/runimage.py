"""Images already built, entered: their tests (``assemble test REF [MANIFEST]``), a command
(``assemble run REF [-- CMD...]``) and a shell (``assemble shell REF``), each in a fresh
buildah container of the image, and a failed step's kept container (``assemble shell
--step STEP``, :mod:`assembler.compile.keepfailed`).

The image is read from any reference (``oci:``, ``oci-archive:``, ``docker://``...) into the
cache, verified, and handed to buildah's storage once (:func:`bring`). A build's own image is
tested here too (:func:`tested`), before any output is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembler import __version__
from assembler.cache import Cache
from assembler.compile import keepfailed, pidns
from assembler.compile.buildah import Buildah
from assembler.compile.imagerun import ImageCommand, ImageRunner, docker_argv, store
from assembler.errors import InputError, NotFound
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema.imagetests import from_definition
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact
from assembler.oci.reference import Ref
from assembler.pipeline.image.imagetests import PlannedTest, Report, Tester, planned, raise_failures, suite_of
from assembler.pipeline.options import Reporter
from assembler.proc import Runner
from assembler.sbom.testresult import Suite as TestSuite
from assembler.sbom.testresult import attestation, is_test_result
from assembler.transports import Context, import_image, open_source, registry_options
from assembler.transports.common import SourceImage
from assembler.transports.hpc.squash import Squash
from assembler.weights import tree as weights_tree

if TYPE_CHECKING:
    from assembler.pipeline.runs.builder import Build, Built
    from assembler.pipeline.runs.run import Run
    from assembler.transports.referrers import Listing


@dataclass(frozen=True)
class Stored:
    """An image read into the cache (its blobs there) and stored in buildah's storage."""

    source: SourceImage
    buildah: Buildah
    image_id: str

    @property
    def config(self) -> Mapping[str, Any]:
        return self.source.image.container_config


def bring(ref: Ref, ctx: Context, *, storage: Path | None = None, driver: str = "overlay") -> Stored:
    """The image ``ref`` names, copied into ``ctx.cache`` (every blob verified) and handed to
    buildah (its storage: ``storage``, else the cache's ``buildah/``)."""
    source = open_source(ref, ctx)
    image = import_image(source, ctx.cache, progress=ctx.progress)
    buildah = Buildah(ctx.runner, storage=storage or ctx.cache.root / "buildah", driver=driver)
    stored = SourceImage(image, ctx.cache, source.name, source.index_digest)
    return Stored(stored, buildah, store(buildah, ctx.cache, image, ctx.cache))


@dataclass(frozen=True)
class Suite:
    """The tests to run on an image, and what they come from (for the attestation): a
    manifest's (:func:`manifest_suite`) or those the image's own test results record
    (:func:`attested_suite`)."""

    tests: list[PlannedTest]
    about: TestSuite


def manifest_suite(loaded: Loaded, stored: Stored, *, test_on: str) -> Suite:
    """The tests ``loaded`` (a manifest, its target chosen) gives ``stored``'s image."""
    return Suite(planned(loaded, stored.config, test_on=test_on), suite_of(loaded))


def attested_suite(ref: Ref, ctx: Context, stored: Stored, *, test_on: str) -> Suite:
    """The tests the image's own test-result attestation records (a build of this tool
    attached it): run again as they were defined. NotFound when the image has none."""
    from assembler.transports.formats import attached_to  # the registry client, only here

    listing = attached_to(ref, open_source(ref, ctx), options=registry_options(ctx))
    found = _test_results(listing) if listing is not None else []
    if not found:
        raise NotFound(
            f"{ref}: no test results of assemble are attached to the image", hint="name the manifest whose tests to run"
        )
    return recorded_suite(found[-1], ref, test_on=test_on)


def recorded_suite(statement: dict[str, Any], ref: Ref | str, *, test_on: str) -> Suite:
    """The suite a test-result statement of ``ref``'s image records: data from whoever
    pushed the image, so a field of another shape is an InputError naming the image, never
    a traceback (each test's definition is read as a manifest's test is: :func:`from_definition`)."""
    try:
        return _recorded(statement, test_on)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
        raise InputError(
            f"{ref}: the test results attached to the image do not read as this tool writes them "
            f"({type(e).__name__}: {e})",
            hint="name the manifest whose tests to run",
        ) from None


def _recorded(statement: dict[str, Any], test_on: str) -> Suite:
    """The suite as :func:`assembler.sbom.testresult.attestation` writes it: the manifest,
    the image, then one entry a test."""
    manifest = statement["predicate"]["configuration"][0]
    tests = []
    for entry in statement["predicate"]["configuration"][2:]:
        name, notes = str(entry["name"]).removeprefix("test:"), entry.get("annotations") or {}
        spec = from_definition(name, notes.get("definition") or {})
        tests.append(PlannedTest(name, "attested", tuple(spec.command or ()), test_on, spec))
    target = (manifest.get("annotations") or {}).get("target")
    subject = str(statement["subject"][0]["name"])
    digest = "sha256:" + str(manifest["digest"]["sha256"])
    return Suite(tests, TestSuite(subject, str(manifest["name"]), digest, target, __version__))


def _test_results(listing: Listing) -> list[dict[str, Any]]:
    """The test-result statements of this tool among ``listing``'s referrers."""
    found = []
    for r in listing.referrers:
        if r.descriptor.artifact_type == mt.IN_TOTO_JSON and len(r.blobs) == 1:
            data = listing.read(r.blobs[0])
            found += [json.loads(data)] if is_test_result(data) else []
    return found


def test_image(
    stored: Stored,
    suite: Suite,
    ctx: Context,
    *,
    slurm_args: Sequence[str],
    report: Reporter,
    slurm_sif: str = "shared",
    squash: Squash | None = None,
    mounts: tuple[tuple[str, str, bool], ...] = (),
    emulate: bool = False,
) -> tuple[list[Report], Artifact]:
    """Run ``suite`` on ``stored``'s image (a test on Slurm submitted with ``slurm_args``,
    the SIF reached as ``slurm_sif`` says, squashed as ``squash`` says, the manifest's;
    ``emulate``: an image of another architecture runs every test under qemu-user):
    each test's report and the test-result attestation (which says ``fail`` when one failed:
    nothing is written here, the caller decides)."""

    def slurm() -> Any:
        from assembler.pipeline.checks.slurmtests import SlurmTests  # only where a test runs there

        return SlurmTests.of(slurm_args, ctx, report=report, sif=slurm_sif, squash=squash)

    tester = Tester(ctx.cache, stored.buildah, report, slurm, reuse=False, mounts=mounts, emulate=emulate)
    reports = tester.run(suite.tests, stored.source)
    outcomes = [r.outcome for r in reports]
    return reports, attestation(stored.source.image.descriptor, suite.about, outcomes, epoch=ctx.epoch)


def command(stored: Stored, *, command: Sequence[str] | None, args: Sequence[str] | None, **how: Any) -> ImageCommand:
    """What ``assemble run`` starts: the image's entrypoint and cmd as ``docker run``
    (``command`` replacing the entrypoint, ``args`` the cmd); ``how``: ImageCommand's env,
    user, workdir, network, gpu."""
    return ImageCommand(tuple(docker_argv(stored.config, command=command, args=args)), **how)


def run_in(stored: Stored, cmd: ImageCommand, cache: Cache, *, name: str) -> int:
    """Run ``cmd`` in a new container of the image, on this terminal; its exit status."""
    return ImageRunner(stored.buildah, cache).interactive(stored.image_id, cmd, stored.config, name=name)


def enter_kept(cache: Cache, runner: Runner, step: str) -> int:
    """A shell in the container a failure of ``step`` kept (``--keep-failed``), with its
    mounts; its exit status. NotFound when none is kept."""
    shell = keepfailed.read(cache, step).shell
    # buildah's --terminal makes a terminal of its own, which never sees the end of piped input.
    argv = shell if sys.stdin.isatty() else [a for a in shell if a != "--terminal"]
    # In its PID namespace (Buildah.shell_argv): a stop of this process ends the shell and
    # all it started, as `assemble shell REF` does (pidns.waited).
    with runner.popen(argv, stdin=None, stdout=None, stderr=None) as proc:
        return pidns.waited(proc)


def tested(built: Built, run: Run, build: Build, *, report: Reporter) -> list[Artifact]:
    """Run the tests of ``built``'s image (``run``'s): its test-result attestation as a
    referrer of the image (none without tests). Raises TestFailed when one fails."""
    loaded, options = run.loaded, run.options
    tests = planned(loaded, built.image.container_config, test_on=options.test_on)
    if not options.tests or not tests:
        return []
    built.blobs.need(built.image)
    source = SourceImage(built.image, built.blobs, f"assemble:{loaded.manifest.name}")

    def slurm() -> Any:
        from assembler.pipeline.checks.slurmtests import SlurmTests  # only where a test runs there

        return SlurmTests.of(
            options.slurm_args, build.ctx, report=report, sif=options.slurm_sif, squash=Squash.of(loaded.manifest.sif)
        )

    mounts = weights_tree.mounts(run.weights, build.ctx.cache)  # at their paths, as assemble run binds them
    tester = Tester(
        build.ctx.cache, build.workspace().buildah, report, slurm, reuse=not options.walk.no_cache, mounts=mounts
    )
    reports = tester.run(tests, source)
    raise_failures(reports)
    outcomes = [r.outcome for r in reports]
    return [attestation(built.image.descriptor, suite_of(loaded), outcomes, epoch=options.context.epoch)]
