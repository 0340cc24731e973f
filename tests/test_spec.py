"""Manifests: strict models, params, recipes, targets; every error names file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from assembler.errors import ManifestError
from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.load.recipes import packaged_recipes
from tests.helpers import run_cli, run_cli_here

HELLO = """\
name: hello
params: {greeting: hello}
bases:
  runtime: rootfs:./base.tar
image:
  base: runtime
  layers:
    - copy: {from: ./bin/, to: /app/, mode: "0755"}
    - copy: {from: ./etc/motd, to: /etc/motd}
  config:
    env: {GREETING: "${greeting}", PATH: "/app:${PATH}"}
    entrypoint: [/app/hello.sh]
    cmd: []
    workdir: /app
    user: "1000:0"
    exposed_ports: ["8080/tcp"]
    labels: {org.opencontainers.image.title: hello}
    healthcheck: {test: ["CMD", "true"], interval: 30s}
annotations: {org.opencontainers.image.source: "https://example.invalid/hello"}
outputs:
  - oci:out/hello:latest
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/hello.sh").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/motd").write_text("motd\n")
    (tmp_path / "base.tar").write_bytes(b"")
    (tmp_path / "hello.yaml").write_text(HELLO)
    return tmp_path


def test_the_issue_example_loads_with_params_and_set(project: Path) -> None:
    loaded = load_manifest(project / "hello.yaml", sets={"greeting": "hi"})
    cfg = loaded.manifest.image.config
    assert cfg.env == {"GREETING": "hi", "PATH": "/app:${PATH}"}  # ${PATH}: expanded against the base env later
    assert cfg.healthcheck is not None and cfg.healthcheck.interval == 30_000_000_000
    assert cfg.user == "1000:0" and cfg.exposed_ports == ["8080/tcp"]
    layer = loaded.manifest.image.layers[0]
    assert layer.copy_.mode == 0o755  # type: ignore[union-attr]


_MOTD = "- copy: {from: ./etc/motd, to: /etc/motd}"
BAD = [
    ("unknown key", ("workdir: /app", "workdri: /app"), 14, "image.config.workdri", "unknown key"),
    ("wrong type", ('exposed_ports: ["8080/tcp"]', "exposed_ports: {a: 1}"), 16, "image.config.exposed_ports", "list"),
    ("missing base", ("base: runtime", "base: runtme"), 6, "image.base", "unknown base 'runtme'"),
    ("copy.from missing", ("./etc/motd", "./etc/nope"), 9, "image.layers.1.copy.from", "path does not exist"),
    ("copy.from escapes", ("./etc/motd", "../outside/motd"), 9, "image.layers.1.copy.from", "escapes"),
    ("bad mode", ('"0755"', '"999"'), 8, "image.layers.0.copy.mode", "octal mode"),
    (
        "unknown layer kind",
        ("- copy: {from: ./etc/motd, to: /etc/motd}", "- cpy: {from: ./etc/motd}"),
        9,
        "image.layers.1",
        "copy:, artifact:, run:, packages:",
    ),
    ("unknown param", ("${greeting}", "${greting}"), 11, "image.config.env.GREETING", "unknown param ${greting}"),
    ("missing field", (", to: /etc/motd", ""), 9, "image.layers.1.copy.to", "required"),
    ("bad duration", ("interval: 30s", "interval: soon"), 18, "image.config.healthcheck.interval", "duration"),
    ("bad output", ("oci:out/hello:latest", "oci2:out"), 21, "outputs.0", "is not a reference"),
    # Owners a uid_t holds, (uid_t)-1 (chown's "unchanged") aside: as a tar's are (test_archive).
    *(
        (f"owner {owner}", (_MOTD, _MOTD[:-1] + f", owner: {owner}}}"), 9, "image.layers.1.copy.owner", why)
        for owner, why in (
            ("4294967295", "a uid or gid is 0 to 4294967294"),
            ("99999999999", "a uid or gid is 0 to 4294967294"),
            ('"0:4294967296"', "a uid or gid is 0 to 4294967294"),
            ("-1", "must be numeric uid[:gid]"),
            ('"-1:0"', "must be numeric uid[:gid]"),
        )
    ),
]


@pytest.mark.parametrize(("case", "edit", "line", "field", "text"), BAD, ids=[b[0] for b in BAD])
def test_errors_name_file_line_and_field(
    project: Path, case: str, edit: tuple[str, str], line: int, field: str, text: str
) -> None:
    bad = HELLO.replace(*edit)
    assert bad != HELLO, case
    (project / "hello.yaml").write_text(bad)
    with pytest.raises(ManifestError) as info:
        load_manifest(project / "hello.yaml")
    err = info.value
    assert (err.file, err.line, err.field) == (str(project / "hello.yaml"), line, field), str(err)
    assert text in str(err)
    assert str(err).startswith(f"{project / 'hello.yaml'}:{line}: {field}: ")


