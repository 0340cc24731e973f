"""The dependency check of a build (:mod:`assembler.deps`): the ELF files of its
``artifact:``, ``copy:``, ``pip:`` and ``url:`` layers must load in the image it made.

Wheels are checked too: pip itself would refuse a manylinux wheel on a base whose glibc
is older than its tag or that has no glibc at all (musl, scratch), and the layers of
``pip:`` install no pip run to refuse it."""

from __future__ import annotations

from assembler.cache import Cache
from assembler.cache.memos import SharedFacts
from assembler.deps import Report, check_image
from assembler.errors import MissingDependencies
from assembler.pipeline.builder import Built
from assembler.pipeline.options import Event, Reporter

CHECKED_KINDS = ("artifact", "copy", "pip", "url")
_NOTES_SHOWN = 5


def check_built(built: Built, cache: Cache, *, report: Reporter, shared: SharedFacts | None = None) -> Report:
    """Check ``built``'s artifact, copy, pip and url layers; MissingDependencies naming every miss
    (file, library or version, layer) when a file cannot load in the image. The report is
    remembered in ``cache`` (and ``shared``); layers are read through ``built.blobs``."""
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
    host = f"; left to the host: {', '.join(result.host)}" if result.host else ""
    report(Event("info", {"text": f"dependency check: {result.files} ELF files in {len(layers)} layers{host}"}))
    for note in result.notes[:_NOTES_SHOWN]:
        report(Event("warning", {"text": str(note)}))
    if len(result.notes) > _NOTES_SHOWN:
        report(Event("warning", {"text": f"... and {len(result.notes) - _NOTES_SHOWN} more such libraries"}))
    if result.misses:
        lines = "\n".join(f"  {m}" for m in result.misses)
        ldconfig = (
            "run ldconfig (a run: layer) after the layer adding a library to an ld.so.conf folder, "
            "or set LD_LIBRARY_PATH; "
            if any(m.reason for m in result.misses)
            else ""
        )
        raise MissingDependencies(
            f"dependency check: {len(result.misses)} missing in the image\n{lines}",
            misses=result.misses,
            hint=f"add the library to the runtime base (a packages: layer) or the artifact; {ldconfig}"
            "--no-deps-check builds anyway",
        )
    return result
