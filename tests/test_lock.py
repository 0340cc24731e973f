"""``assemble lock``: Python sets resolved by uv into MANIFEST.lock, and builds that use it.

A local package index on 127.0.0.1 (PEP 503 pages over plain HTTP) serves a small wheel in
two versions: a lock made while only 1.0 is published keeps a ``pip install`` inside a
``run:`` step on 1.0 after 2.0 appears, where the same step unlocked takes 2.0. The lock is
stale (``--locked``: exit 2) when a param changes a set; its content is part of the step
keys. Environments resolved as one whole, stand-ins and dates: test_lock_envs.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import manifest_of, read_blob, run_cli, run_cli_here, uncompressed
from tests.test_sources import git


def _wheel(folder: Path, version: str, project: str = "locktest", requires: str = "") -> Path:
    """A pure-Python wheel ``PROJECT-VERSION`` (a module saying its version)."""
    name = f"{project}-{version}-py3-none-any.whl"
    info = f"{project}-{version}.dist-info"
    needs = f"Requires-Dist: {requires}\n" if requires else ""
    files = {
        f"{project}.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n{needs}",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    path = folder / name
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), text)
    return path


def _publish(www: Path, versions: list[str], project: str = "locktest", requires: str = "") -> None:
    """The index's page for PROJECT, listing ``versions`` (PEP 503, with each file's sha256)."""
    files = www / "files"
    files.mkdir(exist_ok=True)
    links = []
    for version in versions:
        wheel = files / f"{project}-{version}-py3-none-any.whl"
        if not wheel.exists():
            _wheel(files, version, project, requires)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        links.append(f'<a href="../../files/{wheel.name}#sha256={sha}">{wheel.name}</a><br>')
    page = www / "simple" / project
    page.mkdir(parents=True, exist_ok=True)
    (page / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")


def _publish_app(www: Path) -> None:
    """lockapp 1.0 (needs locktest>=1.0), locktest 1.0 and 2.0 (each needs lockdep), lockdep 1.0."""
    _publish(www, ["1.0", "2.0"], requires="lockdep")
    _publish(www, ["1.0"], project="lockdep")
    _publish(www, ["1.0"], project="lockapp", requires="locktest>=1.0")


def _manifest(root: Path, index: str, base: str, *, spec: str = "locktest") -> Path:
    path = root / "m.yaml"
    path.write_text(
        f"""name: locktest
params: {{spec: "{spec}"}}
bases: {{b: "{base}"}}
image:
  base: b
  layers:
    - run: ["pip install --break-system-packages --no-cache-dir --index-url {index} '${{spec}}'"]
      name: app
      python_sets:
        - {{name: app, requirements: ["${{spec}}"], python: "3.11", index_url: "{index}"}}