def test_unknown_param_from_set_and_unknown_base_override(project: Path) -> None:
    with pytest.raises(ManifestError, match="unknown param 'nope'"):
        load_manifest(project / "hello.yaml", sets={"nope": "x"})
    with pytest.raises(ManifestError, match="unknown base 'devel'"):
        load_manifest(project / "hello.yaml", bases={"devel": "scratch"})


def test_recipes_targets_and_param_chains(tmp_path: Path) -> None:
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers/thing.yaml").write_text(
        "description: builds a thing\n"
        "params: {version: '1.0', prefix: /opt/thing}\n"
        "packages: [make]\n"
        "env: {THING_VERSION: '${version}'}\n"
        "run: ['make install PREFIX=${prefix}']\n"
        "artifacts:\n  prefix: {path: '${prefix}', to: '${prefix}'}\n"
        "runtime_packages: [libthing1]\n"
    )
    (tmp_path / "m").mkdir()
    (tmp_path / "m/x.yaml").write_text(
        "name: x\n"
        "params: {cuda_version: '12.4', tag: '${cuda_version}-devel'}\n"
        "bases: {devel: 'docker://example.invalid/cuda:${tag}', runtime: scratch}\n"
        "compile:\n"
        "  - name: thing\n    use: thing\n    with: {version: '2.0'}\n    base: devel\n    env: {EXTRA: '1'}\n"
        "image:\n  base: runtime\n  layers: [{artifact: thing.prefix}]\n"
        "targets:\n  slim: {params: {cuda_version: '12.9'}, config: {entrypoint: [/bin/true]}}\n"
    )
    loaded = load_manifest(tmp_path / "m/x.yaml", target="slim")
    step = loaded.manifest.compile[0]
    assert step.env == {"THING_VERSION": "2.0", "EXTRA": "1"}
    assert step.run == ["make install PREFIX=/opt/thing"]
    assert step.packages == ["make"] and step.runtime_packages == ["libthing1"]
    assert loaded.manifest.bases["devel"] == "docker://example.invalid/cuda:12.9-devel"
    assert loaded.manifest.image.config.entrypoint == ["/bin/true"]
    assert loaded.recipes == {"thing": tmp_path / "layers/thing.yaml"}

    text = (tmp_path / "m/x.yaml").read_text()
    for edit, message, line in [
        (("use: thing", "use: nothing"), "unknown recipe 'nothing'", 6),
        (("{version: '2.0'}", "{verison: '2.0'}"), "unknown param 'verison' for recipe 'thing'", 7),
        (("artifact: thing.prefix", "artifact: thing.nope"), "declares no artifact 'nope'", 12),
        (("artifact: thing.prefix", "artifact: other.prefix"), "no compile step 'other'", 12),
    ]:
        (tmp_path / "m/x.yaml").write_text(text.replace(*edit))
        with pytest.raises(ManifestError) as info:
            load_manifest(tmp_path / "m/x.yaml")
        assert message in str(info.value) and info.value.line == line, str(info.value)
    (tmp_path / "m/x.yaml").write_text(text)
    with pytest.raises(ManifestError, match="unknown target 'fat'"):
        load_manifest(tmp_path / "m/x.yaml", target="fat")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("workdir: /app", "workdri: /app"), "hello.yaml:14: image.config.workdri: unknown key"),
        (("base: runtime", "base: runtme"), "hello.yaml:6: image.base: unknown base 'runtme'"),
        (("./etc/motd", "./etc/nope"), "hello.yaml:9: image.layers.1.copy.from: path does not exist"),
        (("./etc/motd", "../etc/motd"), "hello.yaml:9: image.layers.1.copy.from: escapes the manifest's folder"),
        (("rootfs:./base.tar", "rootfs:./base.tar"), "not a readable tar archive"),  # empty file
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(
    project: Path, edit: tuple[str, str], expected: str
) -> None:
    (project / "hello.yaml").write_text(HELLO.replace(*edit))
    out = project / "out"
    ran = run_cli(["hello.yaml", "--cache", str(project / "cache")], cwd=project)
    assert ran.code == 2, str(ran)
    lines = [line for line in ran.err.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and expected in lines[0], str(ran)
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), str(ran)
    assert "Traceback" not in ran.err
    assert not out.exists()
    assert not any(p.name.startswith(".") and "tmp" in p.name for p in project.iterdir())


