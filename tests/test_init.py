"""``assemble init`` (issue 52): each starter writes a manifest that loads, validates
against the schema its first line names (as an editor would check it), plans, and builds
as written; files already there are kept, an existing ``requirements.txt`` is the one
installed."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from assembler.cli.starters import STARTERS
from assembler.manifest.schema.inputs import PathSource
from tests import yaml_helper
from tests.helpers import run_cli, run_cli_here


def _init(folder: Path, kind: str, *options: str) -> None:
    ran = run_cli_here(["init", kind, str(folder), *options], cwd=folder.parent)
    assert ran.code == 0, str(ran)


@pytest.mark.parametrize("kind", sorted(STARTERS))
def test_a_starter_validates_against_the_schema_it_names_and_plans(tmp_path: Path, kind: str) -> None:
    folder = tmp_path / "My Project"
    _init(folder, kind)
    manifest = folder / "assemble.yaml"
    first = manifest.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=.assemble/manifest.schema.json"
    schema = json.loads((folder / ".assemble" / "manifest.schema.json").read_text())
    jsonschema.validate(yaml_helper.load(manifest), schema)
    ran = run_cli_here(["plan", "assemble.yaml", "--cache", str(tmp_path / "cache"), "--json"], cwd=folder)
    assert ran.code == 0, str(ran)
    assert ran.json["name"] == "my-project"
    assert ran.json["outputs"] == [f"oci:{folder / 'out'}:my-project"]
    assert [t["name"] for t in ran.json["tests"]]  # the build runs the image's own test


def test_an_editor_style_check_catches_a_wrong_field(tmp_path: Path) -> None:
    _init(tmp_path / "p", "cpp")
    schema = json.loads((tmp_path / "p" / ".assemble" / "manifest.schema.json").read_text())
    data = yaml_helper.load(tmp_path / "p" / "assemble.yaml")
    data["image"]["confg"] = data["image"].pop("config")
    with pytest.raises(jsonschema.ValidationError, match="confg"):
        jsonschema.validate(data, schema)


def test_init_keeps_what_is_there_and_replaces_a_manifest_only_when_forced(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "requirements.txt").write_text("six==1.16.0\n")
    _init(folder, "python")
    assert (folder / "requirements.txt").read_text() == "six==1.16.0\n"  # the project's own
    again = run_cli_here(["init", "python", str(folder)], cwd=tmp_path)
    assert again.code == 2 and "assemble.yaml exists" in again.err and "--force" in again.err, str(again)
    (folder / "app" / "main.py").write_text("print('mine')\n")
    forced = run_cli_here(["init", "python", str(folder), "--force", "--name", "other"], cwd=tmp_path)
    assert forced.code == 0, str(forced)
    assert (folder / "app" / "main.py").read_text() == "print('mine')\n"
    assert "name: other" in (folder / "assemble.yaml").read_text()


def test_requirements_are_copied_in_for_python_only(tmp_path: Path) -> None:
    given = tmp_path / "reqs.txt"
    given.write_text("six==1.16.0\n")
    _init(tmp_path / "p", "python", "--requirements", str(given))
    assert (tmp_path / "p" / "requirements.txt").read_text() == "six==1.16.0\n"
    wrong = run_cli_here(["init", "cpp", str(tmp_path / "q"), "--requirements", str(given)], cwd=tmp_path)
    assert wrong.code == 2 and "for the python starter" in wrong.err, str(wrong)


# The bases each starter's are built on here: the demo's, bootstrapped once for the suite
# from the same suite and variant and holding what the starter's ask for (a starter's
# runtime Python is the demo devel base's python3).
BASES = {"python": ("devel", "devel"), "cpp": ("devel", "runtime"), "cuda": ("devel", "runtime")}


@pytest.mark.integration  # buildah: the steps run, the image's test runs in it
@pytest.mark.parametrize("kind", sorted(STARTERS))
def test_a_starter_builds_as_written_and_its_test_passes(
    tmp_path: Path, demo_bases: dict[str, Path], kind: str
) -> None:
    folder = tmp_path / "proj"
    folder.mkdir()
    if kind == "python":  # an existing project: its requirements and its code are kept
        (folder / "requirements.txt").write_text("six==1.16.0\n")
        (folder / "app").mkdir()
        (folder / "app" / "main.py").write_text("import six\n\nprint('proj: ready with six', six.__version__)\n")
    _init(folder, kind)
    devel, runtime = BASES[kind]
    bases = ["--base", f"devel=oci:{demo_bases[devel]}", "--base", f"runtime=oci:{demo_bases[runtime]}"]
    built = run_cli(["assemble.yaml", *bases, "--cache", str(tmp_path / "cache"), "--json"], cwd=folder)
    assert built.code == 0, str(built)
    # The manifest's own test ran in the image before any output was written: a failed one fails the build.
    assert (folder / "out" / "index.json").is_file()
    said = run_cli(["run", "oci:out:proj", "--cache", str(tmp_path / "cache")], cwd=folder)
    assert said.code == 0, str(said)
    expected = {
        "python": "proj: ready with six 1.16.0",
        "cpp": "proj: ready",
        "cuda": "proj: 1024 values checked on the CPU",
    }
    assert said.out.strip() == expected[kind], str(said)
    if kind == "python":  # a code edit reruns no pip install; the deps layer, rebuilt, is the same bytes
        (folder / "app" / "main.py").write_text("import six\n\nprint('proj: ready, edited', six.__version__)\n")
        again = run_cli(["assemble.yaml", *bases, "--cache", str(tmp_path / "cache"), "--json"], cwd=folder)
        assert again.code == 0, str(again)
        assert [s["state"] for s in again.json["steps"] if s["name"] == "deps"] == ["cached"], again.json["steps"]
        rebuilt = run_cli(
            ["assemble.yaml", *bases, "--cache", str(tmp_path / "cache"), "--json", "--rebuild", "deps"], cwd=folder
        )
        assert rebuilt.code == 0, str(rebuilt)
        digests = [[layer["digest"] for layer in r.json["layers"]] for r in (built, again, rebuilt)]
        assert digests[0][:-1] == digests[1][:-1] == digests[2][:-1] and digests[0][-1] != digests[1][-1], digests
        _a_model_reruns_nothing_and_a_requirements_edit_is_named(folder, [*bases, "--cache", str(tmp_path / "cache")])


def _a_model_reruns_nothing_and_a_requirements_edit_is_named(folder: Path, options: list[str]) -> None:
    """Issue 67: weights added to models/ (and the manifest edited) rerun no pip install; a
    requirements edit reruns deps, and the plan says it was the requirements."""
    (folder / "models").mkdir()
    (folder / "models" / "model.safetensors").write_bytes(b"weights")
    (folder / "assemble.yaml").write_text((folder / "assemble.yaml").read_text() + "# weights: soon\n")
    modelled = run_cli_here(["plan", "assemble.yaml", *options, "--json"], cwd=folder)
    assert modelled.code == 0, str(modelled)
    assert [(s["name"], s["state"]) for s in modelled.json["steps"]] == [("deps", "cached")], modelled.json["steps"]
    (folder / "requirements.txt").write_text("six==1.16.0\n# reviewed\n")
    edited = run_cli_here(["plan", "assemble.yaml", *options], cwd=folder)
    assert edited.code == 0, str(edited)
    assert "will-run (not built with these inputs: source requirements changed since its last build)" in edited.out, (
        str(edited)
    )


@pytest.mark.parametrize(
    ("link", "to"),
    [
        (".assemble/manifest.schema.json", "home/.bashrc"),  # the schema, written every time
        (".assemble", "home"),  # the schema's folder
        ("requirements.txt", "home/new"),  # a starter's file not there yet (a dangling link)
    ],
)
def test_init_writes_through_no_link_of_the_project(tmp_path: Path, link: str, to: str) -> None:
    """A cloned project's link where init writes, to a file or folder of the host's:
    refused by name, the host's files untouched."""
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".bashrc").write_text("mine\n")
    (tmp_path / "p" / link).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "p" / link).symlink_to(tmp_path / to)
    ran = run_cli_here(["init", "python", str(tmp_path / "p")], cwd=tmp_path)
    assert ran.code == 2 and str(tmp_path / "p" / link) in ran.err and "Traceback" not in ran.err, str(ran)
    assert [(f.name, f.read_text()) for f in (tmp_path / "home").iterdir()] == [(".bashrc", "mine\n")]