"""
    )
    return path


def _pins(lock: Path) -> list[str]:
    from assembler.manifest.lock.file import read_lock

    return sorted(pin for e in read_lock(lock).sets.values() for pin in e.constraints().values())


@pytest.fixture()
def index(http_folder: tuple[str, Path]) -> tuple[str, Path]:
    url, www = http_folder
    _publish(www, ["1.0"])
    return f"{url}/simple", www


@pytest.mark.integration  # uv
def test_lock_pins_and_plan_locked_refuses_a_stale_or_missing_lock(tmp_path: Path, index: tuple[str, Path]) -> None:
    url, www = index
    manifest = _manifest(tmp_path, url, "scratch")
    cache = ["--cache", str(tmp_path / "cache")]
    missing = run_cli_here(["plan", str(manifest), "--locked", *cache])
    assert missing.code == 2 and "no lock" in missing.err and "assemble lock" in missing.err, missing

    done = run_cli(["lock", str(manifest), "--json"])
    assert done.code == 0, done
    assert _pins(tmp_path / "m.lock") == ["locktest==1.0"]
    text = (tmp_path / "m.lock").read_text()
    assert "    pins: |\n      locktest==1.0\n" in text and "\n  locktest==1.0:\n    - sha256:" in text  # hashes once

    plan = run_cli_here(["plan", str(manifest), "--locked", "--json", *cache])
    assert plan.code == 0, plan
    status = json.loads(plan.out)["lock"]
    assert status["state"] == "fresh" and status["sets"]["layers.app:app"]["state"] == "locked"

    stale = run_cli_here(["plan", str(manifest), "--locked", "--set", "spec=locktest>=1.0", *cache])
    assert stale.code == 2, stale
    assert "stale" in stale.err and "layers.app:app" in stale.err and "--set 'spec=locktest>=1.0'" in stale.err

    # Without --locked a changed set installs unlocked, as the plan says; a lock made again moves
    # nothing that was locked.
    _publish(www, ["1.0", "2.0"])
    changed = run_cli_here(["plan", str(manifest), "--set", "spec=locktest>=1.0", "--json", *cache])
    assert changed.code == 0, changed
    assert json.loads(changed.out)["lock"]["state"] == "stale"
    assert json.loads(changed.out)["lock"]["sets"]["layers.app:app"]["state"] == "not-locked"
    assert run_cli(["lock", str(manifest)]).code == 0
    assert _pins(tmp_path / "m.lock") == ["locktest==1.0"]
    assert run_cli(["lock", str(manifest), "--upgrade-package", "locktest"]).code == 0
    assert _pins(tmp_path / "m.lock") == ["locktest==2.0"]


@pytest.mark.integration  # uv
def test_the_lock_is_part_of_the_step_key(tmp_path: Path, index: tuple[str, Path]) -> None:
    url, www = index
    manifest = _manifest(tmp_path, url, "scratch")
    cache = ["--cache", str(tmp_path / "cache")]

    def key() -> str:
        plan = run_cli_here(["plan", str(manifest), "--json", *cache])
        assert plan.code == 0, plan
        return next(s["key"] for s in json.loads(plan.out)["steps"] if s["kind"] == "runtime")

    unlocked = key()
    assert run_cli(["lock", str(manifest)]).code == 0
    first = key()
    _publish(www, ["1.0", "2.0"])
    assert run_cli(["lock", str(manifest), "--upgrade"]).code == 0
    assert len({unlocked, first, key()}) == 3


@pytest.mark.integration  # uv
def test_a_hand_edited_lock_is_refused(tmp_path: Path, index: tuple[str, Path]) -> None:
    url, _ = index
    manifest = _manifest(tmp_path, url, "scratch")
    assert run_cli(["lock", str(manifest)]).code == 0
    lock = tmp_path / "m.lock"
    lock.write_text(lock.read_text().replace("- locktest\n", "- locktest==9\n"))
    plan = run_cli_here(["plan", str(manifest), "--cache", str(tmp_path / "cache")])
    assert plan.code == 2 and "edited by hand" in plan.err, plan


def installed(layout: Path, part: str = "locktest") -> set[str]:
    """The dist-infos whose name holds ``part`` that the image's layers hold."""
    found = set()
    for desc in manifest_of(layout, "latest")["layers"]:
        with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, desc["digest"])))) as tar:
            found |= {n.split("/")[-1] for n in tar.getnames() if n.endswith(".dist-info") and part in n}
    return found


def test_a_locked_pip_install_in_a_run_step_keeps_the_locked_version(
    tmp_path: Path, index: tuple[str, Path], demo_bases: dict[str, Path]
) -> None:
    url, www = index
    manifest = _manifest(tmp_path, url, f"oci:{demo_bases['devel']}:latest")
    assert run_cli(["lock", str(manifest)]).code == 0
    _publish(www, ["1.0", "2.0"])  # a newer version is published after the lock
    cache = ["--cache", str(tmp_path / "cache")]
    locked = run_cli([str(manifest), "--locked", "-o", f"oci:{tmp_path / 'locked'}:latest", *cache])
    assert locked.code == 0, locked
    assert installed(tmp_path / "locked") == {"locktest-1.0.dist-info"}
    # The same step without the lock takes what the index serves today.
    (tmp_path / "m.lock").unlink()
    unlocked = run_cli([str(manifest), "-o", f"oci:{tmp_path / 'unlocked'}:latest", *cache])
    assert unlocked.code == 0, unlocked
    assert installed(tmp_path / "unlocked") == {"locktest-2.0.dist-info"}


