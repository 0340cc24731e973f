"""``artifact:DIR:STEP[.NAME]`` outputs: a compile step's artifacts written as files; and
``--artifact STEP[.NAME]``: those artifacts as an OCI artifact of their own (:func:`as_oci`),
which the build's ``oci:`` and ``docker://`` writers write, again with no image.

Each artifact is unpacked from its layer into DIR with the folders above it dropped: an
artifact ``{path: /build/dist/*.whl, to: /wheels/}`` gives ``DIR/vllm-....whl``, one with
``to: /app/llama-server`` gives ``DIR/llama-server``. ``STEP`` alone writes each of the
step's artifacts into ``DIR/NAME/``. When every output of a build is an ``artifact:``, no
image is made: only the steps named (and what they need) run.

A folder written here holds a ``.assemble-artifacts`` file: a later build replaces a folder
that has it (or an empty one), never another unless ``--force``. A symlink at DIR is never
written through: refused, or with ``--force`` replaced itself (what it points to stays).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from assembler.archive.compress import decompressed
from assembler.archive.extract import extract
from assembler.cache import Cache
from assembler.errors import AssemblerError, InputError
from assembler.manifest.load.loaded import Loaded
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.artifact import FilesArtifact
from assembler.oci.descriptor import Descriptor
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.oci.reference import Ref
from assembler.pipeline import graph
from assembler.pipeline.graph import StepReport
from assembler.pipeline.options import Reporter
from assembler.pipeline.runs.builder import Build
from assembler.pipeline.runs.resolve import Plan
from assembler.pipeline.runs.run import Run
from assembler.transports import Context, Written
from assembler.transports.formats import Writer

MARKER = ".assemble-artifacts"
ARTIFACT_TYPE = "application/vnd.assemble.artifacts.v1"  # a step's artifacts, each blob a tar


def names(loaded: Loaded, ref: Ref | str) -> list[str]:
    """The ``STEP.NAME`` artifacts ``ref`` (an ``artifact:`` output, or ``STEP[.NAME]``)
    writes; InputError for a step or artifact the manifest does not have."""
    step, _, name = (ref if isinstance(ref, str) else ref.tag).partition(".")
    steps = {s.name: s for s in loaded.manifest.compile}
    if step not in steps:
        raise InputError(f"{ref}: no compile step {step!r}", hint=f"steps: {', '.join(sorted(steps)) or 'none'}")
    arts = steps[step].artifacts
    if name and name not in arts:
        raise InputError(f"{ref}: step {step} has no artifact {name!r}", hint=f"artifacts: {', '.join(sorted(arts))}")
    return [f"{step}.{n}" for n in ([name] if name else sorted(arts))]


def check(loaded: Loaded, refs: Sequence[Ref], *, force: bool, cache_dir: Path | None = None) -> None:
    """Before anything is built: the artifacts exist, each folder may be written, and no two
    outputs write into one folder (the second would replace the first). A folder that holds
    the manifest, the cache or the current folder is never replaced, not even with --force."""
    folders: dict[Path, Ref] = {}
    kept = {"the manifest": loaded.path, "the current folder": Path.cwd(), "your home": Path.home()}
    if cache_dir is not None:
        kept["the cache"] = cache_dir
    for ref in refs:
        names(loaded, ref)
        folder = Path(ref.path).absolute()
        for what, path in kept.items():
            if path.resolve().is_relative_to(folder.resolve()):
                raise InputError(
                    f"{ref}: {folder} holds {what}: an artifact: output replaces its whole folder",
                    hint="write the artifacts into a folder of their own",
                )
        for other, its in folders.items():
            if folder == other or folder.is_relative_to(other) or other.is_relative_to(folder):
                raise InputError(
                    f"{ref} and {its} write into the same folder: the second would replace the first",
                    hint="give each artifact: output a folder of its own",
                )
        folders[folder] = ref
        above = next((p for p in folder.parents if p.exists() or p.is_symlink()), None)
        if above is not None and not above.is_dir():
            raise InputError(f"{ref}: {above} is not a folder")
        if folder.is_symlink() and not force:
            raise InputError(
                f"{ref}: {folder} is a symlink to {os.readlink(folder)}; not writing through it",
                hint="--force replaces the link itself (what it points to is left as it is)",
            )
        if folder.exists() and not force:
            if not folder.is_dir():
                raise InputError(f"{ref}: {folder} is not a folder", hint="--force replaces it")
            if any(folder.iterdir()) and not (folder / MARKER).is_file():
                raise InputError(
                    f"{ref}: {folder} is a folder with other files in it",
                    hint="use an empty folder, or --force to replace it",
                )


def build(
    run: Run, plan: Plan, refs: Sequence[Ref | str], *, report: Reporter
) -> tuple[dict[str, Layer], tuple[StepReport, ...]]:
    """The artifacts ``refs`` name (``STEP.NAME`` -> layer): only their compile steps (and
    the steps they need) run, or are taken from the cache; no image is made."""
    layers: dict[str, Layer] = {}
    with Build(run, plan, report=report) as build:
        walk = build.walk
        for ref in refs:
            for full in names(run.loaded, ref):
                step, _, name = full.partition(".")
                made = walk.compile(graph.step_of(run.loaded.manifest, step))
                assert made is not None, "a build makes every step it is asked for"
                layers[full] = made[name]
    return layers, tuple(walk.steps.values())


def as_image(layers: Mapping[str, Layer], ctx: Context) -> Image:
    """What stands for a build with only ``artifact:`` outputs: its artifacts' layers on
    ``scratch`` (a stable digest of exactly those files; written nowhere)."""
    base = mutate.scratch(ctx.platform, epoch=ctx.epoch)
    return mutate.append_layers(base, [layers[k] for k in sorted(layers)], epoch=ctx.epoch)


def as_oci(loaded: Loaded, wanted: Sequence[str], artifacts: Mapping[str, Layer], *, epoch: int) -> FilesArtifact:
    """The artifacts ``wanted`` (``STEP[.NAME]``) as one OCI artifact: each its layer blob
    as the cache holds it, titled ``STEP.NAME.tar.zst`` (or ``.tar.gz``, ``.tar``) and
    annotated with where the image would place it (``io.assemble.artifact.to``)."""
    blobs = []
    for full in dict.fromkeys(n for text in wanted for n in names(loaded, text)):
        layer = artifacts[full]
        step, _, name = full.partition(".")
        suffix = {mt.OCI_LAYER_ZSTD: ".tar.zst", mt.OCI_LAYER_GZIP: ".tar.gz"}.get(layer.descriptor.media_type, ".tar")
        notes = {
            mt.ANNOTATION_TITLE: full + suffix,
            "io.assemble.artifact": full,
            "io.assemble.artifact.to": graph.step_of(loaded.manifest, step).artifacts[name].to,
            "io.assemble.diff_id": layer.diff_id,
        }
        blobs.append(Descriptor(layer.descriptor.media_type, layer.digest, layer.size, notes))
    annotations = {mt.ANNOTATION_CREATED: mutate.timestamp(epoch), "io.assemble.manifest": loaded.manifest.name}
    return FilesArtifact(ARTIFACT_TYPE, tuple(blobs), annotations)


def check_oci_outputs(loaded: Loaded, wanted: Sequence[str], writers: Sequence[Writer]) -> None:
    """``--artifact`` (``wanted``): the artifacts exist and every output can hold an OCI artifact."""
    for text in wanted:
        names(loaded, text)
    for writer in writers:
        if not writer.holds_artifact:
            raise InputError(
                f"--artifact: {writer.ref} cannot hold an OCI artifact",
                hint="use oci:DIR[:TAG] or docker://REF (artifact:DIR:STEP for files)",
            )
    if not writers:
        raise InputError(
            "--artifact: no output to write the artifacts to", hint="add -o oci:DIR:TAG or -o docker://REF"
        )


def write(loaded: Loaded, refs: Sequence[Ref], artifacts: Mapping[str, Layer], cache: Cache) -> list[Written]:
    """Write each ``artifact:`` output from the layers of ``artifacts`` (``STEP.NAME`` ->).

    Each folder is written beside itself first and put in place whole: one that fails
    halfway leaves the folder as it was (and nothing a later build would take as ours)."""
    written = []
    for ref in refs:
        folder = Path(ref.path)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        except OSError as e:
            raise InputError(f"{ref}: cannot write into {folder.parent}: {e.strerror}") from None
        try:
            work.chmod(0o755)
            written += _write_one(loaded, ref, work, artifacts, cache)
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
            elif folder.exists() or folder.is_symlink():
                folder.unlink()
            work.rename(folder)
        except OSError as e:
            raise AssemblerError(f"{ref}: writing {folder}: {e}") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)  # gone already when it was put in place
    return written


def _write_one(loaded: Loaded, ref: Ref, folder: Path, artifacts: Mapping[str, Layer], cache: Cache) -> list[Written]:
    written = []
    one = bool(ref.tag.partition(".")[2])  # STEP.NAME: into the folder; STEP: each into folder/NAME
    record = {}
    for full in names(loaded, ref):
        layer = artifacts[full]
        step, _, name = full.partition(".")
        to = graph.step_of(loaded.manifest, step).artifacts[name].to
        depth = len([p for p in to.strip("/").split("/") if p]) - (0 if to.endswith("/") else 1)
        dest = folder if one else folder / name
        with cache.open_blob(layer.digest) as raw, decompressed(raw, layer.compression) as plain:
            extract(plain, dest, what=f"artifact {full}", strip=depth)
        record[full] = layer.diff_id
        written.append(Written(f"{ref} ({full})", layer.digest))
    (folder / MARKER).write_text(json.dumps({"ref": str(ref), "diff_ids": record}, sort_keys=True, indent=1))
    return written
