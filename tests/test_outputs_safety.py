"""Outputs never touch the user's files (issue 20, item 6): the SBOM and provenance files
next to a docker-archive, an untagged oci-archive or a sqsh file are written and removed
only where they are this tool's; an output path that is a symlink is never written
through (``--force`` replaces the link itself, else the build refuses). Copy-only builds in
this process: no outside tool.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from assembler.archive.layer import with_parents, write_layer
from assembler.archive.tar import TarEntry
from assembler.assemble import output_refs
from assembler.cache import Cache
from assembler.errors import InputError
from assembler.manifest.load.manifest import load_manifest
from assembler.pipeline.layers.prebuilt_layers import file_opener as _file_opener
from assembler.pipeline.options import Options
from assembler.pipeline.runs import artifacts
from assembler.pipeline.writers import writer_for
from tests.helpers import run_cli_here as run_cli

MANIFEST = """\
name: safety
epoch: 1700000000
bases: {nothing: scratch}
image:
  base: nothing
  layers:
    - copy: {from: ./app, to: /opt/app}
outputs: []
"""
SUFFIXES = (".spdx.json", ".provenance.intoto.json")
USERS = b'{"spdxVersion": "SPDX-2.3", "name": "the user\'s own"}\n'


def _project(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / "app" / "run.sh").write_text("#!/bin/sh\necho safe\n")
    (root / "m.yaml").write_text(MANIFEST)
    return root


def _build(root: Path, *args: str, code: int = 0) -> str:
    ran = run_cli(["m.yaml", "--cache", str(root / "cache"), *args], cwd=root)
    assert ran.code == code and "Traceback" not in ran.err, str(ran)
    return ran.err


def _sidecars(root: Path, name: str) -> list[Path]:
    return [root / f"{name}{s}" for s in SUFFIXES]


@pytest.mark.parametrize("ref", ["docker-archive:out.tar", "oci-archive:out.tar", "sqsh:out.tar"])
def test_a_users_file_where_a_sidecar_goes_is_never_overwritten(tmp_path: Path, ref: str) -> None:
    root = _project(tmp_path)
    for suffix in SUFFIXES:
        mine = root / f"out.tar{suffix}"
        mine.write_bytes(USERS)
        others = [s for s in SUFFIXES if s != suffix]
        for force in ((), ("--force",)):
            err = _build(root, "-o", ref, *force, code=2)
            assert f"{mine} exists and was not written by assemble" in err, err
            assert mine.read_bytes() == USERS and not (root / "out.tar").exists()  # refused before building
            assert not any((root / f"out.tar{s}").exists() for s in others)
        mine.unlink()


def test_a_symlink_where_a_sidecar_goes_is_not_ours(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "elsewhere.json").write_bytes(USERS)
    (root / "out.tar.spdx.json").symlink_to("elsewhere.json")
    err = _build(root, "-o", "docker-archive:out.tar", code=2)
    assert "out.tar.spdx.json exists and was not written by assemble" in err, err
    assert (root / "out.tar.spdx.json").is_symlink() and (root / "elsewhere.json").read_bytes() == USERS
    # Nor is a folder or a FIFO (read without waiting for a writer).
    (root / "out.tar.spdx.json").unlink()
    (root / "out.tar.spdx.json").mkdir()
    assert "out.tar.spdx.json is a folder" in _build(root, "-o", "docker-archive:out.tar", code=2)
    os.mkfifo(root / "gone.tar.provenance.intoto.json")
    err = _build(root, "-o", "docker-archive:gone.tar", code=2)
    assert "gone.tar.provenance.intoto.json exists and was not written by assemble" in err, err


@pytest.mark.parametrize("ref", ["docker-archive:out.tar", "oci-archive:out.tar"])
def test_no_sbom_removes_only_the_sidecars_this_tool_wrote(tmp_path: Path, ref: str) -> None:
    root = _project(tmp_path)
    _build(root, "-o", ref)
    ours = _sidecars(root, "out.tar")
    assert all(p.is_file() for p in ours)
    _build(root, "-o", ref)  # ours are replaced by the next build's
    # --no-sbom: ours describe an image the output no longer holds, so they go...
    _build(root, "-o", ref, "--no-sbom")
    assert not any(p.exists() for p in ours)
    # ...and the user's files of those names stay (nothing is written there).
    for p in ours:
        p.write_bytes(USERS)
    _build(root, "-o", ref, "--no-sbom")
    assert [p.read_bytes() for p in ours] == [USERS, USERS]


def test_an_sbom_of_another_tool_is_not_ours(tmp_path: Path) -> None:
    root = _project(tmp_path)
    other = {"spdxVersion": "SPDX-2.3", "documentNamespace": "https://example.com/spdx/x", "creationInfo": {}}
    statement = {"_type": "https://in-toto.io/Statement/v1", "predicate": {"runDetails": {"builder": {"id": "x"}}}}
    sbom, prov = _sidecars(root, "out.tar")
    sbom.write_text(json.dumps(other))
    err = _build(root, "-o", "docker-archive:out.tar", code=2)
    assert "out.tar.spdx.json exists and was not written by assemble" in err, err
    sbom.unlink()
    prov.write_text(json.dumps(statement))
    err = _build(root, "-o", "docker-archive:out.tar", code=2)
    assert "out.tar.provenance.intoto.json exists and was not written by assemble" in err, err


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_an_archive_path_that_is_a_symlink_is_replaced_as_a_link_or_refused(tmp_path: Path, transport: str) -> None:
    root = _project(tmp_path)
    _build(root, "-o", f"{transport}:real.tar")  # an archive of ours: replaceable without --force
    before = (root / "real.tar").read_bytes()
    (root / "link.tar").symlink_to("real.tar")
    err = _build(root, "-o", f"{transport}:link.tar", code=2)
    assert f"{transport}:{root / 'link.tar'}: is a symlink to real.tar" in err, err
    assert "--force replaces the link itself" in err, err
    _build(root, "-o", f"{transport}:link.tar", "--force")
    link = root / "link.tar"
    assert not link.is_symlink() and link.read_bytes() == before  # the same image, in place of the link
    assert (root / "real.tar").read_bytes() == before
    assert all(p.is_file() for p in _sidecars(root, "link.tar"))  # next to the path given, not the target
    # An absolute path is not resolved either; a dangling link is a link too.
    (root / "gone.tar").symlink_to("nothing-here.tar")
    err = _build(root, "-o", f"{transport}:{root / 'gone.tar'}", code=2)
    assert "is a symlink to nothing-here.tar" in err, err
    assert not (root / "nothing-here.tar").exists()


def test_an_oci_layout_path_that_is_a_symlink_is_replaced_as_a_link_or_refused(tmp_path: Path) -> None:
    root = _project(tmp_path)
    _build(root, "-o", "oci:real:one")
    index = (root / "real" / "index.json").read_bytes()
    (root / "lay").symlink_to("real")
    err = _build(root, "-o", "oci:lay:two", code=2)
    assert f"oci:{root / 'lay'}: is a symlink to real" in err, err
    _build(root, "-o", "oci:lay:two", "--force")
    assert not (root / "lay").is_symlink() and (root / "lay" / "oci-layout").is_file()
    assert (root / "real" / "index.json").read_bytes() == index


@pytest.mark.parametrize("ref", ["sif:link.sif", "sqsh:link.sif"])
def test_sif_and_sqsh_paths_that_are_symlinks_are_refused_without_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ref: str
) -> None:
    # A SIF (and a squashfs) of ours at the target: through the link, it would be replaced.
    head = b"hsqs" if ref.startswith("sqsh") else b"#!/usr/bin/env run-singularity\nSIF_MAGIC"
    (tmp_path / "real.sif").write_bytes(head + b"\0" * 64)
    (tmp_path / "link.sif").symlink_to("real.sif")
    loaded = load_manifest(_project(tmp_path / "p") / "m.yaml")
    monkeypatch.chdir(tmp_path)
    (out,) = output_refs(loaded, _options(ref, tmp_path))
    with pytest.raises(InputError, match=r"is a symlink to real\.sif"):
        writer_for(out).check(force=False)
    writer_for(out).check(force=True)
    # `assemble sif` and `assemble sqsh` refuse it before reading the image.
    command = ref.partition(":")[0]
    ran = run_cli([command, "oci:nowhere:x", "link.sif", "--cache", str(tmp_path / "cache")], cwd=tmp_path)
    assert ran.code == 2 and "is a symlink to real.sif" in ran.err, str(ran)


def _options(ref: str, cwd: Path) -> Options:
    """``-o ref`` (output_refs makes it absolute against the current folder: ``cwd``)."""
    return Options(cache_dir=cwd / "cache", epoch=0, outputs=(ref,))


_FILES = """\
name: files
bases: {devel: scratch, runtime: scratch}
compile:
  - name: pkg
    base: devel
    run: ['true']
    artifacts:
      wheel: {path: '/build/dist/*.whl', to: /wheels/}
