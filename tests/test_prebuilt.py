"""Prebuilt artifacts: ``pip:`` layers of pinned wheels from PyPI, ``url:`` layers of
pinned files, ``when:`` and vLLM from its released wheel (issue #12, point 1).

The wheels are small real ones from PyPI (six, pyflakes, iniconfig), so every download,
hash check and unpack is the real one; vLLM's own wheel (370 MB) is only planned.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.schema.pinned import parse_requirement
from assembler.pipeline import graph
from assembler.python.index import fits
from tests.helpers import PYTHON, ROOT, files_project, manifest_of, read_blob, run_cli, run_cli_here, uncompressed
from tests.test_sbom import referrers, saved, validate_spdx

SIX = "six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"
PYFLAKES = "pyflakes==3.2.0 --hash=sha256:84b5be138a2dfbb40689ca07e2152deb896a65c3a3e24c251c5c62489568074a"
INICONFIG = "iniconfig==2.0.0 --hash=sha256:b6a85871a79d2e3b22d2d1b94ac2824226a63c6b741c88f7ae975f18b6778374"
# Not a file of six 1.16.0 (one byte changed).
WRONG = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0255"
SDIST_URL = (
    "https://files.pythonhosted.org/packages/d7/4b/cbd8e699e64a6f16ca3a8220661b5f83792b3017d0f79807cb8708d33913/"
    "iniconfig-2.0.0.tar.gz"
)
SDIST_SHA = "2d91e135bf72d31a410b17c16da610a82cb55f6b0477d1a902134b24a455b8b3"
SITE = "opt/venv/lib/python3.12/site-packages"


def _manifest(layers: str) -> str:
    return f"name: prebuilt\nbases:\n  runtime: scratch\nimage:\n  base: runtime\n  layers:\n{layers}"


PIP_LAYERS = f"""\
    - pip:
        - {SIX}
        - {PYFLAKES}
        - {INICONFIG}
      prefix: /opt/venv
      python: "3.12"
      split: [pyflakes]