def test_what_a_step_installs_beyond_its_sets_fails_a_locked_build(
    tmp_path: Path, index: tuple[str, Path], demo_bases: dict[str, Path]
) -> None:
    """Why 9: a package a run: command installs that no python set declares went in unpinned
    under --locked, without a word. The step's new dist-infos are checked against its pins."""
    url, www = index
    _publish(www, ["1.0"], project="lockdep")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: undeclared
bases: {{b: "oci:{demo_bases["devel"]}:latest"}}
image:
  base: b
  layers:
    - run: ["pip install --break-system-packages --no-cache-dir --index-url {url} locktest lockdep"]
      name: app
      python_sets: [{{name: app, requirements: [locktest], python: "3.11", index_url: "{url}"}}]
"""
    )
    assert run_cli(["lock", str(manifest)]).code == 0
    cache = ["--cache", str(tmp_path / "cache")]
    locked = run_cli([str(manifest), "--locked", "-o", f"oci:{tmp_path / 'locked'}:latest", *cache])
    assert locked.code == 2, locked
    assert "step app installed lockdep 1.0, which none of its python sets declares" in locked.err, locked.err
    # Without --locked: a warning, the image is built (and a --locked plan of it is refused).
    plain = run_cli([str(manifest), "-o", f"oci:{tmp_path / 'plain'}:latest", *cache])
    assert plain.code == 0 and "step app installed lockdep 1.0" in plain.err, plain
    plan = run_cli_here(["plan", str(manifest), "--locked", *cache])
    assert plan.code == 2 and "lockdep" in plan.err, plan


@pytest.mark.integration  # uv
def test_a_locked_pip_layer_takes_its_hashes_from_the_lock(tmp_path: Path, index: tuple[str, Path]) -> None:
    url, www = index
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: wheels
params: {{version: "1.0"}}
bases: {{b: scratch}}
image:
  base: b
  layers:
    - pip: ["locktest==${{version}}"]
      locked: true
      python: "3.11"
      index: {url}
      name: app
"""
    )
    cache = ["--cache", str(tmp_path / "cache")]
    unlocked = run_cli_here(["plan", str(manifest), *cache])
    assert unlocked.code == 2 and "takes its hashes from the lock" in unlocked.err, unlocked
    assert run_cli(["lock", str(manifest)]).code == 0
    built = run_cli([str(manifest), "--locked", "-o", f"oci:{tmp_path / 'out'}:latest", *cache])
    assert built.code == 0, built
    assert installed(tmp_path / "out") == {"locktest-1.0.dist-info"}
    # A bump is the --set and a lock: the hashes follow.
    bumped = run_cli_here(["plan", str(manifest), "--set", "version=2.0", *cache])
    assert bumped.code == 2 and "has none for locktest==2.0" in bumped.err, bumped
    _publish(www, ["1.0", "2.0"])
    assert run_cli(["lock", str(manifest), "--set", "version=2.0"]).code == 0
    assert run_cli_here(["plan", str(manifest), "--set", "version=2.0", "--locked", *cache]).code == 0