image: {base: runtime, layers: [{artifact: pkg}]}
"""


def test_an_artifact_folder_that_is_a_symlink_is_replaced_as_a_link_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(_FILES)
    loaded = load_manifest(tmp_path / "m.yaml")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("the user's\n")
    (tmp_path / "mine" / artifacts.MARKER).write_text("{}")  # even a folder of ours, through a link
    (tmp_path / "link").symlink_to("mine")
    (ref,) = output_refs(loaded, _options("artifact:link:pkg.wheel", tmp_path))
    assert ref.path == str(tmp_path / "link")  # not resolved through the link
    with pytest.raises(InputError, match="is a symlink to mine"):
        artifacts.check(loaded, [ref], force=False)
    artifacts.check(loaded, [ref], force=True)
    cache = Cache(tmp_path / "cache")
    wheel = tmp_path / "a.whl"
    wheel.write_text("wheel\n")
    with cache.blob_writer() as w:
        members = [(TarEntry("wheels/a.whl", "file", size=6), _file_opener(wheel))]
        layer = write_layer(with_parents(members, epoch=0), w, compression="gzip", epoch=0)
    artifacts.write(loaded, [ref], {"pkg.wheel": layer}, cache)
    assert not (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in (tmp_path / "link").iterdir()) == [artifacts.MARKER, "a.whl"]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [artifacts.MARKER, "notes.txt"]
