"""What every format's reader and writer shares: the ``Context`` they are given, a
reference's local path, the registry options, the cache keys of a resolved registry name,
the check before an output replaces a file, and what writing one output did (``Written``).
Below :mod:`assembler.transports.formats`, which the package's reading functions ask."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from assembler.archive.compress import Compression
from assembler.archive.headers import LayerObserver
from assembler.cache import Cache, key_of
from assembler.errors import InputError
from assembler.oci.descriptor import Platform
from assembler.oci.reference import Ref
from assembler.proc import Runner
from assembler.transports import archive
from assembler.transports.common import RegistryOptions


@dataclass(frozen=True)
class Context:
    """What readers and writers need besides the reference."""

    cache: Cache
    runner: Runner
    platform: Platform
    epoch: int
    compression: Compression = "zstd"
    base_dir: Path = field(default_factory=Path.cwd)
    registry: RegistryOptions | None = None
    progress: Callable[[int], None] | None = None  # bytes compressed (layers written) or read
    upload_progress: Callable[[int], None] | None = None  # bytes sent to a registry
    # What a copy: layer never takes from the host: the cache and the outputs (a manifest
    # folder copied whole holds them, and they grow with every build).
    leave_out: tuple[Path, ...] = ()
    # What reads each layer a build writes, as it is written (assembler.pipeline.layers.observers).
    observers: tuple[LayerObserver, ...] = ()


def local_path(ctx: Context, path: str) -> Path:
    """A reference's path: ``~`` expanded, a relative one against the context's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ctx.base_dir / p


def registry_options(ctx: Context) -> RegistryOptions:
    return ctx.registry if ctx.registry is not None else RegistryOptions()


def resolved_key(ref: Ref, platform: Platform) -> str:
    """The cache key of the image digest a registry reference was last resolved to."""
    return "resolved-" + key_of({"ref": str(ref), "platform": str(platform)})


def named_key(ref: Ref, platform: Platform) -> str:
    """The memo of the manifest a registry name was last resolved to (its layers perhaps
    never fetched: a build reads them only when it needs them)."""
    return "named-" + resolved_key(ref, platform)


def check_replaceable(
    path: Path,
    kind: str,
    *,
    force: bool,
    ours: Callable[[Path], bool] | None = None,
    what: str = "an image archive",
) -> None:
    """Refuse (InputError) to write output ``kind`` at ``path`` over something that is not
    ours: a file that ``ours`` does not recognise (by default: an oci- or docker-archive;
    ``what`` names what it recognises), a folder that is not an OCI layout, a symlink.
    ``force`` allows replacing any file (never a folder by a file) and a symlink: the link
    itself, never what it points to (an output is not written through one)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink():
        if force:
            return
        raise InputError(
            f"{kind}:{path}: is a symlink to {os.readlink(path)}; not writing through it",
            hint="--force replaces the link itself (what it points to is left as it is), or choose another path",
        )
    if kind == "oci":
        if path.is_dir() and (not any(path.iterdir()) or (path / "oci-layout").is_file()):
            return
        what = "a folder that is not an OCI layout" if path.is_dir() else "a file, not an OCI layout folder"
        raise InputError(f"oci:{path}: {what}", hint="choose another path (an existing layout is added to)")
    if path.is_dir():
        raise InputError(f"{kind}:{path}: is a folder; the output is a file", hint="choose another path")
    if force or (ours or archive.is_image_archive)(path):
        return
    raise InputError(
        f"{kind}:{path}: exists and is not {what}; not replacing it",
        hint="pass --force to replace it, or choose another path",
    )


def file_head(path: Path, size: int = 64) -> bytes:
    """The first ``size`` bytes of the file at ``path`` (where a format's magic is); b"" when
    it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


@dataclass(frozen=True)
class Written:
    """What writing one output did."""

    ref: str
    digest: str
    uploaded_bytes: int = 0
    uploaded_blobs: int = 0
    mounted_blobs: int = 0
    skipped_blobs: int = 0
    referrers: tuple[str, ...] = ()  # digests of the referrers written with it (SBOM, provenance)
    signatures: tuple[str, ...] = ()  # --sign: digests of the cosign .sig and .att manifests written
    tagged_index: bool = False  # the index the output's tag names (the image and its weights): signed too
