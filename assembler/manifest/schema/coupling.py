"""What a manifest can build: the platforms it declares, and declarative checks of param
combinations that no build could satisfy (``constraints:``), refused at load time.

A CUDA arch list is compiled by the nvcc of the devel image's CUDA version: sm_100 needs
CUDA 12.8, CUDA 13.0 dropped everything below sm_75. A manifest says which params are
coupled so (``constraints: [{cuda_archs: "${torch_cuda_arch_list}", cuda_version:
"${cuda_version}"}]``) and a ``--set`` that breaks it fails before anything is built,
not an hour into a compile. The list must also be in the form its consumer parses
(``form: torch`` for TORCH_CUDA_ARCH_LIST's ``9.0+PTX``, ``form: cmake`` for
CMAKE_CUDA_ARCHITECTURES' ``90-real``), and a flag some CUDA versions lack names the
version it needs (``{cuda_version: ..., at_least: "12.4", needed_by: "${nvcc_flags}"}``), and
a package index built for one CUDA (``.../whl/cu128``) names it (``{index_url: ..., cuda_version:
..., because: ...}``), and a version outside what an index carries or a consumer
accepts says so (``{version: "${torch_version}", at_most: "2.5.1", because: ...}``).
A ROCm arch list (PYTORCH_ROCM_ARCH, GPU_TARGETS) holds gfx targets only
(``{rocm_archs: "${pytorch_rocm_arch}"}``): ``sm_90`` there is a CUDA arch hipcc rejects.
Two kinds hold params against what releases ship, read from facts files
(``assembler/manifest/facts``, written by ``scripts/regen-facts``): a CPython the installer can
download (``{python: "${python_full}", uv: "${uv_version}"}``: uv 0.5.31 has no 3.12.11),
and a package at the version a companion release's extra requires (``{version:
"${vllm_version}", package: vllm, pinned_by: "ai-dynamo[vllm]==${dynamo_version}"}``). A
release the facts do not list is not checked.

This module holds the constraints as the manifest writes them (its models); checking them
against a loaded manifest is :mod:`assembler.manifest.load.constraints`'.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from assembler.manifest.schema.fields import Strict

PlatformText = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+(/[A-Za-z0-9_]+)?$")]
Platforms = Annotated[
    list[PlatformText] | None,
    Field(description="the platforms this can be built for (others are refused); default: any", min_length=1),
]


class CudaArchs(Strict):
    """The nvcc of ``cuda_version`` must compile every arch of ``cuda_archs`` (a
    TORCH_CUDA_ARCH_LIST or CMAKE_CUDA_ARCHITECTURES value). An empty ``cuda_version``
    (a CPU or ROCm build) skips the check, as do ``default``, ``native``, ``all``."""

    cuda_archs: str = Field(
        description="the arch list, usually a param", examples=["${torch_cuda_arch_list}", "8.0;9.0+PTX"]
    )
    cuda_version: str = Field(
        description="the CUDA version whose nvcc compiles it; empty: not checked",
        examples=["${cuda_version}", "12.8.1"],
    )
    form: Literal["torch", "cmake"] | None = Field(
        default=None, description="the list's syntax: torch (8.0;9.0a+PTX) or cmake (80;90a-real); default: either"
    )


class CudaAtLeast(Strict):
    """CUDA ``cuda_version`` is at least ``at_least`` wherever ``needed_by`` (the flags that
    need it) is not empty; an empty ``cuda_version`` (a CPU or ROCm build) skips the check."""

    cuda_version: str = Field(
        description="the CUDA version built with; empty: not checked", examples=["${cuda_version}"]
    )
    at_least: str = Field(
        pattern=r"^\d+\.\d+$", description="the oldest CUDA (major.minor) that needed_by works with", examples=["12.4"]
    )
    needed_by: str = Field(
        description="the flags (or other value) that need it; empty: not checked", examples=["${nvcc_append_flags}"]
    )


class SameVersion(Strict):
    """The versions agree up to their minor number (12.4.1 and 12.4.0 do, 12.6.3 does not;
    ``2.6`` and ``2.6.0`` do): ``because`` says why they must. Empty ones are skipped.
    With ``exact: true`` every release number must agree (0.11.1 and 0.11.0 differ; 2.9
    and 2.9.0 do not): a pin such as ``torch==2.9.0`` or a wheel's sha256."""

    same_version: list[str] = Field(
        min_length=2,
        description="the versions that must agree (empty ones are skipped)",
        examples=[["${cuda_version}", "${runtime_cuda_version}"]],
    )
    because: str = Field(description="why they must agree: said when they do not")
    exact: bool = Field(default=False, description="all release numbers agree, not only major.minor")


