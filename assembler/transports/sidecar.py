"""An image's referrers (its SBOM, its provenance) as files next to an output that has no
place for them: a ``docker-archive:FILE`` (the ``docker save`` format knows no referrers),
an untagged ``oci-archive:FILE`` (skopeo reads an untagged archive only when its index
lists one manifest) and a ``sqsh:FILE`` (a bare squashfs).

They are ``FILE.spdx.json`` and ``FILE.provenance.intoto.json``: the suffixes of the
titles ``assemble referrers --save`` names them by, holding the same bytes as the
referrers pushed with the image (whose ``subject`` they name). Each is written to a temp
name in the output's folder and renamed; nothing is written anywhere else.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from assembler.cache import temp_prefix
from assembler.errors import InputError
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact

# Suffixes by artifact type: those of the titles the build gives them (assembler.sbom).
SUFFIXES = {mt.SPDX_JSON: ".spdx.json", mt.IN_TOTO_JSON: ".provenance.intoto.json"}


def sidecar_path(output: Path, artifact_type: str) -> Path:
    """Where the referrer of ``artifact_type`` of the output file ``output`` goes."""
    return output.with_name(output.name + SUFFIXES[artifact_type])


def check_sidecars(output: Path, transport: str) -> None:
    """InputError when a sidecar path of ``output`` is taken by a folder (checked before building)."""
    for artifact_type in SUFFIXES:
        path = sidecar_path(output, artifact_type)
        if path.is_dir():
            raise InputError(
                f"{transport}:{output}: {path} is a folder; the SBOM and provenance go there as files",
                hint="choose another output path, or pass --no-sbom",
            )


def write_sidecars(output: Path, artifacts: Sequence[Artifact]) -> list[Path]:
    """Write ``artifacts`` next to ``output``; the paths written. Sidecars of ``output``
    that ``artifacts`` do not replace are removed: left, they would describe an image the
    output no longer holds (``--no-sbom`` writes none).

    Raises InputError for an artifact type without a sidecar name, OSError when writing fails."""
    written = []
    for artifact in artifacts:
        if artifact.artifact_type not in SUFFIXES:
            raise InputError(f"{output}: no file name for a referrer of type {artifact.artifact_type}")
        path = sidecar_path(output, artifact.artifact_type)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(f".{path.name}."))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(artifact.data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        written.append(path)
    for artifact_type in SUFFIXES:
        stale = sidecar_path(output, artifact_type)
        if stale not in written and stale.is_file():
            stale.unlink()
    return written


def read_sidecars(output: Path) -> list[tuple[str, Path]]:
    """The sidecars next to ``output`` that exist: (artifact type, path)."""
    found = [(t, sidecar_path(output, t)) for t in SUFFIXES]
    return [(t, p) for t, p in found if p.is_file()]
