"""The manifest and recipe models (strict: unknown keys are errors).

These models check shape and types only; references between parts (a base named by the
image, an artifact named by a layer, a recipe named by ``use:``) are checked by
:mod:`assembler.manifest.load.checks`, which knows file and line.
"""

from __future__ import annotations

from types import GenericAlias
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic.fields import FieldInfo

from assembler.manifest.schema.coupling import Constraint, Platforms
from assembler.manifest.schema.fields import Mode, Name, Owner, Scalar, Strict, StrList
from assembler.manifest.schema.gpusupport import GpuSupport as GpuSupport
from assembler.manifest.schema.hostuse import REACHES_DESCRIPTION, HostUses
from assembler.manifest.schema.imageconfig import ConfigSpec as ConfigSpec
from assembler.manifest.schema.imageconfig import Healthcheck as Healthcheck
from assembler.manifest.schema.imagetests import ImageTest as ImageTest
from assembler.manifest.schema.imagetests import TestList
from assembler.manifest.schema.inputs import BaseSpec as BaseSpec
from assembler.manifest.schema.inputs import Bootstrap as Bootstrap
from assembler.manifest.schema.inputs import BootstrapBase as BootstrapBase
from assembler.manifest.schema.inputs import CudaBase as CudaBase
from assembler.manifest.schema.inputs import GitSource as GitSource
from assembler.manifest.schema.inputs import PathSource as PathSource
from assembler.manifest.schema.inputs import RefBase as RefBase
from assembler.manifest.schema.inputs import SourceSpec as SourceSpec
from assembler.manifest.schema.inputs import UrlSource as UrlSource
from assembler.manifest.schema.inputs import own_platform as own_platform
from assembler.manifest.schema.layers import LAYER_KINDS as LAYER_KINDS
from assembler.manifest.schema.layers import ArtifactLayer as ArtifactLayer
from assembler.manifest.schema.layers import CopyLayer as CopyLayer
from assembler.manifest.schema.layers import CopySpec as CopySpec
from assembler.manifest.schema.layers import LayerKind as LayerKind
from assembler.manifest.schema.layers import LayerSpec as LayerSpec
from assembler.manifest.schema.layers import PackagesLayer as PackagesLayer
from assembler.manifest.schema.layers import RunLayer as RunLayer
from assembler.manifest.schema.layers import layer_key as layer_key
from assembler.manifest.schema.layers import layer_union
from assembler.manifest.schema.prebuilt import PipLayer as PipLayer
from assembler.manifest.schema.prebuilt import UrlLayer as UrlLayer
from assembler.manifest.schema.pysets import AsOf, PythonSet
from assembler.manifest.schema.resources import Resources as Resources
from assembler.manifest.schema.weights import WeightsSpec as WeightsSpec

# -- compile steps ---------------------------------------------------------------------


class Artifact(Strict):
    """Files a compile step leaves in its container, shipped as one layer (or mounted)."""

    path: str = Field(description="absolute path in the build container; globs allowed (/build/lib/*.so*)")
    to: str = Field(description="where it goes in the image; a trailing / means 'into this folder'")
    mode: Mode | None = Field(
        default=None,
        description="permission bits of every file and folder taken (not links); default: as in the container",
        examples=["0755"],
    )
    owner: Owner | None = Field(
        default=None,
        description="numeric uid[:gid] of every file taken; default: as in the container",
        examples=["1000:1000"],
    )
    exclude: StrList = Field(default_factory=list, description="glob patterns (relative) left out of a folder")

    @field_validator("path", "to")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path, got {value!r}")
        return value


