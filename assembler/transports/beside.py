"""What goes beside an image and never in it (a model's weights, :mod:`assembler.weights`),
written by the outputs that can hold it: pushed to the image's repository as referrers of
it (the registry's referrers API, or the ``sha256-DIGEST`` tag's index where it has none),
added to an OCI layout as untagged entries whose ``subject`` is the image, and written as
squashfs files beside a SIF. A blob the repository holds already is not sent again: a code
change re-pushes a small manifest, never a weight byte.

:class:`Beside` is what a writer is handed (``Target.weights``): the artifact of files, a
reader of its blobs, and its squashfs; the weights package makes them, this one only writes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from assembler.oci import mediatypes as mt
from assembler.oci.artifact import FilesArtifact
from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json
from assembler.oci.image import Image
from assembler.oci.reference import ImageName
from assembler.proc import Runner
from assembler.transports.common import BlobReader, RegistryOptions
from assembler.transports.context import Written
from assembler.transports.hpc.squash import Squash
from assembler.transports.sidecar import beside_mode


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

    def write_squashfs(self, out: Path, *, runner: Runner, squash: Squash) -> None:
        """The files as the squashfs ``out``."""
        ...


def push(
    name: ImageName,
    models: Sequence[Beside],
    subject: Descriptor | None,
    *,
    options: RegistryOptions,
    progress: Callable[[int], None] | None = None,
) -> list[Written]:
    """Push each model's blobs and manifest (a referrer of ``subject``; None: of no image,
    the index of several platforms' images names it) to ``name``'s repository, by digest."""
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
            if subject is None:
                digest = reg.put_manifest(name.repository, art.digest, art.manifest_bytes, mt.OCI_MANIFEST)
            else:
                digest = reg.put_referrer(name.repository, art.manifest_bytes, mt.OCI_MANIFEST, subject)
            s = reg.stats
            of = f"referrer of {subject.digest[:19]}" if subject is not None else "in the index"
            out.append(
                Written(
                    f"{name.registry}/{name.repository}@{digest} (weights {model.name}, {of})",
                    digest,
                    s.uploaded_bytes - before.uploaded_bytes,
                    s.uploaded_blobs - before.uploaded_blobs,
                    s.mounted_blobs - before.mounted_blobs,
                    s.skipped_blobs - before.skipped_blobs,
                )
            )
    return out


WEIGHTS_PLATFORM = Platform("unknown", "unknown")  # no runtime's: as BuildKit's attestations and Cog's weights
# A model's manifest's annotations (and its entry's in an index or a layout): which model,
# where the image finds it, the digest of its files' sha256sum listing; the image it goes with.
ANNOTATION_NAME = "io.assemble.weights.name"
ANNOTATION_AT = "io.assemble.weights.at"
ANNOTATION_SET = "io.assemble.weights.set-digest"
ANNOTATION_SUBJECT = "io.assemble.subject"


def index_bytes(image: Image, models: Sequence[Beside]) -> bytes:
    """The index a tag names when weights go beside the image: the image (its platform) and
    each model's manifest (its ``artifactType``, platform ``unknown/unknown``, its name),
    in the models' order. A runtime picks the image by its platform; the weights are
    exactly these, whatever other referrers the image has collected."""
    entries = [replace(image.descriptor, platform=image.platform).to_json()]
    return canonical_json(
        {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries + index_entries(models, image.descriptor)}
    )


def index_entries(models: Sequence[Beside], subject: Descriptor | None) -> list[dict[str, object]]:
    """Each model's entry in an index: its manifest's descriptor, its ``artifactType``, the
    platform ``unknown/unknown`` and its annotations (its name, where it goes, its files' digest)."""
    out = []
    for model in models:
        art = model.artifact(subject)
        out.append(replace(art.descriptor(art.annotations), platform=WEIGHTS_PLATFORM).to_json())
    return out


def put_index(name: ImageName, image: Image, models: Sequence[Beside], *, options: RegistryOptions) -> str:
    """Put :func:`index_bytes` under ``name``'s tag (the image and the models pushed before); its digest."""
    from assembler.registry.client import Registry

    with Registry(name.registry, options=options) as reg:
        return reg.put_manifest(name.repository, name.reference, index_bytes(image, models), mt.OCI_INDEX)


def write_layout(path: Path, models: Sequence[Beside], subject: Descriptor, *, ref: str) -> list[Written]:
    """Add each model to the OCI layout at ``path``: its blobs, and its manifest untagged,
    replacing the entry of the same name written for the same image before (a new
    checkpoint): the layout lists exactly one of each model per image."""
    from assembler.transports import layout

    out = []
    for model in models:
        art = model.artifact(subject)
        notes = {**art.annotations, ANNOTATION_SUBJECT: subject.digest}

        def replaces(entry: dict[str, object], art: FilesArtifact = art, notes: dict[str, str] = notes) -> bool:
            was = entry.get("annotations")
            same = isinstance(was, dict) and all(
                was.get(k) == notes.get(k) for k in (ANNOTATION_NAME, ANNOTATION_SUBJECT)
            )
            return entry.get("artifactType") == art.artifact_type and same

        written = layout.write_artifact(path, art, tag="", blobs=model.blobs(), annotations=notes, replaces=replaces)
        out.append(Written(f"{ref} (weights {model.name}, referrer of {subject.digest[:19]})", written.digest))
    return out


def sidecar_path(image: Path, model: str) -> Path:
    """Where a model's squashfs goes beside ``image``: ``app.sif`` -> ``app.weights-NAME.sqfs``."""
    return image.with_name(f"{image.stem}.weights-{model}.sqfs")


APPTAINER_BIND = "apptainer --bind {file}:{at}:image-src=/"
ENROOT_MOUNT = "squashfuse {file} DIR; enroot start --mount DIR:{at}"


def write_squashfs(
    image: Path, models: Sequence[Beside], *, runner: Runner, squash: Squash, how: str = APPTAINER_BIND
) -> list[Written]:
    """Each model as a squashfs beside ``image`` (a SIF, an Enroot image), with how it is
    mounted at its ``at`` (``how``: {file} and {at} filled in)."""
    from assembler.oci.digest import file_digest

    out = []
    for model in models:
        dest = sidecar_path(image, model.name)
        model.write_squashfs(dest, runner=runner, squash=squash)
        os.chmod(dest, beside_mode(image))  # read by whoever reads the image (made 0600, as a temp file)
        out.append(Written(f"{dest} (weights {model.name}; {how.format(file=dest, at=model.at)})", file_digest(dest)))
    return out