"""


def _layers(layout: Path) -> list[dict[str, bytes]]:
    """The files of each layer of ``layout:1`` (path -> bytes; folders as b"/")."""
    out = []
    for desc in manifest_of(layout, "1")["layers"]:
        files = {}
        with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, desc["digest"])))) as tf:
            for info in tf.getmembers():
                assert info.mtime == 0 and info.uid == 0 and info.uname == "", info.name
                data = tf.extractfile(info)
                files[info.name.rstrip("/")] = data.read() if data is not None else b"/"
        out.append(files)
    return out


def _build(project: Path, cache: Path, out: str) -> dict:
    ran = run_cli(["m.yaml", "--cache", str(cache), "--json", "-o", f"oci:{out}:1"], cwd=project)
    assert ran.code == 0, str(ran)
    return ran.json


@pytest.mark.integration  # PyPI
def test_pip_layers_from_pypi_are_deterministic_and_installable(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "m.yaml").write_text(_manifest(PIP_LAYERS))
    first = _build(project, tmp_path / "cache1", "out1")
    second = _build(project, tmp_path / "cache2", "out2")  # an empty cache: downloaded and made again
    assert first["digest"] == second["digest"]
    assert [(x["kind"], x["what"], x["origin"]) for x in first["layers"]] == [
        ("pip", "pip pyflakes==3.2.0", "built"),
        ("pip", "pip six==1.16.0 iniconfig==2.0.0", "built"),
    ]
    assert run_cli(["validate", f"oci:{project}/out1:1"]).code == 0

    pyflakes, rest = _layers(project / "out1")
    assert f"{SITE}/pyflakes/checker.py" in pyflakes and f"{SITE}/six.py" not in pyflakes
    assert {f"{SITE}/six.py", f"{SITE}/iniconfig/__init__.py"} <= set(rest)
    script = pyflakes["opt/venv/bin/pyflakes"].decode()
    assert script.startswith("#!/opt/venv/bin/python\n") and "from pyflakes.api import main" in script
    assert pyflakes[f"{SITE}/pyflakes-3.2.0.dist-info/INSTALLER"] == b"assemble\n"
    assert not any("__pycache__" in p for p in (*pyflakes, *rest))
    record = pyflakes[f"{SITE}/pyflakes-3.2.0.dist-info/RECORD"].decode().splitlines()
    assert record == [*sorted(record[:-1]), "pyflakes-3.2.0.dist-info/RECORD,,"]
    assert any(line.startswith("../../../bin/pyflakes,sha256=") for line in record)

    # The layers unpacked are an installed environment: importable, and its metadata readable.
    root = tmp_path / "root"
    for files in (pyflakes, rest):
        for path, data in files.items():
            target = root / path
            if data == b"/":
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import importlib.metadata as md, six, iniconfig, pyflakes;"
        "d = {x.metadata['Name']: x for x in md.distributions(path=[sys.argv[1]])};"
        "assert sorted(d) == ['iniconfig', 'pyflakes', 'six'], sorted(d);"
        "assert all(f.locate().exists() for f in d['pyflakes'].files), 'RECORD names a missing file';"
        "print(six.__version__)"
    )
    ran = subprocess.run([PYTHON, "-I", "-c", code, str(root / SITE)], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout.strip() == "1.16.0", ran.stderr

    # Cached: nothing downloaded or made, same digest; the plan knows the layers offline.
    again = _build(project, tmp_path / "cache1", "out3")
    assert again["digest"] == first["digest"]
    assert {x["origin"] for x in again["layers"]} == {"cached"}
    plan = run_cli_here(["plan", "m.yaml", "--cache", str(tmp_path / "cache1"), "--json"], cwd=project)
    assert plan.code == 0, str(plan)
    assert [x["digest"] for x in plan.json["layers"]] == [x["digest"] for x in first["layers"]]


@pytest.mark.integration  # PyPI
def test_a_pip_layer_can_place_the_wheel_files_themselves(tmp_path: Path) -> None:
    # files_to: the files as `pip download` leaves them (vllm.yaml's `wheel` target with
    # vllm_from=wheel), checked against their sha256 and not installed
    project = tmp_path / "p"
    project.mkdir()
    (project / "m.yaml").write_text(_manifest(f"    - pip: [{SIX}, {INICONFIG}]\n      files_to: /wheels\n"))
    first = _build(project, tmp_path / "cache1", "out1")
    assert _build(project, tmp_path / "cache2", "out2")["digest"] == first["digest"]
    (files,) = _layers(project / "out1")
    wheels = {p: data for p, data in files.items() if data != b"/"}
    assert sorted(wheels) == ["wheels/iniconfig-2.0.0-py3-none-any.whl", "wheels/six-1.16.0-py2.py3-none-any.whl"]
    six = wheels["wheels/six-1.16.0-py2.py3-none-any.whl"]
    assert hashlib.sha256(six).hexdigest() == SIX.rsplit(":", 1)[1]
    assert not any(p.startswith("opt/") for p in files)  # nothing installed
    # installed and placed are two layers, never one key
    (project / "m.yaml").write_text(_manifest(f"    - pip: [{SIX}, {INICONFIG}]\n      prefix: /wheels\n"))
    assert _build(project, tmp_path / "cache1", "out3")["digest"] != first["digest"]


@pytest.mark.integration  # PyPI
def test_a_pip_bump_leaves_the_other_split_layers_alone(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "m.yaml").write_text(_manifest(PIP_LAYERS))
    first = _build(project, tmp_path / "cache", "out")
    other = "six==1.17.0 --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"
    (project / "m.yaml").write_text(_manifest(PIP_LAYERS.replace(SIX, other)))
    bumped = _build(project, tmp_path / "cache", "out")
    # (origin is per pip: entry, "built" as one of its layers was)
    assert bumped["layers"][0]["digest"] == first["layers"][0]["digest"]
    assert bumped["layers"][1]["digest"] != first["layers"][1]["digest"]


def _blobs(cache: Path) -> set[str]:
    """The downloads and layers in ``cache`` (not the config blobs every build writes)."""
    folder = cache / "blobs" / "sha256"
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if not p.name.startswith(".") and not p.read_bytes().startswith(b"{")}


def _keys(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "keys").glob("*")) if (cache / "keys").is_dir() else []


@pytest.mark.integration  # PyPI
def test_a_wrong_hash_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    wrong = f"    - pip: ['six==1.16.0 --hash=sha256:{WRONG}']\n"
    (project / "m.yaml").write_text(_manifest(wrong))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project)
    assert ran.code == 2, str(ran)
    assert "six==1.16.0: no file on https://pypi.org/simple has the pinned sha256" in ran.err
    assert "six-1.16.0-py2.py3-none-any.whl sha256:8abb2f1d" in ran.err  # the hint lists the real files
    assert "Traceback" not in ran.err and not (project / "out").exists()
    assert _blobs(tmp_path / "cache") == set() and _keys(tmp_path / "cache") == []

    # A real file, but of another project: refused before anything is downloaded.
    swapped = f"    - pip: ['{INICONFIG.replace('iniconfig==2.0.0', 'six==1.16.0')}']\n"
    (project / "m.yaml").write_text(_manifest(swapped))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project)
    assert ran.code == 2, str(ran)
    assert "no file on" in ran.err  # six's page does not list iniconfig's file
    assert _blobs(tmp_path / "cache") == set() and _keys(tmp_path / "cache") == []


@pytest.mark.integration  # seconds
def test_bad_pip_and_url_layers_name_file_line_and_field(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    cases = {
        "    - pip: ['six>=1.16']\n": "m.yaml:7: image.layers.0.pip: ",
        "    - pip: ['six==1.16.0']\n": "has no --hash=sha256",
        f"    - pip: ['{SIX}']\n      python: '2.7'\n": "image.layers.0.python",
        f"    - pip: ['{SIX}']\n      when: {{nope: x}}\n": "m.yaml:8: image.layers.0.when.nope: unknown param 'nope'",
        "    - url: https://example.invalid/x\n      sha256: abc\n      to: /x\n": "image.layers.0.sha256",
        f"    - url: {SDIST_URL}\n      sha256: {SDIST_SHA}\n      to: relative\n": "image.layers.0.to",
    }
    for layers, expected in cases.items():
        (project / "m.yaml").write_text(_manifest(layers))
        ran = run_cli_here(["plan", "m.yaml", "--cache", str(tmp_path / "cache")], cwd=project)
        assert ran.code == 2 and expected in ran.err and "Traceback" not in ran.err, (layers, str(ran))


@pytest.mark.integration  # PyPI
def test_url_layers_good_and_bad_sha256(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    layers = f"""\
    - url: {SDIST_URL}
      sha256: {SDIST_SHA}
      to: /opt/src/
      mode: "0600"
    - url: {SDIST_URL}
      sha256: {SDIST_SHA}
      to: /opt/iniconfig
      extract: true
