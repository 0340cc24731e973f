"""A Python set's requirements from the project's own files (``requirements_file:``): a pip
requirements file (-r, -c, --index-url, --hash) or a pyproject.toml (dependencies, extras,
PEP 735 groups). Read at load (errors name the manifest's field and the file's line),
locked by uv like any set, the file's hashes kept, and built: what the step installs is the
file's pins. Against a local index (tests/pyindex.py).
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from assembler.errors import ManifestError
from assembler.manifest.load.manifest import load_manifest
from tests.helpers import run_cli, run_cli_here
from tests.pyindex import Index, serving_index
from tests.test_lock import installed

SETUP = "from setuptools import setup; setup()\n"


def _sets(manifest: Path) -> list[tuple[list[str], dict[str, object]]]:
    loaded = load_manifest(manifest)
    return [
        (s.requirements, {"index": s.index_url, "extra": s.extra_index_urls, "c": s.constraints, "hashes": s.hashes})
        for s in loaded.manifest.image.layers[0].python_sets  # type: ignore[union-attr]
    ]


def _manifest(root: Path, sets: str, base: str = "scratch", run: str = "true") -> Path:
    path = root / "m.yaml"
    path.write_text(
        f"""name: reqfiles
bases: {{b: "{base}"}}
image:
  base: b
  layers:
    - run: ['{run}']
      name: app
      python_sets:
{sets}"""
    )
    return path


def test_a_requirements_file_is_read_as_pip_reads_it(tmp_path: Path) -> None:
    a, b = "a" * 64, "b" * 64
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "base.txt").write_text(f"lib==1.0 \\\n    --hash=sha256:{a} \\\n    --hash=sha256:{b}\n")
    (tmp_path / "reqs" / "pins.txt").write_text("dep<3\n")
    (tmp_path / "reqs" / "requirements.txt").write_text(
        "# the app\n--index-url https://example.org/simple\n--extra-index-url=https://extra.example.org/simple\n"
        "--trusted-host example.org\n"
        "-r base.txt\n-c pins.txt\napp[cli] >= 2 ; python_version >= '3.8'  # a comment\n"
        "tool @ https://example.org/tool-1.0-py3-none-any.whl\n"
    )
    manifest = _manifest(tmp_path, '        - {name: app, requirements_file: reqs/requirements.txt, python: "3.11"}\n')
    assert _sets(manifest) == [
        (
            [
                "lib==1.0",
                "app[cli] >= 2 ; python_version >= '3.8'",
                "tool @ https://example.org/tool-1.0-py3-none-any.whl",
            ],
            {
                "index": "https://example.org/simple",
                "extra": ["https://extra.example.org/simple"],
                "c": ["dep<3"],
                "hashes": {"lib": [a, b]},
            },
        )
    ]
    # what the set writes itself comes first (an error about one names its line); its own index wins
    both = _manifest(
        tmp_path,
        '        - {name: app, requirements_file: reqs/base.txt, requirements: [extra==1], python: "3.11",\n'
        '           index_url: "https://mine.example.org/simple"}\n',
    )
    assert _sets(both)[0][0] == ["extra==1", "lib==1.0"]
    assert _sets(both)[0][1]["index"] == "https://mine.example.org/simple"
    one = _manifest(
        tmp_path, '        - {name: app, requirements_file: reqs/base.txt, requirements: extra==1, python: "3.11"}\n'
    )
    assert _sets(one)[0][0] == ["extra==1", "lib==1.0"]  # one requirement written as a string, not its letters


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("-e ./src\n", "reqs.txt:1: an editable install cannot be locked"),
        ("ok==1\n./local/pkg\n", "reqs.txt:2: './local/pkg': a path or bare URL"),
        ("--find-links /wheels\n", "reqs.txt:1: --find-links"),
        ("--pre\n", "reqs.txt:1: --pre: not an option a lock takes"),
        ("ok==1 --hash=md5:abc\n", "reqs.txt:1: --hash=md5:abc: the lock keeps sha256 hashes"),
        ("not a requirement!\n", "reqs.txt:1: 'not a requirement!' is not a requirement"),
        ("-r missing.txt\n", "missing.txt: no such file"),
    ],
)
def test_what_a_lock_cannot_take_is_refused_at_the_sets_field(tmp_path: Path, text: str, said: str) -> None:
    (tmp_path / "reqs.txt").write_text(text)
    manifest = _manifest(tmp_path, '        - {name: app, requirements_file: reqs.txt, python: "3.11"}\n')
    with pytest.raises(ManifestError) as e:
        load_manifest(manifest)
    assert said in e.value.message, e.value.message
    assert e.value.field == "image.layers.0.python_sets.0.requirements_file" and e.value.line == 9


def test_a_requirements_file_naming_nothing_is_no_set_and_a_pyproject_naming_nothing_is_refused(
    tmp_path: Path,
) -> None:
    """pip installs nothing from a requirements.txt of comments, so there is nothing to lock:
    the set is left out (``assemble init python``'s fresh file, issue 67), the others kept. A
    pyproject.toml naming nothing is a misnamed extra or group: refused."""
    (tmp_path / "reqs.txt").write_text("# nothing yet\n")
    sets = '        - {name: app, requirements_file: reqs.txt, python: "3.11"}\n'
    sets += '        - {name: more, requirements: [six], python: "3.11"}\n'
    layer = load_manifest(_manifest(tmp_path, sets)).manifest.image.layers[0]
    assert [s.name for s in layer.python_sets] == ["more"]
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\ndependencies = []\n')
    manifest = _manifest(tmp_path, '        - {name: app, requirements_file: pyproject.toml, python: "3.11"}\n')
    with pytest.raises(ManifestError, match=r"pyproject\.toml: no requirement in it"):
        load_manifest(manifest)


def test_a_pyproject_gives_its_dependencies_extras_and_groups(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        """[project]
name = "myapp"
version = "1.0"
dependencies = ["app>=1"]
[project.optional-dependencies]
serve = ["other==1.0"]
gpu = ["never"]
Serve_All = ["myapp[serve]", "extra2"]
[dependency-groups]
dev = ["tool"]
all = [{include-group = "dev"}, "more"]
"""
    )
    sets = '        - {name: app, requirements_file: pyproject.toml, extras: [serve], groups: [all], python: "3.11"}\n'
    assert _sets(_manifest(tmp_path, sets))[0][0] == ["app>=1", "tool", "more", "other==1.0"]
    # an extra naming the project's own (PEP 685 names): read in place, never myapp from an index
    own = sets.replace("extras: [serve], groups: [all]", "extras: serve-all")
    assert _sets(_manifest(tmp_path, own))[0][0] == ["app>=1", "extra2", "other==1.0"]
    unknown = sets.replace("extras: [serve]", "extras: [web]")
    with pytest.raises(ManifestError, match="no optional-dependencies 'web' \\(it has gpu, serve, serve-all\\)"):
        load_manifest(_manifest(tmp_path, unknown))
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["dependencies"]\n')
    with pytest.raises(ManifestError, match="dependencies are dynamic"):
        load_manifest(_manifest(tmp_path, sets.replace("extras: [serve], groups: [all], ", "")))
    (tmp_path / "reqs.txt").write_text("x\n")
    with pytest.raises(ManifestError, match=r"extras: and groups: are a pyproject\.toml's"):
        load_manifest(_manifest(tmp_path, sets.replace("pyproject.toml", "reqs.txt")))


@pytest.fixture()
def index(tmp_path: Path) -> Iterator[Index]:
    with serving_index(tmp_path / "index") as served:
        served.add("rf-app", "1.0", "rf-lib>=1.0")
        served.add("rf-lib", "1.0")
        served.add_sdist("rf-lib", "1.0", setup=SETUP)
        served.add("rf-lib", "2.0")
        served.add("rf-other", "1.0")
        served.add("rf-tool", "1.0", "rf-dep>=1")
        served.add("rf-dep", "1.0")
        yield served


def _sha(index: Index, filename: str) -> str:
    return hashlib.sha256((index.root / "files" / filename).read_bytes()).hexdigest()


def _locked(lock: Path, where: str) -> dict[str, list[str]]:
    """The pins of the set at ``where`` (``layers.app:reqs``), with their hashes."""
    from assembler.manifest.lock.file import read_lock

    read = read_lock(lock)
    (uses,) = read.variants.values()
    return read.sets[uses[where]].hashes()


@pytest.mark.integration  # uv resolves
def test_files_lock_to_their_pins_and_hashes_and_a_change_makes_the_lock_stale(tmp_path: Path, index: Index) -> None:
    wheel = _sha(index, "rf_lib-1.0-py3-none-any.whl")
    (tmp_path / "requirements.txt").write_text(f"--index-url {index.url}\nrf-app\nrf-lib==1.0 --hash=sha256:{wheel}\n")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1"\ndependencies = ["rf-app"]\n'
        '[project.optional-dependencies]\nserve = ["rf-other"]\n[dependency-groups]\ndev = ["rf-tool"]\n'
    )
    manifest = _manifest(
        tmp_path,
        '        - {name: reqs, requirements_file: requirements.txt, python: "3.11"}\n'
        f'        - {{name: proj, requirements_file: pyproject.toml, extras: [serve], groups: [dev], python: "3.11", '
        f'index_url: "{index.url}"}}\n',
    )
    done = run_cli(["lock", str(manifest)])
    assert done.code == 0, done
    reqs, proj = _locked(tmp_path / "m.lock", "layers.app:reqs"), _locked(tmp_path / "m.lock", "layers.app:proj")
    # the file's pin, and only the file's hash of it (the index has an sdist of 1.0 too)
    assert reqs == {"rf-app==1.0": reqs["rf-app==1.0"], "rf-lib==1.0": [f"--hash=sha256:{wheel}"]}, reqs
    assert sorted(proj) == ["rf-app==1.0", "rf-dep==1.0", "rf-lib==1.0", "rf-other==1.0", "rf-tool==1.0"], proj
    assert len(proj["rf-lib==1.0"]) == 2  # no --hash there: both files
    assert run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "c")]).code == 0

    (tmp_path / "requirements.txt").write_text(f"--index-url {index.url}\nrf-app\n")  # the project moved on
    stale = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "c")])
    assert stale.code == 2 and "layers.app:reqs" in stale.err, stale
    assert run_cli(["lock", str(manifest)]).code == 0
    assert len(_locked(tmp_path / "m.lock", "layers.app:reqs")["rf-lib==1.0"]) == 2  # the hash no longer given

    # a hash no file of the resolved version has: that set is not locked, and says why
    (tmp_path / "requirements.txt").write_text(f"--index-url {index.url}\nrf-lib==1.0 --hash=sha256:{'0' * 64}\n")
    bad = run_cli(["lock", str(manifest)])
    assert bad.code == 2, bad
    said = "layers.app:reqs: rf-lib==1.0: none of its files has a hash the set gives (sha256:000000000000...)"
    assert said in bad.err, bad
    refused = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "c")])
    assert refused.code == 2, refused


def _uv_project(folder: Path, index: Index, dependencies: str, *, more: str = "") -> Path:
    """A project locked by ``uv lock`` against the local index (``more``: the rest of its
    pyproject.toml): its uv.lock."""
    from assembler.proc import uv_binary

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "proj"\nversion = "1"\nrequires-python = ">=3.11"\ndependencies = {dependencies}\n'
        '[project.optional-dependencies]\nserve = ["rf-other"]\n[dependency-groups]\ndev = ["rf-lib"]\n' + more
    )
    locked = subprocess.run(
        [uv_binary(), "lock", "--no-cache", "--index-url", index.url, "--project", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert locked.returncode == 0, locked.stderr
    return folder / "uv.lock"


@pytest.mark.integration  # uv locks and reads
def test_a_uv_lock_and_a_pylock_are_used_as_they_are(tmp_path: Path, index: Index) -> None:
    uv_lock = _uv_project(tmp_path / "proj", index, '["rf-tool"]')
    written = uv_lock.read_bytes()
    sets = (
        '        - {name: uv, requirements_file: proj/uv.lock, extras: [serve], python: "3.11"}\n'
        '        - {name: dev, requirements_file: proj/uv.lock, groups: [dev], python: "3.11"}\n'
    )
    (uv, told), (dev, _) = _sets(_manifest(tmp_path, sets))
    assert [r.split(" ")[0] for r in uv] == ["rf-dep==1.0", "rf-other==1.0", "rf-tool==1.0"]  # no dev group
    assert told["index"] == index.url and set(told["hashes"]) == {"rf-dep", "rf-other", "rf-tool"}  # type: ignore[arg-type]
    assert [r.split(" ")[0] for r in dev] == ["rf-dep==1.0", "rf-lib==2.0", "rf-tool==1.0"]

    index.add("rf-dep", "2.0")  # published after the project's lock: never taken
    done = run_cli(["lock", str(_manifest(tmp_path, sets))])
    assert done.code == 0, done
    assert sorted(_locked(tmp_path / "m.lock", "layers.app:uv")) == ["rf-dep==1.0", "rf-other==1.0", "rf-tool==1.0"]
    assert uv_lock.read_bytes() == written  # read, never written

    # a pylock.toml (uv's, of the same project) gives the same pins
    from assembler.proc import uv_binary

    # as uv writes it by default: the project itself in it, a directory package (not installed)
    argv = [uv_binary(), "export", "--frozen", "--format", "pylock.toml", "--extra", "serve", "--no-dev"]
    argv += ["--project", str(tmp_path / "proj"), "-o", str(tmp_path / "pylock.toml")]
    exported = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    ((pins, _),) = _sets(_manifest(tmp_path, '        - {name: pl, requirements_file: pylock.toml, python: "3.11"}\n'))
    assert [r.split(" ")[0] for r in pins] == ["rf-dep==1.0", "rf-other==1.0", "rf-tool==1.0"]


@pytest.mark.integration  # uv locks and reads
def test_a_uv_workspace_lock_leaves_its_members_out(tmp_path: Path, index: Index) -> None:
    """A workspace member is the project's own code, as the root is: not a pin."""
    (tmp_path / "ws" / "packages" / "lib").mkdir(parents=True)
    (tmp_path / "ws" / "packages" / "lib" / "pyproject.toml").write_text(
        '[project]\nname = "lib"\nversion = "1"\nrequires-python = ">=3.11"\ndependencies = ["rf-other"]\n'
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    workspace = '[tool.uv.workspace]\nmembers = ["packages/*"]\n[tool.uv.sources]\nlib = {workspace = true}\n'
    _uv_project(tmp_path / "ws", index, '["rf-tool", "lib"]', more=workspace)
    ((pins, _),) = _sets(_manifest(tmp_path, '        - {name: ws, requirements_file: ws/uv.lock, python: "3.11"}\n'))
    assert [r.split(" ")[0] for r in pins] == ["rf-dep==1.0", "rf-other==1.0", "rf-tool==1.0"]


def test_a_uv_lock_without_its_project_or_a_bad_pylock_is_refused(tmp_path: Path) -> None:
    (tmp_path / "uv.lock").write_text("version = 1\n")
    with pytest.raises(ManifestError, match=r"no pyproject\.toml beside it"):
        load_manifest(_manifest(tmp_path, '        - {name: a, requirements_file: uv.lock, python: "3.11"}\n'))
    (tmp_path / "pylock.toml").write_text('lock-version = "1.0"\ncreated-by = "x"\n[[packages]]\nversion = "1"\n')
    with pytest.raises(ManifestError, match=r"pylock\.toml: not a PEP 751 lock file"):
        load_manifest(_manifest(tmp_path, '        - {name: a, requirements_file: pylock.toml, python: "3.11"}\n'))


@pytest.mark.slow
def test_each_kind_of_file_builds_the_versions_it_pins(
    tmp_path: Path, index: Index, demo_bases: dict[str, Path]
) -> None:
    """A requirements.txt, a pyproject.toml and a uv.lock, one layer each, installed with
    the lock's hashes: the image holds exactly the files' versions."""
    wheel = _sha(index, "rf_lib-1.0-py3-none-any.whl")
    (tmp_path / "requirements.txt").write_text(f"--index-url {index.url}\nrf-app\nrf-lib==1.0 --hash=sha256:{wheel}\n")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1"\ndependencies = ["rf-other"]\n')
    _uv_project(tmp_path / "proj", index, '["rf-tool"]')
    index.add("rf-dep", "2.0")  # after the uv.lock: the lock's 1.0 is what goes in
    install = f"pip install --break-system-packages --no-cache-dir --no-deps --index-url {index.url} --require-hashes"
    layers = "".join(
        f"""    - run: ['{install} -r "$ASSEMBLE_PYTHON_REQUIREMENTS"']
      name: {name}
      python_sets: [{{name: {name}, requirements_file: {file}, python: "3.11", require_hashes: true,
                      index_url: "{index.url}"}}]
"""
        for name, file in (("reqs", "requirements.txt"), ("proj", "pyproject.toml"), ("uvlock", "proj/uv.lock"))
    )
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: reqfiles
bases: {{b: "oci:{demo_bases["devel"]}:latest"}}
image:
  base: b
  layers:
{layers}"""
    )
    assert run_cli(["lock", str(manifest)]).code == 0
    built = run_cli([str(manifest), "--locked", "--cache", str(tmp_path / "c"), "-o", f"oci:{tmp_path / 'out'}:latest"])
    assert built.code == 0, built
    assert installed(tmp_path / "out", "rf_") == {
        "rf_app-1.0.dist-info",
        "rf_lib-1.0.dist-info",
        "rf_other-1.0.dist-info",
        "rf_tool-1.0.dist-info",
        "rf_dep-1.0.dist-info",
    }


def test_a_require_hashes_pin_is_read_as_its_version() -> None:
    """A require_hashes set's pins reach the step as ``name==version --hash=...`` lines: what
    the step installed is checked against the version alone (it read the hash as the version)."""
    from assembler.manifest.lock.file import LOCK_ENV
    from assembler.pipeline.image.installed import Installed, unlocked

    env = {LOCK_ENV: f"rf-app==1.0 --hash=sha256:{'a' * 64}\nrf-lib==2.0\n"}
    site = "/usr/local/lib/python3.11/site-packages"
    same = [Installed("rf-app", "1.0", site, False), Installed("rf-lib", "2.0", site, False)]
    assert unlocked("app", env, same) == []
    other = [Installed("rf-app", "1.1", site, False)]
    assert unlocked("app", env, other) == ["step app installed rf-app 1.1, and the lock pins 1.0"]


def test_requirements_beside_a_lock_are_refused(tmp_path: Path) -> None:
    """They would go in unlocked (a lock's set takes each pin alone, with no dependencies)."""
    (tmp_path / "pylock.toml").write_text('lock-version = "1.0"\ncreated-by = "x"\n')
    with pytest.raises(ManifestError, match="is a lock, used as it is: requirements: beside it would go in unlocked"):
        load_manifest(
            _manifest(
                tmp_path, '        - {name: a, requirements_file: pylock.toml, requirements: [x], python: "3.11"}\n'
            )
        )


def _refused(manifest: Path) -> str:
    """The message loading ``manifest`` fails with (at the set's field)."""
    with pytest.raises(ManifestError) as e:
        load_manifest(manifest)
    assert e.value.field == "image.layers.0.python_sets.0.requirements_file", e.value.message
    return e.value.message


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("-r /proc/self/environ", "/proc/self/environ"),
        ("-c ../outside.txt", "outside.txt"),
        ("-r linked.txt", "outside.txt"),  # a link of the project to a file outside it
        ("--requirement=/dev/zero", "/dev/zero"),
    ],
)
def test_a_requirements_files_includes_stay_inside_the_project(tmp_path: Path, line: str, named: str) -> None:
    """A cloned project's -r or -c, or a link it holds, never reads a host file outside it:
    refused at the line that names it, the path named and nothing of what it holds said."""
    (tmp_path / "outside.txt").write_text("SECRET=1\n")
    project = tmp_path / "project"
    project.mkdir()
    (project / "linked.txt").symlink_to(tmp_path / "outside.txt")
    (project / "reqs.txt").write_text(f"ok==1\n{line}\n")
    said = _refused(_manifest(project, '        - {name: app, requirements_file: reqs.txt, python: "3.11"}\n'))
    assert f"reqs.txt:2: {line.split('=')[0] if '=' in line else line}" in said and named in said, said
    assert "outside the project" in said and "SECRET" not in said and "PATH=" not in said, said


def test_a_file_beside_the_named_one_or_the_manifest_is_read(tmp_path: Path) -> None:
    """The project is the manifest's folder and the folder of the file it names, wherever
    that is (../shared/requirements.txt): each may name the other's files."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "requirements.txt").write_text("-r common.txt\n-c ../app/pins.txt\n")
    (tmp_path / "shared" / "common.txt").write_text("lib==1\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "pins.txt").write_text("dep<2\n")
    manifest = _manifest(
        tmp_path / "app", '        - {name: app, requirements_file: ../shared/requirements.txt, python: "3.11"}\n'
    )
    ((reqs, found),) = _sets(manifest)
    assert reqs == ["lib==1"] and found["c"] == ["dep<2"]


@pytest.mark.timeout(20)  # before: /dev/zero read until memory ran out, a FIFO's open waited forever
@pytest.mark.parametrize("kind", ["device", "fifo", "kernel file"])
def test_a_requirements_file_is_read_as_a_bounded_regular_file(tmp_path: Path, kind: str) -> None:
    """The file the manifest names (a link of the project to it): a device or a FIFO is
    refused before it is read, and a kernel file (its size 0, what it holds the process's
    environment) without a word of what it holds."""
    import os

    target = {"device": Path("/dev/zero"), "fifo": tmp_path / "fifo", "kernel file": Path("/proc/self/environ")}[kind]
    if kind == "fifo":
        os.mkfifo(target)
    (tmp_path / "reqs.txt").symlink_to(target)
    said = _refused(_manifest(tmp_path, '        - {name: app, requirements_file: reqs.txt, python: "3.11"}\n'))
    expected = "holds" if kind == "kernel file" else "not a regular file"
    assert said.startswith(f"{tmp_path / 'm.yaml'}:9: ") and f"reqs.txt: {expected}" in said, said
    assert "PATH=" not in said, said


@pytest.mark.timeout(20)  # before: 2^26 reads, and as many copies of the pin
def test_each_file_is_read_once_and_their_number_is_bounded(tmp_path: Path) -> None:
    """26 files each naming the next twice are read once each (pip's duplicates say
    nothing more); a set whose files name more than MAX_FILES others is refused."""
    from assembler.manifest.requirements.projectfiles import MAX_FILES

    for i in range(26):
        (tmp_path / f"r{i}.txt").write_text(f"-r r{i + 1}.txt\n-r r{i + 1}.txt\n" if i < 25 else "pkg==1\n")
    ((reqs, _),) = _sets(_manifest(tmp_path, '        - {name: app, requirements_file: r0.txt, python: "3.11"}\n'))
    assert reqs == ["pkg==1"]
    for i in range(MAX_FILES + 1):
        (tmp_path / f"many{i}.txt").write_text(f"p{i}==1\n")
    (tmp_path / "all.txt").write_text("".join(f"-c many{i}.txt\n" for i in range(MAX_FILES + 1)))
    said = _refused(_manifest(tmp_path, '        - {name: app, requirements_file: all.txt, python: "3.11"}\n'))
    assert f"more than {MAX_FILES} files read for one set" in said, said


def test_a_vcs_url_of_this_machines_files_is_refused_as_a_file_url_is(tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text("pkg @ git+file:///home/me/src/pkg@main\n")
    said = _refused(_manifest(tmp_path, '        - {name: app, requirements_file: reqs.txt, python: "3.11"}\n'))
    assert "reqs.txt:1: 'pkg @ git+file:///home/me/src/pkg@main': a file on this machine" in said, said


SECRET = "s3cr3t-9f2c-reqfiles"  # a token: in no file written, in no message


def test_a_files_env_vars_are_expanded_as_pip_does_and_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``${NAME}`` (capitals, digits, ``_``) is the environment's, as pip expands it: an index's
    password stays out of the file, is used to fetch (the set holds it in memory), and is
    in nothing the lock records of the set (its key included: a password changed is the
    same set) nor in a message quoting the line (issue 66)."""
    from assembler.manifest.lock.file import Entry, Lock, read_lock, write_lock
    from assembler.manifest.lock.pyenvs import environments

    monkeypatch.setenv("RF_USER", "alice")
    monkeypatch.setenv("RF_TOKEN", SECRET)
    monkeypatch.delenv("RF_UNSET", raising=False)
    (tmp_path / "requirements.txt").write_text(
        "--index-url https://${RF_USER}:${RF_TOKEN}@pkgs.example/simple  # the team's index\n"
        "--extra-index-url https://${RF_UNSET}@other.example/simple\n"
        "app @ https://pkgs.example/app-1.0-py3-none-any.whl?${RF_USER}=${rf_token}\n"
    )
    manifest = _manifest(tmp_path, '        - {name: app, requirements_file: requirements.txt, python: "3.11"}\n')
    loaded = load_manifest(manifest)
    reqs, found = _sets(manifest)[0]
    assert found["index"] == f"https://alice:{SECRET}@pkgs.example/simple"  # what the fetch is given
    assert found["extra"] == ["https://${RF_UNSET}@other.example/simple"]  # unset: left as written, as pip leaves it
    assert reqs == ["app @ https://pkgs.example/app-1.0-py3-none-any.whl?alice=${rf_token}"]  # lowercase: never

    (env,) = environments(loaded.manifest, "linux/amd64")
    (use,) = env.uses()
    assert use.definition["indexes"] == ["https://pkgs.example/simple", "https://other.example/simple"]
    write_lock(tmp_path / "m.lock", Lock("m.yaml", sets={use.key: Entry(use.definition, "app==1.0\n")}))
    written = (tmp_path / "m.lock").read_text()
    assert SECRET not in written and "alice:" not in written, written
    assert read_lock(tmp_path / "m.lock").sets.keys() == {use.key}  # its key is its recorded definition's

    (tmp_path / "requirements.txt").write_text("https://${RF_USER}:${RF_TOKEN}@pkgs.example/app.whl\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(manifest)
    assert "'https://pkgs.example/app.whl': a path or bare URL" in e.value.message and SECRET not in str(e.value)