class CompileStep(Strict):
    """One build in a devel container; its artifacts become layers."""

    name: Name = Field(
        description="the step's name: STEP in STEP.ARTIFACT, --rebuild and the logs", examples=["llama-cpp"]
    )
    use: str | None = Field(default=None, description="a recipe in layers/ to start from")
    with_: dict[str, Scalar] = Field(default_factory=dict, alias="with", description="the recipe's params")
    base: str | None = Field(
        default=None,
        description="the base (a name under bases:) whose container runs the commands; required here or in the recipe",
        examples=["devel"],
    )
    sources: StrList = Field(
        default_factory=list, description="sources, each as a writable working copy at /src/NAME kept between builds"
    )
    inputs: StrList = Field(
        default_factory=list, description="artifacts of earlier steps (STEP.ARTIFACT) unpacked at their 'to' first"
    )
    packages: StrList = Field(default_factory=list, description="apt packages installed before run")
    env: dict[str, Scalar] = Field(default_factory=dict, description="environment variables the commands see")
    cache: StrList = Field(
        default_factory=list,
        description="container folders kept on the host between builds of this step (a build tree): a source change "
        "keeps them, any other change of the step, its base or inputs starts them empty",
    )
    shared_cache: StrList = Field(
        default_factory=list,
        description="container folders kept on the host and shared by every step naming them: only for caches "
        "that key their entries by content (ccache, sccache, pip's and cargo's download caches)",
    )
    secrets: StrList = Field(default_factory=list, description="environment variables passed in, never stored")
    workdir: str | None = Field(
        default=None, description="the folder the commands run in; default: the base's working directory"
    )
    run: StrList = Field(
        default_factory=list, description="shell commands run in order in the container; the first that fails stops it"
    )
    artifacts: dict[Name, Artifact] = Field(
        default_factory=dict, description="what the step makes, by name: files taken from its container after run"
    )
    runtime_packages: StrList = Field(
        default_factory=list, description="apt packages the artifacts need at run time (for a 'packages' layer)"
    )
    resources: Resources | None = Field(default=None, description="what its Slurm job asks for (--executor slurm)")
    python_sets: list[PythonSet] = Field(default_factory=list, description="what its pip/uv commands install")
    tests: TestList = Field(default_factory=list, description="run on an image that ships its artifacts")
    reaches: HostUses = Field(default_factory=dict, description=REACHES_DESCRIPTION)
    network: bool = Field(
        default=True,
        description="false: the commands see only the loopback interface (as BuildKit's RUN --network=none "
        "and Nix's sandbox): a step that must not download anything; the preflight asks no host for it "
        "(its packages: are still installed from the mirror first)",
    )


class Recipe(Strict):
    """A reusable compile step in ``layers/NAME.yaml``."""

    description: str = Field(description="what the recipe builds and how to use it, for people choosing one")
    params: dict[str, Scalar] = Field(
        default_factory=dict,
        description="the params a step sets with with:, each with its default (${NAME} anywhere in the recipe)",
    )
    base: str | None = Field(
        default=None,
        description="the base (a name under the manifest's bases:) the step runs on unless the step names one",
    )
    sources: StrList = Field(
        default_factory=list,
        description="sources, each as a writable working copy at /src/NAME kept between builds; a step's are added",
    )
    inputs: StrList = Field(
        default_factory=list,
        description="artifacts of earlier steps (STEP.ARTIFACT) unpacked at their 'to' first; a step's are added",
    )
    packages: StrList = Field(default_factory=list, description="apt packages installed before run; a step's are added")
    env: dict[str, Scalar] = Field(
        default_factory=dict, description="environment variables the commands see; a step's are merged over them"
    )
    cache: StrList = Field(
        default_factory=list,
        description="container folders kept on the host between builds of the step (a build tree); a step's are added",
    )
    shared_cache: StrList = Field(
        default_factory=list,
        description="container folders kept on the host and shared by every step naming them (content-keyed caches: "
        "ccache, pip's download cache); a step's are added",
    )
    secrets: StrList = Field(
        default_factory=list, description="environment variables passed in, never stored; a step's are added"
    )
    workdir: str | None = Field(
        default=None,
        description="the folder the commands run in (a step's wins); default: the base's working directory",
    )
    run: StrList = Field(
        default_factory=list,
        description="shell commands run in order in the container; the first failing stops it; a step's replace them",
    )
    artifacts: dict[Name, Artifact] = Field(
        default_factory=dict,
        description="what the step makes, by name: files taken from its container after run; a step's are merged in",
    )
    runtime_packages: StrList = Field(
        default_factory=list,
        description="apt packages the artifacts need at run time (for a 'packages' layer); a step's are added",
    )
    resources: Resources | None = Field(
        default=None, description="what its Slurm job asks for (--executor slurm); a step's are merged over them"
    )
    python_sets: list[PythonSet] = Field(
        default_factory=list, description="what its pip/uv commands install; a step's are added"
    )
    tests: TestList = Field(
        default_factory=list, description="run on an image that ships the step's artifacts; a step's are added"
    )
    reaches: HostUses = Field(default_factory=dict, description=REACHES_DESCRIPTION)


