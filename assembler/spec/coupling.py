"""What a manifest can build: the platforms it declares, and declarative checks of param
combinations that no build could satisfy (``constraints:``), refused at load time.

A CUDA arch list is compiled by the nvcc of the devel image's CUDA version: sm_100 needs
CUDA 12.8, CUDA 13.0 dropped everything below sm_75. A manifest says which params are
coupled so (``constraints: [{cuda_archs: "${torch_cuda_arch_list}", cuda_version:
"${cuda_version}"}]``) and a ``--set`` that breaks it fails before anything is built,
not an hour into a compile. The list must also be in the form its consumer parses
(``form: torch`` for TORCH_CUDA_ARCH_LIST's ``9.0+PTX``, ``form: cmake`` for
CMAKE_CUDA_ARCHITECTURES' ``90-real``), and a flag some CUDA versions lack names the
version it needs (``{cuda_version: ..., at_least: "12.4", needed_by: "${nvcc_flags}"}``);
any other version in the range some step needs names it the same way
(``{version: "${vllm_version}", at_least: "0.11.1", below: "0.20.0", needed_by: ..., because: ...}``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from assembler.oci.descriptor import Platform
from assembler.spec.fields import Strict
from assembler.spec.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.spec.load import Loaded

PlatformText = Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+(/[A-Za-z0-9_]+)?$")]
Platforms = Annotated[
    list[PlatformText] | None,
    Field(description="the platforms this can be built for (others are refused); default: any", min_length=1),
]


class CudaArchs(Strict):
    """The nvcc of ``cuda_version`` must compile every arch of ``cuda_archs`` (a
    TORCH_CUDA_ARCH_LIST or CMAKE_CUDA_ARCHITECTURES value). An empty ``cuda_version``
    (a CPU or ROCm build) skips the check, as do ``default``, ``native``, ``all``."""

    cuda_archs: str
    cuda_version: str
    form: Literal["torch", "cmake"] | None = Field(
        default=None, description="the list's syntax: torch (8.0;9.0a+PTX) or cmake (80;90a-real); default: either"
    )


class CudaAtLeast(Strict):
    """CUDA ``cuda_version`` is at least ``at_least`` wherever ``needed_by`` (the flags that
    need it) is not empty; an empty ``cuda_version`` (a CPU or ROCm build) skips the check."""

    cuda_version: str
    at_least: str = Field(pattern=r"^\d+\.\d+$")
    needed_by: str


class SameVersion(Strict):
    """The versions agree up to their minor number (12.4.1 and 12.4.0 do, 12.6.3 does not;
    ``2.6`` and ``2.6.0`` do): ``because`` says why they must. Empty ones are skipped."""

    same_version: list[str] = Field(min_length=2)
    because: str


class VersionRange(Strict):
    """``version`` (any dotted version: 0.11.1, 2.9.0) is at least ``at_least`` and, with
    ``below``, older than it, wherever ``needed_by`` is not empty: what only some releases
    publish (vLLM's ``+cu130`` wheels). Numbers are compared in turn (0.9.2 < 0.11.1);
    ``because`` says what needs the range. An empty ``version`` skips the check."""

    version: str
    at_least: str = Field(pattern=r"^\d+(\.\d+)*$")
    below: str | None = Field(default=None, pattern=r"^\d+(\.\d+)*$")
    needed_by: str
    because: str


Constraint = CudaArchs | CudaAtLeast | SameVersion | VersionRange


Version = tuple[int, int]

# Compute capability -> (first CUDA whose nvcc has it, first CUDA whose nvcc dropped it),
# from the CUDA toolkit release notes.
_ARCHS: dict[Version, tuple[Version, Version | None]] = {
    (3, 5): ((5, 0), (12, 0)), (3, 7): ((6, 5), (12, 0)),
    (5, 0): ((6, 0), (13, 0)), (5, 2): ((6, 5), (13, 0)), (5, 3): ((6, 5), (13, 0)),
    (6, 0): ((8, 0), (13, 0)), (6, 1): ((8, 0), (13, 0)), (6, 2): ((8, 0), (13, 0)),
    (7, 0): ((9, 0), (13, 0)), (7, 2): ((10, 0), (13, 0)), (7, 5): ((10, 0), None),
    (8, 0): ((11, 0), None), (8, 6): ((11, 1), None), (8, 7): ((11, 4), None), (8, 9): ((11, 8), None),
    (9, 0): ((11, 8), None),
    (10, 0): ((12, 8), None), (10, 1): ((12, 8), (13, 0)), (10, 3): ((12, 9), None), (11, 0): ((13, 0), None),
    (12, 0): ((12, 8), None), (12, 1): ((12, 9), None),
}  # fmt: skip
# Arch-specific (sm_90a) and family (sm_100f) targets came later than their arch.
_SUFFIX_SINCE: dict[str, Version] = {"a": (12, 0), "f": (12, 9)}
_KEYWORDS = {"default", "native", "all", "all-major"}
# What each consumer parses: torch's _get_cuda_arch_flags takes 8.0, 9.0a, 8.6+PTX; CMake's
# CUDA_ARCHITECTURES takes 80, 90a, 120-real, 86-virtual and its keywords.
_FORMS = {
    "torch": re.compile(r"^\d+\.\d[af]?(\+ptx)?$", re.IGNORECASE),
    "cmake": re.compile(r"^(\d{2,3}[af]?(-real|-virtual)?|native|all|all-major)$"),
}
_ARCH = re.compile(r"^(?:sm_|compute_)?(\d+)(?:\.(\d))?([af]?)(?:\+ptx|-real|-virtual)?$", re.IGNORECASE)


def _version(text: str) -> Version | None:
    match = re.match(r"^(\d+)\.(\d+)", text.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def _arch(token: str) -> tuple[Version, str] | None:
    """``8.0``, ``9.0+PTX``, ``90a``, ``sm_100f``, ``120-real`` -> ((major, minor), suffix)."""
    match = _ARCH.match(token)
    if match is None:
        return None
    digits, minor, suffix = match.groups()
    if minor is not None:
        return (int(digits), int(minor)), suffix.lower()
    if len(digits) < 2:
        return None
    return (int(digits[:-1]), int(digits[-1])), suffix.lower()


def nvcc_misses(archs: str, cuda: Version) -> list[str]:
    """The archs of the list that CUDA ``cuda``'s nvcc cannot compile, each with why."""
    misses = []
    for token in (t for t in re.split(r"[;,\s]+", archs) if t):
        if token.lower() in _KEYWORDS:
            continue
        parsed = _arch(token)
        known = _ARCHS.get(parsed[0]) if parsed else None
        if parsed is None or known is None:
            misses.append(f"{token} (not a CUDA arch this check knows)")
            continue
        since, dropped = known
        since = max(since, _SUFFIX_SINCE.get(parsed[1], since))
        if cuda < since:
            misses.append(f"{token} (needs CUDA {since[0]}.{since[1]} or newer)")
        elif dropped is not None and cuda >= dropped:
            misses.append(f"{token} (dropped in CUDA {dropped[0]}.{dropped[1]})")
    return misses


def check_constraints(loaded: Loaded) -> None:
    """Every ``constraints:`` entry holds for the resolved params; else a ManifestError
    at the entry naming the params to change."""
    for i, c in enumerate(loaded.manifest.constraints):
        if isinstance(c, SameVersion):
            _check_same(loaded, i, c)
            continue
        if isinstance(c, VersionRange):
            _check_range(loaded, i, c)
            continue
        if not c.cuda_version.strip():
            continue
        cuda = _version(c.cuda_version)
        if cuda is None:
            raise loaded.error(("constraints", i, "cuda_version"), f"not a CUDA version: {c.cuda_version!r}")
        if isinstance(c, CudaAtLeast):
            _check_at_least(loaded, i, c, cuda)
            continue
        archs, version = _param_names(loaded, c.cuda_archs), _param_names(loaded, c.cuda_version)
        if c.form is not None:
            _check_form(loaded, i, c, archs)
        misses = nvcc_misses(c.cuda_archs, cuda)
        if misses:
            fixes = [f"--set {archs}=... without them"] if archs else []
            fixes += [f"--set {version}=... that has them"] if version else []
            raise loaded.error(
                ("constraints", i),
                f"CUDA {c.cuda_version}'s nvcc cannot compile {', '.join(misses)} of {archs or 'the arch list'} "
                f"({c.cuda_archs})",
                hint=", or ".join(fixes) or None,
            )


def _check_form(loaded: Loaded, i: int, c: CudaArchs, archs: str) -> None:
    tokens = [t for t in re.split(r"[;\s]+" if c.form == "torch" else r";", c.cuda_archs.strip()) if t]
    keywords = {"default"} if c.form == "cmake" else set()  # ggml's own list, as llama.cpp's Dockerfiles
    bad = [t for t in tokens if t not in keywords and not _FORMS[c.form or ""].match(t)]
    if bad or not tokens:
        example = "8.0;8.6;9.0+PTX" if c.form == "torch" else "80;86;90a (or 90-real)"
        what = f"{', '.join(repr(t) for t in bad)} {'is' if len(bad) == 1 else 'are'}" if bad else "an empty list is"
        hint = f"--set {archs}={example}" if archs else f"give the arch list as {example}"
        raise loaded.error(("constraints", i), f"{archs or 'the arch list'}: {what} not {c.form}'s arch syntax",
                           hint=hint)  # fmt: skip


def _check_same(loaded: Loaded, i: int, c: SameVersion) -> None:
    given = [v.strip() for v in c.same_version if v.strip()]
    for j, text in enumerate(c.same_version):
        if text.strip() and _version(text) is None:
            raise loaded.error(("constraints", i, "same_version", j), f"not a version: {text!r}")
    if len({_version(v) for v in given}) <= 1:
        return
    names = [_param_names(loaded, v) for v in given]
    named = [f"{name or 'the value'} {v}" for name, v in zip(names, given, strict=True)]
    which = " and ".join(name for name in names if name) or "them"
    raise loaded.error(("constraints", i), f"{' and '.join(named)} differ: {c.because}",
                       hint=f"--set {which} to one major.minor version")  # fmt: skip


def _check_at_least(loaded: Loaded, i: int, c: CudaAtLeast, cuda: Version) -> None:
    if not c.needed_by.strip() or cuda >= tuple(int(n) for n in c.at_least.split(".")):
        return
    version, flags = _param_names(loaded, c.cuda_version), _param_names(loaded, c.needed_by)
    fixes = [f"--set {version}={c.at_least} or newer"] if version else []
    fixes += [f"--set-unlocked {flags}=... without it"] if flags else []
    what = f"{flags or 'the build'} ({c.needed_by.strip()})"
    raise loaded.error(("constraints", i), f"CUDA {c.cuda_version} is older than {c.at_least}, which {what} needs",
                       hint=", or ".join(fixes) or None)  # fmt: skip


def _numbers(text: str) -> tuple[int, ...] | None:
    """``0.11.1`` -> (0, 11, 1), ``v0.12.0``/``2.9.0+cu130``/``0.5.6.post2`` -> their release
    numbers; None for what is not a version."""
    match = re.match(r"^v?(\d+(?:\.\d+)*)", text.strip())
    if match is None:
        return None
    numbers = [int(n) for n in match.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()  # 0.12 == 0.12.0
    return tuple(numbers)


def _check_range(loaded: Loaded, i: int, c: VersionRange) -> None:
    if not c.needed_by.strip() or not c.version.strip():
        return
    version = _numbers(c.version)
    if version is None:
        raise loaded.error(("constraints", i, "version"), f"not a version: {c.version!r}")
    low, high = _numbers(c.at_least), _numbers(c.below) if c.below else None
    if (low is None or version >= low) and (high is None or version < high):
        return
    # the first param holding the version (a bound set by a choice may hold the same text)
    name = _param_names(loaded, c.version).split(" or ")[0]
    span = f"outside {c.at_least} (inclusive) to {c.below} (exclusive)" if c.below else f"older than {c.at_least}"
    raise loaded.error(("constraints", i), f"{name or 'the version'} {c.version.strip()} is {span}: {c.because}",
                       hint=f"--set {name} to a version in that range" if name else None)  # fmt: skip


def _param_names(loaded: Loaded, value: str) -> str:
    if not value.strip():
        return ""  # many params are empty: naming two of them would only mislead
    names = [name for name, v in loaded.params.items() if v == value]
    return " or ".join(names[:2])


def check_platforms(loaded: Loaded, platforms: Sequence[Platform]) -> None:
    """Each platform to build (the manifest's ``platform:`` when none is asked for) is one
    the manifest (or its target) declares under ``platforms:``; else a ManifestError."""
    declared = loaded.manifest.platforms
    if declared is None:
        return
    target = loaded.manifest.targets.get(loaded.target) if loaded.target else None
    by_target = target is not None and target.platforms is not None
    where: PathKey = ("targets", loaded.target or "", "platforms") if by_target else ("platforms",)
    for plat in list(platforms) or [Platform.parse(loaded.manifest.platform)]:
        if not any(Platform.parse(text).matches(plat) for text in declared):
            asked = f"--platform {plat}" if platforms else f"platform {plat} (the manifest's platform:)"
            what = f"target {loaded.target}" if by_target else "this manifest"
            raise loaded.error(where, f"{asked}: {what} builds only {', '.join(declared)}",
                               hint="its steps fetch or build files for those platforms only")  # fmt: skip
