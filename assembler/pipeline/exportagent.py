"""The export agent (:mod:`assembler.compile.agent`) with the readers that live above
``compile``: what the dependency check, the SBOM and the GPU-arch labels need of each
layer it writes (artifacts, runtime steps' changes) is read as the layer is written, from
the container's files, and recorded as their memos; those layers are not read back.

A build runs ``python -m assembler.pipeline.exportagent`` (``Workspace.agent``). Its
jobs say whether the dependency check runs (``elf_facts``: without it no ELF file's facts
are read) and which artifacts are read at all (``read``, by step: the image's and those a
label names, :func:`assembler.pipeline.labels.artifacts_read`); the labels' device code is
read of those only. A runtime step's changes are read unless no image holds them
(``shipped``: a compile step's toolchain).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from assembler.archive.headers import LayerHeaders
from assembler.cache import Cache
from assembler.compile import agent
from assembler.deps.archs import CodeAsWritten, remember_code
from assembler.deps.elf import FactsAsWritten
from assembler.sbom.packages import DATABASE_TEXTS, remember_kept_texts

MODULE = __name__


class _Readers:
    def headers(self, cache: Cache, job: Mapping[str, Any], artifact: str | None) -> LayerHeaders:
        if artifact is None:
            read, gpu = bool(job.get("shipped", True)), None
        else:
            read, gpu = artifact in job.get("read", {}).get(job.get("step"), ()), CodeAsWritten(cache.tmp)
        if not read:
            return LayerHeaders()
        elf = FactsAsWritten(cache.tmp) if job.get("elf_facts") else None
        return LayerHeaders(texts=DATABASE_TEXTS, elf=elf, gpu=gpu)

    def remember(self, cache: Cache, headers: LayerHeaders, diff_id: str) -> None:
        remember_kept_texts(cache, headers, diff_id)
        remember_code(cache, headers, diff_id)


def main() -> int:
    return agent.main(readers=_Readers())


if __name__ == "__main__":
    raise SystemExit(main())
