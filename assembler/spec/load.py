"""Loading a manifest: YAML -> params -> target -> recipes -> models -> cross-checks.

Every error names the file, the line and the field. Params are lowercase names used as
``${name}`` anywhere in the manifest; ``$${`` is a literal ``${``. Uppercase
``${VAR}`` is left alone for the shell (in ``run``) or for Docker-style expansion
against the image's environment (in ``config.env``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from assembler.errors import ManifestError
from assembler.oci.reference import parse_ref
from assembler.spec import model as m
from assembler.spec import sourcefacts
from assembler.spec.yamlfile import Locations, PathKey, dotted, load

_PARAM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Origin:
    """Where a compile step's definition comes from (for errors)."""

    locs: Locations
    path: PathKey


@dataclass
class Loaded:
    """A loaded manifest, ready for planning: the models plus where everything is."""

    manifest: m.Manifest
    path: Path
    locs: Locations
    params: dict[str, str]
    target: str | None
    recipes: dict[str, Path] = field(default_factory=dict)
    step_origins: dict[str, Origin] = field(default_factory=dict)
    layer_paths: list[PathKey] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def error(self, path: Sequence[str | int], message: str, *, hint: str | None = None) -> ManifestError:
        return self.locs.error(path, message, hint=hint)


# -- params ----------------------------------------------------------------------------


def substitute(value: Any, params: Mapping[str, str], locs: Locations, path: PathKey) -> Any:
    """``value`` with ``${param}`` replaced everywhere; unknown lowercase names are errors."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group(1)
            if name in params:
                return params[name]
            if _PARAM_NAME.match(name):
                known = ", ".join(sorted(params)) or "none"
                raise locs.error(
                    path,
                    f"unknown param ${{{name}}}",
                    hint=f"declare it under params: (known: {known}); write $${{{name}}} for a literal",
                )
            return match.group(0)

        return _PLACEHOLDER.sub(repl, value)
    if isinstance(value, dict):
        return {k: substitute(v, params, locs, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params, locs, (*path, i)) for i, v in enumerate(value)]
    return value


def _resolve_params(
    declared: Mapping[str, Any], overrides: Mapping[str, str], locs: Locations, where: PathKey, *, origin: str
) -> dict[str, str]:
    """Declared params with overrides applied, then params referring to params resolved."""
    params: dict[str, str] = {}
    for name, value in declared.items():
        if not _PARAM_NAME.match(name):
            raise locs.error((*where, name), "param names are lowercase: letters, digits and _ (used as ${name})")
        if isinstance(value, dict | list) or value is None:
            raise locs.error((*where, name), "a param value is a string, number or boolean")
        params[name] = m._scalar_to_str(value)
    for name, value in overrides.items():
        if name not in params:
            known = ", ".join(sorted(params)) or "none"
            raise locs.error(where, f"unknown param {name!r} in {origin}", hint=f"params this file declares: {known}")
        params[name] = value
    # Params may use other params (cuda_tag: "${cuda_version}-devel"): resolve in rounds.
    for _ in range(len(params) + 1):
        changed = False
        for name, value in params.items():
            new = _PLACEHOLDER.sub(
                lambda mt: params.get(mt.group(1) or "", mt.group(0)) if mt.group(1) else mt.group(0), value
            )
            if new != value:
                params[name] = new
                changed = True
        if not changed:
            break
    else:
        raise locs.error(where, "params refer to each other in a cycle")
    for name, value in params.items():
        # What still names a param after the rounds can only be a param naming itself.
        left = [mt.group(1) for mt in _PLACEHOLDER.finditer(value) if mt.group(1) in params]
        if left:
            raise locs.error((*where, name), f"params refer to each other in a cycle (through ${{{left[0]}}})")
    return params


def _choice_presets(
    choices: Any, declared: Mapping[str, Any], explicit: Mapping[str, str], locs: Locations
) -> dict[str, str]:
    """Param values that a choice selects: ``choices: {backend: {cpu: {devel: ...}}}`` means
    ``backend=cpu`` also sets ``devel`` (unless the user sets it too). Unknown values are
    errors that list the choices."""
    if choices is None:
        return {}
    if not isinstance(choices, dict):
        raise locs.error(("choices",), "expected a mapping: param -> value -> params it sets")
    presets: dict[str, str] = {}
    for name, options in choices.items():
        where: PathKey = ("choices", name)
        if name not in declared:
            raise locs.error(where, f"choices for an undeclared param {name!r}", hint="declare it under params:")
        if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
            raise locs.error(where, "expected a mapping: value -> {param: value, ...}")
        value = explicit.get(name, m._scalar_to_str(declared[name]))
        if value not in options:
            known = ", ".join(sorted(options))
            raise locs.error(("params", name), f"{name}={value} is not one of the choices: {known}")
        for key, preset in options[value].items():
            if key not in declared:
                raise locs.error((*where, value, key), f"unknown param {key!r}", hint="declare it under params:")
            if key == name:
                raise locs.error((*where, value, key), "a choice cannot set its own param")
            presets[key] = m._scalar_to_str(preset)
    return presets


# -- pydantic errors -> file:line ------------------------------------------------------


def _locate(data: Any, loc: Sequence[str | int]) -> tuple[PathKey, str | None]:
    """The data path a pydantic ``loc`` points at (union tags skipped) and a missing key."""
    path: list[str | int] = []
    node = data
    missing: str | None = None
    for part in loc:
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part.rstrip("_") in node:
            path.append(part.rstrip("_"))  # aliased fields: from_ -> from, copy_ -> copy
            node = node[part.rstrip("_")]
        else:
            missing = str(part)
    return tuple(path), missing


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    msg = str(err.get("msg", "invalid"))
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return msg[0].lower() + msg[1:] if msg else msg


def validate_model(model: type[m.Strict], data: Any, locs: Locations, where: PathKey = ()) -> Any:
    """``model.model_validate(data)`` with the first error turned into a ManifestError."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        err = errors[0]
        path, missing = _locate(data, err["loc"])
        full = (*where, *path)
        fieldname = dotted(full)
        message = _message(err)
        if err.get("type") == "missing" and missing:
            fieldname = dotted((*full, missing))
        elif err.get("type") == "extra_forbidden":
            message = "unknown key"
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ManifestError(message + more, file=locs.file, line=locs.line(full), field=fieldname) from None


