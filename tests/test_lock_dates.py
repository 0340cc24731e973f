"""An environment with a date of its own (``resolve_as_of``) takes each release it names
exactly as of that release's own day (issue 49, item 5): a tool pinned beside the stack
(the installer's uv) is not refused as newer than the stack's release."""

from __future__ import annotations

from pathlib import Path

import pytest

from assembler.spec.lockfile import read_lock
from tests.helpers import run_cli_here

MANIFEST = """\
name: dates
resolve_as_of: {date: "2023-06-01"}
bases: {b: "rootfs:base.tar"}
image:
  base: b
  layers:
    - name: tools
      run: ["pip install uv==0.9.5 'idna<4'"]
      python_sets: [{requirements: [uv==0.9.5, "idna<4"], python: "3.11"}]
"""


@pytest.mark.integration  # PyPI: uv's resolution, and the releases' days
def test_an_exact_pin_newer_than_the_environments_date_is_taken_as_of_its_own_day(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    ran = run_cli_here(["lock", "m.yaml"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    pins = next(iter(read_lock(tmp_path / "m.lock").sets.values())).constraints()
    assert pins["uv"] == "uv==0.9.5", pins
    # what the environment leaves floating is still as of its date: idna 3.4 (2022-09-14)
    assert pins["idna"] == "idna==3.4", pins
