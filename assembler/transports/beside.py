"""What goes beside an image and never in it (a model's weights, :mod:`assembler.weights`),
written by the outputs that can hold it: pushed to the image's repository as referrers of
it (the registry's referrers API, or the ``sha256-DIGEST`` tag's index where it has none),
added to an OCI layout as untagged entries whose ``subject`` is the image, and written as
squashfs files beside a SIF. A blob the repository holds already is not sent again: a code
change re-pushes a small manifest, never a weight byte.

:class:`Beside` is what a writer is handed (``Target.weights``): the artifact of files, a
reader of its blobs, and its squashfs; the weights package makes them, this one only writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from assembler.oci import mediatypes as mt
from assembler.oci.artifact import FilesArtifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.reference import ImageName
from assembler.proc import Runner
from assembler.transports.common import BlobReader, RegistryOptions
from assembler.transports.context import Written


class Beside(Protocol):
    """Files that go beside an image (a model's weights), as its outputs write them."""

    @property
    def name(self) -> str: ...

    @property
    def at(self) -> str:
        """Where the image's programs find the files (a bind's target)."""
        ...

    def artifact(self, subject: Descriptor | None) -> FilesArtifact:
        """Its manifest, a referrer of ``subject``."""
        ...

    def blobs(self) -> BlobReader:
        """A reader of the artifact's layers."""
        ...

    def write_squashfs(self, out: Path, *, runner: Runner, compressor: str) -> None:
        """The files as the squashfs ``out``."""
        ...


def push(
    name: ImageName,
    models: Sequence[Beside],
    subject: Descriptor,
    *,
    options: RegistryOptions,
    progress: Callable[[int], None] | None = None,
) -> list[Written]:
    """Push each model's blobs and manifest (a referrer of ``subject``) to ``name``'s repository."""
    from assembler.registry.blobs import WithBytes  # the registry client, only when pushing
    from assembler.registry.client import Registry

    out = []
    with Registry(name.registry, options=options, progress=progress) as reg:
        for model in models:
            before = replace(reg.stats)
            art = model.artifact(subject)
            reader = WithBytes(model.blobs(), {art.config.digest: art.config_bytes})
            for desc in (*art.layers, art.config):
                reg.push_blob(name.repository, desc, reader)
            digest = reg.put_referrer(name.repository, art.manifest_bytes, mt.OCI_MANIFEST, subject)
            s = reg.stats
            out.append(
                Written(
                    f"{name.registry}/{name.repository}@{digest} "
                    f"(weights {model.name}, referrer of {subject.digest[:19]})",
                    digest,
                    s.uploaded_bytes - before.uploaded_bytes,
                    s.uploaded_blobs - before.uploaded_blobs,
                    s.mounted_blobs - before.mounted_blobs,
                    s.skipped_blobs - before.skipped_blobs,
                )
            )
    return out


def write_layout(path: Path, models: Sequence[Beside], subject: Descriptor, *, ref: str) -> list[Written]:
    """Add each model to the OCI layout at ``path``: its blobs, and its manifest untagged."""
    from assembler.transports import layout

    out = []
    for model in models:
        entry = layout.write_artifact(path, model.artifact(subject), tag="", blobs=model.blobs())
        out.append(Written(f"{ref} (weights {model.name}, referrer of {subject.digest[:19]})", entry.digest))
    return out


def sidecar_path(sif: Path, model: str) -> Path:
    """Where a model's squashfs goes beside ``sif``: ``app.sif`` -> ``app.weights-NAME.sqfs``."""
    return sif.with_name(f"{sif.stem}.weights-{model}.sqfs")


def write_squashfs(sif: Path, models: Sequence[Beside], *, runner: Runner, compressor: str) -> list[Written]:
    """Each model as a squashfs beside ``sif``, with the bind that mounts it at its ``at``."""
    from assembler.oci.digest import file_digest

    out = []
    for model in models:
        dest = sidecar_path(sif, model.name)
        model.write_squashfs(dest, runner=runner, compressor=compressor)
        bind = f"--bind {dest}:{model.at}:image-src=/"
        out.append(Written(f"{dest} (weights {model.name}; apptainer {bind})", file_digest(dest)))
    return out
