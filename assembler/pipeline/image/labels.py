"""Labels from facts: the GPU architectures the image's compiled code is for, read from
its artifacts, and the CUDA/ROCm versions its base says it has.

- Arch lists. For each compile step whose artifacts the image holds (an ``artifact:``
  layer or a run step's ``mounts:``), the device code in those artifacts is read
  (:mod:`assembler.deps.archs`): ``io.assemble.step.STEP.cuda.archs`` (``sm_80;sm_90;
  compute_90``) and ``...rocm.archs`` (``gfx90a;gfx942``). ``io.assemble.gpu.cuda.archs``
  (and ``rocm``) is the image's list when every such step has the same one; steps built for
  different lists (TGI's kernels) are not merged into a list no step has. A step whose
  artifacts hold no device code claims none, whatever its flags asked. A plan, for a step
  that will run and sets an arch variable, shows the placeholder ``${steps.STEP.cuda_archs}``.
- Versions (``io.assemble.gpu.cuda.version``, ``gpu.rocm.version``): from the image base's
  own config (``CUDA_VERSION`` or ``ROCM_VERSION`` in its env, NVIDIA's old
  ``com.nvidia.cuda.version`` label); else the param, if the base's reference names that
  version (``nvidia/cuda:12.8.1-runtime...``, ``rocm/vllm:rocm6.2_mi300...``);
  else nothing (a floating ``rocm/vllm-dev:base`` tag, ``--set base_image=...`` with
  another version). An empty param means "not this stack" and labels nothing. A plan
  whose base is not resolved yet shows ``${bases.BASE.env.CUDA_VERSION}`` there.
- What the driver must be (``io.assemble.gpu.cuda.requires``, ``...driver``, ``...ptx``):
  from the shipped artifacts' device code (:mod:`assembler.deps.driver`), and the image's
  ``NVIDIA_REQUIRE_CUDA`` from it (:mod:`assembler.pipeline.image.config`), as NVIDIA's images
  carry one so the container toolkit refuses an older driver.
- ``io.assemble.torch.version``, ``io.assemble.python.version``: read from the built image
  (:mod:`assembler.sbom.interpreter`: torch's dist-info, the Python its venv or
  site-packages are for), never from the ``torch_version``/``python_version`` params; what
  the image does not say is not claimed. A plan, where the manifest sets the param, shows
  the placeholder ``${image.torch_version}`` (``${image.python_version}``): the image is
  not there to read yet.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cache import Cache
from assembler.cache.memos import SharedFacts
from assembler.compile.sources import Source
from assembler.deps import driver
from assembler.deps.archs import layer_code
from assembler.deps.gpucode import GpuCode, canonical
from assembler.manifest.load import labelfacts, sourcefacts
from assembler.manifest.load.loaded import Loaded
from assembler.manifest.schema import model as m
from assembler.manifest.text.urls import redacted
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.sbom.interpreter import PythonFacts, read_python
from assembler.transports.common import BlobReader

if TYPE_CHECKING:
    from assembler.pipeline.image.bases import Base

NAMESPACE = "io.assemble"
CUDA_ARCH_VARS = (
    "TORCH_CUDA_ARCH_LIST",
    "CMAKE_CUDA_ARCHITECTURES",
    "CUDA_DOCKER_ARCH",
    "CUDA_ARCHITECTURES",
    "CUDA_ARCHS",
)
ROCM_ARCH_VARS = ("PYTORCH_ROCM_ARCH", "AMDGPU_TARGETS", "GPU_TARGETS", "GPU_ARCHS", "HIP_ARCHITECTURES")
# param -> (label, the base's env variables, the base's labels that say it)
VERSIONS = {
    "cuda_version": ("gpu.cuda.version", ("CUDA_VERSION",), ("com.nvidia.cuda.version",)),
    "rocm_version": ("gpu.rocm.version", ("ROCM_VERSION",), ()),
}
# param a manifest asks for it with -> (label, the PythonFacts field read from the image)
PYTHON_STACK = {"torch_version": ("torch.version", "torch"), "python_version": ("python.version", "python")}


def shipped(man: m.Manifest) -> dict[str, list[str]]:
    """The artifacts of each compile step the image holds: its layers' and mounts'."""
    out: dict[str, set[str]] = {}
    for layer in man.image.layers:
        for ref, _, _ in layer.step_refs():
            step, _, name = ref.partition(".")
            names = [name] if name else list(next(s for s in man.compile if s.name == step).artifacts)
            out.setdefault(step, set()).update(names)
    return {step: sorted(names) for step, names in out.items()}


def artifacts_read(man: m.Manifest) -> dict[str, list[str]]:
    """The shipped artifacts, and every artifact of a step a label or annotation names."""
    out = shipped(man)
    for value in (*man.image.config.labels.values(), *man.annotations.values()):
        for ref in labelfacts.references(value):
            if ref.kind == "steps" and ref.name not in out:
                out[ref.name] = sorted(next(s for s in man.compile if s.name == ref.name).artifacts)
    return out


def step_code(
    man: m.Manifest,
    artifacts: Mapping[str, Mapping[str, Layer]],
    *,
    cache: Cache,
    ensure: Callable[[Layer], None] | None = None,
) -> dict[str, GpuCode]:
    """The device code of each shipped (or named) step whose artifacts are known (made or
    cached); a step not there is still to run. A build's ``ensure`` brings a blob in (from a
    registry step cache) before it is read. Without it (a plan), only what the cache holds
    is read and nothing is written to the cache: no memo, files spooled to the system's
    temporary folder."""
    records = ensure is not None
    out: dict[str, GpuCode] = {}
    with cache.workdir("gpucode-") if records else tempfile.TemporaryDirectory(prefix="assemble-gpucode-") as folder:
        work = Path(folder)
        for step, names in sorted(artifacts_read(man).items()):
            made = artifacts.get(step)
            if made is None:
                continue
            if ensure is None and not all(cache.has_blob(made[n].digest, made[n].size) for n in names):
                continue  # a plan, and the artifacts are in a registry step cache only: not known yet
            found = GpuCode()
            for name in names:
                layer = made[name]
                if ensure is not None:
                    ensure(layer)
                opener = partial(cache.open_blob, layer.digest)
                what = f"artifact {step}.{name}"
                found |= layer_code(layer.diff_id, opener, what=what, cache=cache, workdir=work, record=records)
            out[step] = found
    return out


def _requests(step: m.CompileStep, names: Sequence[str]) -> bool:
    """Whether the step sets one of these arch variables (even to ``default``)."""
    return any(step.env.get(var, "").strip() for var in names)


def arch_labels(man: m.Manifest, code: Mapping[str, GpuCode]) -> dict[str, str]:
    """Per-step and image arch labels: facts where the step is made, placeholders where
    it is still to run and asks for GPU code."""
    out: dict[str, str] = {}
    steps = {s.name: s for s in man.compile}
    for kind, var_names in (("cuda", CUDA_ARCH_VARS), ("rocm", ROCM_ARCH_VARS)):
        values: list[str] = []
        for name in sorted(shipped(man)):
            if name in code:
                found = code[name].cuda if kind == "cuda" else code[name].rocm
                value = canonical(found, rocm=kind == "rocm")
            else:
                value = f"${{steps.{name}.{kind}_archs}}" if _requests(steps[name], var_names) else ""
            if value:
                out[f"{NAMESPACE}.step.{name}.{kind}.archs"] = value
                values.append(value)
        if values and len(set(values)) == 1:
            out[f"{NAMESPACE}.gpu.{kind}.archs"] = values[0]
    return out


def image_code(man: m.Manifest, code: Mapping[str, GpuCode]) -> GpuCode | None:
    """The device code of every shipped step's artifacts together; None while a shipped
    step is not made yet (a plan: what the driver needs is not known)."""
    found = GpuCode()
    for name in shipped(man):
        if name not in code:
            return None
        found |= code[name]
    return found


def driver_labels(code: GpuCode | None) -> dict[str, str]:
    """What the image's CUDA code needs of the driver (:mod:`assembler.deps.driver`):
    ``io.assemble.gpu.cuda.requires`` (``cuda>=13.0``, as ``NVIDIA_REQUIRE_CUDA``), the
    driver that is (``...cuda.driver``, when the release is in the table) and what each
    PTX architecture needs to be JIT-compiled (``...cuda.ptx``: ``compute_90:cuda>=13.2``)."""
    if code is None:
        return {}
    found = driver.needs(code)
    out: dict[str, str] = {}
    if found.require():
        out[f"{NAMESPACE}.gpu.cuda.requires"] = found.require()
        floor = driver.CUDA_DRIVER.get(found.cuda) if found.cuda else None
        if floor:
            out[f"{NAMESPACE}.gpu.cuda.driver"] = f">={floor}"
    if found.ptx:
        out[f"{NAMESPACE}.gpu.cuda.ptx"] = found.ptx_text()
    return out


def driver_warnings(loaded: Loaded, code: GpuCode | None) -> list[str]:
    """The image's CUDA code checked against the oldest driver the manifest's ``gpu:`` says
    it must run on: warnings for PTX only a newer driver can JIT. Raises ManifestError
    (exit 2, at ``gpu:``) for SASS that needs a newer driver, or a ``gpu:`` not understood."""
    spec = loaded.manifest.gpu
    field = "min_cuda" if spec.min_cuda else "min_driver"
    try:
        supported = driver.supported_from(spec.min_cuda, spec.min_driver)
    except ValueError as e:
        raise loaded.error(("gpu", field), str(e)) from None
    if supported is None or code is None:
        return []
    errors, warnings = driver.check(driver.needs(code), supported)
    if errors:
        raise loaded.error(
            ("gpu", field),
            f"the image's CUDA code cannot run on the drivers it must support: {'; '.join(errors)}",
            hint="build its steps with an older CUDA toolkit, or raise gpu.min_cuda / gpu.min_driver",
        )
    return [f"gpu: {w}" for w in warnings]


def step_facts(code: Mapping[str, GpuCode]) -> dict[str, dict[str, str]]:
    """``${steps.NAME.FIELD}`` values of the made steps."""
    return {
        name: {"cuda_archs": canonical(c.cuda), "rocm_archs": canonical(c.rocm, rocm=True)} for name, c in code.items()
    }


def base_facts(image: Image) -> dict[str, dict[str, str]]:
    """``${bases.NAME.env|labels.KEY}`` values of a resolved base."""
    cfg = image.container_config
    env = dict(item.partition("=")[::2] for item in cfg.get("Env") or [])
    return {"env": env, "labels": {str(k): str(v) for k, v in (cfg.get("Labels") or {}).items()}}


def _names_version(ref: str, version: str) -> bool:
    """Whether the reference text names ``version`` as a whole number (``12.8`` in
    ``cuda:12.8.1-runtime`` or ``rocm6.2_``, not in ``112.8``)."""
    return re.search(rf"(?<![0-9.]){re.escape(version)}(?![0-9])", ref) is not None


def version_labels(params: Mapping[str, str], man: m.Manifest, base: Image | None) -> dict[str, str]:
    """Version labels from the image base's config, else from a param its reference names."""
    spec = man.bases[man.image.base]
    ref = spec if isinstance(spec, str) else spec.ref if isinstance(spec, m.RefBase) else ""
    facts = base_facts(base) if base is not None else None
    out: dict[str, str] = {}
    for param, (label, env_names, label_names) in VERSIONS.items():
        wanted = params.get(param, "")
        if not wanted:
            continue  # an empty param means "not this stack" (cuda_version on ROCm)
        value = ""
        if facts is not None:
            value = next((facts["env"][n] for n in env_names if facts["env"].get(n)), "")
            value = value or next((facts["labels"][n] for n in label_names if facts["labels"].get(n)), "")
        if not value and _names_version(ref, wanted):
            value = wanted
        if not value and facts is None and env_names and ref != "scratch":
            value = f"${{bases.{man.image.base}.env.{env_names[0]}}}"  # a plan: known once the base is
        if value:
            out[f"{NAMESPACE}.{label}"] = value
    return out


