"""Loading a manifest: YAML -> params -> target -> recipes -> models -> cross-checks.

Every error names the file, the line and the field. The parts live in their own modules:
:mod:`~assembler.manifest.load.params` (``${name}``), :mod:`~assembler.manifest.load.recipes` (``use:``),
:mod:`~assembler.manifest.load.validation` (pydantic errors to file:line) and
:mod:`~assembler.manifest.load.checks` (references between parts).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from assembler.errors import ManifestError
from assembler.manifest.load.checks import check
from assembler.manifest.load.cudabase import choose as choose_cuda_bases
from assembler.manifest.load.loaded import BaseOverride as BaseOverride
from assembler.manifest.load.loaded import Loaded as Loaded
from assembler.manifest.load.params import Fixed, check_sets, fixed_params, param_inputs, resolve_params, substitute
from assembler.manifest.load.recipes import apply_recipe
from assembler.manifest.load.validation import validate_model
from assembler.manifest.schema import model as m
from assembler.manifest.schema.fields import scalar_to_str
from assembler.manifest.text.suggest import known_names
from assembler.manifest.text.yamlfile import Locations, PathKey, load


def describe_base(spec: m.BaseSpec) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, m.RefBase):
        return spec.ref
    if isinstance(spec, m.CudaBase):
        return f"nvidia_cuda: {spec.nvidia_cuda}"
    return f"bootstrap: {spec.bootstrap.suite}"


_PER_RUN = ("params", "matrix", "tag_template")

# -- the manifest ----------------------------------------------------------------------


def _merge_config(base: m.ConfigSpec, over: m.ConfigSpec) -> m.ConfigSpec:
    data = base.model_dump(by_alias=True)
    for key, value in over.model_dump(by_alias=True, exclude_unset=True).items():
        if key in ("env", "labels"):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return m.ConfigSpec.model_validate(data)


def _chosen_target(data: dict[str, Any], target: str | None, locs: Locations) -> str | None:
    """The target to build (``--target``, else ``default_target``), checked to exist."""
    raw_targets = data.get("targets") or {}
    if not isinstance(raw_targets, dict):
        raise locs.error(("targets",), "expected a mapping of target names")
    chosen = target or data.get("default_target")
    if chosen is not None and chosen not in raw_targets:
        where: PathKey = ("default_target",) if target is None else ("targets",)
        hint = known_names(str(chosen), raw_targets, "targets in this manifest")
        raise locs.error(where, f"unknown target {chosen!r}", hint=hint)
    return chosen


def _params(
    data: dict[str, Any],
    chosen: str | None,
    sets: Mapping[str, str],
    unlocked: Collection[str],
    locs: Locations,
    *,
    default: bool,
) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """The manifest's params with the target's, the choices' and ``--set`` values applied,
    and what each is made of (:func:`~assembler.manifest.load.params.param_inputs`). What the target
    and the chosen choices set is fixed: a ``--set`` contradicting it is an error unless
    ``unlocked``."""
    declared = data.get("params") or {}
    if not isinstance(declared, dict):
        raise locs.error(("params",), "expected a mapping of param names to values")
    target: dict[str, Fixed] = {}
    if chosen is not None:
        raw_target = data["targets"][chosen]
        tparams = raw_target.get("params") or {} if isinstance(raw_target, dict) else {}
        by = f"target {chosen}" + (" (the default_target)" if default else "")
        for name, value in tparams.items():
            where: PathKey = ("targets", chosen, "params", name)
            if name not in declared:
                raise locs.error(where, f"unknown param {name!r}")
            target[name] = Fixed(scalar_to_str(value), by, where)
    params = resolve_params(declared, {}, locs, ("params",), origin="the manifest")
    for name in sets:
        if name not in params:
            raise locs.error(
                ("params",), f"unknown param {name!r} (from --set)", hint=known_names(name, params, "params")
            )
    fixed = fixed_params(data.get("choices"), declared, target, sets, locs)
    values = {**{k: f.value for k, f in fixed.items()}, **sets}
    params = resolve_params(declared, values, locs, ("params",), origin="--set")
    check_sets(fixed, sets, unlocked, params, locs, targets=data.get("targets") or {})
    return params, param_inputs(declared, fixed, sets)


def _apply_target(manifest: m.Manifest, chosen: str) -> tuple[m.Manifest, list[PathKey]]:
    """The manifest with the target's parts replacing or extending the image, and where
    each of the resulting layers is written."""
    t = manifest.targets[chosen]
    image = manifest.image
    layers = list(image.layers)
    layer_paths: list[PathKey] = [("image", "layers", i) for i in range(len(layers))]
    if t.layers is not None:
        layers = list(t.layers)
        layer_paths = [("targets", chosen, "layers", i) for i in range(len(layers))]
    layers += t.add_layers
    layer_paths += [("targets", chosen, "add_layers", i) for i in range(len(t.add_layers))]
    config = _merge_config(image.config, t.config) if t.config is not None else image.config
    new_image = image.model_copy(update={"base": t.base or image.base, "layers": layers, "config": config})
    update = {
        "image": new_image,
        "annotations": {**manifest.annotations, **t.annotations},
        "outputs": t.outputs if t.outputs is not None else manifest.outputs,
        "platforms": t.platforms if t.platforms is not None else manifest.platforms,
        "emulate": t.emulate if t.emulate is not None else manifest.emulate,
        "tests": [*(t.tests if t.tests is not None else manifest.tests), *t.add_tests],
        "resolve_as_of": t.resolve_as_of or manifest.resolve_as_of,
        "absent_libraries": [*manifest.absent_libraries, *t.absent_libraries],
    }
    return manifest.model_copy(update=update), layer_paths


def _apply_when(
    manifest: m.Manifest, paths: list[PathKey], params: Mapping[str, str], locs: Locations
) -> tuple[m.Manifest, list[PathKey]]:
    """The image's layers without those whose ``when:`` the params do not meet (paths kept
    as written, so errors still name the right line)."""
    kept: list[tuple[m.LayerSpec, PathKey]] = []
    for layer, path in zip(manifest.image.layers, paths, strict=True):
        for name in layer.when:
            if name not in params:
                hint = known_names(name, params, "params")
                raise locs.error((*path, "when", name), f"unknown param {name!r}", hint=hint)
        if all(params[name] in values for name, values in layer.when.items()):
            kept.append((layer, path))
    if len(kept) == len(paths):
        return manifest, paths
    image = manifest.image.model_copy(update={"layers": [layer for layer, _ in kept]})
    return manifest.model_copy(update={"image": image}), [path for _, path in kept]


def _apply_overrides(
    manifest: m.Manifest, path: Path, bases: Mapping[str, str], sources: Mapping[str, str]
) -> m.Manifest:
    """``--base`` and ``--source`` replace what the manifest says (``Loaded.base_overrides`` records the bases)."""
    if bases:
        new_bases = dict(manifest.bases)
        for name, ref in bases.items():
            if name not in new_bases:
                hint = known_names(name, new_bases, "bases")
                raise ManifestError(f"unknown base {name!r} (from --base)", file=path, field="bases", hint=hint)
            new_bases[name] = ref
        manifest = manifest.model_copy(update={"bases": new_bases})
    if sources:
        new_sources = dict(manifest.sources)
        for name, src in sources.items():
            if name not in new_sources:
                hint = known_names(name, new_sources, "sources")
                raise ManifestError(f"unknown source {name!r} (from --source)", file=path, field="sources", hint=hint)
            new_sources[name] = m.PathSource(path=str(Path(src).resolve()))
        manifest = manifest.model_copy(update={"sources": new_sources})
    return manifest


def _read_requirement_files(node: Any, folder: Path, locs: Locations, at: PathKey) -> None:
    """Every ``python_sets:`` entry with a ``requirements_file`` read (:mod:`assembler.manifest.requirements.reqfiles`),
    in place, before the models see them."""
    from assembler.manifest.requirements.reqfiles import expand

    if isinstance(node, dict):
        for key, value in node.items():
            if key == "python_sets" and isinstance(value, list):
                where = [(*at, key, i, "requirements_file") for i in range(len(value))]
                # A set whose requirements file names nothing is left out (expand: None).
                expanded = [
                    expand(s, folder, partial(locs.error, w)) if isinstance(s, dict) else s
                    for s, w in zip(value, where, strict=True)
                ]
                node[key] = [s for s in expanded if s is not None]
            else:
                _read_requirement_files(value, folder, locs, (*at, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _read_requirement_files(value, folder, locs, (*at, i))


def load_manifest(
    path: Path,
    *,
    sets: Mapping[str, str] | None = None,
    target: str | None = None,
    bases: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    text: str | None = None,
    unlocked: Collection[str] = (),
) -> Loaded:
    """Load and check a manifest, with ``--set``, ``--target``, ``--base``, ``--source`` applied.
    ``unlocked`` names the ``sets`` that may contradict what a target or choice fixes.

    Raises ManifestError (file:line: field: message) for anything wrong.
    """
    data, locs = load(path, text=text)
    if not isinstance(data, dict):
        raise locs.error((), "a manifest is a mapping (name:, bases:, image:, ...)")
    chosen = _chosen_target(data, target, locs)
    params, inputs = _params(data, chosen, sets or {}, unlocked, locs, default=target is None)
    # matrix: and tag_template: are read per run, not per image (pipeline.variants): left as written.
    body = substitute({k: v for k, v in data.items() if k not in _PER_RUN}, params, locs, ())
    body.update({k: data[k] for k in _PER_RUN if k in data})
    body["params"] = dict(params)

    # Recipes are merged into compile steps before the models see them.
    recipes: dict[str, Path] = {}
    steps = body.get("compile")
    if isinstance(steps, list):
        for i, step in enumerate(steps):
            if isinstance(step, dict) and isinstance(step.get("use"), str):
                steps[i] = apply_recipe(step, ("compile", i), path, locs, recipes)
    _read_requirement_files(body, path.parent, locs, ())
    manifest: m.Manifest = validate_model(m.Manifest, body, locs)

    layer_paths: list[PathKey] = [("image", "layers", i) for i in range(len(manifest.image.layers))]
    if chosen is not None:
        manifest, layer_paths = _apply_target(manifest, chosen)
    manifest, layer_paths = _apply_when(manifest, layer_paths, params, locs)
    replaced = {
        name: BaseOverride(describe_base(manifest.bases[name]), ref)
        for name, ref in (bases or {}).items()
        if name in manifest.bases
    }
    manifest = _apply_overrides(manifest, path, bases or {}, sources or {})
    loaded = Loaded(manifest, path, locs, params, chosen, recipes, layer_paths, replaced)
    loaded.param_inputs, loaded.given, loaded.raw = inputs, frozenset(sets or {}), data
    choose_cuda_bases(loaded)  # nvidia_cuda: bases, from the torch pin: before anything reads a base
    check(loaded, overridden_sources=frozenset(sources or {}))
    return loaded
