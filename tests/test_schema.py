"""`assemble schema`: every manifest and recipe in the project is valid against it, and
the schema refuses what the models refuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests import yaml_helper
from tests.helpers import ROOT, run_cli


@pytest.fixture(scope="module")
def schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, jsonschema.Draft202012Validator]:
    out = tmp_path_factory.mktemp("schemas")
    ran = run_cli(["schema", "-o", str(out)])
    assert ran.code == 0, str(ran)
    return {
        kind: jsonschema.Draft202012Validator(json.loads((out / f"{kind}.schema.json").read_text()))
        for kind in ("manifest", "recipe")
    }


@pytest.mark.parametrize("path", sorted((ROOT / "manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_every_manifest_is_valid(schemas: dict[str, jsonschema.Draft202012Validator], path: Path) -> None:
    errors = [e.message for e in schemas["manifest"].iter_errors(yaml_helper.load(path))]
    assert errors == [], f"{path}: {errors}"


@pytest.mark.parametrize("path", sorted((ROOT / "layers").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_is_valid(schemas: dict[str, jsonschema.Draft202012Validator], path: Path) -> None:
    recipe = yaml_helper.load(path)
    errors = [e.message for e in schemas["recipe"].iter_errors(recipe)]
    assert errors == [], f"{path}: {errors}"
    assert recipe.get("description"), f"{path}: every recipe says what it is for"


def test_schema_refuses_what_the_models_refuse(schemas: dict[str, jsonschema.Draft202012Validator]) -> None:
    good = {"name": "x", "bases": {"b": "scratch"}, "image": {"base": "b", "config": {"env": {"MAX_JOBS": 2}}}}
    assert list(schemas["manifest"].iter_errors(good)) == []
    for bad in (
        {**good, "bogus": 1},
        {**good, "image": {"base": "b", "layers": [{"cpy": {"from": "a", "to": "/b"}}]}},
        {**good, "image": {"base": "b", "config": {"entrypoint": 3}}},
        {**good, "name": "has space"},
    ):
        assert list(schemas["manifest"].iter_errors(bad)), bad


def test_schema_prints_to_stdout() -> None:
    ran = run_cli(["schema", "recipe"])
    assert ran.code == 0 and json.loads(ran.out)["title"] == "Recipe"


def test_layers_readme_is_generated_from_the_recipes() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen-layers-readme"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