def test_plan_names_each_base_and_the_hosts_the_build_reaches(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        """name: hosts
bases:
  devel: docker://nvidia/cuda:12.9.1-devel-ubuntu22.04
  runtime: docker://quay.io/org/runtime:1
sources:
  app: {git: https://github.com/org/app.git, ref: v1}
  unused: {git: https://gitlab.example/other.git, ref: v1}
compile:
  - name: build
    base: devel
    sources: [app]
    packages: [g++]
    run: ["add-apt-repository -y ppa:deadsnakes/ppa", "curl -fsSL https://example.org/x.tar.gz | tar xz"]
    python_sets:
      - {requirements: [torch], python: "3.12", extra_index_urls: ["https://download.pytorch.org/whl/cu129"]}
    artifacts: {bin: {path: /build/bin, to: /usr/local/bin/app}}
image:
  base: runtime
  layers:
    - artifact: build.bin
    - url: https://files.example.net/model.bin
      sha256: "0000000000000000000000000000000000000000000000000000000000000000"
      to: /models/model.bin
"""
    )
    plan = run_cli_here(["plan", str(manifest), "--json", "--cache", str(tmp_path / "cache")])
    assert plan.code == 0, plan
    data = json.loads(plan.out)
    assert data["base_refs"] == {
        "runtime": "docker://quay.io/org/runtime:1",
        "devel": "docker://nvidia/cuda:12.9.1-devel-ubuntu22.04",
    }
    assert data["reaches"] == {
        "(the apt mirror of bases.devel)": ["build"],  # known once the base is read
        "download.pytorch.org": ["build"],
        "example.org": ["build"],
        "files.example.net": ["layers.1"],
        "files.pythonhosted.org": ["build"],  # PyPI's files, beside its index
        "github.com": ["sources.app"],
        "ppa.launchpadcontent.net": ["build"],
        "pypi.org": ["build"],
        "quay.io": ["bases.runtime"],
        "registry-1.docker.io": ["bases.devel"],
    }
    text = run_cli_here(["plan", str(manifest), "--cache", str(tmp_path / "cache")])
    assert "base devel: docker://nvidia/cuda:12.9.1-devel-ubuntu22.04 (not pulled or made yet)" in text.out


@pytest.mark.integration  # uv
def test_what_the_base_provides_is_resolved_against_never_pinned(tmp_path: Path, index: tuple[str, Path]) -> None:
    """A base's own build (torch of a ROCm image) must stay: the lock resolves the set as if
    that version were installed and pins everything but it."""
    url, www = index
    _publish_app(www)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: provided
bases: {{b: scratch}}
image:
  base: b
  layers:
    - run: ["pip install lockapp"]
      name: app
      python_sets:
        - {{requirements: [lockapp], provided: ["locktest==1.0"], python: "3.11", index_url: "{url}"}}
"""
    )
    done = run_cli(["lock", str(manifest)])
    assert done.code == 0, done
    assert _pins(tmp_path / "m.lock") == ["lockapp==1.0"]  # neither locktest nor what it needs
    # Pinned, it would have been the newest, with its dependency: not the lock's to move.
    manifest.write_text(manifest.read_text().replace(', provided: ["locktest==1.0"]', ""))
    assert run_cli(["lock", str(manifest)]).code == 0
    assert _pins(tmp_path / "m.lock") == ["lockapp==1.0", "lockdep==1.0", "locktest==2.0"]


@pytest.mark.integration  # uv
def test_a_layer_is_resolved_against_the_exact_pins_of_the_layers_below(
    tmp_path: Path, index: tuple[str, Path]
) -> None:
    """torch==2.4.0 from another index in one layer, pip installs needing torch in the next:
    the next layer's lock must not pin PyPI's newest torch over it."""
    url, www = index
    _publish_app(www)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: below
bases: {{b: scratch}}
image:
  base: b
  layers:
    - run: ["pip install locktest==1.0"]
      name: first
      python_sets: [{{requirements: [locktest==1.0], python: "3.11", index_url: "{url}"}}]
    - run: ["pip install lockapp"]
      name: second
      python_sets: [{{requirements: [lockapp], python: "3.11", index_url: "{url}"}}]
"""
    )
    assert run_cli(["lock", str(manifest)]).code == 0
    from assembler.manifest.lock.file import read_lock

    lock = read_lock(tmp_path / "m.lock")
    second = lock.sets[lock.variants["below"]["layers.second:default"]]
    # one environment, one locktest: the first layer's, not the newest
    assert sorted(second.constraints().values()) == ["lockapp==1.0", "locktest==1.0"]


