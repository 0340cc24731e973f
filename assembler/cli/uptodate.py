"""``assemble MANIFEST`` run again with nothing changed: answered from the record of the
last such run, without loading the manifest's models or the pipeline.

A build that started no program and reached no host before its outputs (a no-change
rebuild: every step cached, every layer remembered) is traced (:mod:`assembler.trace`):
every file it opened, folder it listed and path it looked at. Its record, under
``CACHE/uptodate/`` by the invocation (the arguments, the working folder, the whole
environment, the interpreter), holds each of those paths' identity as the build left it
(a file's device, inode, size, modification and change times; a listed folder's entries),
the modules it ran (their files are paths too: an upgrade of assemble or of a library
is a change), and what its registry outputs held. The same invocation again compares
every path (a stat each, a listing each folder), asks each registry output whether its tag
and referrers are still the digests written (one HEAD each, as a no-change build does),
and when all agree prints what the build printed: the image is the one the build would
make. Anything else, and the build runs as ever (and records again).

Not recorded: a build that started a program (a step, a test, a base bootstrapped: their
reads are not seen here), reached a host before its outputs (a base by tag, a step cache in
a registry, an index), wrote an output no HEAD checks (``oras://``), or read a file that
changed while it ran (its change time after the build began, less ``RACY_NS`` for a coarse
clock); ``--json``, ``--progress json``, ``--cache-max-size``, ``--rebuild``,
``--no-cache``, ``--sign``, another ``--executor`` and ``--full-check`` runs neither record
nor use one.
The record's own files are written only by the build that traced them. What the up-to-date
run touches: the cache entries the build marked used (their times, for ``cache prune``).
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from assembler.cache.uptodate import HeldOutput, Record, Records, invocation_key, signature
from assembler.cli.console import err, mode_of, say
from assembler.trace import Trace

if TYPE_CHECKING:
    from assembler.assemble import Result
    from assembler.pipeline.options import Event, Reporter

log = logging.getLogger(__name__)

RACY_NS = 100_000_000  # 0.1 s: a file changed this close to the build's start may have been read before


def usable(args: argparse.Namespace, mode: str) -> bool:
    """Whether this build may use a record and make one."""
    return not (
        args.json
        or mode == "json"
        or args.cache_max_size is not None
        or args.rebuild
        or args.no_cache
        or getattr(args, "full_check", False)
        or getattr(args, "executor", "local") != "local"
        or getattr(args, "sign", None)  # a signature is made anew by each build
    )


def outputs_held(outputs: Iterable[HeldOutput], args: argparse.Namespace) -> bool:
    """Each registry output still names the digest written, and holds its referrers."""
    outputs = list(outputs)
    if not outputs:
        return True
    from assembler.cli.arguments import registry_options
    from assembler.errors import AssemblerError
    from assembler.registry.client import Registry
    from assembler.registry.manifests import MANIFEST_TYPES, manifest_digest

    accept = ", ".join(MANIFEST_TYPES)
    try:
        options = registry_options(args)
        for out in outputs:
            with Registry(out.registry, options=options) as registry:
                for reference, digest in ((out.reference, out.digest), *((d, d) for d in out.referrers)):
                    if manifest_digest(registry, out.repository, reference, accept) != digest:
                        return False
    except (AssemblerError, OSError):
        return False
    return True


def replay(args: argparse.Namespace, records: Records, key: str, mode: str) -> bool:
    """Answer the build from its record when nothing it read changed and its outputs hold
    what it wrote; False (nothing printed) otherwise."""
    started = time.monotonic()
    record = records.read(key)
    if record is None:
        return False
    changed = record.changed()
    if changed is not None:
        log.debug("the last build's record is not used: %s is not as it left it", changed)
        return False
    if not outputs_held(record.outputs, args):
        log.debug("the last build's record is not used: a registry output does not hold what it wrote")
        return False
    for path, (how, _) in record.paths.items():
        if how == "touched":  # the cache's mark of use, as the build set it
            try:
                os.utime(path)
            except OSError:
                pass
    if mode not in ("quiet", "none"):
        for line in record.warnings:
            err.print(f"warning: {line}", markup=False)
        when = time.strftime("%H:%M:%S")
        err.print(
            f"{when} up to date: none of the {len(record.paths)} paths the last build read has changed, "
            f"and its outputs hold {', '.join(record.digests)}",
            markup=False,
        )
    if args.quiet:
        for digest in record.digests:
            say(digest)
    else:
        for line in record.lines:
            say(line)
        say(f"done in {time.monotonic() - started:.1f} s (up to date)")
    return True


class Recorder:
    """A build's trace, made into its record when the build ends as one that can be replayed."""

    def __init__(self, records: Records, key: str) -> None:
        self.records, self.key = records, key
        self.trace = Trace()
        self.started_ns = time.time_ns()
        self.warnings: list[str] = []

    def start(self) -> Recorder:
        self.trace.start()
        return self

    def watching(self, report: Reporter) -> Reporter:
        """``report``, telling the trace which phase the build is in (a host reached while
        writing the outputs is an output's, one reached before is an input) and keeping
        the warnings for the replay."""

        def watched(event: Event) -> None:
            if event.kind == "output" and event.fields.get("state") == "writing":
                self.trace.enter("outputs")
            elif event.kind in ("base", "step", "layer", "image"):
                self.trace.enter("inputs")
            elif event.kind == "warning":
                self.warnings.append(str(event.fields.get("text", "")))
            report(event)

        return watched

    def finish(self, results: Sequence[Result], lines: Sequence[str]) -> None:
        """Stop the trace; record it when the build can be answered from it."""
        trace = self.trace
        trace.stop()
        why = self._refusal(trace) or self._unheld(results)
        paths = self._paths(trace) if why is None else None
        if paths is None:
            log.debug("this build is not recorded for the up-to-date check: %s", why or "a file changed while it ran")
            self.records.forget(self.key)
            return
        outputs = [held for result in results for held in _held(result)]
        record = Record(paths, outputs, list(lines), [r.digest for r in results], self.warnings, time.time())
        try:
            self.records.write(self.key, record)
        except OSError:
            pass  # a build is not failed for its record

    def _refusal(self, trace: Trace) -> str | None:
        if trace.spoiled is not None:
            return trace.spoiled
        if trace.connected.get("inputs"):
            return "it reached a host before its outputs"
        return None

    @staticmethod
    def _unheld(results: Sequence[Result]) -> str | None:
        """An output of ``results`` that a replay could not check: one in a registry that
        is not an image's (``docker://``) tag or referrer."""
        for result in results:
            for written in result.outputs:
                if "://" in written.ref and not written.ref.startswith("docker://"):
                    return f"{written.ref} is not checked by a replay"
        return None

    def _paths(self, trace: Trace) -> dict[str, list[Any]] | None:
        """Every path the build's decision read, with its signature now; None when one
        that the build did not write changed while it ran."""
        modules = {f for m in list(sys.modules.values()) if isinstance(f := getattr(m, "__file__", None), str)}
        made = trace.written
        racy_from = self.started_ns - RACY_NS
        hows: dict[str, str] = {}
        for path in trace.looked:
            hows[path] = "full"
        for path in (*trace.read, *modules, sys.executable):
            hows[os.path.abspath(path)] = "full"
        for path in trace.touched - trace.written:
            hows[path] = "touched"
        for path in trace.written:
            hows[path] = "full"
        for path in trace.listed:
            hows[path] = "listed"
        out: dict[str, list[Any]] = {}
        own = str(self.records.folder)
        for path in sorted(hows):
            if path == own or _inside(path, {own}):
                continue  # the records, written after this
            if _inside(path, trace.created) and path not in made and path not in trace.listed:
                continue  # in a folder the build made (a temporary one, gone)
            how = hows[path]
            sig = signature(path, how)
            if how != "touched" and path not in made and _changed_since(path, racy_from, made):
                return None
            out[path] = [how, sig]
        return out