# -- image layers (assembler.manifest.schema.layers: the models and the table of kinds) ------------

# The last second of year 9999: what an RFC 3339 timestamp (and Python's datetime) can say.
MAX_EPOCH = 253402300799


class ImageSpec(Strict):
    """The image made: a base, the layers put on it, and its runtime config."""

    base: str = Field(description="the base (a name under bases:) the layers go on", examples=["runtime"])
    layers: list[LayerSpec] = Field(default_factory=list, description="the layers added on the base, in order")
    config: ConfigSpec = Field(
        default_factory=ConfigSpec, description="the runtime config (entrypoint, cmd, env, user...) set over the base's"
    )


class AbsentLibrary(Strict):
    """A library the dependency check finds missing that the image goes without on purpose:
    an optional part of a prebuilt package (a plugin, a backend) needing what no package
    reachable here ships. Its misses are reported with the reason instead of stopping the build."""

    library: str = Field(description="the soname needed (libaws-cpp-sdk-s3.so), or a glob of sonames")
    version: str | None = Field(
        default=None, description="a symbol version the image's library lacks (GLIBCXX_3.4.32), or a glob of them"
    )
    needed_by: str = Field(description="a glob of the image paths that need it (*/plugins/libplugin_OBJ.so)")
    because: str = Field(min_length=12, description="why it is absent, and what does not work without it")
    platforms: Platforms = Field(
        default=None, description="the platforms whose images go without it (linux/arm64); default: every one"
    )


class Target(Strict):
    """A variant of the image (``--target NAME``): params and image parts changed."""

    description: str | None = Field(default=None, description="what this variant is, for readers")
    params: dict[str, Scalar] = Field(
        default_factory=dict,
        description="params this target fixes: a --set that contradicts one fails unless --set-unlocked",
    )
    base: str | None = Field(default=None, description="replaces image.base (a name under bases:)")
    layers: list[LayerSpec] | None = Field(default=None, description="replaces image.layers")
    add_layers: list[LayerSpec] = Field(default_factory=list, description="appended to the layers")
    config: ConfigSpec | None = Field(default=None, description="merged over image.config")
    annotations: dict[str, Scalar] = Field(default_factory=dict, description="merged over the manifest's annotations")
    outputs: StrList | None = Field(default=None, description="replaces the manifest's outputs (-o still wins)")
    platforms: Platforms = None  # replaces the manifest's
    emulate: bool | None = Field(default=None, description="replaces the manifest's")
    tests: TestList | None = Field(default=None, description="replaces the manifest's tests")
    add_tests: TestList = Field(default_factory=list, description="appended to the tests")
    resolve_as_of: AsOf | None = Field(default=None, description="replaces the manifest's")
    absent_libraries: list[AbsentLibrary] = Field(default_factory=list, description="appended to the manifest's")


# The levels tar2sqfs 1.2 takes for each squashfs compressor (`tar2sqfs -c NAME -X help`);
# lz4 has none. transports.hpc.squash passes one on.
SQUASHFS_LEVELS = {"gzip": range(1, 10), "xz": range(0, 10), "zstd": range(1, 23), "lzo": range(1, 10)}


