"""``artifact:DIR:STEP[.NAME]``: a step's artifacts written as files into a folder, no image
(:mod:`assembler.pipeline.runs.artifacts` writes them, before any image writer). Neither read
nor written as an image: every verb is the default's."""

from __future__ import annotations

from assembler.transports.formats.base import Format


class ArtifactFormat(Format):
    """A step's artifacts as files."""

    transport = "artifact"


FORMAT = ArtifactFormat()