def _inside(path: str, folders: set[str]) -> bool:
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent):
        if parent in folders:
            return True
        parent = os.path.dirname(parent)
    return False


def _changed_since(path: str, since_ns: int, made: set[str]) -> bool:
    """Whether ``path`` changed after ``since_ns`` by another hand than the build's (a
    folder the build wrote into changes by the build's)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_ctime_ns < since_ns:
        return False
    if stat.S_ISDIR(st.st_mode):
        return not any(os.path.dirname(p) == path for p in made)
    return True


def _held(result: Result) -> list[HeldOutput]:
    from assembler.oci.reference import parse_ref

    held = []
    for written in result.outputs:
        if not written.ref.startswith("docker://"):
            continue
        text, _, note = written.ref.partition(" ")
        name = parse_ref(text).name
        if name is None:
            continue
        # a SIF attached as a referrer ("REF (referrer of ...)"): its manifest, by digest
        reference = written.digest if note else (name.reference or written.digest)
        held.append(HeldOutput(name.registry, name.repository, reference, written.digest, written.referrers))
    return held


def key_of(args: argparse.Namespace) -> str:
    """The key of this process's build ``args``."""
    given = sorted((name, repr(value)) for name, value in vars(args).items())
    return invocation_key(given, cwd=os.getcwd(), environ=os.environ, executable=sys.executable)


def cmd_build(args: argparse.Namespace) -> int:
    """``assemble build``: answered from its record when nothing changed, else run (and
    traced, to be recorded)."""
    from assembler.cache.store import default_root

    mode = mode_of(args)
    recorder: Recorder | None = None
    if usable(args, mode):
        records = Records((args.cache or default_root()).resolve())
        key = key_of(args)
        if replay(args, records, key, mode):
            return 0
        recorder = Recorder(records, key).start()
    from assembler.cli import build  # the manifest's models and the pipeline: only now

    try:
        return build.cmd_build(args, recorder=recorder)
    finally:
        if recorder is not None:
            recorder.trace.stop()  # a build that failed leaves no trace running
