"""The models of the image's layers, and the table of layer kinds: :data:`LAYER_KINDS`.

A layer kind as a manifest says it is a key (``copy:``) and a model (a :class:`When`);
the union of every kind's model is what ``image.layers`` holds. A kind registered beyond
these six (:func:`assembler.pipeline.layers.kinds.register`) rebuilds the models that hold layers
(:func:`assembler.manifest.schema.model.register_layer_kind`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Self, Union

from pydantic import AfterValidator, Discriminator, Field, Tag

from assembler.manifest.schema.fields import Mode, Name, Owner, Scalar, Strict, StrList
from assembler.manifest.schema.hostuse import REACHES_DESCRIPTION, HostUses
from assembler.manifest.schema.prebuilt import (
    Fetches,
    HostFile,
    Installs,
    LayerLock,
    PipLayer,
    StepRef,
    UrlLayer,
    When,
    sets_installed,
)
from assembler.manifest.schema.pysets import LOCK_ENV, PythonSet


def _inside_image(path: str) -> str:
    if ".." in path.split("/"):
        raise ValueError(f"{path!r} climbs out of the image with '..'")
    return path


class CopySpec(Strict):
    """A host file or folder and where it goes in the image."""

    from_: str = Field(alias="from", description="host path relative to the manifest", examples=["./etc/motd"])
    to: Annotated[str, AfterValidator(_inside_image)] = Field(
        description="the image path it goes to; a file copied to a path ending in / goes into that folder",
        examples=["/etc/motd", "/app/"],
    )
    mode: Mode | None = Field(
        default=None,
        description="permission bits of every file and folder copied (not links); default: as git keeps them "
        "(0644; 0755 for folders and executables)",
        examples=["0644"],
    )
    owner: Owner | None = Field(
        default=None, description="numeric uid[:gid] of every file copied; default: 0:0", examples=["1000:1000"]
    )


class CopyLayer(When):
    """A layer of host files (``copy: {from:, to:}``)."""

    copy_: CopySpec = Field(alias="copy", description="what is copied from the host, and to where")
    comment: str | None = Field(default=None, description="a note kept as the layer's comment in the image's history")

    def host_files(self) -> list[HostFile]:
        return [HostFile(self.copy_.from_, self.copy_.to, ("copy", "from"), ("copy", "to"))]


class ArtifactLayer(When):
    """A layer of a compile step's artifacts (``artifact: STEP.ARTIFACT``)."""

    artifact: str = Field(
        description="STEP.ARTIFACT, or STEP for all of the step's artifacts in one layer", examples=["app.bin", "app"]
    )
    comment: str | None = Field(default=None, description="a note kept as the layer's comment in the image's history")

    def step_refs(self) -> list[StepRef]:
        return [StepRef(self.artifact, ("artifact",), whole_step=True)]


class RunLayer(When):
    """A runtime step: commands run on the image built so far; the changes are one layer."""

    run: StrList = Field(
        description="shell commands run in order on the image built so far; the first that fails stops the build"
    )
    name: Name | None = Field(
        default=None,
        description="the runtime step's name (--rebuild, the logs, layers.NAME in the lock); default: run-N by its "
        "place in the layers",
    )
    env: dict[str, Scalar] = Field(
        default_factory=dict, description="environment variables the commands see (not kept in the image's config)"
    )
    mounts: StrList = Field(
        default_factory=list, description="artifacts (STEP.ARTIFACT) visible read-only at their 'to'"
    )
    secrets: StrList = Field(default_factory=list, description="environment variables passed in, never stored")
    exclude: StrList = Field(default_factory=list, description="extra paths (globs) left out of the layer")
    keep: StrList = Field(default_factory=list, description="default-excluded paths to keep (e.g. /tmp)")
    user: str = Field(default="0:0", description="who runs the commands: uid[:gid] or a user name of the image")
    workdir: str | None = Field(
        default=None, description="the folder the commands run in; default: the image's working directory"
    )
    comment: str | None = Field(default=None, description="a note kept as the layer's comment in the image's history")
    python_sets: list[PythonSet] = Field(default_factory=list, description="what its pip/uv commands install")
    reaches: HostUses = Field(default_factory=dict, description=REACHES_DESCRIPTION)
    network: bool = Field(
        default=True,
        description="false: the commands see only the loopback interface (as BuildKit's RUN --network=none "
        "and Nix's sandbox): a step that must not download anything; the preflight asks no host for it",
    )

    def step_refs(self) -> list[StepRef]:
        return [StepRef(ref, ("mounts", j), whole_step=False) for j, ref in enumerate(self.mounts)]

    def runtime_name(self, index: int) -> str:
        return self.name or f"run-{index + 1}"

    def fetches(self, index: int) -> Fetches:
        part = f"step:{self.runtime_name(index)}"
        if not self.network:
            return Fetches(part, run=())  # it can reach nothing
        return Fetches(part, run=self.run, env=self.env, sets=self.python_sets, declared=self.reaches)

    def installs(self) -> list[Installs]:
        return sets_installed(self.python_sets)

    def with_lock(self, lock: LayerLock) -> Self:
        # its commands' pip and uv read the pins as constraints (compile.container.python_lock)
        pins = lock.pins()
        return self.model_copy(update={"env": {**self.env, LOCK_ENV: pins}}) if pins else self


