"""Checking a loaded manifest's ``constraints:`` and ``platforms:`` (their models and what
each means: :mod:`assembler.manifest.schema.coupling`): a ``--set`` no build could satisfy is refused
at load time with the constraint's file and line, and a platform the manifest does not
declare before anything is built."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from assembler.manifest.schema.coupling import (
    CudaArchs,
    CudaAtLeast,
    ExtraPin,
    IndexCuda,
    RocmArchs,
    SameVersion,
    UvPython,
    VersionRange,
)
from assembler.manifest.text.yamlfile import PathKey
from assembler.oci.descriptor import Platform

if TYPE_CHECKING:
    from assembler.manifest.load.loaded import Loaded


Version = tuple[int, int]

# Compute capability -> (first CUDA whose nvcc has it, first CUDA whose nvcc dropped it),
# from the CUDA toolkit release notes.
_ARCHS: dict[Version, tuple[Version, Version | None]] = {
    (3, 5): ((5, 0), (12, 0)),
    (3, 7): ((6, 5), (12, 0)),
    (5, 0): ((6, 0), (13, 0)),
    (5, 2): ((6, 5), (13, 0)),
    (5, 3): ((6, 5), (13, 0)),
    (6, 0): ((8, 0), (13, 0)),
    (6, 1): ((8, 0), (13, 0)),
    (6, 2): ((8, 0), (13, 0)),
    (7, 0): ((9, 0), (13, 0)),
    (7, 2): ((10, 0), (13, 0)),
    (7, 5): ((10, 0), None),
    (8, 0): ((11, 0), None),
    (8, 6): ((11, 1), None),
    (8, 7): ((11, 4), None),
    (8, 9): ((11, 8), None),
    (9, 0): ((11, 8), None),
    (10, 0): ((12, 8), None),
    (10, 1): ((12, 8), (13, 0)),
    (10, 3): ((12, 9), None),
    (11, 0): ((13, 0), None),
    (12, 0): ((12, 8), None),
    (12, 1): ((12, 9), None),
}
# Arch-specific (sm_90a) and family (sm_100f) targets came later than their arch.
_SUFFIX_SINCE: dict[str, Version] = {"a": (12, 0), "f": (12, 9)}
_KEYWORDS = {"default", "native", "all", "all-major"}
# What each consumer parses: torch's _get_cuda_arch_flags takes 8.0, 9.0a, 8.6+PTX; CMake's
# CUDA_ARCHITECTURES takes 80, 90a, 120-real, 86-virtual and its keywords.
_FORMS = {
    "torch": re.compile(r"^\d+\.\d[af]?(\+ptx)?$", re.IGNORECASE),
    "cmake": re.compile(r"^(\d{2,3}[af]?(-real|-virtual)?|native|all|all-major)$"),
}
# An AMDGPU target ID: processor (gfx90a, gfx942, gfx1100, gfx11-generic) and target features.
_GFX = re.compile(r"^gfx(?:\d{2,4}[a-f]?|\d{1,2}(?:-\d)?-generic)(?::(?:sramecc|xnack)[+-])*$")
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
        checked = _CHECKS.get(type(c))
        if checked is not None:
            checked(loaded, i, c)
            continue
        assert isinstance(c, CudaArchs | CudaAtLeast)
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
        raise loaded.error(
            ("constraints", i), f"{archs or 'the arch list'}: {what} not {c.form}'s arch syntax", hint=hint
        )


def _check_rocm(loaded: Loaded, i: int, c: RocmArchs) -> None:
    bad = [t for t in re.split(r"[;,\s]+", c.rocm_archs.strip()) if t and not _GFX.match(t)]
    if not bad:
        return
    archs = _param_names(loaded, c.rocm_archs)
    cuda = [t for t in bad if _arch(t) is not None]
    what = ", ".join(f"{t!r} (a CUDA arch)" if t in cuda else repr(t) for t in bad)
    verb = "is not a ROCm GPU target" if len(bad) == 1 else "are not ROCm GPU targets"
    raise loaded.error(
        ("constraints", i),
        f"{archs or 'the ROCm arch list'}: {what} {verb} (gfx...)",
        hint=f"--set {archs or 'the list'}=gfx90a;gfx942 (AMD's gfx names)",
    )


def _release(text: str) -> tuple[int, ...]:
    """``2.9.0`` -> (2, 9), ``0.11.1+cu129`` -> (0, 11, 1): the release numbers, trailing zeros dropped."""
    numbers = [int(n) for n in re.findall(r"\d+", re.split(r"[^\d.]", text.strip(), maxsplit=1)[0])]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def _check_same(loaded: Loaded, i: int, c: SameVersion) -> None:
    given = [v.strip() for v in c.same_version if v.strip()]
    for j, text in enumerate(c.same_version):
        if text.strip() and _version(text) is None:
            raise loaded.error(("constraints", i, "same_version", j), f"not a version: {text!r}")
    if len({_release(v) if c.exact else _version(v) for v in given}) <= 1:
        return
    names = [_param_names(loaded, v) for v in given]
    named = [f"{name or 'the value'} {v}" for name, v in zip(names, given, strict=True)]
    which = " and ".join(name for name in names if name) or "them"
    raise loaded.error(
        ("constraints", i),
        f"{' and '.join(named)} differ: {c.because}",
        hint=f"--set {which} to one {'' if c.exact else 'major.minor '}version",
    )


def _check_at_least(loaded: Loaded, i: int, c: CudaAtLeast, cuda: Version) -> None:
    if not c.needed_by.strip() or cuda >= tuple(int(n) for n in c.at_least.split(".")):
        return
    version, flags = _param_names(loaded, c.cuda_version), _param_names(loaded, c.needed_by)
    fixes = [f"--set {version}={c.at_least} or newer"] if version else []
    fixes += [f"--set-unlocked {flags}=... without it"] if flags else []
    what = f"{flags or 'the build'} ({c.needed_by.strip()})"
    raise loaded.error(
        ("constraints", i),
        f"CUDA {c.cuda_version} is older than {c.at_least}, which {what} needs",
        hint=", or ".join(fixes) or None,
    )


_INDEX_CUDA = re.compile(r"(?<![A-Za-z0-9])cu(\d{2,3})(?![0-9])")


def index_cudas(url: str) -> list[Version]:
    """The CUDA versions an index URL names: ``.../whl/cu128`` -> [(12, 8)]; ``cu92`` is 9.2."""
    return [(int(d[:-1]), int(d[-1])) for d in _INDEX_CUDA.findall(url)]


def _check_index(loaded: Loaded, i: int, c: IndexCuda) -> None:
    if not c.index_url.strip() or not c.cuda_version.strip():
        return
    cuda = _version(c.cuda_version)
    if cuda is None:
        raise loaded.error(("constraints", i, "cuda_version"), f"not a CUDA version: {c.cuda_version!r}")
    for served in index_cudas(c.index_url):
        if served == cuda or (c.older and served[0] == cuda[0] and cuda < served):
            continue
        # the first param of each value (the runtime base's CUDA may equal the devel one's)
        version, index = (_param_names(loaded, v).split(" or ")[0] for v in (c.cuda_version, c.index_url))
        wanted = f"{served[0]}.{served[1]}" + (f" or an older {served[0]}.x" if c.older else "")
        fixes = [f"--set {version}={wanted}"] if version else []
        fixes += [f"--set {index}=... whose cuXYZ is cu{cuda[0]}{cuda[1]}"] if index else []
        relation = "is newer than" if c.older and served[0] == cuda[0] else "does not match"
        raise loaded.error(
            ("constraints", i),
            f"{version or 'CUDA'} {c.cuda_version} {relation} the CUDA {served[0]}.{served[1]} of "
            f"{index or 'the index'} ({c.index_url}): {c.because}",
            hint=", or ".join(fixes) or None,
        )


def _numbers(loaded: Loaded, i: int, field: str, text: str) -> tuple[int, ...]:
    match = re.match(r"^(\d+(?:\.\d+)*)", text.strip())
    if match is None:
        raise loaded.error(("constraints", i, field), f"not a version: {text!r}")
    return tuple(int(n) for n in match.group(1).split("."))


def _check_range(loaded: Loaded, i: int, c: VersionRange) -> None:
    if not c.version.strip():
        return
    version = _numbers(loaded, i, "version", c.version)
    low = _numbers(loaded, i, "at_least", c.at_least) if c.at_least.strip() else None
    high = _numbers(loaded, i, "at_most", c.at_most) if c.at_most.strip() else None
    if low is not None and version[: len(low)] < low:
        what, bound = "older than", c.at_least
    elif high is not None and version[: len(high)] > high:
        what, bound = "newer than", c.at_most
    else:
        return
    name, bound_name = _param_names(loaded, c.version), _param_names(loaded, bound)
    named = f" ({bound_name})" if bound_name else ""
    span = " to ".join(b.strip() for b in (c.at_least, c.at_most) if b.strip())
    raise loaded.error(
        ("constraints", i),
        f"{name or 'the version'} {c.version.strip()} is {what} {bound.strip()}{named}: {c.because}",
        hint=f"--set {name or 'it'}=... within {span}",
    )


def _check_uv_python(loaded: Loaded, i: int, c: UvPython) -> None:
    from assembler.manifest.facts.data import read, where

    known = read("uv_pythons")["uv"].get(c.uv.strip())
    python = _version(c.python)
    if known is None or python is None or not c.python.strip():
        return
    patch = re.match(r"^\d+\.\d+\.(\d+)$", c.python.strip())
    for platform in loaded.manifest.platforms or [loaded.manifest.platform]:
        patches = known.get(str(Platform.parse(platform)), {}).get(f"{python[0]}.{python[1]}")
        if patches is None or (patch is not None and int(patch.group(1)) not in patches):
            names, uv = _param_names(loaded, c.python), _param_names(loaded, c.uv)
            has = f"3.{python[1]}.{min(patches)} to 3.{python[1]}.{max(patches)}" if patches else "none of it"
            raise loaded.error(
                ("constraints", i),
                f"uv {c.uv.strip()} ({uv or 'uv'}) cannot install CPython {c.python.strip()} "
                f"({names or 'the Python'}) for {platform}: its download list has {has} ({where('uv_pythons')})",
                hint=f"--set {names or 'the Python'} to one it has, or {uv or 'uv'} to a newer uv",
            )


def _check_extra_pin(loaded: Loaded, i: int, c: ExtraPin) -> None:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    from assembler.manifest.facts.data import read, where

    found = re.match(r"^\s*([A-Za-z0-9._-]+)\[([A-Za-z0-9._-]+)\]==(\S+)\s*$", c.pinned_by)
    if found is None or not c.version.strip():
        return
    name, extra, release = found.groups()
    wanted = read("extras")["releases"].get(name.lower(), {}).get(release, {}).get(extra, {}).get(c.package.lower())
    if wanted is None:
        return
    try:
        ok = SpecifierSet(wanted).contains(c.version.strip(), prereleases=True)
    except InvalidSpecifier:
        return
    if not ok:
        names, by = _param_names(loaded, c.version), _param_names(loaded, release).split(" or ")[0]
        raise loaded.error(
            ("constraints", i),
            f"{c.package} {c.version.strip()} ({names or 'the version'}) is not what {c.pinned_by.strip()} "
            f"requires of it ({c.package}{wanted}: {where('extras')}): {c.because}",
            hint=f"--set {names or 'it'} to {wanted.lstrip('=')}"
            + (f", or {by} to a release made with it" if by else ""),
        )


# The kinds checked by a function of their own (the CUDA arch kinds share the loop's code).
_CHECKS: dict[type, Callable[[Loaded, int, Any], None]] = {
    SameVersion: _check_same,
    IndexCuda: _check_index,
    VersionRange: _check_range,
    RocmArchs: _check_rocm,
    UvPython: _check_uv_python,
    ExtraPin: _check_extra_pin,
}


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
            raise loaded.error(
                where,
                f"{asked}: {what} builds only {', '.join(declared)}",
                hint="its steps fetch or build files for those platforms only",
            )
