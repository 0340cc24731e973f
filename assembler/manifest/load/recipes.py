"""Recipes: reusable compile steps (``layers/NAME.yaml``) that a step names with ``use:``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from assembler.manifest.load.params import resolve_params, substitute
from assembler.manifest.load.validation import validate_model
from assembler.manifest.schema import model as m
from assembler.manifest.schema.fields import scalar_to_str
from assembler.manifest.text.yamlfile import Locations, PathKey, load

RECIPES_ENV = "ASSEMBLE_RECIPES"


def packaged_recipes() -> Path:
    """The recipes that come with assemble: ``assembler/recipes/`` of an installed package
    (setup.py copies ``layers/*.yaml`` there when it builds a wheel), else ``layers/`` of
    the checkout this package runs from (an editable install)."""
    package = Path(__file__).resolve().parents[2]  # assembler/, above manifest/load/
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
            params = resolve_params(data.get("params") or {}, {}, locs, ("params",), origin="defaults")
            recipe = validate_model(m.Recipe, substitute(data, params, locs, ()), locs)
            return recipe, data, locs
    raise FileNotFoundError(name)


_LIST_MERGE = (
    "sources",
    "inputs",
    "packages",
    "cache",
    "shared_cache",
    "secrets",
    "runtime_packages",
    "python_sets",
    "tests",
)


def apply_recipe(
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
    params = resolve_params(
        declared, {k: scalar_to_str(v) for k, v in with_.items()}, rlocs, ("params",), origin="with"
    )
    body = substitute({k: v for k, v in raw.items() if k not in ("params", "description")}, params, rlocs, ())
    merged: dict[str, Any] = dict(body)
    for key, value in step_data.items():
        if key == "with":
            continue
        if (
            key in ("env", "artifacts", "resources", "reaches")
            and isinstance(value, dict)
            and isinstance(merged.get(key), dict)
        ):
            merged[key] = {**merged[key], **value}
        elif key in _LIST_MERGE and isinstance(merged.get(key), list):
            extra = value if isinstance(value, list) else [value]
            merged[key] = [*merged[key], *(v for v in extra if v not in merged[key])]
        else:
            merged[key] = value
    return merged
