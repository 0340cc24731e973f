"""An image's referrers (its SBOM, its provenance) as files next to an output that has no
place for them: a ``docker-archive:FILE`` (the ``docker save`` format knows no referrers),
an untagged ``oci-archive:FILE`` (skopeo reads an untagged archive only when its index
lists one manifest) and a ``sqsh:FILE`` (a bare squashfs).

They are ``FILE.spdx.json``, ``FILE.provenance.intoto.json`` and (the image's tests ran)
``FILE.tests.intoto.json``: the suffixes of the titles ``assemble referrers --save`` names
them by, holding the same bytes as the referrers pushed with the image (whose ``subject``
they name). Each is written to a temp
name in the output's folder and renamed; nothing is written anywhere else.

Those names may be the user's: a file there is replaced, or removed (``--no-sbom``: it
would describe an image the output no longer holds), only when it is ours: a regular file,
not a symlink, whose bytes the caller's ``ours`` recognises as this tool's SBOM or
provenance (:func:`assembler.sbom.made_by_assemble`: the transports do not read those
formats). Anything else there is left as it is: a build that would write there is refused
before it starts, ``--force`` or not (``--force`` is for the output it names, not for
files beside it); with ``--no-sbom`` it is not touched.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from assembler.cache import temp_prefix
from assembler.errors import InputError
from assembler.oci import mediatypes as mt
from assembler.oci.artifact import Artifact

# Suffixes by kind (artifact type, predicate type of an in-toto statement): those of the
# titles the build gives them (assembler.sbom, assembler.sbom.testresult).
Kind = tuple[str, str | None]
SUFFIXES: dict[Kind, str] = {
    (mt.SPDX_JSON, None): ".spdx.json",
    (mt.IN_TOTO_JSON, mt.PREDICATE_TYPES["slsaprovenance1"]): ".provenance.intoto.json",
    (mt.IN_TOTO_JSON, mt.PREDICATE_TYPES["testresult"]): ".tests.intoto.json",
}
# (artifact type, a file's bytes): whether this tool wrote them.
Recognizer = Callable[[str, bytes], bool]
_LARGEST = 256 << 20  # a file larger is not an SBOM of ours (and is not read to find out)


def kind_of(artifact: Artifact) -> Kind:
    """The sidecar kind of a referrer: its type, and an in-toto statement's predicate type."""
    return artifact.artifact_type, artifact.annotations.get(mt.ANNOTATION_PREDICATE_TYPE)


def sidecar_path(output: Path, kind: Kind) -> Path:
    """Where the referrer of ``kind`` of the output file ``output`` goes."""
    return output.with_name(output.name + SUFFIXES[kind])


def is_ours(path: Path, artifact_type: str, ours: Recognizer) -> bool:
    """Whether ``path`` is a regular file (a symlink is not) that ``ours`` recognises."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # absent, a symlink (ELOOP), unreadable
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _LARGEST:  # a folder, a FIFO...
            return False
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    except OSError:
        return False
    finally:
        os.close(fd)
    return ours(artifact_type, data)


def _check_free(output: Path, transport: str, kind: Kind, ours: Recognizer) -> Path:
    """The sidecar path of ``kind``; InputError when something not ours is there."""
    path = sidecar_path(output, kind)
    if not os.path.lexists(path) or is_ours(path, kind[0], ours):
        return path
    if path.is_dir() and not path.is_symlink():
        raise InputError(
            f"{transport}:{output}: {path} is a folder; the SBOM and provenance go there as files",
            hint="choose another output path, or pass --no-sbom",
        )
    raise InputError(
        f"{transport}:{output}: {path} exists and was not written by assemble; not replacing it",
        hint="move it away or choose another output path; --no-sbom writes no SBOM and leaves it as it is",
    )


def umask() -> int:
    """This process's umask, read without setting it (``os.umask`` sets it, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def beside_mode(output: Path) -> int:
    """The mode of a file written beside ``output`` (an SBOM, a model's squashfs): the
    output's own read and write bits, so that whoever may read the output reads what goes
    with it (a weights ``.sqfs`` was 0600, as its temp file was made, beside a 0755 SIF: a
    colleague's Apptainer could run the image and not mount its weights; issue 67); a file
    as ``open()`` makes it (0666 less the umask) where the output is not a file."""
    try:
        st = os.stat(output)
    except OSError:
        return 0o666 & ~umask()
    return stat.S_IMODE(st.st_mode) & 0o666 if stat.S_ISREG(st.st_mode) else 0o666 & ~umask()


def check_sidecars(output: Path, transport: str, *, ours: Recognizer) -> None:
    """InputError when a sidecar path of ``output`` holds something not ours (checked
    before building, where the build writes an SBOM)."""
    for kind in SUFFIXES:
        _check_free(output, transport, kind, ours)


def write_sidecars(output: Path, transport: str, artifacts: Sequence[Artifact], *, ours: Recognizer) -> list[Path]:
    """Write ``artifacts`` next to ``output``; the paths written. Sidecars of ours that
    ``artifacts`` do not replace are removed: left, they would describe an image the output
    no longer holds (``--no-sbom`` writes none). Nothing is written while a path is taken.

    Raises InputError for an artifact type without a sidecar name or a path taken by
    something not ours, OSError when writing fails."""
    for artifact in artifacts:
        if kind_of(artifact) not in SUFFIXES:
            raise InputError(f"{output}: no file name for a referrer of type {artifact.artifact_type}")
    paths = [_check_free(output, transport, kind_of(a), ours) for a in artifacts]
    for artifact, path in zip(artifacts, paths, strict=True):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(f".{path.name}."))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(artifact.data)
            os.chmod(tmp, beside_mode(output))
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    for kind in SUFFIXES:
        stale = sidecar_path(output, kind)
        if stale not in paths and is_ours(stale, kind[0], ours):
            stale.unlink()
    return paths


def read_sidecars(output: Path) -> list[tuple[str, Path]]:
    """The sidecars next to ``output`` that exist: (artifact type, path)."""
    found = [(kind[0], sidecar_path(output, kind)) for kind in SUFFIXES]
    return [(t, p) for t, p in found if p.is_file()]
