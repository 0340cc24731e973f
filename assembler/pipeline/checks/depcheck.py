"""The dependency check of a build (:mod:`assembler.deps`): the ELF files of its
``artifact:``, ``copy:``, ``pip:`` and ``url:`` layers must load in the image it made.

Wheels are checked too: pip itself would refuse a manylinux wheel on a base whose glibc
is older than its tag or that has no glibc at all (musl, scratch), and the layers of
``pip:`` install no pip run to refuse it."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from assembler.cache import Cache
from assembler.cache.memos import SharedFacts
from assembler.deps import Miss, Report, check_image
from assembler.errors import MissingDependencies
from assembler.manifest.schema.model import AbsentLibrary
from assembler.pipeline.options import Event, Reporter
from assembler.pipeline.runs.builder import Built

CHECKED_KINDS = ("artifact", "copy", "pip", "url")
_NOTES_SHOWN = 5


def check_built(
    built: Built,
    cache: Cache,
    *,
    report: Reporter,
    shared: SharedFacts | None = None,
    absent: Sequence[AbsentLibrary] = (),
) -> Report:
    """Check ``built``'s artifact, copy, pip and url layers; MissingDependencies naming every miss
    (file, library or version, layer) when a file cannot load in the image, but for the
    libraries the manifest's ``absent_libraries`` (``absent``) says it goes without, which are
    reported with their reason. The report is remembered in ``cache`` (and ``shared``);
    layers are read through ``built.blobs``."""
    image = built.image
    names = [""] * len(image.layers)
    for layer in built.layers:
        if layer.index < len(names):
            names[layer.index] = layer.what
    layers = [r.index for r in built.layers if r.kind in CHECKED_KINDS and r.index < len(names)]
    with cache.workdir("deps-") as work:
        result = check_image(
            image, built.blobs.open_blob, layers=layers, names=names, cache=cache, workdir=work, shared=shared
        )
    report_notes(result, len(layers), report=report)
    misses = excuse(result.misses, absent, report=report)
    if misses:
        lines = "\n".join(f"  {m}" for m in misses)
        ldconfig = (
            "run ldconfig (a run: layer) after the layer adding a library to an ld.so.conf folder, "
            "or set LD_LIBRARY_PATH; "
            if any(m.reason for m in misses)
            else ""
        )
        raise MissingDependencies(
            f"dependency check: {len(misses)} missing in the image\n{lines}",
            misses=misses,
            hint=f"add the library to the runtime base (a packages: layer) or the artifact; {ldconfig}"
            "where the image goes without it on purpose, say so in absent_libraries (library, needed_by, "
            "because); --no-deps-check builds anyway",
        )
    return result


def excuse(misses: Sequence[Miss], absent: Sequence[AbsentLibrary], *, report: Reporter) -> tuple[Miss, ...]:
    """The misses no ``absent`` entry names (a missing library, or with ``version`` a symbol
    version the image's library lacks, whose soname and needing file match one); each entry's
    misses reported as info with its reason, and an entry that names none as a warning (the
    layers changed under it: it would hide a real miss later)."""
    left = []
    hits: dict[int, list[Miss]] = {i: [] for i in range(len(absent))}
    for miss in misses:
        entry = next((i for i, a in enumerate(absent) if _names(a, miss)), None)
        if entry is None:
            left.append(miss)
        else:
            hits[entry].append(miss)
    for i, a in enumerate(absent):
        what = f"{a.library} {a.version}" if a.version else a.library
        found = hits[i]
        if not found:
            report(
                Event(
                    "warning",
                    {"text": f"absent_libraries: {what} needed by {a.needed_by}: no file misses it; remove it"},
                )
            )
            continue
        files = sorted({m.file for m in found})
        more = f" and {len(files) - 1} more" if len(files) > 1 else ""
        report(
            Event(
                "info",
                {"text": f"dependency check: {what} absent on purpose (needed by {files[0]}{more}): {a.because}"},
            )
        )
    return tuple(left)


def _names(entry: AbsentLibrary, miss: Miss) -> bool:
    if not (fnmatchcase(miss.library, entry.library) and fnmatchcase(miss.file, entry.needed_by)):
        return False
    if entry.version is None:
        return miss.kind == "library"
    return miss.kind == "version" and fnmatchcase(miss.version, entry.version)


def report_notes(result: Report, layers: int, *, report: Reporter) -> None:
    """What the check found that is not a miss, as events. Libraries that load because the
    program loading them loaded theirs first (torch's extensions need ``libc10.so`` from
    torch's folder, which Python has loaded) are how such packages work, nothing the user
    can change: counted in the info line (``assemble deps`` lists them), never a warning on
    every build. A library found only from the working directory (a relative RUNPATH)
    is one the user can fix, and fails under Apptainer: a warning, each."""
    loaded_first = [n for n in result.notes if not n.workdir]
    from_workdir = [n for n in result.notes if n.workdir]
    text = f"dependency check: {result.files} ELF files in {layers} layers"
    if loaded_first:
        files = len({n.file for n in loaded_first})
        text += (
            f"; {_count(len(loaded_first), 'library', 'libraries')} needed off the search path of "
            f"{_count(files, 'shared object', 'shared objects')}, loaded first by the program that loads them "
            "(`assemble deps IMAGE` lists them)"
        )
    if result.host:
        text += f"; left to the host: {', '.join(result.host)}"
    report(Event("info", {"text": text}))
    for note in from_workdir[:_NOTES_SHOWN]:
        report(Event("warning", {"text": str(note)}))
    if len(from_workdir) > _NOTES_SHOWN:
        report(Event("warning", {"text": f"... and {len(from_workdir) - _NOTES_SHOWN} more such libraries"}))


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
