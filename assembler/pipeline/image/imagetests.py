"""The tests of an image (``tests:``, :mod:`assembler.manifest.schema.imagetests`): which apply to a
build (:func:`planned`: what ``assemble plan`` lists), running them here in buildah
(:mod:`assembler.compile.imagerun`) or on a Slurm node under Apptainer
(:mod:`assembler.pipeline.checks.slurmtests`), judging each by its exit status and output, and the
in-toto test-result attestation of the run (:mod:`assembler.sbom.testresult`).

A build runs them after the image is made and before anything is written
(:func:`tested`); one that fails raises TestFailed, so no output is written or pushed.
A GPU test where there is no GPU is reported as not run, with the reason, never as passed.
A test of an image of another architecture is not run either, unless it is asked to run
under qemu-user (``assemble test --emulate``, a test's ``emulate: true``): then one that
passes is reported ``emulated``, never ``passed`` (:mod:`assembler.compile.binfmt`).
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from assembler import __version__
from assembler.cache import Cache, key_of
from assembler.compile import binfmt, gpudriver
from assembler.compile.buildah import Buildah
from assembler.compile.imagerun import ImageCommand, ImageRunner, docker_argv, store
from assembler.errors import InputError, TestFailed, TimedOut
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.manifest.schema.imagetests import definition
from assembler.oci.digest import digest_hex, sha256_digest
from assembler.oci.image import Image
from assembler.pipeline.options import Event, Reporter
from assembler.proc import tail
from assembler.sbom.testresult import Outcome, Suite
from assembler.transports.common import SourceImage

_SHOWN_FAILURES = 3  # failed tests whose output the error shows (the others: their names)


@dataclass(frozen=True)
class PlannedTest:
    """A test a build runs: its name (``STEP.NAME`` for a compile step's), where it comes
    from, the argv it starts (empty: the base's entrypoint and cmd, not known yet) and where
    it runs (``local`` or ``slurm``)."""

    name: str
    origin: str
    argv: tuple[str, ...]
    where: str
    spec: m.ImageTest = field(repr=False, compare=False)

    @property
    def seconds(self) -> float:
        return self.spec.timeout / 1e9

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return {
            "name": self.name,
            "origin": self.origin,
            "argv": list(self.argv),
            "on": self.where,
            "gpu": s.gpu,
            "network": s.network,
            "exit": s.exit,
            "output": list(s.output),
            "not_output": list(s.not_output),
            "timeout": self.seconds,
            "env": dict(s.env),
            "user": s.user,
            "workdir": s.workdir,
        }

    def definition(self) -> dict[str, Any]:
        """What the test is, for the attestation (``assemble test REF`` runs it from there)."""
        return definition(self.spec, self.argv)

    @property
    def hermetic(self) -> bool:
        """Whether it depends on nothing but the image's bytes: here, no GPU, no network
        (its passing is then remembered for the image, as a step's result is)."""
        return self.where == "local" and not self.spec.gpu and not self.spec.network


@dataclass(frozen=True)
class Report:
    """How a test went (what the attestation records), and where its output is."""

    outcome: Outcome
    log: Path | None = None
    tail: str = ""


def shipped_steps(man: m.Manifest) -> set[str]:
    """The compile steps whose artifacts the image holds or its runtime steps mount."""
    return {ref.partition(".")[0] for layer in man.image.layers for ref, _, _ in layer.step_refs()}


def has_tests(man: m.Manifest) -> bool:
    """Whether a build of ``man`` (a target chosen) runs tests."""
    shipped = shipped_steps(man)
    return bool(man.tests) or any(s.tests for s in man.compile if s.name in shipped)


def planned(loaded: Loaded, config: Mapping[str, Any], *, test_on: str) -> list[PlannedTest]:
    """The tests a build of ``loaded`` runs on an image of runtime ``config``: the
    manifest's (after its target), then those of each compile step the image ships."""
    man = loaded.manifest
    found = [("image", spec.name, spec) for spec in man.tests]
    shipped = shipped_steps(man)
    found += [(f"step {s.name}", f"{s.name}.{t.name}", t) for s in man.compile if s.name in shipped for t in s.tests]
    out: dict[str, PlannedTest] = {}
    for origin, name, spec in found:
        if name in out:
            raise loaded.error(("tests",), f"two tests are named {name!r}", hint="a target's add_tests adds to these")
        try:
            argv = tuple(docker_argv(config, command=spec.command, args=spec.args))
        except InputError:
            argv = ()  # nothing to run: known only once the base's config is (checked before a run)
        out[name] = PlannedTest(name, origin, argv, spec.on or test_on, spec)
    return list(out.values())


def judge(spec: m.ImageTest, code: int, output: str) -> str:
    """Why a test that exited ``code`` printing ``output`` failed ("" when it passed)."""
    if code != spec.exit:
        return f"exit {code}, expected {spec.exit}"
    for pattern in spec.output:
        if not re.search(pattern, output, re.MULTILINE):
            return f"the output does not match {pattern!r}"
    for pattern in spec.not_output:
        if found := re.search(pattern, output, re.MULTILINE):
            return f"the output matches {pattern!r} (not_output): {found.group(0)[:200]!r}"
    return ""


def foreign(image: Image) -> str | None:
    """Why this machine cannot run ``image``'s programs itself (None when it can): a test
    runs under an emulator only when asked to, and none is counted as passed."""
    machine = os.uname().machine
    native = binfmt.native(image.platform.architecture, machine)
    return None if native else f"the image is for {image.platform}, this machine is {machine}"


def where_it_runs(
    image: Image, gpu: bool, *, asked: bool, emulator: Callable[[Image], binfmt.Emulator | None]
) -> tuple[str | None, binfmt.Emulator | None]:
    """Why a test of ``image`` is not run here (None: it runs), and the emulator it runs
    under (None: natively). An image of another machine's runs only where emulation is
    ``asked`` and ``emulator`` finds one, and never a GPU test: the host's driver libraries
    are not the image's architecture's. A GPU test needs a GPU."""
    other = foreign(image)
    if other is not None:
        if not asked:
            return other, None
        if gpu:
            return f"{other}: a GPU test does not run under an emulator", None
        found = emulator(image)
        return (f"{other}, and no qemu-user for it is enabled here", None) if found is None else (None, found)
    return (gpudriver.missing() if gpu else None), None


def command_of(test: PlannedTest) -> ImageCommand:
    """What runs for ``test``: InputError when it names no command and the image has none."""
    if not test.argv:
        raise InputError(
            f"test {test.name}: the image has no entrypoint and no cmd",
            hint="give the test a command: (it replaces the entrypoint)",
        )
    spec = test.spec
    return ImageCommand(test.argv, spec.env, spec.user, spec.workdir, network=spec.network, gpu=spec.gpu)


class Judged(Protocol):
    """Makes a report of a test that ran (:meth:`Tester.judged`)."""

    def __call__(
        self, test: PlannedTest, digest: str, code: int | None, output: str, reason: str, seconds: float
    ) -> Report: ...


class RemoteTests(Protocol):
    """Runs tests elsewhere (:class:`assembler.pipeline.checks.slurmtests.SlurmTests`: as Slurm jobs)."""

    def run(self, tests: Sequence[PlannedTest], source: SourceImage, judged: Judged) -> dict[str, Report]:
        """Each test's report (made by ``judged``), by name."""
        ...


@dataclass
class Tester:
    """What running tests needs: the cache (logs), buildah (local tests), where to report,
    and the Slurm side (``--test-on slurm``, ``on: slurm``) made when a test needs it."""

    cache: Cache
    buildah: Buildah
    report: Reporter
    slurm: Callable[[], RemoteTests] | None = None
    reuse: bool = True  # a hermetic test that passed on this image passes (--no-cache: run again)
    # Bound into every local test's container (host path, path, read-only): the model weights.
    mounts: tuple[tuple[str, str, bool], ...] = ()
    # Every test of an image of another architecture runs under qemu-user (--emulate), not
    # only those that say emulate: true; reported emulated, never passed.
    emulate: bool = False

    def run(self, tests: Sequence[PlannedTest], source: SourceImage) -> list[Report]:
        """Run ``tests`` on ``source``'s image: each one's report, in order."""
        reports: dict[str, Report] = {}
        local = [t for t in tests if t.where == "local"]
        remote = [t for t in tests if t.where == "slurm"]
        if local:
            reports.update(self._local(local, source))
        if remote:
            if self.slurm is None:
                raise InputError("tests on Slurm need the Slurm side (a build's or assemble test's --test-on slurm)")
            reports.update(self.slurm().run(remote, source, self.judged))
        return [reports[t.name] for t in tests]

    def _local(self, tests: Sequence[PlannedTest], source: SourceImage) -> dict[str, Report]:
        image, image_id = source.image, ""
        runner = ImageRunner(self.buildah, self.cache)
        out = {}
        for test in tests:
            asked = self.emulate or test.spec.emulate
            why, emulated = where_it_runs(image, test.spec.gpu, asked=asked, emulator=self._emulator)
            if why is not None:
                out[test.name] = self.not_run(test, why)
                continue
            key = key_of(
                {"test": test.to_json(), "image": image.digest, "assemble": __version__, "mounts": self.mounts}
            )
            if emulated is None and test.hermetic and self.reuse and self.cache.memo(key) is not None:
                out[test.name] = self.passed_before(test, image.digest)
                continue
            binds = (*command_of(test).mounts, *self.mounts, *(emulated.mounts if emulated else ()))
            command = replace(command_of(test), mounts=binds)
            self.report(Event("test", {"name": test.name, "state": "running", "on": "local"}))
            image_id = image_id or store(self.buildah, self.cache, image, source.blobs)
            started = time.monotonic()
            limit = test.seconds * (binfmt.SLOWDOWN if emulated is not None else 1)
            try:
                code: int | None
                code, output = runner.run(
                    image_id, command, image.container_config, name=f"test-{test.name}", timeout=limit
                )
                reason = judge(test.spec, code, output)
            except TimedOut as e:
                slower = f" ({binfmt.SLOWDOWN} x its {test.seconds:g} s, emulated)" if emulated is not None else ""
                code, output, reason = None, e.stderr_tail, f"timed out after {limit:g} s{slower}"
            seconds = time.monotonic() - started
            out[test.name] = self.judged(test, image.digest, code, output, reason, seconds, emulated=emulated)
            if emulated is None and test.hermetic and out[test.name].outcome.status == "passed":
                self.cache.put_memo(key, {"test": test.name, "image": image.digest})
        return out

    def passed_before(self, test: PlannedTest, digest: str) -> Report:
        """A hermetic test that passed on this image before (its output as that run left it)."""
        self.report(Event("test", {"name": test.name, "state": "passed", "cached": True, "on": test.where}))
        log = self.cache.log_path(f"test-{test.name}", digest_hex(digest))
        output = log.read_text("utf-8", "replace") if log.exists() else ""
        outcome = Outcome(
            test.name, "passed", test.argv, test.where, test.spec.gpu, test.spec.exit, "", test.definition()
        )
        return Report(outcome, log, tail(output))

    @staticmethod
    def _emulator(image: Image) -> binfmt.Emulator | None:
        return binfmt.emulator(image.platform.architecture)

    def not_run(self, test: PlannedTest, why: str) -> Report:
        self.report(Event("test", {"name": test.name, "state": "not-run", "reason": why}))
        outcome = Outcome(test.name, "not-run", test.argv, test.where, test.spec.gpu, None, why, test.definition())
        return Report(outcome)

    def judged(
        self,
        test: PlannedTest,
        digest: str,
        code: int | None,
        output: str,
        reason: str,
        seconds: float,
        *,
        emulated: binfmt.Emulator | None = None,
    ) -> Report:
        """The report of a test that ran (``reason``: why it failed, "" when it passed), its
        output kept as a log of the cache; ``emulated``: it ran under that emulator, and
        one that passed is reported ``emulated``."""
        log = self.cache.log_path(f"test-{test.name}", digest_hex(digest))
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output, encoding="utf-8")
        state = "failed" if reason else "passed"
        if emulated is not None:
            under = f"under {emulated.said}"
            said = f"{reason} ({under})" if reason else f"passed {under}: not a run on the target"
            state, reason = ("failed" if reason else "emulated"), said
        fields = {"name": test.name, "state": state, "seconds": round(seconds, 3), "on": test.where}
        self.report(Event("test", {**fields, **({"reason": reason} if reason else {})}))
        outcome = Outcome(test.name, state, test.argv, test.where, test.spec.gpu, code, reason, test.definition())
        return Report(outcome, log, tail(output, 30))


def raise_failures(reports: Sequence[Report]) -> None:
    """TestFailed naming every failed test, with the first ones' commands and output tails."""
    failed = [r for r in reports if r.outcome.status == "failed"]
    if not failed:
        return
    parts = []
    for r in failed[:_SHOWN_FAILURES]:
        o = r.outcome
        parts.append(
            f"test {o.name} failed ({o.where}): {o.reason}\n$ {shlex.join(o.argv)}\n"
            f"--- last lines of its output ---\n{r.tail}\n--- full output: {r.log}"
        )
    more = [r.outcome.name for r in failed[_SHOWN_FAILURES:]]
    first = failed[0]
    raise TestFailed(
        "\n".join(parts) + (f"\n(and {len(more)} more failed: {', '.join(more)})" if more else ""),
        failed=[r.outcome.name for r in failed],
        argv=first.outcome.argv,
        returncode=first.outcome.exit,
        log_tail=first.tail,
        log_path=first.log,
        hint="no output was written; fix the image or the test, then run again (built steps are cached)",
    )


def suite_of(loaded: Loaded) -> Suite:
    """Which manifest (and target) the tests come from, for the attestation."""
    digest = sha256_digest(loaded.path.read_bytes())
    return Suite(loaded.manifest.name, loaded.path.name, digest, loaded.target, __version__)
