"""`assemble schema`: every manifest and recipe in the project is valid against it, and
the schema refuses what the models refuse."""

from __future__ import annotations

import json
import re
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


MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def test_the_published_schemas_are_what_assemble_schema_writes() -> None:
    """schema/*.schema.json, which editors read (the modeline of every shipped file names
    them), are the models' own: regenerated with `assemble schema -o schema`."""
    from assembler.manifest.schema.model import json_schemas

    for kind, schema in json_schemas().items():
        published = ROOT / "schema" / f"{kind}.schema.json"
        assert published.read_text() == json.dumps(schema, indent=2, sort_keys=True) + "\n", (
            f"{published} is out of date: assemble schema -o schema"
        )


@pytest.mark.parametrize(
    ("folder", "kind"), [("manifests", "manifest"), ("layers", "recipe")], ids=["manifests", "recipes"]
)
def test_every_shipped_file_names_its_schema_for_editors(folder: str, kind: str) -> None:
    """yaml-language-server (VS Code's YAML extension, Neovim, Helix...) completes and checks
    a file whose first line names its schema."""
    for path in sorted((ROOT / folder).glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        match = MODELINE.match(first)
        assert match, f"{path}: its first line is not the yaml-language-server modeline"
        assert (path.parent / match.group(1)).resolve() == ROOT / "schema" / f"{kind}.schema.json", path


def _editor_check(path: Path) -> list[str]:
    """What an editor reading the modeline shows: each error at its line of the file."""
    from assembler.manifest.text.yamlfile import load

    match = MODELINE.match(path.read_text().splitlines()[0])
    assert match, path
    schema = json.loads((path.parent / match.group(1)).read_text())
    data, locs = load(path)
    validator = jsonschema.Draft202012Validator(schema)
    shown = []
    for e in validator.iter_errors(data):
        where = list(e.absolute_path)
        if e.validator == "additionalProperties":  # at the unexpected key, as an editor marks it
            where += sorted(set(e.instance) - set(e.schema.get("properties", {})))[:1]
        shown.append(f"{path.name}:{locs.line(where)}: {e.message}")
    return shown


def test_an_editor_finds_a_misspelt_field_of_a_shipped_manifest_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    (tmp_path / "schema").symlink_to(ROOT / "schema")
    text = (ROOT / "manifests" / "tgi.yaml").read_text()
    assert _editor_check(ROOT / "manifests" / "tgi.yaml") == []
    wrong = tmp_path / "manifests" / "tgi.yaml"
    wrong.write_text(text.replace("    shared_cache: [/root/.cache/uv]\n", "    shared_cahce: [/root/.cache/uv]\n", 1))
    line = next(i for i, x in enumerate(wrong.read_text().splitlines(), 1) if "shared_cahce" in x)
    errors = _editor_check(wrong)
    assert len(errors) == 1 and errors[0].startswith(f"tgi.yaml:{line}: "), errors
    assert "'shared_cahce' was unexpected" in errors[0], errors


def test_the_output_help_names_every_format_an_image_can_be_written_to() -> None:
    """-o's help is made from the formats' table: a format added there is named without an edit."""
    from assembler.transports.formats import FORMATS

    ran = run_cli(["build", "--help"])
    assert ran.code == 0, str(ran)
    text = " ".join(ran.out.split())
    for transport, fmt in FORMATS.items():
        if fmt.syntax.role != "base":
            assert fmt.syntax.form.replace(" ", "") in text.replace(" ", ""), transport
    for written in ("sif:FILE", "sqsh:FILE", "oras://", "artifact:DIR", "docker-archive:FILE", "oci-archive:FILE"):
        assert written in text.replace("- ", "-"), written
    # the flags in groups a person can scan, each flag under the group it belongs to
    groups = [
        line.rstrip(":") for line in ran.out.splitlines() if line and not line[0].isspace() and line.endswith(":")
    ]
    assert groups == [
        "options",
        "what to build",
        "how to build",
        "registry step cache",
        "what goes with the image",
        "lock",
        "tests",
    ]
    sections = ran.out.split("\nregistry step cache:")[1].split("\nwhat goes with the image:")
    assert "--cache-to" in sections[0] and "--sign" in sections[1].split("\nlock:")[0]


def test_the_manifest_reference_is_generated_from_the_schema() -> None:
    """docs/reference/manifest.md is the schema's fields, types, defaults and descriptions:
    scripts/gen-reference writes it, and a model changed without it fails here."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen-reference"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "docs" / "reference" / "manifest.md").read_text()
    schema = json.loads((ROOT / "schema" / "manifest.schema.json").read_text())
    for name, part in schema["$defs"].items():
        assert f"\n## {name}\n" in text, name
        for field in part.get("properties", {}):
            assert f"| `{field}` |" in text, (name, field)


def test_every_field_of_the_schemas_has_a_description() -> None:
    """Every property of both published schemas (top level and every part under $defs) says
    what it is for: editors show it on hover, and docs/reference/manifest.md prints it."""
    missing = []
    for kind in ("manifest", "recipe"):
        schema = json.loads((ROOT / "schema" / f"{kind}.schema.json").read_text())
        parts = {"(top level)": schema, **schema.get("$defs", {})}
        for name, part in parts.items():
            for field, prop in part.get("properties", {}).items():
                if not str(prop.get("description", "")).strip():
                    missing.append(f"{kind}: {name}.{field}")
    assert missing == [], f"fields without a description: {missing}"


def test_the_cli_reference_is_every_commands_help_with_its_groups() -> None:
    """docs/reference/cli.md is generated with the manifest reference (its --check above)."""
    from assembler.cli.commands import COMMANDS

    text = (ROOT / "docs" / "reference" / "cli.md").read_text()
    for name in COMMANDS:
        assert f"\n## `assemble {name}`\n" in text, name
    build = text.split("\n## `assemble build`\n")[1].split("\n## ")[0]
    assert "\nwhat to build:\n" in build and "\nregistry step cache:\n" in build and "sif:FILE" in build
