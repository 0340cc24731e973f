"""``assemble MANIFEST`` run again with nothing changed: answered from the record of the
last such run, without loading the manifest's models or the pipeline.

A build that started no program and reached no host before its outputs (a no-change
rebuild: every step cached, every layer remembered) is traced (:mod:`assembler.trace`):
every file it opened, folder it listed and path it looked at, and the facts it decided
from where no file's identity tells (what ``/proc`` said of the filesystem buildah's
storage is on: :func:`assembler.trace.learned`; the kernel's files under ``/proc`` and
``/sys`` are no paths of a record). Its record (:mod:`assembler.cache.uptodate`), keyed by
the invocation (the arguments, the working folder, the environment less ``UNREAD_ENV``,
the interpreter), holds each of those paths' identity as the build left it, each fact's
value, the modules it ran (their files are paths too: an upgrade of assemble or of a
library is a change), and what its registry outputs held. The same invocation again
learns each fact again and compares it by value, compares every path, asks each registry
output whether its tag and referrers are still the digests written and its referrers
still listed (as a build does before it leaves them alone), writes ``--digestfile``
again, and when all agree prints what the build printed: the image is the one the build
would make. Anything else, and the build runs as ever (and records again).

Not recorded: a build that started a program (a step, a test, a base bootstrapped: their
reads are not seen here), reached a host before its outputs (a base by tag, a step cache
in a registry, an index), wrote an output no HEAD checks (``oras://``) or a folder of
files (``artifact:``), read a file that changed while it ran (its change time within
``RACY_NS`` of the build's start or after) or learned a fact that is no longer so when it
ends (storage mounted elsewhere meanwhile), or whose outputs another hand changed after an
output was done (each file it wrote is as it was then, and, once the record has waited
until the newest is ``RACY_NS`` old, as it was before the wait); ``--json``, ``--progress json``,
``--cache-max-size``, ``--rebuild``, ``--no-cache``, ``--sign``, another ``--executor``
and ``--full-check`` runs neither record nor use one. The replay writes the digest file
and the times of the cache entries the build marked used (for ``cache prune``), nothing
else.
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assembler.cache.uptodate import HeldOutput, Record, Records, as_json, facts_changed, invocation_key, signature
from assembler.cli.console import err, mode_of, say
from assembler.trace import Trace, housekeeping

if TYPE_CHECKING:
    from assembler.assemble import Result
    from assembler.pipeline.options import Event, Reporter

log = logging.getLogger(__name__)

RACY_NS = 1_000_000_000  # a file changed this close to the build's start may have changed while read
# (1 s: file systems with timestamps in whole seconds)
# Variables no build reads, that differ between two shells running the same command.
UNREAD_ENV = frozenset(
    {"_", "OLDPWD", "SHLVL", "SSH_CLIENT", "SSH_CONNECTION", "SSH_TTY", "TERM_SESSION_ID", "WINDOWID"}
)


def usable(args: argparse.Namespace, mode: str) -> bool:
    """Whether this build may use a record and make one."""
    return not (
        args.json
        or mode == "json"
        or args.cache_max_size is not None
        or args.rebuild
        or args.no_cache
        or args.full_check
        or args.executor != "local"
        or args.sign  # a signature is made anew by each build
    )


def outputs_held(outputs: Iterable[HeldOutput], args: argparse.Namespace) -> bool:
    """Each registry output still names the digest written, and holds and lists its
    referrers (as a build checks before it leaves them alone)."""
    outputs = list(outputs)
    if not outputs:
        return True
    from assembler.cli.arguments import registry_options
    from assembler.registry.client import Registry
    from assembler.registry.manifests import MANIFEST_TYPES, manifest_digest

    accept = ", ".join(MANIFEST_TYPES)
    options = registry_options(args)
    for out in outputs:
        with Registry(out.registry, options=options) as registry:
            for reference, digest in ((out.reference, out.digest), *((d, d) for d in out.referrers)):
                if manifest_digest(registry, out.repository, reference, accept) != digest:
                    return False
            for subject, wanted in ((out.digest, set(out.referrers)), (out.subject, {out.digest})):
                if subject and wanted:
                    listed = {d.digest for d in registry.list_referrers(out.repository, subject)}
                    if not wanted <= listed:
                        return False
    return True


def current(args: argparse.Namespace, records: Records, key: str) -> Record | None:
    """The record of ``key`` when nothing its build read changed and its registry outputs
    hold what it wrote; else None (the reason logged)."""
    try:
        record = records.read(key)
        if record is None:
            return None
        changed = record.changed()
        if changed is not None:
            log.debug("the last build's record is not used: %s is not as it left it", changed)
            return None
        if not outputs_held(record.outputs, args):
            log.debug("the last build's record is not used: a registry output does not hold what it wrote")
            return None
    except Exception as e:  # anything unexpected: the build runs and says what is wrong
        log.debug("the last build's record is not used: %s", e)
        return None
    return record


def replay(args: argparse.Namespace, records: Records, key: str, mode: str) -> bool:
    """Answer the build from its record (:func:`current`); False (nothing printed) when
    there is none to answer from."""
    started = time.monotonic()
    record = current(args, records, key)
    if record is None:
        return False
    from assembler.cli.digestfile import write_digest

    write_digest(args.digestfile, record.digests[0])
    for path, (how, _) in record.paths.items():
        if how == "touched":  # the cache's mark of use, as the build set it
            try:
                os.utime(path)
            except OSError:
                pass
    if mode not in ("quiet", "none"):
        for line in record.warnings:
            err.print(f"warning: {line}", markup=False)
        now, then = time.strftime("%H:%M:%S"), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.made))
        err.print(
            f"{now} up to date: none of the {len(record.paths)} paths the build of {then} read has changed, "
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

    def __init__(self, records: Records, key: str, *, digestfile: Path | None = None) -> None:
        self.records, self.key = records, key
        # written again by each replay (a pipe or /dev/fd/N would keep no digest)
        self.digestfile = os.path.abspath(digestfile) if digestfile is not None else None
        self.trace = Trace()
        self.started_ns = time.time_ns()
        self.warnings: list[str] = []
        self.raced: str | None = None  # a path read that changed while the build ran (no record)
        self.left: dict[str, Any] = {}  # what the build wrote, as it was when an output was done

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
            elif event.kind == "output" and event.fields.get("state") == "done":
                self._leave()
            elif event.kind in ("variant", "base", "step", "layer", "image"):
                self.trace.enter("inputs")
            elif event.kind == "warning":
                self.warnings.append(str(event.fields.get("text", "")))
            report(event)

        return watched

    def _leave(self) -> None:
        """What the build has written so far, as it leaves it: another hand that changes
        an output before the record is made is seen, not recorded as the build's."""
        with housekeeping():
            for path in self.trace.written.copy():  # one C call: a hook of another thread may add
                self.left[path] = signature(path, "full")

    def finish(self, results: Sequence[Result], lines: Sequence[str]) -> None:
        """Stop the trace; record it when the build can be answered from it. A build is
        not failed for its record."""
        self.trace.stop()
        try:
            self._record(results, lines)
        except Exception as e:
            log.debug("this build is not recorded for the up-to-date check: %s", e)

    def _record(self, results: Sequence[Result], lines: Sequence[str]) -> None:
        trace = self.trace
        facts = as_json({kind: dict(known) for kind, known in trace.facts.copy().items()})
        why = trace.spoiled or self._unheld(results)
        if why is None and (fact := facts_changed(facts)) is not None:
            why = f"{fact} changed while it ran"
        paths = self._paths(trace) if why is None else None
        if paths is None:
            why = why or f"{self.raced} changed while it ran"
            log.debug("this build is not recorded for the up-to-date check: %s", why)
            self.records.forget(self.key)
            return
        outputs = [held for result in results for held in _held(result)]
        digests = [r.digest for r in results]
        record = Record(paths, outputs, list(lines), digests, self.warnings, time.time(), facts)
        self.records.write(self.key, record)

    @staticmethod
    def _unheld(results: Sequence[Result]) -> str | None:
        """An output of ``results`` that a replay could not check: one in a registry that
        is not an image's (``docker://``) tag or referrer."""
        for result in results:
            for written in result.outputs:
                if written.ref.startswith("artifact:"):  # a folder of files (edited in place unseen)
                    return f"{written.ref} is a folder of files a replay does not check"
                if "://" in written.ref and not written.ref.startswith("docker://"):
                    return f"{written.ref} is not checked by a replay"
        return None

    def _paths(self, trace: Trace) -> dict[str, list[Any]] | None:
        """Every path the build's decision read, with its signature now; None when one
        that the build did not write changed while it ran."""
        modules = {f for m in list(sys.modules.values()) if isinstance(f := getattr(m, "__file__", None), str)}
        # Copies: a thread's hook call under way when the trace stopped may still add.
        read, looked, listed = set(trace.read), set(trace.looked), set(trace.listed)
        made, created, touched = set(trace.written), set(trace.created), set(trace.touched)
        racy_from = self.started_ns - RACY_NS
        hows: dict[str, str] = {}
        for path in looked:
            hows[path] = "full"
        for path in (*read, *modules, sys.executable):
            hows[os.path.abspath(path)] = "full"
        for path in touched - made:
            hows[path] = "touched"
        for path in made:
            hows[path] = "full"
        for path in listed:
            hows[path] = "listed"
        out: dict[str, list[Any]] = {}
        own = str(self.records.folder)
        for path in sorted(hows):
            if path in (own, self.digestfile) or _inside(path, {own}):
                continue  # the records, written after this; the digest file, written by each replay
            if _inside(path, created) and path not in made and path not in listed:
                continue  # in a folder the build made (a temporary one, gone)
            how = hows[path]
            sig = signature(path, how)
            if how != "touched" and path not in made and _changed_since(path, racy_from, made, listed=how == "listed"):
                self.raced = path
                return None
            if path in made and path in self.left and self.left[path] != sig:
                self.raced = path  # an output changed by another hand since the build wrote it
                return None
            out[path] = [how, sig]
        return out if self._settled(out, made) else None

    def _settled(self, out: dict[str, list[Any]], made: set[str]) -> bool:
        """Whether what the build wrote stays as recorded past the racy window. A file
        changed again within the window of its last change may keep every time a stat
        shows: so the record waits (at most ``RACY_NS``) until the newest output written is
        that old, and finds each as recorded; a later change then shows."""
        written = [p for p in out if p in made and out[p][0] == "full"]
        newest = max((_ctime(p) for p in written), default=0)
        wait = newest + RACY_NS - time.time_ns()
        if wait > 0:
            time.sleep(min(wait, RACY_NS) / 1e9)
        for path in written:
            if signature(path, "full") != out[path][1]:
                self.raced = path
                return False
        return True