# -- recipes ---------------------------------------------------------------------------


RECIPES_ENV = "ASSEMBLE_RECIPES"


def packaged_recipes() -> Path:
    """The recipes that come with assemble: ``assembler/recipes/`` of an installed package
    (setup.py copies ``layers/*.yaml`` there when it builds a wheel), else ``layers/`` of
    the checkout this package runs from (an editable install)."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "recipes"
    return shipped if shipped.is_dir() else package.parent / "layers"


def recipe_dirs(manifest_path: Path) -> list[Path]:
    """Where ``use: NAME`` looks for ``NAME.yaml``, first match wins: ``layers/`` next to
    or above the manifest's folder (a project's own recipes), then the folders of
    $ASSEMBLE_RECIPES (``os.pathsep``-separated), then the recipes shipped with assemble."""
    folder = manifest_path.resolve().parent
    dirs = [folder / "layers", folder.parent / "layers"]
    dirs += [Path(p) for p in os.environ.get(RECIPES_ENV, "").split(os.pathsep) if p]
    dirs.append(packaged_recipes())
    unique: dict[Path, None] = {}
    for d in dirs:
        unique.setdefault(d.resolve(), None)
    return list(unique)


def load_recipe(name: str, manifest_path: Path) -> tuple[m.Recipe, Any, Locations]:
    """The recipe model (validated with its defaults), its raw data and its locations."""
    for folder in recipe_dirs(manifest_path):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            data, locs = load(candidate)
            if not isinstance(data, dict):
                raise locs.error((), "a recipe is a mapping")
            params = _resolve_params(data.get("params") or {}, {}, locs, ("params",), origin="defaults")
            recipe = validate_model(m.Recipe, substitute(data, params, locs, ()), locs)
            return recipe, data, locs
    raise FileNotFoundError(name)


_LIST_MERGE = ("sources", "inputs", "packages", "cache", "shared_cache", "secrets", "runtime_packages")


def _apply_recipe(
    step_data: dict[str, Any], path: PathKey, loaded_path: Path, locs: Locations, recipes: dict[str, Path]
) -> dict[str, Any]:
    """The step with its recipe merged in: env and artifacts merge, lists extend, the
    step's own values win. The recipe itself was validated against its own file."""
    name = step_data["use"]
    try:
        _, raw, rlocs = load_recipe(name, loaded_path)
    except FileNotFoundError:
        where = ", ".join(str(d) for d in recipe_dirs(loaded_path))
        raise locs.error(
            (*path, "use"),
            f"unknown recipe {name!r}",
            hint=f"recipes are looked up in: {where} (add folders with {RECIPES_ENV}, separated by '{os.pathsep}')",
        ) from None
    recipes[name] = rlocs.file
    with_ = step_data.get("with") or {}
    if not isinstance(with_, dict):
        raise locs.error((*path, "with"), "expected a mapping of recipe params")
    declared = raw.get("params") or {}
    for key in with_:
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise locs.error(
                (*path, "with", key), f"unknown param {key!r} for recipe {name!r}", hint=f"it takes: {known}"
            )
    params = _resolve_params(
        declared, {k: m._scalar_to_str(v) for k, v in with_.items()}, rlocs, ("params",), origin="with"
    )
    body = substitute({k: v for k, v in raw.items() if k not in ("params", "description")}, params, rlocs, ())
    merged: dict[str, Any] = dict(body)
    for key, value in step_data.items():
        if key == "with":
            continue
        if key in ("env", "artifacts") and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        elif key in _LIST_MERGE and isinstance(merged.get(key), list):
            extra = value if isinstance(value, list) else [value]
            merged[key] = [*merged[key], *(v for v in extra if v not in merged[key])]
        else:
            merged[key] = value
    return merged


