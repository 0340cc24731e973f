"""Where a project, its base or a layout lies on this host is in no output's bytes: the
same inputs give the same bytes wherever they are built and read from. Real builds (a
copy-only manifest: no container) written to every local format, SBOM and provenance
included, and ``assemble sif`` of a layout moved to another folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import run_cli, small_project

# The base is a layout of its own in the project, given by an absolute path as
# `--base NAME=oci:/srv/...` gives one.
MANIFEST = """\
name: placeless
bases: {b: 'oci:base-layout:x'}
image:
  base: b
  layers:
    - copy: {from: ./a.txt, to: /a.txt}
  config: {entrypoint: [/bin/tool]}
"""

# A folder name found nowhere else: any output that holds it holds a host path.
PLACE = "lies-here-6c1f0e"


OUTPUTS = (
    "oci:out/layout:x",
    "oci-archive:out/image.tar:x",
    "docker-archive:out/docker.tar",
    "sif:out/image.sif",
    "sqsh:out/image.sqsh",
)


@pytest.mark.integration  # tar2sqfs
def test_no_output_holds_the_host_path(tmp_path: Path) -> None:
    root = small_project(tmp_path / PLACE, MANIFEST)
    # The project's base tarball as a layout of its own, read through an absolute path.
    made = run_cli(
        ["m.yaml", "--cache", str(root / "cache"), "--base", f"b=rootfs:{root}/base.tar", "-o", "oci:base-layout:x"],
        cwd=root,
    )
    assert made.code == 0, str(made)
    args = ["m.yaml", "--cache", str(root / "cache"), "--base", f"b=oci:{root}/base-layout:x"]
    for ref in OUTPUTS:
        args += ["-o", ref]
    ran = run_cli([*args, "--json"], cwd=root)
    assert ran.code == 0, str(ran)
    written = sorted(p for p in (root / "out").rglob("*") if p.is_file())
    names = {p.name for p in written}
    # The SBOM and provenance are in each output or next to it (docker-archive, sqsh).
    assert {"image.sif", "image.sqsh", "image.tar", "docker.tar"} <= names, names
    assert any(n.endswith(".spdx.json") for n in names) and any("provenance" in n for n in names), names
    holding = [str(p.relative_to(root)) for p in written if PLACE.encode() in p.read_bytes()]
    assert holding == [], f"outputs that name the folder they were built in: {holding}"


@pytest.mark.integration  # tar2sqfs
def test_sif_of_a_moved_layout_is_the_same_bytes(tmp_path: Path) -> None:
    root = small_project(tmp_path / PLACE, MANIFEST.replace("'oci:base-layout:x'", "'rootfs:base.tar'"))
    ran = run_cli(["m.yaml", "--cache", str(root / "cache"), "-o", "oci:out/layout:x"], cwd=root)
    assert ran.code == 0, str(ran)
    first = run_cli(["sif", f"oci:{root}/out/layout:x", str(tmp_path / "first.sif")], cwd=tmp_path)
    assert first.code == 0, str(first)
    moved = tmp_path / "elsewhere" / "deeper"
    moved.mkdir(parents=True)
    shutil.move(root / "out" / "layout", moved / "layout")
    again = run_cli(["sif", f"oci:{moved}/layout:x", str(tmp_path / "again.sif")], cwd=tmp_path)
    assert again.code == 0, str(again)
    assert (tmp_path / "first.sif").read_bytes() == (tmp_path / "again.sif").read_bytes()
    assert PLACE.encode() not in (tmp_path / "first.sif").read_bytes()
