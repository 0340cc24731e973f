"""The manifest's ``image:`` config made concrete: runtime config, annotations, GPU metadata.

GPU metadata: the CUDA/ROCm versions and architecture lists a build used are recorded as
labels (``skopeo inspect`` shows them) and as manifest annotations, under
``org.opencontainers.image.*`` and the project's ``io.assemble.*`` namespace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from assembler.oci import mediatypes as mt
from assembler.oci import mutate
from assembler.oci.image import Image
from assembler.oci.reference import ImageName
from assembler.spec import model as m
from assembler.spec.load import Loaded

NAMESPACE = "io.assemble"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# Build env that decides which GPUs an image runs on, by the label it is reported under.
_CUDA_ARCH_VARS = (
    "TORCH_CUDA_ARCH_LIST",
    "CMAKE_CUDA_ARCHITECTURES",
    "CUDA_DOCKER_ARCH",
    "CUDA_ARCHITECTURES",
    "CUDA_ARCHS",
)
_ROCM_ARCH_VARS = ("PYTORCH_ROCM_ARCH", "AMDGPU_TARGETS", "GPU_TARGETS", "GPU_ARCHS", "HIP_ARCHITECTURES")
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
_VERSION_PARAMS = {
    "cuda_version": "gpu.cuda.version",
    "rocm_version": "gpu.rocm.version",
    "torch_version": "torch.version",
    "python_version": "python.version",
}


def expand_env(value: str, env: Mapping[str, str], *, keep_unknown: bool = False) -> str:
    """Dockerfile ``ENV`` expansion: ``$VAR`` and ``${VAR}`` from the environment so far
    (unknown ones are empty, as in Docker; ``keep_unknown`` leaves them as written)."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return env[name] if name in env else (match.group(0) if keep_unknown else "")

    return _VAR.sub(repl, value)


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


def _archs(value: str) -> list[str]:
    return [a for a in re.split(r"[;,\s]+", value.strip()) if a]


def gpu_metadata(loaded: Loaded, steps: Sequence[m.CompileStep]) -> dict[str, str]:
    """What hardware the image's compiled code targets and how it was built.

    Arch lists are the union over the steps that made the image's artifacts; versions
    come from the manifest's params (``cuda_version``, ``rocm_version``, ...).
    """
    out: dict[str, str] = {}
    cuda: list[str] = []
    rocm: list[str] = []
    for step in steps:
        for var in _CUDA_ARCH_VARS:
            if var in step.env:
                cuda += [a for a in _archs(step.env[var]) if a not in cuda]
        for var in _ROCM_ARCH_VARS:
            if var in step.env:
                rocm += [a for a in _archs(step.env[var]) if a not in rocm]
        flags = {var: step.env[var] for var in _FLAG_VARS if var in step.env}
        if flags:
            out[f"{NAMESPACE}.build.{step.name}"] = " ".join(f"{k}={v}" for k, v in sorted(flags.items()))
    if cuda:
        out[f"{NAMESPACE}.gpu.cuda.archs"] = ";".join(cuda)
    if rocm:
        out[f"{NAMESPACE}.gpu.rocm.archs"] = ";".join(rocm)
    for param, label in _VERSION_PARAMS.items():
        if loaded.params.get(param):  # an empty param means "not this stack" (cuda_version on ROCm)
            out[f"{NAMESPACE}.{label}"] = loaded.params[param]
    if loaded.target:
        out[f"{NAMESPACE}.target"] = loaded.target
    if out:
        out[f"{NAMESPACE}.manifest"] = loaded.manifest.name
    return out