# -- the manifest ----------------------------------------------------------------------


def _merge_config(base: m.ConfigSpec, over: m.ConfigSpec) -> m.ConfigSpec:
    data = base.model_dump(by_alias=True)
    for key, value in over.model_dump(by_alias=True, exclude_unset=True).items():
        if key in ("env", "labels"):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return m.ConfigSpec.model_validate(data)


def load_manifest(
    path: Path,
    *,
    sets: Mapping[str, str] | None = None,
    target: str | None = None,
    bases: Mapping[str, str] | None = None,
    sources: Mapping[str, str] | None = None,
    text: str | None = None,
) -> Loaded:
    """Load and check a manifest, with ``--set``, ``--target``, ``--base``, ``--source`` applied.

    Raises ManifestError (file:line: field: message) for anything wrong.
    """
    data, locs = load(path, text=text)
    if not isinstance(data, dict):
        raise locs.error((), "a manifest is a mapping (name:, bases:, image:, ...)")
    raw_targets = data.get("targets") or {}
    if not isinstance(raw_targets, dict):
        raise locs.error(("targets",), "expected a mapping of target names")
    chosen = target or data.get("default_target")
    if chosen is not None and chosen not in raw_targets:
        known = ", ".join(sorted(raw_targets)) or "none"
        where: PathKey = ("default_target",) if target is None else ("targets",)
        raise locs.error(where, f"unknown target {chosen!r}", hint=f"targets in this manifest: {known}")

    declared = data.get("params") or {}
    if not isinstance(declared, dict):
        raise locs.error(("params",), "expected a mapping of param names to values")
    overrides: dict[str, str] = {}
    if chosen is not None:
        tparams = raw_targets[chosen].get("params") or {} if isinstance(raw_targets[chosen], dict) else {}
        for name, value in tparams.items():
            if name not in declared:
                raise locs.error(("targets", chosen, "params", name), f"unknown param {name!r}")
            overrides[name] = m._scalar_to_str(value)
    params = _resolve_params(declared, {}, locs, ("params",), origin="the manifest")
    for name in sets or {}:
        if name not in params:
            known = ", ".join(sorted(params)) or "none"
            raise locs.error(("params",), f"unknown param {name!r} (from --set)", hint=f"params: {known}")
    explicit = {**overrides, **(sets or {})}
    presets = _choice_presets(data.get("choices"), declared, explicit, locs)
    params = _resolve_params(declared, {**presets, **explicit}, locs, ("params",), origin="--set")

    body = {k: v for k, v in data.items() if k != "params"}
    body = substitute(body, params, locs, ())
    body["params"] = dict(params)

    # Recipes are merged into compile steps before the models see them.
    recipes: dict[str, Path] = {}
    origins: dict[str, Origin] = {}
    steps = body.get("compile")
    if isinstance(steps, list):
        for i, step in enumerate(steps):
            if isinstance(step, dict) and isinstance(step.get("use"), str):
                steps[i] = _apply_recipe(step, ("compile", i), path, locs, recipes)

    manifest: m.Manifest = validate_model(m.Manifest, body, locs)
    for i, step in enumerate(manifest.compile):
        origins.setdefault(step.name, Origin(locs, ("compile", i)))

    # The target: its parts replace or extend the image.
    layer_paths: list[PathKey] = [("image", "layers", i) for i in range(len(manifest.image.layers))]
    if chosen is not None:
        t = manifest.targets[chosen]
        image = manifest.image
        layers = list(image.layers)
        if t.layers is not None:
            layers = list(t.layers)
            layer_paths = [("targets", chosen, "layers", i) for i in range(len(layers))]
        layers += t.add_layers
        layer_paths += [("targets", chosen, "add_layers", i) for i in range(len(t.add_layers))]
        config = _merge_config(image.config, t.config) if t.config is not None else image.config
        new_image = image.model_copy(update={"base": t.base or image.base, "layers": layers, "config": config})
        manifest = manifest.model_copy(
            update={
                "image": new_image,
                "annotations": {**manifest.annotations, **t.annotations},
                "outputs": t.outputs if t.outputs is not None else manifest.outputs,
            }
        )

    # --base and --source overrides replace what the manifest says.
    if bases:
        new_bases = dict(manifest.bases)
        for name, ref in bases.items():
            if name not in new_bases:
                known = ", ".join(sorted(new_bases)) or "none"
                raise ManifestError(
                    f"unknown base {name!r} (from --base)", file=path, field="bases", hint=f"bases: {known}"
                )
            new_bases[name] = ref
        manifest = manifest.model_copy(update={"bases": new_bases})
    if sources:
        new_sources = dict(manifest.sources)
        for name, src in sources.items():
            if name not in new_sources:
                known = ", ".join(sorted(new_sources)) or "none"
                raise ManifestError(
                    f"unknown source {name!r} (from --source)", file=path, field="sources", hint=f"sources: {known}"
                )
            new_sources[name] = m.PathSource(path=str(Path(src).resolve()))
        manifest = manifest.model_copy(update={"sources": new_sources})

    loaded = Loaded(manifest, path, locs, params, chosen, recipes, origins, layer_paths)
    check(loaded, overridden_sources=frozenset(sources or {}))
    return loaded


