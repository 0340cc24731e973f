"""The manifest's ``image:`` config made concrete: runtime config, annotations, GPU metadata.

GPU metadata: the CUDA/ROCm versions and architecture lists of what was built are recorded as
labels (``skopeo inspect`` shows them) and as manifest annotations, under
``org.opencontainers.image.*`` and the project's ``io.assemble.*`` namespace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from assembler.deps.gpucode import GpuCode
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.image import Image
from assembler.oci.reference import ImageName
from assembler.pipeline.image import labels
from assembler.sbom.interpreter import PythonFacts

NAMESPACE = "io.assemble"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_FLAG_VARS = (
    "GGML_NATIVE",
    "GGML_CUDA",
    "GGML_HIP",
    "DS_BUILD_OPS",
    "MAX_JOBS",
    "NVCC_THREADS",
    "USE_CUDA",
    "USE_ROCM",
)


def expand_env(value: str, env: Mapping[str, str], *, keep_unknown: bool = False) -> str:
    """Dockerfile ``ENV`` expansion: ``$VAR`` and ``${VAR}`` from the environment so far
    (unknown ones are empty, as in Docker; ``keep_unknown`` leaves them as written)."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env[name] if name in env else (match.group(0) if keep_unknown else "")

    return _VAR.sub(repl, value)


REQUIRE_CUDA = "NVIDIA_REQUIRE_CUDA"
REQUIRES_LABEL = "io.assemble.gpu.cuda.requires"


def _covers(base_value: str, required: str) -> bool:
    """Whether the base's ``NVIDIA_REQUIRE_CUDA`` already asks for ``required``'s CUDA or
    newer (it is kept then, with its ``brand=`` clauses)."""
    have = re.search(r"cuda>=(\d+)\.(\d+)", base_value)
    want = re.search(r"cuda>=(\d+)\.(\d+)", required)
    if not have or not want:
        return False
    return (int(have.group(1)), int(have.group(2))) >= (int(want.group(1)), int(want.group(2)))


def config_changes(
    spec: m.ConfigSpec,
    base_env: Sequence[str],
    labels: Mapping[str, str] | None = None,
    *,
    keep_unknown: bool = False,
) -> mutate.ConfigChanges:
    """The runtime config the manifest asks for, env expanded against the base's env."""
    env: dict[str, str] = dict(item.partition("=")[::2] for item in base_env)
    new_env: dict[str, str] = {}
    for name, value in spec.env.items():
        expanded = expand_env(value, env, keep_unknown=keep_unknown)
        env[name] = expanded
        new_env[name] = expanded
    required = (labels or {}).get(REQUIRES_LABEL, "")
    if required and REQUIRE_CUDA not in spec.env and not _covers(env.get(REQUIRE_CUDA, ""), required):
        new_env[REQUIRE_CUDA] = required  # the container toolkit refuses a driver older than the code needs
    health: dict[str, Any] | None = None
    if spec.healthcheck is not None:
        h = spec.healthcheck
        health = {"Test": list(h.test)}
        for key, val in (
            ("Interval", h.interval),
            ("Timeout", h.timeout),
            ("StartPeriod", h.start_period),
            ("StartInterval", h.start_interval),
            ("Retries", h.retries),
        ):
            if val is not None:
                health[key] = val
    return mutate.ConfigChanges(
        env=new_env,
        entrypoint=spec.entrypoint,
        cmd=spec.cmd,
        workdir=spec.workdir,
        user=spec.user,
        exposed_ports=spec.exposed_ports,
        volumes=spec.volumes,
        labels={**(labels or {}), **spec.labels},
        healthcheck=health,
        stop_signal=spec.stop_signal,
    )


def default_annotations(base: Image, base_name: ImageName | None, title: str, epoch: int) -> dict[str, str]:
    out = {mt.ANNOTATION_CREATED: mutate.timestamp(epoch), mt.ANNOTATION_TITLE: title}
    if base.layers:
        out[mt.ANNOTATION_BASE_DIGEST] = base.digest
        if base_name is not None:
            out[mt.ANNOTATION_BASE_NAME] = str(base_name)
    return out


def gpu_metadata(
    loaded: Loaded,
    steps: Sequence[m.CompileStep],
    *,
    code: Mapping[str, GpuCode],
    base: Image | None,
    stack: PythonFacts | None = None,
) -> dict[str, str]:
    """What hardware the image's compiled code targets and how it was built.

    Arch lists are read from the artifacts (``code``: the made steps'), versions from the
    base, torch's and Python's from the image (``stack``; None: a plan's placeholders; see
    :mod:`assembler.pipeline.image.labels`); build flags come from the steps' env.
    """
    out: dict[str, str] = {}
    for step in steps:
        flags = {var: step.env[var] for var in _FLAG_VARS if var in step.env}
        if flags:
            out[f"{NAMESPACE}.build.{step.name}"] = " ".join(f"{k}={v}" for k, v in sorted(flags.items()))
    out.update(labels.arch_labels(loaded.manifest, code))
    out.update(labels.driver_labels(labels.image_code(loaded.manifest, code)))
    out.update(labels.version_labels(loaded.params, loaded.manifest, base))
    out.update(labels.python_labels(loaded.params, stack))
    if loaded.target:
        out[f"{NAMESPACE}.target"] = loaded.target
    if out:
        out[f"{NAMESPACE}.manifest"] = loaded.manifest.name
    return out