def python_facts(
    image: Image, base: Base | None, *, cache: Cache, blobs: BlobReader, shared: SharedFacts | None = None
) -> PythonFacts | None:
    """The Python and torch the built ``image`` (on ``base``) has, its layers read through
    ``blobs`` unless remembered (in ``cache``, or ``shared``). None without a base: not built yet."""
    if base is None:
        return None
    with cache.workdir("python-") as work:
        env = base_facts(base.image)["env"]
        return read_python(image, blobs.open_blob, base_env=env, cache=cache, workdir=Path(work), shared=shared)


def python_labels(params: Mapping[str, str], facts: PythonFacts | None) -> dict[str, str]:
    """torch and Python version labels from the image's ``facts``; a plan's (None): a
    placeholder for each the manifest asks for by its param."""
    out: dict[str, str] = {}
    for param, (label, field) in PYTHON_STACK.items():
        value = getattr(facts, field) if facts is not None else f"${{image.{param}}}" if params.get(param) else ""
        if value:
            out[f"{NAMESPACE}.{label}"] = value
    return out


def facts_of(
    code: Mapping[str, GpuCode], man: m.Manifest, base_of: Callable[[str], Base | None], *, final: bool
) -> labelfacts.Facts:
    """What ``${steps...}`` and ``${bases...}`` placeholders can be filled with so far:
    ``base_of`` obtains each base they name (a plan only looks it up). ``final``: a build's;
    what it does not know now it never will, and the label is left out."""
    names = {
        ref.name
        for value in (*man.image.config.labels.values(), *man.annotations.values())
        for ref in labelfacts.references(value)
        if ref.kind == "bases"
    }
    known = {name: base_facts(b.image) for name in sorted(names) if (b := base_of(name)) is not None}
    return labelfacts.Facts(step_facts(code), known, final=final)


