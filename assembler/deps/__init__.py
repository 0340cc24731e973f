"""The dependency check: can the ELF files an image's layers add be loaded in it?

:mod:`assembler.deps.elf` reads one ELF file (pyelftools, owned here),
:mod:`assembler.deps.files` the final view of an image's paths and the facts of chosen
files, streamed from their layers, :mod:`assembler.deps.searchpath` where the image's
loaders look, and :mod:`assembler.deps.check` resolves what each file needs as ld.so would
and reports what is missing. :mod:`assembler.deps.gpucode` and :mod:`assembler.deps.archs`
read which GPU architectures the device code of a layer's ELF files (and wheels) is for,
for the image's labels.
"""

from __future__ import annotations

from assembler.deps.check import HOST_LIBRARIES, Miss, Note, Report, check_image, host_provided

__all__ = ["HOST_LIBRARIES", "Miss", "Note", "Report", "check_image", "host_provided"]
