"""The export agent (:mod:`assembler.compile.agent`) with the readers that live above
``compile``: what the dependency check, the SBOM and the GPU-arch labels need of each
layer it writes (artifacts, runtime steps' changes) is read as the layer is written, from
the container's files, and recorded as their memos; those layers are not read back.

A build runs ``python -m assembler.pipeline.layers.exportagent`` (``Workspace.agent``). Its
jobs say whether the dependency check runs (``elf_facts``: without it no ELF file's facts
are read) and which artifacts are read at all (``read``, by step: the image's and those a
label names, :func:`assembler.pipeline.image.labels.artifacts_read`); the labels' device code is
read of those only. A runtime step's changes are read unless no image holds them
(``shipped``: a compile step's toolchain).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from assembler.archive.headers import LayerObserver
from assembler.cache import Cache
from assembler.compile import agent
from assembler.pipeline.layers.observers import layer_observers

MODULE = __name__


class _Readers:
    def observers(self, cache: Cache, job: Mapping[str, Any], artifact: str | None) -> Sequence[LayerObserver]:
        if artifact is None:
            read = bool(job.get("shipped", True))
        else:
            read = artifact in job.get("read", {}).get(job.get("step"), ())
        if not read:
            return ()
        return layer_observers(cache, deps_check=bool(job.get("elf_facts")), device_code=artifact is not None)


def main() -> int:
    return agent.main(readers=_Readers())


if __name__ == "__main__":
    raise SystemExit(main())
