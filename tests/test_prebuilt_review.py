"""Inputs issue 12's second review tried on ``pip:``/``url:`` layers and ``artifact:``
outputs: each refused with exit 2 and a clear message, or written whole or not at all."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from assembler.archive.layer import with_parents, write_layer
from assembler.archive.tar import TarEntry
from assembler.cache import Cache
from assembler.errors import InputError, UnsafePath
from assembler.manifest.load.manifest import load_manifest
from assembler.oci.reference import parse_ref
from assembler.pipeline.layers.prebuilt_layers import file_opener as _file_opener
from assembler.pipeline.runs import artifacts
from assembler.sbom.licenses import python_license
from tests.helpers import manifest_of, read_blob, run_cli_here, uncompressed
from tests.helpers import run_cli_here as run_cli
from tests.test_prebuilt import INICONFIG, SDIST_SHA, SDIST_URL, SIX, _blobs, _manifest
from tests.test_sbom import referrers, saved, validate_spdx

SIX_17 = "six==1.17.0 --hash=sha256:4721f391ed90541fddacab5acf947aa0d3dc7d27b2e1e8eda2be8970586c3274"


def _plan(tmp_path: Path, layers: str) -> tuple[int, str]:
    project = tmp_path / "p"
    project.mkdir(exist_ok=True)
    (project / "m.yaml").write_text(_manifest(layers))
    ran = run_cli_here(["plan", "m.yaml", "--cache", str(tmp_path / "cache")], cwd=project)
    assert "Traceback" not in ran.err, str(ran)
    return ran.code, ran.err


def test_markers_a_mode_on_an_unpacked_tar_and_one_wheel_twice_are_refused(tmp_path: Path) -> None:
    marker = SIX.replace(" --hash", " ; python_version >= '3' --hash")
    code, err = _plan(tmp_path, "    - pip: []\n")
    assert code == 2 and "m.yaml:7: image.layers.0.pip: lists no wheel" in err, err
    code, err = _plan(tmp_path, f'    - pip: ["{marker}"]\n')
    assert code == 2 and "m.yaml:7: image.layers.0.pip: " in err and "environment markers" in err, err
    extract = f"    - url: {SDIST_URL}\n      sha256: {SDIST_SHA}\n      to: /opt/x/\n      extract: true\n"
    extract += "      mode: '0600'\n"
    code, err = _plan(tmp_path, extract)
    assert code == 2 and "m.yaml:7: image.layers.0" in err and "with extract: true" in err, err
    twice = f"    - pip: ['{SIX}']\n    - pip: ['{INICONFIG}', '{SIX_17}']\n"
    code, err = _plan(tmp_path, twice)
    assert code == 2 and "m.yaml:8: image.layers.1.pip.1: six is installed into" in err, err
    assert "by image.layers.0 (line 7) too" in err, err
    # Two venvs may each have it; a requirements file's line continuation is read as pip reads it.
    continued = SIX_17.replace(" --", " \\ --")
    code, err = _plan(tmp_path, f"    - pip: ['{SIX}']\n    - pip: ['{continued}']\n      prefix: /opt/other\n")
    assert code == 0, err


@pytest.mark.integration  # PyPI
def test_a_pinned_sdist_is_refused_as_a_source_distribution(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "m.yaml").write_text(_manifest(f"    - pip: ['iniconfig==2.0.0 --hash=sha256:{SDIST_SHA}']\n"))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project)
    assert ran.code == 2 and "iniconfig-2.0.0.tar.gz is a source distribution" in ran.err, str(ran)
    assert "pin a wheel: iniconfig-2.0.0-py3-none-any.whl sha256:b6a85871" in ran.err, str(ran)
    assert _blobs(tmp_path / "cache") == set() and not (project / "out").exists()


_FILES = """\
name: files
bases: {devel: scratch, runtime: scratch}
compile:
  - name: pkg
    base: devel
    run: ['true']
    artifacts:
      wheel: {path: '/build/dist/*.whl', to: /wheels/}
      tool: {path: /build/bin/tool, to: /usr/local/bin/tool}