# -- cross-checks ----------------------------------------------------------------------


def _inside(folder: Path, candidate: Path) -> bool:
    try:
        candidate.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_source_facts(loaded: Loaded) -> None:
    """``${sources.NAME.FIELD}`` in labels and annotations names a source and a known field."""
    man = loaded.manifest
    places: list[tuple[PathKey, str]] = [
        (("image", "config", "labels", k), v) for k, v in man.image.config.labels.items()
    ]
    places += [(("annotations", k), v) for k, v in man.annotations.items()]
    for tname, target in man.targets.items():  # every target's, as for layers
        if target.config is not None:
            places += [(("targets", tname, "config", "labels", k), v) for k, v in target.config.labels.items()]
        places += [(("targets", tname, "annotations", k), str(v)) for k, v in target.annotations.items()]
    for path, value in places:
        try:
            refs = sourcefacts.references(value)
        except ValueError as e:
            raise loaded.error(path, str(e)) from None
        for name, _ in refs:
            if name not in man.sources:
                known = ", ".join(sorted(man.sources)) or "none"
                raise loaded.error(path, f"unknown source {name!r} in ${{sources.{name}...}}", hint=f"sources: {known}")


def check(loaded: Loaded, *, overridden_sources: frozenset[str] = frozenset()) -> None:
    """References between parts, host paths and transport references; ManifestError."""
    man = loaded.manifest
    err = loaded.error
    base_names = ", ".join(sorted(man.bases)) or "none"
    for name, base in man.bases.items():
        ref = base if isinstance(base, str) else base.ref if isinstance(base, m.RefBase) else None
        if ref is not None:
            try:
                parsed = parse_ref(ref)
            except ValueError as e:
                raise err(("bases", name), str(e)) from None
            if parsed.transport in ("sif", "oras"):
                raise err(("bases", name), "a SIF file cannot be a base")
    if man.image.base not in man.bases:
        raise err(("image", "base"), f"unknown base {man.image.base!r}", hint=f"bases: {base_names}")
    for name, src in man.sources.items():
        if isinstance(src, m.PathSource) and name not in overridden_sources:
            p = loaded.folder / src.path
            if not p.is_dir():
                raise err(("sources", name, "path"), f"folder does not exist: {p}")
    artifacts: dict[str, set[str]] = {}
    for i, step in enumerate(man.compile):
        where: PathKey = ("compile", i)
        if step.name in artifacts:
            raise err((*where, "name"), f"duplicate step name {step.name!r}")
        if step.base is None:
            raise err(where, "a compile step needs a base", hint=f"bases: {base_names}")
        if step.base not in man.bases:
            raise err((*where, "base"), f"unknown base {step.base!r}", hint=f"bases: {base_names}")
        if not step.run:
            raise err((*where, "run"), "a compile step needs commands to run")
        if not step.artifacts:
            raise err((*where, "artifacts"), "a compile step needs at least one artifact")
        for j, src_name in enumerate(step.sources):
            if src_name not in man.sources:
                raise err((*where, "sources", j), f"unknown source {src_name!r}")
        for j, ref in enumerate(step.inputs):
            _check_artifact_ref(loaded, ref, artifacts, (*where, "inputs", j), whole_step=False)
        for var in step.secrets:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                raise err((*where, "secrets"), f"{var!r} is not an environment variable name")
        artifacts[step.name] = set(step.artifacts)
    # Every target's layers are checked, not only the chosen one's: a broken reference in
    # another target is found now, not when someone builds that target.
    every_layer: list[tuple[m.LayerSpec, PathKey]] = list(zip(man.image.layers, loaded.layer_paths, strict=True))
    for tname, target in man.targets.items():
        if tname == loaded.target:
            continue
        every_layer += [(layer, ("targets", tname, "layers", i)) for i, layer in enumerate(target.layers or [])]
        every_layer += [(layer, ("targets", tname, "add_layers", i)) for i, layer in enumerate(target.add_layers)]
    for layer, path in every_layer:
        if isinstance(layer, m.ArtifactLayer):
            _check_artifact_ref(loaded, layer.artifact, artifacts, (*path, "artifact"), whole_step=True)
        elif isinstance(layer, m.RunLayer):
            for j, ref in enumerate(layer.mounts):
                _check_artifact_ref(loaded, ref, artifacts, (*path, "mounts", j), whole_step=False)
        elif isinstance(layer, m.CopyLayer):
            _check_copy(loaded, layer.copy_, path)
    _check_source_facts(loaded)
    for i, out in enumerate(man.outputs):
        try:
            parsed = parse_ref(out)
        except ValueError as e:
            raise err(("outputs", i), str(e)) from None
        if parsed.transport in ("rootfs", "scratch"):
            raise err(("outputs", i), f"{parsed.transport} is a base, not an output")
    try:
        from assembler.oci.descriptor import Platform

        Platform.parse(man.platform)
    except ValueError as e:
        raise err(("platform",), str(e)) from None


