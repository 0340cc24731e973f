"""Where a build's inputs come from: its bases (an image reference, or a root filesystem
bootstrapped from an apt mirror) and its sources (a host folder, a git checkout, a
downloaded archive). Models only, strict as the manifest's (:mod:`assembler.manifest.schema.model`
re-exports them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from assembler.manifest.schema.fields import Strict, StrList

# -- bases -----------------------------------------------------------------------------


class Bootstrap(Strict):
    """A Debian/Ubuntu root filesystem made by mmdebstrap from an apt mirror."""

    suite: str = Field(
        default="bookworm",
        description="the Debian or Ubuntu suite (codename) to install",
        examples=["bookworm", "noble"],
    )
    variant: Literal[
        "extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important", "standard"
    ] = Field(default="minbase", description="mmdebstrap's --variant: which packages make up the root filesystem")
    packages: StrList = Field(
        default_factory=list,
        description="extra packages installed into it (mmdebstrap --include)",
        examples=[["g++", "cmake"]],
    )
    mirror: str | None = Field(default=None, description="apt mirror URL; default: the host's configured mirror")
    components: StrList = Field(
        default_factory=lambda: ["main"],
        description="the archive components apt may install from (mmdebstrap --components)",
        examples=[["main", "universe"]],
    )
    keyring: str | None = Field(default=None, description="keyring file for a non-Debian suite (e.g. Ubuntu)")
    architectures: StrList = Field(
        default_factory=list,
        description="other Debian architectures dpkg also installs packages of (multiarch: name them NAME:ARCH "
        "in packages), as a cross-compiling devel base needs the target's libraries",
        examples=[["arm64"]],
    )


class BootstrapBase(Strict):
    """A base made here: a root filesystem bootstrapped from an apt mirror, for the platform
    being built or for one of its own (a devel base that cross-compiles for another)."""

    bootstrap: Bootstrap = Field(description="the suite, variant and packages mmdebstrap installs")
    platform: str | None = Field(
        default=None,
        description="the platform (os/arch[/variant]) bootstrapped; default: the one being built. A compile "
        "step on a base of this machine's platform while another is built cross-compiles (it is told the "
        "target: TARGETARCH, TARGET_TRIPLE, CMAKE_TOOLCHAIN_FILE)",
        examples=["linux/amd64"],
    )


class RefBase(Strict):
    """A base read from an image reference, optionally for a platform of its own."""

    ref: str = Field(
        description="a transport reference: docker://, oci:, oci-archive:, docker-archive:, rootfs:, scratch"
    )
    platform: str | None = Field(
        default=None,
        description="the platform (os/arch[/variant]) taken from the reference; default: the one being built",
        examples=["linux/amd64", "linux/arm64/v8"],
    )


class CudaBase(Strict):
    """An ``nvidia/cuda`` image chosen from the torch the manifest pins: the CUDA of PyPI's
    wheel of that release (``torch_gpus.json``: read from the wheels), the newest tag of
    that CUDA the repository publishes in ``flavor`` (``tags.json``). Chosen when the manifest
    is loaded (:mod:`assembler.manifest.load.cudabase`): the plan, the lock and the build see the tag."""

    nvidia_cuda: Literal["base", "runtime", "devel", "cudnn-runtime", "cudnn-devel"] = Field(
        description="which image of the CUDA chosen: base, runtime, devel, or those with cuDNN (the cuDNN the "
        "torch wheel was built with)",
        examples=["cudnn-devel", "runtime"],
    )
    os: str | None = Field(
        default=None,
        pattern=r"^[a-z]+[0-9.]+$",
        description="the distribution of the tag (ubuntu24.04, ubi9, rockylinux9); default: the newest Ubuntu "
        "published for that CUDA",
        examples=["ubuntu22.04"],
    )
    repository: str = Field(
        default="docker.io/nvidia/cuda",
        description="where the image is pulled from (nvcr.io/nvidia/cuda, or a mirror holding the same tags)",
    )


def _base_kind(value: Any) -> str:
    if isinstance(value, str):
        return "ref-string"
    if isinstance(value, dict):
        if "bootstrap" in value:
            return "bootstrap"
        if "nvidia_cuda" in value:
            return "cuda"
        return "ref"
    return "ref-string"


BaseSpec = Annotated[
    Annotated[str, Tag("ref-string")]
    | Annotated[BootstrapBase, Tag("bootstrap")]
    | Annotated[RefBase, Tag("ref")]
    | Annotated[CudaBase, Tag("cuda")],
    Discriminator(_base_kind),
]


def own_platform(spec: BaseSpec) -> str | None:
    """The platform a base names for itself (``{ref:, platform:}``, ``{bootstrap:, platform:}``),
    else None: the one being built."""
    return spec.platform if isinstance(spec, RefBase | BootstrapBase) else None


# -- sources ---------------------------------------------------------------------------


class PathSource(Strict):
    """A source that is a folder on the host."""

    path: str = Field(description="a host folder, relative to the manifest", examples=["../examples/app"])
    exclude: StrList = Field(
        default_factory=list, description="glob patterns left out (e.g. build/, *.o)", examples=[["build/", "*.o"]]
    )


class GitSource(Strict):
    """A source checked out from a git repository at a branch, tag or commit."""

    git: str = Field(
        description="repository URL (https://, file://, or a path)",
        examples=["https://github.com/deepspeedai/DeepSpeed.git"],
    )
    ref: str = Field(
        description="branch, tag or commit; the resolved commit is what the cache keys on", examples=["v0.16.4", "main"]
    )
    submodules: bool = Field(
        default=False, description="also check out the submodules (recursively); their commits count as the source's"
    )
    commit: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{40}$", description="set from the lock: fetched for ref"
    )


class UrlSource(Strict):
    """A source downloaded from a URL and checked against its sha256."""

    url: str = Field(
        description="the file to download (an archive is unpacked unless extract: false)",
        examples=["https://static.rust-lang.org/dist/2025-03-18/cargo-1.85.1-x86_64-unknown-linux-gnu.tar.xz"],
    )
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="the file's sha256 (64 lowercase hex digits): a download that differs is refused",
    )
    extract: bool = Field(default=True, description="unpack a tar/zip archive instead of keeping the file")


def _source_kind(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("git", "url", "path"):
            if key in value:
                return key
    return "path"


SourceSpec = Annotated[
    Annotated[PathSource, Tag("path")] | Annotated[GitSource, Tag("git")] | Annotated[UrlSource, Tag("url")],
    Discriminator(_source_kind),
]