def squashfs_level_error(compressor: str, level: int) -> str | None:
    """Why ``level`` is not one of ``compressor``'s, or None."""
    levels = SQUASHFS_LEVELS.get(compressor)
    if levels is None:
        return f"{compressor} takes no compression level"
    if level not in levels:
        return f"{compressor} levels are {levels.start} to {levels.stop - 1}, not {level}"
    return None


class SifSpec(Strict):
    """How ``sif:``, ``oras://`` and ``sqsh:`` (Enroot) outputs are made: the squashfs compressor,
    its level and the block size."""

    compressor: Literal["gzip", "xz", "zstd", "lz4", "lzo"] = Field(
        default="gzip",
        description="squashfs compression (gzip: what every Apptainer/Singularity reads; a SIF of zstd runs on "
        "Apptainer 1.4 or later, 1.3 refuses it)",
    )
    block_size: Literal["4K", "8K", "16K", "32K", "64K", "128K", "256K", "512K", "1M"] = Field(
        default="128K", description="squashfs data block size (128K: what mksquashfs and Apptainer write)"
    )
    level: int | None = Field(
        default=None,
        description="the compressor's level (gzip 1-9, xz 0-9, zstd 1-22, lzo 1-9; lz4 has none); unset: "
        "tar2sqfs's default, gzip 9 as mksquashfs writes. gzip 1 took 13% of level 9's CPU for a squashfs 9% larger",
    )

    attach: bool = Field(default=False, description="also push the SIF as a referrer of each docker:// output")

    @field_validator("level")
    @classmethod
    def _level_of_the_compressor(cls, level: int | None, info: ValidationInfo) -> int | None:
        why = squashfs_level_error(info.data.get("compressor", "gzip"), level) if level is not None else None
        if why:
            raise ValueError(why)
        return level


class CacheSpec(Strict):
    """Where step results are shared (``--cache-to``/``--cache-from`` win)."""

    registry: (
        Annotated[str, Field(pattern=r"^docker://[A-Za-z0-9.-]+(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*$")] | None
    ) = Field(default=None, description="docker://REG/REPO: step results are read from and exported there")


