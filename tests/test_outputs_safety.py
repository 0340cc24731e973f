"""Outputs never touch the user's files (issue 20, item 6): the SBOM and provenance files
next to a docker-archive, an untagged oci-archive or a sqsh file are written and removed
only where they are this tool's. Copy-only builds in this process: no outside tool.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

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