def test_the_python_starters_deps_step_says_a_missing_or_empty_requirements_file(tmp_path: Path) -> None:
    """A requirements.txt left out of the project gave an empty layer without a word (issue
    67): the deps step's commands (run here by sh, the container's paths moved into a
    folder) fail naming it, and say that an empty one installs nothing."""
    import subprocess

    _init(tmp_path / "p", "python")
    (step,) = yaml_helper.load(tmp_path / "p" / "assemble.yaml")["compile"]
    project, site = tmp_path / "src-project", tmp_path / "site"
    script = " && ".join(step["run"]).replace("/src/requirements", str(project)).replace("/opt/p/site", str(site))
    project.mkdir()
    missing = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert missing.returncode != 0 and "no requirements.txt in the project" in missing.stderr, missing
    (project / "requirements.txt").write_text("# one requirement a line\n")
    empty = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert empty.returncode == 0 and "names no package: nothing installed" in empty.stdout, empty


def test_the_python_starters_deps_step_reads_its_requirements_and_not_the_code_or_models(tmp_path: Path) -> None:
    """Adding weights reran pip (issue 67): the deps step's source took the whole project,
    models/ and the manifest in it. What it reads changes with requirements.txt alone."""
    from assembler.compile.sources import tree_digest
    from assembler.manifest.load.manifest import load_manifest

    folder = tmp_path / "p"
    _init(folder, "python")
    man = load_manifest(folder / "assemble.yaml").manifest
    (step,) = man.compile
    (name,) = step.sources
    spec = man.sources[name]
    assert isinstance(spec, PathSource), spec

    def digest() -> str:
        return tree_digest(folder / spec.path, tuple(spec.exclude))

    first = digest()
    (folder / "models").mkdir()
    (folder / "models" / "model.safetensors").write_bytes(b"weights")
    (folder / "app" / "main.py").write_text("print('edited')\n")
    (folder / "assemble.yaml").write_text((folder / "assemble.yaml").read_text() + "# edited\n")
    (folder / "assemble.lock").write_text("lock_version: 3\n")
    assert digest() == first
    (folder / "requirements.txt").write_text("six==1.16.0\n")
    assert digest() != first