class Manifest(Strict):
    """An image manifest (``manifests/*.yaml``)."""

    name: Name = Field(
        description="the image's name: its org.opencontainers.image.title annotation, ${name} in tag_template",
        examples=["llamacpp"],
    )
    description: str | None = Field(default=None, description="what this manifest builds, for readers")
    epoch: int | None = Field(
        default=None, ge=0, le=MAX_EPOCH, description="timestamps; SOURCE_DATE_EPOCH and --epoch win"
    )
    platform: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+(/[A-Za-z0-9_]+)?$")] = Field(
        default="linux/amd64",
        description="the platform (os/arch[/variant]) built when no --platform is given",
        examples=["linux/amd64", "linux/arm64"],
    )
    platforms: Platforms = None
    emulate: bool = Field(
        default=False,
        description="true: compile steps and run:/packages: layers of another architecture's image run here under "
        "qemu-user (named in the plan, warned of in the build); false: a plan refuses them",
    )
    compression: Literal["zstd", "zstd:chunked", "gzip"] = Field(
        default="zstd", description="how the layers are compressed; --compression wins"
    )
    params: dict[str, Scalar] = Field(
        default_factory=dict,
        description="params with their default values: ${NAME} anywhere in the manifest; --set NAME=VALUE overrides",
    )
    choices: dict[str, dict[str, dict[str, Scalar]]] = Field(
        default_factory=dict,
        description="param -> value -> other params it fixes (backend: {cpu: {devel: docker://ubuntu:22.04}})",
    )
    constraints: list[Constraint] = Field(default_factory=list, description="param combinations to refuse")
    bases: dict[Name, BaseSpec] = Field(
        default_factory=dict,
        description="the images that steps and the image start from, by name: a reference, {ref:, platform:} or "
        "{bootstrap:}",
    )
    sources: dict[Name, SourceSpec] = Field(
        default_factory=dict,
        description="source trees for compile steps, by name: {path:}, {git:, ref:} or {url:, sha256:}",
    )
    compile: list[CompileStep] = Field(
        default_factory=list,
        description="compile steps, each run in a container of a base; their artifacts make layers",
    )
    image: ImageSpec = Field(description="the image made: its base, its layers and its runtime config")
    tests: TestList = Field(default_factory=list, description="commands run in the built image before any output")
    weights: dict[Name, WeightsSpec] = Field(
        default_factory=dict,
        description="model weights by name: their own OCI artifact beside the image (a referrer of it), never a "
        "layer of it; mounted at their path by assemble run and test, a squashfs beside a SIF",
    )
    absent_libraries: list[AbsentLibrary] = Field(
        default_factory=list, description="libraries the dependency check may find missing, each with the reason"
    )
    annotations: dict[str, Scalar] = Field(
        default_factory=dict,
        description="annotations of the image's OCI manifest, over the defaults (created, title, base); "
        "${sources.NAME.FIELD} expands",
    )
    targets: dict[Name, Target] = Field(
        default_factory=dict, description="variants of the image, by name (--target NAME)"
    )
    default_target: str | None = Field(default=None, description="the target built when no --target is given")
    outputs: StrList = Field(
        default_factory=list,
        description="where the image is written (docker://, oci:, oci-archive:, docker-archive:, sif:, sqsh:, "
        "artifact:); -o replaces them",
        examples=[["oci:out/hello:latest"], ["docker://registry.example.com/team/app:1.0", "sif:out/app.sif"]],
    )
    sif: SifSpec = Field(default_factory=SifSpec, description="how sif:, oras:// and sqsh: outputs are made")
    gpu: GpuSupport = Field(default_factory=GpuSupport, description="the oldest GPU driver the image must run on")
    cache: CacheSpec = Field(default_factory=CacheSpec, description="a registry where step results are shared")
    matrix: dict[str, list[Scalar]] = Field(
        default_factory=dict,
        description="param (or platform) -> values: one image per combination and target (see pipeline.variants)",
    )
    tag_template: str | None = Field(
        default=None,
        description="name:tag of each variant under -o docker://REG/ (${name}, ${target}, ${variant}, params)",
    )
    resolve_as_of: AsOf | None = Field(
        default=None,
        description="the date `assemble lock` resolves the Python sets as of (upstream's: YYYY-MM-DD, "
        "NAME==VERSION for the day its index published that release, or newest-pin for the day of the newest "
        "release each environment names exactly); default: none, the newest versions on the day of the lock",
    )


def register_layer_kind(kind: LayerKind) -> None:
    """Let manifests use ``kind`` (its key not taken yet): the models that hold layers are
    rebuilt with the union of every kind. ValueError for a key taken."""
    if kind.key in LAYER_KINDS:
        raise ValueError(f"a layer kind {kind.key}: is already registered")
    LAYER_KINDS[kind.key] = kind
    _rebuild_layer_fields()


def unregister_layer_kind(key: str) -> None:
    """Forget the layer kind ``key`` (one :func:`register_layer_kind` added)."""
    del LAYER_KINDS[key]
    _rebuild_layer_fields()


def _rebuild_layer_fields() -> None:
    """ImageSpec's and Target's layer fields as lists of the union of every kind, and the
    models that hold them rebuilt (Manifest holds both: after them)."""
    many = GenericAlias(list, (layer_union(),))
    fields: tuple[tuple[type[Strict], str, Any], ...] = (
        (ImageSpec, "layers", many),
        (Target, "layers", many | None),
        (Target, "add_layers", many),
    )
    for model, name, annotation in fields:
        model.__pydantic_fields__[name] = FieldInfo.merge_field_infos(model.model_fields[name], annotation=annotation)
    for holder in (ImageSpec, Target, Manifest):
        holder.model_rebuild(force=True)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas (draft 2020-12) of manifests and recipes, for editors and checks."""
    out = {}
    for name, model in (("manifest", Manifest), ("recipe", Recipe)):
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://assemble.invalid/schema/{name}.schema.json"
        out[name] = schema
    return out