def expand(
    values: Mapping[str, str], *, sources: Mapping[str, Mapping[str, str]], made: labelfacts.Facts
) -> dict[str, str]:
    """Label or annotation values with every placeholder known filled in; one that comes
    out empty is left out."""
    return labelfacts.expand_each(values, lambda value: labelfacts.expand(sourcefacts.expand(value, sources), made))


def source_facts(
    man: m.Manifest,
    read: Mapping[str, Source | None],
    source: Callable[[str], Source | None],
    *,
    unknown: Mapping[str, str],
) -> dict[str, dict[str, str]]:
    """revision, version and url of each source labels or annotations name: of those
    ``read`` anyway (``source`` gives one), or a local folder; a label never fetches, and
    names a URL without its credentials (:func:`redacted`: labels are published).
    ``unknown``: the facts of a source not read (a plan shows its revision as to come)."""
    names = {
        name
        for value in (*man.image.config.labels.values(), *man.annotations.values())
        for name, _ in sourcefacts.references(value)
    }
    facts: dict[str, dict[str, str]] = {}
    for name in sorted(names):
        spec = man.sources[name]
        src = source(name) if name in read or isinstance(spec, m.PathSource) else None
        if src is None:
            url = spec.git if isinstance(spec, m.GitSource) else spec.url if isinstance(spec, m.UrlSource) else ""
            version = spec.ref if isinstance(spec, m.GitSource) else ""
            facts[name] = {"version": version, "url": redacted(url), **unknown}
        elif isinstance(spec, m.GitSource):
            commit = src.digest.removeprefix("git:").partition("+")[0]
            facts[name] = {"revision": commit, "version": spec.ref, "url": redacted(spec.git)}
        else:
            url = spec.url if isinstance(spec, m.UrlSource) else ""
            facts[name] = {"revision": src.digest, "version": "", "url": redacted(url)}
    return facts