def _check_artifact_ref(
    loaded: Loaded, ref: str, artifacts: Mapping[str, set[str]], path: PathKey, *, whole_step: bool
) -> str:
    step, _, name = ref.partition(".")
    if step not in artifacts:
        known = ", ".join(sorted(artifacts)) or "none"
        raise loaded.error(
            path, f"no compile step {step!r} (before this point) declares artifacts", hint=f"steps: {known}"
        )
    if not name:
        if whole_step:
            return step
        raise loaded.error(path, f"name the artifact: {step}.NAME")
    if name not in artifacts[step]:
        known = ", ".join(sorted(artifacts[step]))
        raise loaded.error(path, f"step {step!r} declares no artifact {name!r}", hint=f"its artifacts: {known}")
    return step


def _check_copy(loaded: Loaded, spec: m.CopySpec, path: PathKey) -> None:
    where = (*path, "copy", "from")
    if Path(spec.from_).is_absolute():
        raise loaded.error(where, "must be relative to the manifest's folder")
    if ".." in Path(spec.from_).parts:
        raise loaded.error(where, "escapes the manifest's folder with '..'")
    host = loaded.folder / spec.from_
    if not host.exists():
        raise loaded.error(where, "path does not exist")
    if not _inside(loaded.folder, host):
        raise loaded.error(where, "resolves outside the manifest's folder (through a symlink)")
    if not spec.to.startswith("/"):
        raise loaded.error((*path, "copy", "to"), "must be an absolute path in the image")