def test_the_python_starters_requirements_are_a_python_set_the_lock_pins(tmp_path: Path) -> None:
    """Its pip step was not locked (``environments: {}``, issue 67): requirements.txt is a
    ``requirements_file:`` set, which ``plan`` lists as the lock's; a fresh, empty one is no
    set (pip installs nothing from it) and the manifest still loads."""
    folder = tmp_path / "p"
    _init(folder, "python")
    empty = run_cli_here(["plan", "assemble.yaml", "--cache", str(tmp_path / "cache"), "--json"], cwd=folder)
    assert empty.code == 0, str(empty)
    assert "deps:deps" not in empty.json["lock"]["sets"]
    (folder / "requirements.txt").write_text("six==1.16.0\n")
    named = run_cli_here(["plan", "assemble.yaml", "--cache", str(tmp_path / "cache"), "--json"], cwd=folder)
    assert named.code == 0, str(named)
    assert named.json["lock"]["sets"]["deps:deps"]["state"] == "not-locked", named.json["lock"]


@pytest.mark.parametrize("kind", ["cpp", "cuda"])
def test_a_compiled_starters_source_leaves_out_models_and_the_manifest(tmp_path: Path, kind: str) -> None:
    """Weights in models/ or a manifest edit recompile nothing: the code's source leaves them out."""
    from assembler.compile.sources import tree_digest
    from assembler.manifest.load.manifest import load_manifest

    folder = tmp_path / "p"
    _init(folder, kind)
    spec = load_manifest(folder / "assemble.yaml").manifest.sources["project"]
    assert isinstance(spec, PathSource), spec
    path, exclude = folder / spec.path, tuple(spec.exclude)
    first = tree_digest(path, exclude)
    (folder / "models").mkdir()
    (folder / "models" / "model.gguf").write_bytes(b"weights")
    (folder / "assemble.yaml").write_text((folder / "assemble.yaml").read_text() + "# edited\n")
    assert tree_digest(path, exclude) == first
