"""What reads each layer a build writes, as it is written: the one list of layer observers
(:class:`assembler.archive.headers.LayerObserver`) a build hands its layer writers
(:attr:`assembler.transports.context.Context.observers`) and the export agent hands its
own. Each keeps what it read as the memo its reader of the blob would record, so no new
layer is read back for it. A new observer is one class beside its reader and one entry here.
"""

from __future__ import annotations

from assembler.archive.headers import LayerObserver
from assembler.cache import Cache
from assembler.deps.archs import CodeAsWritten
from assembler.deps.elf import FactsAsWritten
from assembler.sbom.packages import DatabaseTexts


def layer_observers(cache: Cache, *, deps_check: bool, device_code: bool = False) -> tuple[LayerObserver, ...]:
    """The observers of a layer written into ``cache``: the SBOM's package texts always,
    the dependency check's ELF facts when it runs (``deps_check``), and the device code the
    GPU-arch labels name when they read this layer (``device_code``: an artifact's)."""
    observers: list[LayerObserver] = [DatabaseTexts(cache)]
    if deps_check:
        observers.append(FactsAsWritten(cache))
    if device_code:
        observers.append(CodeAsWritten(cache))
    return tuple(observers)
