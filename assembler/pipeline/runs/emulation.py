"""What a build would run under qemu-user: the compile steps and runtime layers (``run:``,
``packages:``) to be made whose container is another architecture's than this machine's.

buildah runs a container of an arm64 image on an x86 machine through binfmt_misc without a
word, every command several times slower than on the target and never a run on it. A plan
finds them once its walk has decided what will run (a step the cache holds runs nowhere;
with ``--executor slurm`` compile steps run on the cluster's nodes, whose architecture the
partition chooses): a manifest (or its target) that says ``emulate: true`` gets them run so,
each named in the plan and warned of in the build; any other is refused before anything
runs, naming where each is written and what runs nothing instead (``pip:``, ``url:``,
``copy:`` and ``artifact:`` layers are written here in Python, for any platform).
"""

from __future__ import annotations

import os
from collections.abc import Collection

from assembler.compile import binfmt
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Platform
from assembler.pipeline.image.bases import base_platform


def step_platform(man: m.Manifest, step: m.CompileStep, platform: Platform) -> Platform:
    """The platform of the container ``step`` runs in: its base's own (``{ref:, platform:}``,
    ``{bootstrap:, platform:}``), else the one being built."""
    spec = man.bases.get(step.base or "")
    return base_platform(spec, platform) if spec is not None else platform


def emulated(
    loaded: Loaded,
    platform: Platform,
    will_run: Collection[str],
    *,
    steps_here: bool = True,
    machine: str | None = None,
) -> list[str]:
    """What a build of ``loaded`` for ``platform`` runs under qemu-user here, in words ("step
    NAME (aarch64)", "layer NAME (aarch64)"), of the steps ``will_run`` names (``steps_here``
    False: compile steps run elsewhere, on Slurm nodes). Raises ManifestError at the first
    unless the manifest says ``emulate: true``, naming every one."""
    man = loaded.manifest
    here = machine or os.uname().machine
    found: list[tuple[tuple[str | int, ...], str]] = []
    for i, step in enumerate(man.compile):
        on = step_platform(man, step, platform)
        if steps_here and step.name in will_run and not binfmt.native(on.architecture, here):
            found.append((("compile", i), f"step {step.name} ({binfmt.machine_of(on.architecture)})"))
    if not binfmt.native(platform.architecture, here):
        for i, (layer, path) in enumerate(zip(man.image.layers, loaded.layer_paths, strict=True)):
            name = layer.runtime_name(i)
            if name is not None and name in will_run:
                found.append((tuple(path), f"layer {name} ({binfmt.machine_of(platform.architecture)})"))
    if found and not man.emulate:
        path, what = found[0]
        others = f" (and {', '.join(w for _, w in found[1:])})" if len(found) > 1 else ""
        raise loaded.error(
            path,
            f"{what} would run under qemu-user on this {here} machine{others}: slow, and not a run on the target",
            hint="make the layer with pip:, url:, copy: or artifact: (nothing runs), compile on this machine's "
            "platform (a base with {ref:, platform:}), build on the target, or say emulate: true",
        )
    return [what for _, what in found]