class PackagesLayer(When):
    """apt-get install on the runtime base, lists and caches cleaned; one layer."""

    packages: StrList = Field(description="package names; 'from-steps' adds the runtime_packages of used steps")
    name: Name | None = Field(
        default=None,
        description="the runtime step's name (--rebuild, the logs, the lock's apt pins); default: packages-N by its "
        "place in the layers",
    )
    comment: str | None = Field(default=None, description="a note kept as the layer's comment in the image's history")

    def runtime_name(self, index: int) -> str:
        return self.name or f"packages-{index + 1}"

    def apt_packages(self) -> list[str]:
        return list(self.packages)

    def fetches(self, index: int) -> Fetches:
        return Fetches(f"step:{self.runtime_name(index)}", apt=True)


@dataclass(frozen=True)
class LayerKind:
    """One kind of image layer as a manifest says it: the ``key`` that marks it (``copy:``),
    its model, and the union tag pydantic reports it under (unlike the field names, so that
    errors name fields)."""

    key: str
    model: type[When]
    tag: str


# The layer kinds a manifest may use, in the order the union tries them (the JSON Schema's
# order): one entry per kind; model.register_layer_kind adds one (see pipeline.layers.kinds).
LAYER_KINDS: dict[str, LayerKind] = {
    k.key: k
    for k in (
        LayerKind("copy", CopyLayer, "copy"),
        LayerKind("artifact", ArtifactLayer, "artifact"),
        LayerKind("run", RunLayer, "run"),
        LayerKind("packages", PackagesLayer, "packages"),
        LayerKind("pip", PipLayer, "pip-layer"),
        LayerKind("url", UrlLayer, "url-layer"),
    )
}


def _layer_kind(value: Any) -> str:
    if isinstance(value, dict):
        for kind in LAYER_KINDS.values():
            if kind.key in value:
                return kind.tag
    return "unknown"


def layer_key(layer: When) -> str:
    """The key that marks ``layer``'s kind (``copy``, ``pip``, ...)."""
    return next(k.key for k in LAYER_KINDS.values() if type(layer) is k.model)


def layer_union() -> Any:
    """The discriminated union of every layer kind in :data:`LAYER_KINDS`."""
    tagged = tuple(Annotated[k.model, Tag(k.tag)] for k in LAYER_KINDS.values())
    keys = ", ".join(f"{k}:" for k in LAYER_KINDS)
    return Annotated[
        Union[tagged],  # noqa: UP007 (a union of a tuple built at run time)
        Discriminator(_layer_kind, custom_error_type="layer_kind", custom_error_message=f"a layer is one of {keys}"),
    ]


if TYPE_CHECKING:  # what the code is typed against; a registered kind is a When beside these
    LayerSpec = CopyLayer | ArtifactLayer | RunLayer | PackagesLayer | PipLayer | UrlLayer
else:
    LayerSpec = layer_union()
