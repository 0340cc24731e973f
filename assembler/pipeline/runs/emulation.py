"""What a build would run under qemu-user: the compile steps and runtime layers (``run:``,
``packages:``) whose container is another architecture's than this machine's.

buildah runs a container of an arm64 image on an x86 machine through binfmt_misc without a
word, every command several times slower than on the target and never a run on it. A plan
finds them first: a manifest (or its target) that says ``emulate: true`` gets them run so,
each named in the plan and warned of in the build; any other is refused before anything runs,
naming where each is written and what runs nothing instead (``pip:``, ``url:``, ``copy:`` and
``artifact:`` layers are written here in Python, for any platform).
"""

from __future__ import annotations

import os

from assembler.compile import binfmt
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Platform
from assembler.pipeline import graph

# Machines that run another's programs natively besides their own.
_ALSO_RUNS = {"x86_64": {"i686"}, "aarch64": {"armv7l"}}


def native(platform: Platform, machine: str | None = None) -> bool:
    """Whether ``machine`` (default: this one's ``uname -m``) runs ``platform``'s programs itself."""
    here = machine or os.uname().machine
    runs = binfmt.machine_of(platform.architecture)
    return runs == here or runs in _ALSO_RUNS.get(here, set())


def step_platform(man: m.Manifest, step: m.CompileStep, platform: Platform) -> Platform:
    """The platform of the container ``step`` runs in: its base's own (``{ref:, platform:}``),
    else the one being built."""
    spec = man.bases.get(step.base or "")
    if isinstance(spec, m.RefBase) and spec.platform:
        return Platform.parse(spec.platform)
    return platform


def emulated(loaded: Loaded, platform: Platform, *, machine: str | None = None) -> list[str]:
    """What a build of ``loaded`` for ``platform`` runs under qemu-user here, in words ("step
    NAME (aarch64)", "layer NAME (aarch64)"). Raises ManifestError at the first one unless
    the manifest says ``emulate: true``."""
    man = loaded.manifest
    found: list[tuple[tuple[str | int, ...], str]] = []
    for step in graph.needed_steps(man):
        on = step_platform(man, step, platform)
        if not native(on, machine):
            index = next(i for i, s in enumerate(man.compile) if s.name == step.name)
            found.append((("compile", index), f"step {step.name} ({binfmt.machine_of(on.architecture)})"))
    if not native(platform, machine):
        for i, layer in enumerate(man.image.layers):
            name = layer.runtime_name(i)
            if name is not None:
                path = tuple(loaded.layer_paths[i]) if i < len(loaded.layer_paths) else ("image", "layers", i)
                found.append((path, f"layer {name} ({binfmt.machine_of(platform.architecture)})"))
    if found and not man.emulate:
        path, what = found[0]
        others = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise loaded.error(
            path,
            f"{what} would run under qemu-user on this {machine or os.uname().machine} machine{others}: "
            "slow, and not a run on the target",
            hint="make the layer with pip:, url:, copy: or artifact: (nothing runs), compile on this machine's "
            "platform (a base with {ref:, platform:}), build on the target, or say emulate: true",
        )
    return [what for _, what in found]