class IndexCuda(Strict):
    """The CUDA build a package index serves, the ``cuXYZ`` of its URL
    (``https://download.pytorch.org/whl/cu128`` serves CUDA 12.8), is CUDA ``cuda_version``'s:
    the same major.minor (a prebuilt wheel's kernels are compiled for that CUDA), or with
    ``older: true`` the same major and no newer minor (an nvcc compiling extensions against
    that index's torch: torch's cpp_extension refuses another major, and what a newer nvcc
    compiles may call a CUDA runtime newer than the one the index's wheels bring). A URL
    without ``cuXYZ`` (PyPI) or an empty value (a CPU or ROCm build) skips the check."""

    index_url: str = Field(
        description="the package index, whose cuXYZ names its CUDA; empty: not checked",
        examples=["${torch_index}", "https://download.pytorch.org/whl/cu128"],
    )
    cuda_version: str = Field(
        description="the CUDA version built with; empty: not checked", examples=["${cuda_version}"]
    )
    older: bool = Field(default=False, description="cuda_version may be an older minor of the index's CUDA")
    because: str = Field(description="why they must agree: said when they do not")


class VersionRange(Strict):
    """``version`` lies within ``at_least`` and ``at_most`` (either may be empty: no bound),
    each bound compared to as many numbers as it has (``12.8.1`` is at most ``12.8``; torch
    ``2.9.0`` is not at most ``2.5.1``): ``because`` says why, e.g. what an index carries.
    An empty ``version`` is skipped."""

    version: str = Field(description="the version checked; empty: not checked", examples=["${torch_version}"])
    at_least: str = Field(
        default="", description="the oldest allowed, to as many numbers as it has; empty: no bound", examples=["2.4"]
    )
    at_most: str = Field(
        default="", description="the newest allowed, to as many numbers as it has; empty: no bound", examples=["2.5.1"]
    )
    because: str = Field(description="why, e.g. what an index carries: said when the version is outside")


class RocmArchs(Strict):
    """Every arch of ``rocm_archs`` (a PYTORCH_ROCM_ARCH list: ``;``, ``,`` or space
    separated) is an AMD GPU target (``gfx90a``, ``gfx942``, ``gfx1100``, ``gfx90a:xnack+``,
    ``gfx11-generic``); a CUDA arch (``sm_90``, ``9.0``) or any other word is refused. An
    empty list (the build's default archs) is skipped."""

    rocm_archs: str = Field(
        description="the arch list (separated by ;, comma or space), usually a param",
        examples=["${pytorch_rocm_arch}", "gfx90a;gfx942"],
    )


class UvPython(Strict):
    """uv ``uv`` can install CPython ``python`` (``uv python install``) for each platform the
    manifest builds: its release's download list has that build (``uv_pythons.json``, read
    from the release's sdist). An empty value, or a uv release the facts do not list, is
    skipped."""

    python: str = Field(
        description="the CPython version uv must install; empty: not checked", examples=["${python_full}", "3.12.9"]
    )
    uv: str = Field(
        description="the uv release that installs it (a release the facts do not list: not checked)",
        examples=["${uv_version}", "0.5.31"],
    )


class ExtraPin(Strict):
    """``version`` of ``package`` is one ``pinned_by`` (``NAME[EXTRA]==VERSION``: a release
    and one of its extras) requires (``extras.json``, read from the release's METADATA on
    PyPI): a pair its makers never shipped fails hours into a build. ``because`` says where
    the pair comes from. Skipped where the facts do not list the release."""

    version: str = Field(description="the package's version; empty: not checked", examples=["${vllm_version}"])
    package: str = Field(description="the package whose version is checked", examples=["vllm"])
    pinned_by: str = Field(
        description="the release and extra that pin it: NAME[EXTRA]==VERSION",
        examples=["ai-dynamo[vllm]==${dynamo_version}"],
    )
    because: str = Field(description="where the pair comes from: said when they do not go together")


Constraint = CudaArchs | CudaAtLeast | SameVersion | IndexCuda | VersionRange | RocmArchs | UvPython | ExtraPin
