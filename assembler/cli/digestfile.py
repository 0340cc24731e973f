"""``--digestfile FILE``: the image digest alone, no newline (as podman's --digestfile,
docker's --iidfile), for ``build``, ``sif``, ``sqsh`` and the up-to-date replay."""

from __future__ import annotations

from pathlib import Path

from assembler.errors import InputError


def check_digestfile(path: Path | None) -> None:
    """Refuses a ``--digestfile`` that cannot be written, before any work."""
    if path is not None and (path.is_dir() or not path.parent.is_dir()):
        raise InputError(f"--digestfile {path}: not a file in an existing folder")


def write_digest(path: Path | None, digest: str) -> None:
    """Write ``digest`` to ``path`` (None: nothing); InputError when it cannot be written."""
    if path is None:
        return
    try:
        path.write_text(digest)
    except OSError as e:
        raise InputError(f"--digestfile {path}: {e.strerror or e}") from None
