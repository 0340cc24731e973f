"""ROCm arch lists against the GPU targets each ROCm release compiles for (``rocm.json``).

An arch list is what a well-known variable holds (PYTORCH_ROCM_ARCH, AMDGPU_TARGETS,
GPU_TARGETS, GPU_ARCHS, HIP_ARCHITECTURES, CMAKE_HIP_ARCHITECTURES) or what
``--offload-arch=``/``--amdgpu-target=`` flags name, in a compile step's or layer's env, its
commands or the image's config (:mod:`.archlists`). Each of its targets (``gfx90a``,
``gfx942:xnack+``) is one some ROCm release knows (``sm_80`` is a CUDA arch, ``gfx9999`` no
GPU), and one the release of the base it builds on knows: gfx950 (MI350) needs ROCm 7.0. The
base's release is read from its tag (``rocm/dev-ubuntu-24.04:6.4-complete``,
``...-rocm630``, ``rocm6.2_...``); a floating tag (``rocm/vllm-dev:base``) says none, and
only the first check applies. A compile step building a release whose build compiles only
some targets (vLLM's HIP_SUPPORTED_ARCHS: ``hip_builds.json``) takes only those: vLLM 0.6.3
leaves gfx1201 out without a word, and given nothing else stops its build an hour in.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from assembler.manifest.facts import bases
from assembler.manifest.facts.archlists import ArchList, lists
from assembler.manifest.facts.data import read, where
from assembler.manifest.facts.scope import base_ref, describe, params_at, settable
from assembler.manifest.text.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject

VARIABLES = (
    "PYTORCH_ROCM_ARCH",
    "AMDGPU_TARGETS",
    "GPU_TARGETS",
    "GPU_ARCHS",
    "HIP_ARCHITECTURES",
    "CMAKE_HIP_ARCHITECTURES",
)
_FLAG = re.compile(r"--(?:offload-arch|amdgpu-target)=(\S+)")
_TARGET = re.compile(r"^(gfx[0-9a-z-]+?)((?::(?:sramecc|xnack)[+-])*)$")
_CUDA = re.compile(r"^(?:sm_|compute_)?\d+(?:\.\d)?[af]?(?:\+ptx|-real|-virtual)?$", re.IGNORECASE)
_SKIP = {"native", "all", "default"}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split("."))


def release_of(ref: str) -> str | None:
    """The ROCm release (major.minor) a base's tag names, or None."""
    image = bases.parse(ref)
    if image is None:
        return None
    found = re.search(r"rocm[-_]?(\d)\.(\d+)", image.tag) or re.search(r"rocm(\d)(\d)\d(?!\d)", image.tag)
    if found:
        return f"{found.group(1)}.{found.group(2)}"
    if image.repository.startswith("rocm/dev-"):
        plain = re.match(r"^(\d+)\.(\d+)", image.tag)
        return f"{plain.group(1)}.{plain.group(2)}" if plain else None
    return None


def check(loaded: Subject) -> None:
    """Every ROCm arch list against the targets ROCm knows and its base's release knows,
    and, in a compile step building a release that compiles only some (``hip_builds.json``),
    against those."""
    data = read("rocm")
    for said in lists(loaded, VARIABLES, _FLAG):
        tokens = [t for t in said.tokens if t.lower() not in _SKIP]
        release = release_of(base_ref(loaded, said.base) or "")
        covered = release is not None and _version(data["first"]) <= _version(release) <= _version(data["last"])
        bad = [(t, why) for t in tokens if (why := _why(t, release if covered else None, data))]
        if not bad and (built := _built(loaded, said.path)) is not None:
            name, version, archs = built
            bad = [
                (t, f"{name} {version} does not compile for it (its HIP_SUPPORTED_ARCHS: {', '.join(archs)})")
                for t in tokens
                if (found := _TARGET.match(t)) is not None and found.group(1) not in archs
            ]
            if bad:
                builds = f"{name} {version} compiles for"
                _refuse(loaded, said, None, bad, facts="hip_builds", builds=builds)
        if bad:
            _refuse(loaded, said, release, bad)


def _built(loaded: Subject, path: PathKey) -> tuple[str, str, list[str]] | None:
    """(the source's name, its release, the targets its build compiles for) of what the
    compile step at ``path`` builds, where ``hip_builds.json`` knows that release: the release
    is the step's SETUPTOOLS_SCM_PRETEND_VERSION, else the source's tag (``v0.6.3``)."""
    if path[0] != "compile" or not isinstance(path[1], int):
        return None
    man = loaded.manifest
    step = man.compile[path[1]]
    builds = read("hip_builds")["builds"]
    for name in step.sources:
        source = man.sources.get(name)
        git = getattr(source, "git", None)
        if not isinstance(git, str):
            continue
        known = builds.get(re.sub(r"^[a-z+]+://|\.git$", "", git.strip().rstrip("/")))
        version = str(step.env.get("SETUPTOOLS_SCM_PRETEND_VERSION", "")) or str(getattr(source, "ref", "")).lstrip("v")
        if known is not None and version in known:
            return name, version, list(known[version])
    return None


def _why(token: str, release: str | None, data: dict[str, object]) -> str:
    """Why ``token`` is no target ROCm ``release`` compiles for; "" when it is one."""
    found = _TARGET.match(token)
    if found is None:
        return "a CUDA arch, not a ROCm GPU target" if _CUDA.match(token) else "not a ROCm GPU target (gfx...)"
    targets = data["targets"]
    assert isinstance(targets, dict)
    facts = targets.get(found.group(1))
    if facts is None:
        return f"no GPU target of any ROCm release ({data['first']} to {data['last']})"
    if release is None:
        return ""
    if _version(release) < _version(facts["since"]):
        return f"ROCm {release} does not build for it (ROCm {facts['since']} and newer do)"
    if "until" in facts and _version(release) >= _version(facts["until"]):
        return f"ROCm {facts['until']} dropped it"
    return ""


def _refuse(
    loaded: Subject,
    found: ArchList,
    release: str | None,
    bad: list[tuple[str, str]],
    *,
    facts: str = "rocm",
    builds: str = "",
) -> None:
    path, base, names = found.path, found.base, list(found.params)
    ref = base_ref(loaded, base) or ""
    base_params = params_at(loaded, ("bases", base), ref) if release else []
    on = f" on ROCm {release} (the base {base}, {ref.removeprefix('docker://')})" if release else ""
    listed = "; ".join(f"{t}: {why}" for t, why in bad)
    raise loaded.error(
        path,
        f"{found.what}: {found.name}"
        + (f" ({describe(loaded, names)})" if names else "")
        + f"{on}: {listed} ({where(facts)})",
        hint=f"--set {' or '.join(settable(loaded, [*names, *base_params])) or found.name} to AMD targets "
        f"{builds or ('ROCm ' + release + ' builds for' if release else 'ROCm builds for')} (gfx90a;gfx942)",
    )