@pytest.mark.integration  # seconds
def test_a_git_ref_is_locked_to_its_commit_and_built_from_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "f").write_text("one\n")
    git(repo, "add", "f")
    git(repo, "commit", "-qm", "one")
    first = git(repo, "rev-parse", "HEAD")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"""name: gitpin
bases: {{b: scratch}}
sources: {{app: {{git: "file://{repo}", ref: main}}}}
compile:
  - name: build
    base: b
    sources: [app]
    run: ["true"]
    artifacts: {{f: {{path: /src/app/f, to: /f}}}}
image: {{base: b, layers: [{{artifact: build.f}}]}}
"""
    )
    assert run_cli(["lock", str(manifest)]).code == 0
    (repo / "f").write_text("two\n")
    git(repo, "commit", "-qam", "two")  # main moves after the lock
    plan = run_cli_here(["plan", str(manifest), "--locked", "--json", "--cache", str(tmp_path / "cache")])
    assert plan.code == 0, plan
    assert json.loads(plan.out)["lock"]["sets"]["sources.app"] == {
        "key": f"git file://{repo} main",
        "state": "locked",
        "value": first,
    }
    # What the build checks out: the locked commit, not main's head.
    from assembler.cache import Cache
    from assembler.compile.sources import git_source
    from assembler.manifest.load.manifest import load_manifest
    from assembler.manifest.lock.apply import Applying, apply_lock
    from assembler.manifest.lock.file import read_lock
    from assembler.proc import Runner

    loaded = load_manifest(manifest)
    how = Applying(tmp_path / "m.lock", locked=True, redo="")
    pinned, _ = apply_lock(loaded.manifest, read_lock(tmp_path / "m.lock"), platform="linux/amd64", how=how)
    spec = pinned.sources["app"]
    src = git_source("app", spec, cache=Cache(tmp_path / "cache"), runner=Runner(), base_dir=tmp_path)  # type: ignore[arg-type]
    assert (src.path / "f").read_text() == "one\n" and first in src.digest
    # A ref the lock does not hold is stale under --locked.
    manifest.write_text(manifest.read_text().replace("ref: main", f"ref: {first}"))
    stale = run_cli_here(["plan", str(manifest), "--locked", "--cache", str(tmp_path / "cache")])
    assert stale.code == 2 and "sources.app" in stale.err, stale


def test_a_base_tag_is_locked_to_its_digest(tmp_path: Path, registry: Any) -> None:
    def push(text: str) -> str:
        project = tmp_path / f"base-{text}"
        project.mkdir()
        (project / "f").write_text(text)
        (project / "m.yaml").write_text(
            "name: b\nbases: {s: scratch}\nimage:\n  base: s\n  layers:\n    - copy: {from: f, to: /f}\n"
        )
        ran = run_cli(
            [
                "m.yaml",
                "--tls-verify=false",
                "-o",
                f"docker://{registry.host}/base:1",
                "--json",
                "--cache",
                str(tmp_path / "cache"),
            ],
            cwd=project,
        )
        assert ran.code == 0, ran
        return str(json.loads(ran.out)["digest"])

    first = push("one")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(f"name: basepin\nbases: {{b: docker://{registry.host}/base:1}}\nimage: {{base: b}}\n")
    done = run_cli(["lock", str(manifest), "--tls-verify=false", "--json"])
    assert done.code == 0, done
    push("two")  # the tag moves after the lock
    plan = run_cli(
        ["plan", str(manifest), "--locked", "--json", "--tls-verify=false", "--cache", str(tmp_path / "cache2")]
    )
    assert plan.code == 0, plan
    data = json.loads(plan.out)
    assert data["lock"]["sets"]["bases.b"]["value"] == first
    assert data["base_refs"]["b"] == f"docker://{registry.host}/base:1@{first}"
    # Another tag is not in the lock.
    moved = run_cli(
        [
            "plan",
            str(manifest),
            "--locked",
            "--base",
            f"b=docker://{registry.host}/base:2",
            "--cache",
            str(tmp_path / "cache2"),
        ]
    )
    assert moved.code == 2 and "bases.b" in moved.err, moved

    # Issue 65: where a build with no --target makes the manifest's own image (it names no
    # default_target), a plain lock locks that image beside its targets: locking the targets
    # alone left `plan --locked` of it stale ("bases.b ... is not in it").
    both = tmp_path / "both.yaml"
    both.write_text(
        f"name: both\nbases: {{b: docker://{registry.host}/base:1, s: scratch}}\nimage: {{base: b}}\n"
        "targets:\n  empty: {base: s}\n"
    )
    assert run_cli(["lock", str(both), "--tls-verify=false"]).code == 0
    planned = run_cli_here(["plan", str(both), "--locked", "--tls-verify=false", "--cache", str(tmp_path / "cache3")])
    assert planned.code == 0, planned