def test_choices_fix_other_params_unless_unlocked(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: m\n"
        "params: {backend: cuda, devel: 'docker://example.invalid/cuda:12', flags: '-DGGML_CUDA=ON'}\n"
        "choices:\n"
        "  backend:\n"
        "    cuda: {}\n"
        "    cpu: {devel: 'docker://example.invalid/ubuntu:22.04', flags: '-DGGML_CPU_ALL_VARIANTS=ON'}\n"
        "bases: {devel: '${devel}'}\n"
        "image: {base: devel, config: {env: {FLAGS: '${flags}'}}}\n"
    )
    assert load_manifest(tmp_path / "m.yaml").manifest.bases["devel"] == "docker://example.invalid/cuda:12"
    cpu = load_manifest(tmp_path / "m.yaml", sets={"backend": "cpu"})
    assert cpu.manifest.bases["devel"] == "docker://example.invalid/ubuntu:22.04"
    assert cpu.manifest.image.config.env == {"FLAGS": "-DGGML_CPU_ALL_VARIANTS=ON"}
    # backend=cpu fixes flags: a --set contradicting it names both; unlocked, it wins
    with pytest.raises(ManifestError, match=r"--set flags=-DX=1 contradicts choice backend=cpu") as fixed:
        load_manifest(tmp_path / "m.yaml", sets={"backend": "cpu", "flags": "-DX=1"})
    assert (fixed.value.line, fixed.value.field) == (6, "choices.backend.cpu.flags")
    mine = load_manifest(tmp_path / "m.yaml", sets={"backend": "cpu", "flags": "-DX=1"}, unlocked={"flags"})
    assert mine.manifest.image.config.env == {"FLAGS": "-DX=1"}
    # the value the choice sets anyway is no contradiction; under backend=cuda, flags is free
    same = load_manifest(tmp_path / "m.yaml", sets={"backend": "cpu", "flags": "-DGGML_CPU_ALL_VARIANTS=ON"})
    assert same.params["flags"] == "-DGGML_CPU_ALL_VARIANTS=ON"
    assert load_manifest(tmp_path / "m.yaml", sets={"flags": "-DX=1"}).params["flags"] == "-DX=1"
    with pytest.raises(ManifestError, match="backend=tpu is not one of the choices: cpu, cuda") as info:
        load_manifest(tmp_path / "m.yaml", sets={"backend": "tpu"})
    assert info.value.line == 2


_RECIPE = "description: {what}\nrun: ['echo {what}']\nartifacts:\n  wheel: {{path: /out, to: /out}}\n"
_USES = (
    "name: u\nbases: {{devel: scratch, runtime: scratch}}\nsources: {{src: {{path: ./src}}}}\n"
    "compile:\n  - name: s\n    use: {recipe}\n    base: devel\n"
    "image:\n  base: runtime\n  layers: [{{artifact: s.wheel}}]\n"
)


def test_recipes_resolve_next_to_the_manifest_then_the_search_path_then_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_a, site_b = tmp_path / "site-a", tmp_path / "site-b"
    for folder in (site_a, site_b, tmp_path / "proj" / "layers", tmp_path / "proj" / "src"):
        folder.mkdir(parents=True)
    (site_a / "tool.yaml").write_text(_RECIPE.format(what="site-a"))
    (site_b / "tool.yaml").write_text(_RECIPE.format(what="site-b"))
    (site_b / "other.yaml").write_text(_RECIPE.format(what="site-b other"))
    manifest = tmp_path / "proj" / "m.yaml"
    monkeypatch.setenv("ASSEMBLE_RECIPES", f"{site_a}:{site_b}")

    def recipe_of(name: str) -> Path:
        manifest.write_text(_USES.format(recipe=name))
        return load_manifest(manifest).recipes[name]

    assert recipe_of("tool") == site_a / "tool.yaml"  # the search path, in its order
    assert recipe_of("other") == site_b / "other.yaml"
    (tmp_path / "proj" / "layers" / "tool.yaml").write_text(_RECIPE.format(what="project"))
    assert recipe_of("tool") == tmp_path / "proj" / "layers" / "tool.yaml"  # the project's own win
    # The recipes that come with assemble, for a manifest far from any checkout.
    shipped = recipe_of("python-wheel")
    assert shipped.parent == packaged_recipes() and shipped.name == "python-wheel.yaml"
    monkeypatch.delenv("ASSEMBLE_RECIPES")
    assert recipe_of("python-wheel") == shipped


def test_unknown_recipe_hint_names_the_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASSEMBLE_RECIPES", str(tmp_path / "site"))
    (tmp_path / "m.yaml").write_text(_USES.format(recipe="no-such-recipe"))
    ran = run_cli_here(["plan", str(tmp_path / "m.yaml")], cwd=tmp_path)
    assert ran.code == 2 and "unknown recipe 'no-such-recipe'" in ran.err, ran.err
    hint = next(line for line in ran.err.splitlines() if line.startswith("hint: "))
    for folder in (tmp_path / "layers", tmp_path / "site", packaged_recipes()):
        assert str(folder) in hint, hint
    assert "ASSEMBLE_RECIPES" in hint