"""
    (project / "m.yaml").write_text(_manifest(layers))
    built = _build(project, tmp_path / "cache", "out")
    assert [x["kind"] for x in built["layers"]] == ["url", "url"]
    as_file, unpacked = _layers(project / "out")
    assert set(as_file) == {"opt", "opt/src", "opt/src/iniconfig-2.0.0.tar.gz"}
    assert len(as_file["opt/src/iniconfig-2.0.0.tar.gz"]) == 4646
    assert "opt/iniconfig/iniconfig-2.0.0/src/iniconfig/__init__.py" in unpacked
    assert run_cli(["validate", f"oci:{project}/out:1"]).code == 0

    blobs = _blobs(tmp_path / "cache2")
    (project / "m.yaml").write_text(_manifest(layers.replace(SDIST_SHA, WRONG, 1)))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache2"), "-o", "oci:bad:1"], cwd=project)
    assert ran.code == 2 and f"has sha256 {SDIST_SHA}, the manifest pins {WRONG}" in ran.err, str(ran)
    assert _blobs(tmp_path / "cache2") == blobs == set() and not (project / "bad").exists()
    assert not [k for k in _keys(tmp_path / "cache2") if k.startswith("url-layer-")]


@pytest.mark.integration  # seconds
def test_vllm_runtime_from_the_released_wheel_has_no_compile_step(tmp_path: Path) -> None:
    manifest = str(ROOT / "manifests" / "vllm.yaml")
    wheel = run_cli_here(["plan", manifest, "--set", "vllm_from=wheel", "--cache", str(tmp_path), "--json"])
    assert wheel.code == 0, str(wheel)
    plan = wheel.json
    assert [s["name"] for s in plan["steps"] if s["kind"] == "compile"] == []
    assert not any(n["id"].startswith("step:wheel") for n in plan["graph"])
    pip = [x for x in plan["layers"] if x["kind"] == "pip"]
    assert [x["what"] for x in pip] == ["pip vllm==0.11.1"]
    names = [x["step"] for x in plan["layers"]]
    assert names.index("python") < pip[0]["index"] < names.index("vllm-deps")  # into the venv, then its deps
    # the venv's layers, as Dynamo's: the nvidia libraries, torch, the vllm wheel, the rest
    venv = [names.index("nvidia"), names.index("torch"), pip[0]["index"], names.index("vllm-deps")]
    assert venv == sorted(venv) and names[pip[0]["index"]] is None, names

    # The step's wheel alone (-o artifact:): compiled from the tree of the release's tag; the
    # released file itself is the `wheel` target's (a pip: layer of its file, hashes from the lock).
    only = run_cli(
        [
            "plan",
            manifest,
            "--set",
            "vllm_from=wheel",
            "--cache",
            str(tmp_path),
            "--json",
            "-o",
            f"artifact:{tmp_path}/dist:wheel.wheel",
        ]
    )
    assert only.code == 0, str(only)
    assert [s["name"] for s in only.json["steps"] if s["kind"] == "compile"] == ["wheel"]
    for vllm_from, ref in (("wheel", "v0.11.1"), ("source", "439368496db48d8f992ba8c606a0c0b1eebbfa69")):
        loaded = load_manifest(Path(manifest), sets={"vllm_from": vllm_from})
        step = graph.step_of(loaded.manifest, "wheel")
        assert step.sources == ["vllm"] and '[ "source" = pypi ]' in step.run[1], step.run
        assert loaded.params["vllm_ref"] == ref

    source = run_cli_here(["plan", manifest, "--cache", str(tmp_path), "--json"])
    assert source.code == 0, str(source)
    compiled = {s["name"] for s in source.json["steps"] if s["kind"] == "compile"}
    # the add-on kernels too, and upstream's /vllm-workspace files (examples, benchmarks, collect_env.py)
    assert compiled == {"wheel", "gdrcopy", "build-deepgemm", "build-ep-kernels", "workspace"}
    assert not any(x["kind"] == "pip" for x in source.json["layers"])
    names = [x["step"] for x in source.json["layers"]]
    assert names[names.index("nvidia") :][:4] == ["nvidia", "torch", "vllm", "vllm-deps"], names


def test_pip_wheel_tags_pick_the_file_for_the_image() -> None:
    linux = "vllm-0.11.1-cp38-abi3-manylinux1_x86_64.whl"
    assert fits(linux, python="3.12", arch="x86_64")
    assert not fits(linux, python="3.12", arch="aarch64")
    assert fits("vllm-0.11.1-cp38-abi3-manylinux2014_aarch64.whl", python="3.12", arch="aarch64")
    assert fits("torch-2.9.0-cp312-cp312-manylinux_2_28_x86_64.whl", python="3.12", arch="x86_64")
    assert not fits("torch-2.9.0-cp311-cp311-manylinux_2_28_x86_64.whl", python="3.12", arch="x86_64")
    assert not fits("x-1-cp312-cp312-musllinux_1_2_x86_64.whl", python="3.12", arch="x86_64")
    assert fits("six-1.16.0-py2.py3-none-any.whl", python="3.10", arch="aarch64")
    assert fits("x-1-py311-none-any.whl", python="3.12", arch="x86_64")
    assert not fits("x-1-py313-none-any.whl", python="3.12", arch="x86_64")
    assert not fits("x-1-cp313-abi3-manylinux_2_39_aarch64.whl", python="3.12", arch="aarch64")
    assert not fits("x-1-cp313-cp313t-manylinux_2_17_x86_64.whl", python="3.13", arch="x86_64")  # free-threaded
    assert fits("x-1-cp312-cp312-linux_x86_64.whl", python="3.12", arch="x86_64")
    assert not fits("x-1.tar.gz", python="3.12", arch="x86_64")
    assert not fits("x-1-cp312.whl", python="3.12", arch="x86_64")


def test_requirements_are_read_as_pep_508_with_pips_hash_options() -> None:
    sha = SIX.rpartition("sha256:")[2]
    req = parse_requirement(f"Six_X[extra] == 1.16.0 \\ --hash = sha256:{sha} --hash=sha256:{sha}")
    assert (req.name, req.version, req.hashes, req.url) == ("six-x", "1.16.0", (sha,), "")
    for text, error in (
        (f"six==1.* --hash=sha256:{sha}", "is not pinned as name==version"),
        (f"six===1.16.0 --hash=sha256:{sha}", "is not pinned as name==version"),
        (f"six==1.16.0 --hash=md5:{sha}", "expected --hash=sha256:"),
        (f"six==1.16.0 --no-deps --hash=sha256:{sha}", "expected --hash=sha256:"),
        (f"six @ ftp://example.org/six-1.16.0-py3-none-any.whl --hash=sha256:{sha}", "a direct reference is"),
        ("six=1.16.0", "is not pinned as name==version (every wheel is pinned): Expected "),
    ):
        with pytest.raises(ValueError, match=re.escape(error)) as raised:
            parse_requirement(text)
        assert "\n" not in str(raised.value), str(raised.value)


def test_artifact_output_writes_the_files_and_no_image(debian_rootfs: Path, tmp_path: Path) -> None:
    project = files_project(tmp_path / "p", debian_rootfs)
    cache = ["--cache", str(tmp_path / "cache")]
    ran = run_cli(["m.yaml", *cache, "--json", "-o", "artifact:dist:pkg.wheel", "-o", "artifact:all:pkg"], cwd=project)
    assert ran.code == 0, str(ran)  # the image's run: [false] never ran: no image was made
    assert [s["name"] for s in ran.json["steps"]] == ["pkg"]
    assert sorted(p.name for p in (project / "dist").iterdir()) == [".assemble-artifacts", "pkg-1.0-py3-none-any.whl"]
    assert (project / "dist/pkg-1.0-py3-none-any.whl").read_text() == "wheel\n"
    tool = project / "all/tool/tool"
    assert tool.read_text() == "#!/bin/sh\necho hi\n" and tool.stat().st_mode & 0o111
    assert (project / "all/wheel/pkg-1.0-py3-none-any.whl").is_file()

    again = run_cli(["m.yaml", *cache, "--json", "-o", "artifact:dist:pkg.wheel"], cwd=project)
    assert again.code == 0 and again.json["steps"][0]["state"] == "cached", str(again)  # its own folder: replaced
    assert (
        again.json["digest"]
        == run_cli(["m.yaml", *cache, "--json", "-o", "artifact:dist:pkg.wheel"], cwd=project).json["digest"]
    )
    (project / "other").mkdir()
    (project / "other/keep.txt").write_text("not ours")
    refused = run_cli(["m.yaml", *cache, "-o", "artifact:other:pkg.wheel"], cwd=project)
    assert refused.code == 2 and "other files" in refused.err, str(refused)
    unknown = run_cli(["m.yaml", *cache, "-o", "artifact:x:pkg.nope"], cwd=project)
    assert unknown.code == 2 and "step pkg has no artifact 'nope'" in unknown.err, str(unknown)


@pytest.mark.integration  # PyPI
def test_a_wheel_by_url_is_the_same_layer_as_by_index(tmp_path: Path) -> None:
    url = (
        "https://files.pythonhosted.org/packages/d9/5a/e7c31adbe875f2abbb91bd84cf2dc52d792b5a01506781dbcf25c91daf11/"
        "six-1.16.0-py2.py3-none-any.whl"
    )
    project = tmp_path / "p"
    project.mkdir()
    (project / "m.yaml").write_text(_manifest(f"    - pip: ['six @ {url} {SIX.split()[1]}']\n"))
    by_url = _build(project, tmp_path / "cache1", "out1")
    (project / "m.yaml").write_text(_manifest(f"    - pip: ['{SIX}']\n"))
    by_index = _build(project, tmp_path / "cache2", "out2")
    assert by_url["layers"][0]["what"] == "pip six @ six-1.16.0-py2.py3-none-any.whl"
    assert by_url["layers"][0]["digest"] == by_index["layers"][0]["digest"]
    (project / "m.yaml").write_text(_manifest(f"    - pip: ['six @ {url} --hash=sha256:{WRONG}']\n"))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache3"), "-o", "oci:bad:1"], cwd=project)
    assert ran.code == 2 and f"the manifest pins {WRONG}" in ran.err, str(ran)
    assert _blobs(tmp_path / "cache3") == set()


@pytest.mark.integration  # PyPI
def test_sbom_and_provenance_name_the_pinned_wheels_and_files(tmp_path: Path) -> None:
    # The inputs of pip: and url: layers are known exactly (their sha256): the provenance
    # lists them as it lists sources, the SBOM gives each its checksum (issue 12's review).
    project = tmp_path / "p"
    project.mkdir()
    url = f"    - url: {SDIST_URL}\n      sha256: {SDIST_SHA}\n      to: /opt/src/\n"
    twice = url + url.replace("/opt/src/", "/opt/again/")
    (project / "m.yaml").write_text(_manifest(f'    - pip: ["{SIX}"]\n      python: "3.12"\n' + twice))
    _build(project, tmp_path / "cache", "out")
    (project / "files").mkdir()
    listing = referrers("oci:out:1", "--save", "files", cwd=project)
    sbom_file, prov_file = saved(listing, "application/spdx+json"), saved(listing, "application/vnd.in-toto+json")
    validate_spdx(project / sbom_file)
    six_sha = SIX.rpartition("sha256:")[2]
    deps = json.loads((project / prov_file).read_text())["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert {"name": "pip:six==1.16.0", "uri": "pkg:pypi/six@1.16.0", "digest": {"sha256": six_sha}} in deps
    assert [d for d in deps if d["name"].startswith("url:")] == [
        {"name": "url:iniconfig-2.0.0.tar.gz", "uri": SDIST_URL, "digest": {"sha256": SDIST_SHA}}
    ]
    packages = {p["name"]: p for p in json.loads((project / sbom_file).read_text())["packages"]}
    assert packages["six"]["checksums"] == [{"algorithm": "SHA256", "checksumValue": six_sha}]
    sdist = packages["iniconfig-2.0.0.tar.gz"]
    assert (sdist["downloadLocation"], sdist["checksums"][0]["checksumValue"]) == (SDIST_URL, SDIST_SHA)