def _release_requires(project: str, version: str) -> dict[str, str]:
    """name -> version of the ``Requires-Dist: name==version`` lines of a release's sdist
    PKG-INFO on PyPI: the release's own metadata, read without uv."""
    import requests

    page = requests.get(
        f"https://pypi.org/simple/{project}/", timeout=60, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    ).json()
    url = next(f["url"] for f in page["files"] if f["filename"] == f"{project}-{version}.tar.gz")
    with requests.get(url, stream=True, timeout=120) as r, tarfile.open(fileobj=r.raw, mode="r|gz") as tar:
        for member in tar:
            if member.name == f"{project}-{version}/PKG-INFO":
                text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
                break
    found = {}
    for line in text.splitlines():
        if line.startswith("Requires-Dist: ") and "==" in line and ";" not in line:
            name, _, pinned = line.removeprefix("Requires-Dist: ").partition("==")
            found[name.strip().lower()] = pinned.strip()
    return found


@pytest.mark.integration  # uv, PyPI
def test_a_vllm_release_bump_is_one_set_and_a_lock(tmp_path: Path) -> None:
    """manifests/vllm.yaml --set vllm_from=wheel: another release's torch and FlashInfer come
    from its metadata through the lock, with no other --set; its plan then holds."""
    from tests.helpers import ROOT

    lock = tmp_path / "vllm-0.12.0.lock"
    args = ["--set", "vllm_from=wheel", "--set", "vllm_version=0.12.0"]
    done = run_cli(["lock", str(ROOT / "manifests/vllm.yaml"), *args, "--target", "openai", "--lock", str(lock)])
    assert done.code == 0, done
    from assembler.manifest.lock.file import read_lock

    written = read_lock(lock)
    # the release's whole venv, resolved first (the layers above install parts of it)
    venv = written.sets[written.variants["openai vllm_from=wheel vllm_version=0.12.0"]["layers.nvidia:venv"]]
    pins = {k: v.split("==")[1] for k, v in venv.constraints().items()}
    release = _release_requires("vllm", "0.12.0")
    for name in ("torch", "torchvision", "flashinfer-python"):
        assert pins[name] == release[name], (name, pins[name], release[name])
    assert pins["vllm"] == "0.12.0" and release["flashinfer-python"] != "0.5.2"  # not 0.11.1's FlashInfer
    wheels = written.sets[written.variants["openai vllm_from=wheel vllm_version=0.12.0"]["layers.vllm:wheels"]]
    assert "vllm==0.12.0" in wheels.hashes() and wheels.hashes()["vllm==0.12.0"]
    plan = run_cli(
        [
            "plan",
            str(ROOT / "manifests/vllm.yaml"),
            *args,
            "--lock",
            str(lock),
            "--locked",
            # flashinfer.ai's index cannot be reached from here: its jit cache goes in unlocked
            "--allow-unresolved",
            "layers.flashinfer-jit-cache:jit-cache",
            "--json",
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    assert plan.code == 0, plan
    assert json.loads(plan.out)["lock"]["state"] == "fresh"


def test_a_base_index_is_locked_to_each_platforms_manifest(tmp_path: Path, registry: Any) -> None:
    """A tag naming an index (one manifest per platform) is pinned, for each platform the
    manifest builds, to that platform's manifest: the digest a --locked build pulls."""
    project = tmp_path / "base"
    project.mkdir()
    (project / "f").write_text("one")
    (project / "m.yaml").write_text(
        "name: b\nplatforms: [linux/amd64, linux/arm64]\nbases: {s: scratch}\n"
        "image:\n  base: s\n  layers:\n    - copy: {from: f, to: /f}\n"
    )
    cache = ["--cache", str(tmp_path / "cache")]
    platforms = ["--platform", "linux/amd64", "--platform", "linux/arm64"]
    pushed = run_cli(
        ["m.yaml", *platforms, "--tls-verify=false", "-o", f"docker://{registry.host}/multi:1", "--json", *cache],
        cwd=project,
    )
    assert pushed.code == 0, pushed
    digests = {item["digest"] for item in json.loads(pushed.out)}  # each platform's manifest
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"name: multipin\nplatforms: [linux/amd64, linux/arm64]\nbases: {{b: docker://{registry.host}/multi:1}}\n"
        "image: {base: b}\n"
    )
    done = run_cli(["lock", str(manifest), *platforms, "--tls-verify=false", "--json"])
    assert done.code == 0, done
    pinned = {d["variant"]: d["why"] for d in json.loads(done.out)["sets"] if d["set"] == "bases.b"}
    assert set(pinned.values()) == digests and len(digests) == 2, (pinned, digests)  # not the index's, twice


SECRET = "s3cr3t-4e1a-lock"  # an index's password: in no file written, in no message


def _hand_lock(manifest: Path, lock: Path, pins: str) -> None:
    """``lock`` as ``assemble lock`` writes it for a manifest whose one set is a locked
    ``pip:`` layer's wheels, pinned to ``pins`` (a unit test runs no uv)."""
    from assembler.manifest.lock.file import Entry, EnvEntry, Lock, write_lock
    from assembler.manifest.lock.pyenvs import environments
    from assembler.pipeline.lock.locking import lock_name
    from assembler.pipeline.variants import load_variants

    (variant,) = load_variants(manifest, sets={})
    (env,) = environments(variant.loaded.manifest, "linux/amd64")
    (use,) = env.uses()
    write_lock(
        lock,
        Lock(
            manifest.name,
            sets={use.key: Entry(use.definition, pins)},
            variants={lock_name(variant, {}): {use.where: use.key}},
            environments={env.key: EnvEntry(env.definition(), "2025-01-01T23:59:59Z")},
        ),
    )


def test_a_locked_file_is_fetched_with_its_indexs_password_and_the_image_names_it_nowhere(tmp_path: Path) -> None:
    """The lock records a ``pip:`` layer's index without its password; the build reads the
    manifest's index again and gives its password to the file it lists, a full URL on its
    host (a CDN-backed index's), as pip does; a ``url:`` layer's presigned URL is fetched
    as given. Neither the password nor the signature is in the lock, the image, its SBOM or
    provenance, the cache, or anything the build says (issue 66)."""
    from tests.pyindex import serving_index

    with serving_index(tmp_path / "index", auth=("alice", SECRET)) as index:
        index.add("au-app", "1.0")
        index.absolute = True
        wheel = index.releases["au-app"][0]
        host = index.url.removeprefix("http://").removesuffix("/simple")
        signed = f"http://alice:{SECRET}@{host}/files/{wheel['filename']}?X-Amz-Signature=sig-{SECRET}"
        manifest = tmp_path / "m.yaml"
        manifest.write_text(
            f"""name: authwheels
bases: {{b: scratch}}
image:
  base: b
  layers:
    - pip: ["au-app==1.0"]
      locked: true
      python: "3.11"
      index: "http://alice:{SECRET}@{host}/simple"
      name: app
    - url: "{signed}"
      sha256: {wheel["hashes"]["sha256"]}
      to: /opt/wheels/
"""
        )
        _hand_lock(manifest, tmp_path / "m.lock", f"au-app==1.0 \\\n    --hash=sha256:{wheel['hashes']['sha256']}\n")
        out, cache = tmp_path / "out", tmp_path / "cache"
        built = run_cli([str(manifest), "--locked", "-o", f"oci:{out}:latest", "--cache", str(cache), "-v"])
        assert built.code == 0, built
        assert index.authorized and all(index.authorized), "every page and file was asked with the password"
    assert installed(out, "au_app") == {"au_app-1.0.dist-info"}
    assert SECRET not in built.out + built.err, built
    recorded = f"http://{host}/files/{wheel['filename']}".encode()  # the url: layer's file, as the SBOM names it
    assert any(recorded in p.read_bytes() for p in (out / "blobs" / "sha256").iterdir())
    for path in [tmp_path / "m.lock", *out.rglob("*"), *cache.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert SECRET.encode() not in data and SECRET.encode() not in uncompressed(data), path


class _FakeUv:
    """A Runner standing in for uv (a unit test runs no outside program): what each ``uv pip
    compile`` was given (argv and environment), answering with ``pins`` as ``out.txt``, or
    failing with ``fails`` as its stderr."""

    def __init__(self, pins: str, fails: str = "") -> None:
        self.pins, self.fails = pins, fails
        self.given: list[tuple[list[str], dict[str, str]]] = []

    def run(self, argv: list[str], *, env: dict[str, str], cwd: Path, **_: Any) -> Any:
        from assembler.proc import Result

        self.given.append((list(argv), dict(env)))
        if self.fails:
            return Result(tuple(argv), 1, "", self.fails)
        (cwd / "out.txt").write_text(self.pins)
        return Result(tuple(argv), 0, "", "")


def _authenticated_project(tmp_path: Path, index: Any) -> Path:
    """A manifest whose set's index comes from a requirements file: the user in it, the
    password from the environment (``${TOKEN}``, as pip reads it)."""
    (tmp_path / "requirements.txt").write_text(
        f"--index-url http://alice:${{LOCK_TEST_TOKEN}}@{index.url.removeprefix('http://')}\nau-app\n"
    )
    path = tmp_path / "m.yaml"
    path.write_text(
        """name: authlock
bases: {b: scratch}
image:
  base: b
  layers:
    - run: ["pip install -r requirements.txt"]
      name: app
      python_sets: [{name: app, requirements_file: requirements.txt, python: "3.11"}]
"""
    )
    return path


def test_an_index_password_locks_and_is_written_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index that asks for a password (HTTP basic on 127.0.0.1), the password from the
    environment: uv is given it in its environment (never its arguments, which a process
    list and a debug line show), the lock records the index without it and is fresh for a
    build that has it again, and neither the lock nor what locking says names it; nor when
    uv fails naming the URL it was given (issue 66)."""
    import functools
    from typing import cast

    from assembler.pipeline.lock.locking import lock_variants, with_lock
    from assembler.pipeline.lock.lockreport import Asked
    from assembler.pipeline.variants import load_variants
    from assembler.proc import Runner
    from tests.pyindex import serving_index

    monkeypatch.setenv("LOCK_TEST_TOKEN", SECRET)
    with serving_index(tmp_path / "index", auth=("alice", SECRET)) as index:
        index.add("au-app", "1.0")
        manifest = _authenticated_project(tmp_path, index)
        variants = load_variants(manifest, sets={})
        sha = index.releases["au-app"][0]["hashes"]["sha256"]
        uv = _FakeUv(f"au-app==1.0 \\\n    --hash=sha256:{sha}\n    # via -r m0.in\n")
        lock = functools.partial(lock_variants, [(v, {}) for v in variants], path=tmp_path / "m.lock")
        done = lock(runner=cast(Runner, uv), asked=Asked())
        assert all(index.authorized), "the index was asked with its password"
    ((argv, env),) = uv.given
    assert not any(SECRET in a for a in argv), argv
    assert env["UV_INDEX_URL"] == f"{index.url.replace('http://', f'http://alice:{SECRET}@')}"
    written = (tmp_path / "m.lock").read_text()
    assert f"- {index.url}\n" in written and SECRET not in written and "alice" not in written, written
    assert [(d.state, d.why) for d in done] == [("resolved", "")]
    applied, warnings = with_lock(variants, path=None, locked=True, redo="assemble lock m.yaml")
    assert applied[0].loaded.lock is not None and applied[0].loaded.lock.state == "fresh" and not warnings

    # uv's reason names the URL it was given: the lock records it, and says it, without the password
    failing = _FakeUv("", fails=f"error: Failed to fetch: `{env['UV_INDEX_URL']}/au-app/`\n  Caused by: HTTP 500\n")
    done = lock(runner=cast(Runner, failing), asked=Asked(upgrade=True))
    written = (tmp_path / "m.lock").read_text()
    assert [d.state for d in done] == ["unresolvable"] and f"{index.url}/au-app/" in done[0].why, done
    assert SECRET not in written and all(SECRET not in d.why for d in done), written