def test_a_lock_reads_back_as_written_where_yaml_1_1_and_1_2_differ(tmp_path: Path) -> None:
    """The lock is read by libyaml first (fast, YAML 1.1); a value 1.1 reads otherwise
    (``yes``, ``on``, ``0o17``, ``a: b`` in a flow item) must still come back as written."""
    from assembler.manifest.lock.file import Entry, Lock, read_lock, write_lock
    from assembler.manifest.schema.setuses import set_key

    definition = {"requirements": ["yes", "on", "0o17", "x @ https://h/x.whl#a:b"], "index_url": "https://h:1/s"}
    lock = Lock("m.yaml", sets={set_key(definition): Entry(definition, "yes==1.0\n")})
    write_lock(tmp_path / "m.lock", lock)
    again = read_lock(tmp_path / "m.lock")
    assert again.sets == lock.sets


def _uv(pin: str, *digits: str) -> str:
    """A pin as uv writes it: one ``--hash`` line per sha256 (each a hex digit 64 times)."""
    return pin + "".join(f" \\\n    --hash=sha256:{d * 64}" for d in digits) + "\n"


def test_a_pins_hashes_are_written_once_and_read_back_into_each_set(tmp_path: Path) -> None:
    """Lock version 2 wrote each set's hashes out in full (vLLM's lock: 3.5 MB, torch's in
    28 sets). A version's hash lines are written once; a pin two sets give with other
    hashes, or one with none, keeps its lines in each set as uv wrote them."""
    from assembler.manifest.lock.file import Entry, Lock, read_lock, write_lock
    from assembler.manifest.schema.setuses import set_key

    pins = {
        "a": _uv("torch==2.9.0", "1", "2") + _uv("numpy==2.1.0", "3") + _uv("six==1.0", "5") + "x @ https://h/x.whl\n",
        "b": _uv("torch==2.9.0", "1", "2") + _uv("numpy==2.1.0", "4") + "six==1.0\n",
        "c": _uv("torch==2.9.0", "1", "2"),
    }
    keys = {}
    lock = Lock("m.yaml")
    for name, text in pins.items():
        definition = {"requirements": [name], "python": "3.12"}
        keys[name] = set_key(definition)
        lock.sets[keys[name]] = Entry(definition, text)
    path = tmp_path / "m.lock"
    write_lock(path, lock)
    text = path.read_text()
    assert "lock_version: 3\n" in text and text.count("      torch==2.9.0\n") == 3
    assert text.count("1" * 64) == 1 and text.count("2" * 64) == 1, text  # three sets, written once
    assert f"\nhashes:\n  torch==2.9.0:\n    - sha256:{'1' * 64}\n    - sha256:{'2' * 64}\n" in text, text
    for inline in ("numpy==2.1.0 \\\n          --hash=sha256:3", "numpy==2.1.0 \\\n          --hash=sha256:4"):
        assert inline in text, text
    assert "\n  numpy==2.1.0:" not in text and "\n  six==1.0:" not in text and "      six==1.0\n" in text
    again = read_lock(path)
    assert again.sets == lock.sets
    torch = [f"--hash=sha256:{d * 64}" for d in "12"]
    assert again.sets[keys["c"]].hashes() == {"torch==2.9.0": torch}  # what --require-hashes files are made of
    assert again.sets[keys["b"]].hashes()["six==1.0"] == []
    write_lock(path, again)
    assert path.read_text() == text


@pytest.mark.parametrize(
    ("version", "said"),
    [(2, "keeping its pins"), (1, "resolving every set again"), (4, "is newer than this assemble reads")],
)
def test_a_lock_of_another_version_is_named_and_version_2_read_only_to_be_written_anew(
    tmp_path: Path, version: int, said: str
) -> None:
    from assembler.errors import InputError
    from assembler.manifest.lock.file import read_lock
    from assembler.manifest.schema.setuses import set_key

    key = set_key({"requirements": ["torch"], "python": "3.12"})
    path = tmp_path / "m.lock"
    path.write_text(
        f"lock_version: {version}\nmanifest: m.yaml\nsets:\n  {key}:\n    python: '3.12'\n"
        f"    requirements: [torch]\n    pins: |\n      torch==2.9.0 \\\n          --hash=sha256:{'1' * 64}\n"
    )
    with pytest.raises(InputError) as refused:
        read_lock(path)
    assert f"lock_version {version} " in refused.value.message and said in refused.value.message, refused.value
    assert "lock_version 3" in refused.value.message
    if version == 2:  # what assemble lock reads to write it anew
        (entry,) = read_lock(path, older=True).sets.values()
        assert entry.hashes() == {"torch==2.9.0": [f"--hash=sha256:{'1' * 64}"]}
    else:
        with pytest.raises(InputError):
            read_lock(path, older=True)