def _ctime(path: str) -> int:
    try:
        return os.lstat(path).st_ctime_ns
    except OSError:
        return 0


def _inside(path: str, folders: set[str]) -> bool:
    parent = os.path.dirname(path)
    while parent and parent != os.path.dirname(parent):
        if parent in folders:
            return True
        parent = os.path.dirname(parent)
    return False


def _changed_since(path: str, since_ns: int, made: set[str], *, listed: bool) -> bool:
    """Whether ``path`` changed after ``since_ns`` by another hand than the build's; for a
    folder the build listed, any of its entries the build did not write (a file saved in
    place changes its own times, not its folder's)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return st.st_ctime_ns >= since_ns
    if not listed:
        return False
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.path not in made and entry.stat(follow_symlinks=False).st_ctime_ns >= since_ns:
                    return True
    except OSError:
        return True
    return st.st_ctime_ns >= since_ns and not any(os.path.dirname(p) == path for p in made)


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
        if note:  # a SIF attached as a referrer ("REF (referrer of ...)"): its manifest, listed under the image
            held.append(
                HeldOutput(name.registry, name.repository, written.digest, written.digest, subject=result.digest)
            )
        else:
            reference = name.reference or written.digest
            held.append(HeldOutput(name.registry, name.repository, reference, written.digest, written.referrers))
    return held


def key_of(args: argparse.Namespace) -> str:
    """The key of this process's build ``args``."""
    given = sorted((name, repr(value)) for name, value in vars(args).items())
    environ = {k: v for k, v in os.environ.items() if k not in UNREAD_ENV}
    return invocation_key(given, cwd=os.getcwd(), environ=environ, executable=sys.executable)


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
        recorder = Recorder(records, key, digestfile=args.digestfile).start()
    try:
        from assembler.cli import build  # the manifest's models and the pipeline: only now

        return build.cmd_build(args, recorder=recorder)
    finally:
        if recorder is not None:
            recorder.trace.stop()  # a build that failed leaves no trace running