image: {base: runtime, layers: [{artifact: pkg}]}
"""


def test_artifact_folders_are_checked_first_and_written_whole(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(_FILES)
    loaded = load_manifest(tmp_path / "m.yaml")
    ref = parse_ref(f"artifact:{tmp_path}/d:pkg.wheel")
    with pytest.raises(InputError, match="write into the same folder"):
        artifacts.check(loaded, [ref, parse_ref(f"artifact:{tmp_path}/d/sub:pkg.tool")], force=False)
    with pytest.raises(InputError, match=r"m\.yaml is not a folder"):
        artifacts.check(loaded, [parse_ref(f"artifact:{tmp_path}/m.yaml/x:pkg.wheel")], force=False)

    # A layer that fails halfway (its second member would be written through a symlink):
    # the folder an earlier build wrote stays as it was, and nothing is left beside it.
    cache = Cache(tmp_path / "cache")
    good = tmp_path / "good.whl"
    good.write_text("wheel\n")
    members = [
        (TarEntry("wheels/a.whl", "file", size=6), _file_opener(good)),
        (TarEntry("wheels/b", "symlink", linkname="/etc"), None),
        (TarEntry("wheels/b/x", "file", size=6), _file_opener(good)),
    ]
    with cache.blob_writer() as w:
        bad = write_layer(with_parents(members, epoch=0), w, compression="gzip", epoch=0, presorted=True)
    with cache.blob_writer() as w:
        fine = write_layer(with_parents(members[:1], epoch=0), w, compression="gzip", epoch=0)
    artifacts.write(loaded, [ref], {"pkg.wheel": fine}, cache)
    before = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert before == [artifacts.MARKER, "a.whl"]
    with pytest.raises(UnsafePath):
        artifacts.write(loaded, [ref], {"pkg.wheel": bad}, cache)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == before
    assert json.loads((tmp_path / "d" / artifacts.MARKER).read_text())["diff_ids"]["pkg.wheel"] == fine.diff_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "d", "good.whl", "m.yaml"]


@pytest.mark.integration  # PyPI
def test_wheels_where_no_python_of_that_version_reads_them_are_warned_about(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "venv/lib/python3.12/site-packages").mkdir(parents=True)
    (project / "venv/lib/python3.12/site-packages/.keep").write_text("")
    venv = "    - copy: {from: venv, to: /opt/venv}\n"
    for python, warned in (("3.12", False), ("3.11", True)):
        (project / "m.yaml").write_text(_manifest(f"{venv}    - pip: ['{SIX}']\n      python: '{python}'\n"))
        ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", f"oci:out{python}:1"], cwd=project)
        assert ran.code == 0, str(ran)
        note = f"the image below has no /opt/venv/lib/python{python}, so no Python {python} reads"
        assert (note in ran.err) == warned, str(ran)


def test_a_tar_that_writes_through_its_own_symlink_is_refused(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    url, folder = http_folder
    with tarfile.open(folder / "links.tar", "w") as tf:
        link = tarfile.TarInfo("l")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(link)
        inside = tarfile.TarInfo("l/passwd")
        inside.size = 1
        tf.addfile(inside, io.BytesIO(b"x"))
    sha = hashlib.sha256((folder / "links.tar").read_bytes()).hexdigest()
    project = tmp_path / "p"
    project.mkdir()
    layer = f"    - url: {url}/links.tar\n      sha256: {sha}\n      to: /opt/e/\n      extract: true\n"
    (project / "m.yaml").write_text(_manifest(layer))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project)
    assert ran.code == 2 and "member 'opt/e/l/passwd' goes through the archive's own symlink" in ran.err, str(ran)
    assert not (project / "out").exists()


def test_a_split_name_that_matches_no_wheel_is_refused(tmp_path: Path) -> None:
    code, err = _plan(tmp_path, f"    - pip: ['{SIX}', '{INICONFIG}']\n      split: [sixx, 'ini*']\n")
    assert code == 2 and "m.yaml:7: image.layers.0: split: 'sixx' names no wheel of this layer" in err, err


def test_a_url_file_gets_its_owner_and_mode(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    url, folder = http_folder
    (folder / "run.sh").write_text("#!/bin/sh\n")
    sha = hashlib.sha256(b"#!/bin/sh\n").hexdigest()
    project = tmp_path / "p"
    project.mkdir()
    layer = f"    - url: {url}/run.sh\n      sha256: {sha}\n      to: /home/app/\n      mode: '0750'\n"
    layer += "      owner: 1000\n"
    (project / "m.yaml").write_text(_manifest(layer))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project)
    assert ran.code == 0, str(ran)
    blob = read_blob(project / "out", manifest_of(project / "out", "1")["layers"][0]["digest"])
    with tarfile.open(fileobj=io.BytesIO(uncompressed(blob))) as tf:
        info = tf.getmember("home/app/run.sh")
    assert (info.uid, info.gid, info.mode) == (1000, 1000, 0o750)
    unpacked = layer.replace("run.sh\n", "run.tar\n").replace("      mode: '0750'\n", "      extract: true\n")
    code, err = _plan(tmp_path, unpacked)
    assert code == 2 and "owner: is for one file" in err, err


def test_a_direct_reference_to_another_projects_wheel_is_refused(tmp_path: Path) -> None:
    url = "https://files.pythonhosted.org/packages/ef/a6/x/iniconfig-2.0.0-py3-none-any.whl"
    code, err = _plan(tmp_path, f"    - pip: ['six @ {url} {SIX.split()[1]}']\n")
    assert code == 2 and "six @ iniconfig-2.0.0-py3-none-any.whl: the wheel is not one of six" in err, err
    code, err = _plan(tmp_path, f"    - pip: ['IniConfig @ {url} {SIX.split()[1]}']\n")
    assert code == 0, err


def test_a_url_file_that_would_replace_a_folder_is_refused(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    url, folder = http_folder
    (folder / "tool").write_text("x\n")
    project = tmp_path / "p"
    (project / "tree/bin").mkdir(parents=True)
    (project / "tree/bin/other").write_text("kept\n")
    layers = "    - copy: {from: tree, to: /opt}\n"
    sha = hashlib.sha256(b"x\n").hexdigest()
    layers += f"    - url: {url}/tool\n      sha256: {sha}\n"
    (project / "m.yaml").write_text(_manifest(layers + "      to: /opt/bin\n"))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project)
    assert ran.code == 2 and "m.yaml:10: image.layers.1.to: /opt/bin is a folder in the image below" in ran.err, ran
    assert sha not in _blobs(tmp_path / "cache")  # refused before the download
    (project / "m.yaml").write_text(_manifest(layers + "      to: /opt/bin/\n"))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project)
    assert ran.code == 0, str(ran)


def test_an_artifact_folder_holding_the_manifest_or_the_cache_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(_FILES)
    loaded = load_manifest(tmp_path / "m.yaml")
    for folder, cache, what in ((tmp_path, None, "the manifest"), (tmp_path / "out", tmp_path / "out/c", "the cache")):
        with pytest.raises(InputError, match=f"holds {what}"):
            artifacts.check(loaded, [parse_ref(f"artifact:{folder}:pkg")], force=True, cache_dir=cache)
    assert (tmp_path / "m.yaml").is_file()


def test_license_classifiers_declare_a_license_only_when_each_is_mapped() -> None:
    docutils = [
        "License :: Public Domain",
        "License :: OSI Approved :: Python Software Foundation License",
        "License :: OSI Approved :: BSD License",
        "License :: OSI Approved :: GNU General Public License (GPL)",
    ]
    assert python_license("", docutils, "public domain, Python, 2-Clause BSD, GPL 3 (see COPYING.txt)") == ""
    assert python_license("", ["License :: OSI Approved", "License :: OSI Approved :: MIT License"], "") == "MIT"
    two = ["License :: OSI Approved :: MIT License", "License :: OSI Approved :: ISC License (ISCL)"]
    assert python_license("", two, "") == "ISC AND MIT"
    assert python_license("", ["License :: OSI Approved :: BSD License"], "BSD-3-Clause") == "BSD-3-Clause"


@pytest.mark.integration  # PyPI
def test_a_wheel_by_url_has_its_checksum_in_the_sbom(tmp_path: Path) -> None:
    url = (
        "https://files.pythonhosted.org/packages/d9/5a/e7c31adbe875f2abbb91bd84cf2dc52d792b5a01506781dbcf25c91daf11/"
        "six-1.16.0-py2.py3-none-any.whl"
    )
    project = tmp_path / "p"
    (project / "files").mkdir(parents=True)
    (project / "m.yaml").write_text(_manifest(f"    - pip: ['six @ {url} {SIX.split()[1]}']\n"))
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project)
    assert ran.code == 0, str(ran)
    sbom = saved(referrers("oci:out:1", "--save", "files", cwd=project), "application/spdx+json")
    validate_spdx(project / sbom)
    six = next(p for p in json.loads((project / sbom).read_text())["packages"] if p["name"] == "six")
    assert six["checksums"] == [{"algorithm": "SHA256", "checksumValue": SIX.rpartition("sha256:")[2]}]


def _damaged(kind: str) -> bytes:
    """A tar (or gzip of one) that no ``url: extract: true`` layer may take."""
    if kind == "longname":  # a GNU long name claiming 1 TiB: tarfile read it whole (MemoryError)
        long = tarfile.TarInfo("././@LongLink")
        long.type, long.size = tarfile.GNUTYPE_LONGNAME, 1 << 40
        return long.tobuf(tarfile.GNU_FORMAT) + bytes(10240)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("f")
        data = bytes(64 << 20) if kind == "bomb" else b"x" * 1000
        info.size = len(data)
        if kind in ("huge", "negative"):
            info.pax_headers = {"size": "999999999999999" if kind == "huge" else "-1"}
        if kind == "nan":
            info.pax_headers = {"mtime": "nan"}
        if kind == "sparse":  # a 2 GiB file of holes in a 10 KiB tar: GNU's PAX sparse format 1.0
            data = b"1\n0\n5\n".ljust(512, b"\x00") + b"xxxxx"
            info.size = len(data)
            info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": str(2 << 30)}
        tf.addfile(info, io.BytesIO(data))
        if kind == "checksum":
            tf.addfile(tarfile.TarInfo("g"), io.BytesIO(b""))
    raw = bytearray(buf.getvalue())
    if kind == "checksum":  # the second header's: tarfile took it as the end of the archive
        raw[1536 + 148 : 1536 + 156] = b"0000000\x00"
    if kind == "truncated":
        return bytes(raw[:1200])
    return gzip.compress(raw, compresslevel=1) if kind == "bomb" else bytes(raw)


@pytest.mark.integration  # seconds
@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("huge", "damaged tar archive after member 'f': a member's size points past the end of the archive"),
        ("negative", "damaged tar archive (member 'f' has size -1)"),
        ("truncated", "damaged tar archive after member 'f': unexpected end of data"),
        ("bomb", "decompression bomb"),
        ("longname", "a GNU long name or link of 1099511627776 bytes"),
        ("nan", "member 'f' has the modification time nan"),
        ("sparse", "sparse"),
        ("checksum", "damaged tar archive after member 'f': damaged header (bad checksum)"),
    ],
)
def test_a_damaged_or_bomb_url_tar_is_exit_2(
    tmp_path: Path, http_folder: tuple[str, Path], kind: str, needle: str
) -> None:
    url, folder = http_folder
    (folder / "x.tar").write_bytes(_damaged(kind))
    sha = hashlib.sha256((folder / "x.tar").read_bytes()).hexdigest()
    project = tmp_path / "p"
    project.mkdir()
    layer = f"    - url: {url}/x.tar\n      sha256: {sha}\n      to: /opt/x/\n      extract: true\n"
    (project / "m.yaml").write_text(_manifest(layer))
    env = {"ASSEMBLE_ROOTFS_MAX_BYTES": str(16 << 20)}  # as a rootfs: is bounded
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", "oci:out:1"], cwd=project, env=env)
    assert ran.code == 2 and needle in ran.err and "Traceback" not in ran.err, str(ran)
    assert not (project / "out").exists()


def test_deps_without_the_lock_is_refused_where_it_is_written(tmp_path: Path) -> None:
    """``deps: true`` takes the wheels' dependencies from the lock: without ``locked`` there
    is nothing to take them from."""
    code, err = _plan(tmp_path, f"    - pip: ['{SIX}']\n      deps: true\n")
    assert code == 2 and "m.yaml:7: image.layers.0: deps: true takes the dependencies from the lock" in err, err
