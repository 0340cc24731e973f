"""An environment with a date of its own (``resolve_as_of``) takes each release it names
exactly as of that release's own day (issue 49, item 5): a tool pinned beside the stack
(the installer's uv) is not refused as newer than the stack's release."""

from __future__ import annotations

from pathlib import Path

import pytest

from assembler.manifest.lock.file import read_lock
from tests.helpers import os_release_base, run_cli_here

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


APP = """\
name: app
{as_of}bases: {{b: "rootfs:base.tar"}}
image:
  base: b
  layers:
    - name: app
      run: ["pip install requests==2.32.3"]
      python_sets: [{{requirements: [requests==2.32.3], python: "3.11"}}]
"""


def _newest(project: str) -> str:
    import requests

    got = requests.get(f"https://pypi.org/pypi/{project}/json", timeout=30)
    got.raise_for_status()
    return str(got.json()["info"]["version"])


@pytest.mark.integration  # PyPI: uv's resolution, and what PyPI serves today
def test_a_users_own_set_locks_the_newest_versions_and_says_so(tmp_path: Path) -> None:
    """Issue 50, item 1: ``requests==2.32.3`` alone locked certifi 2024.2.2 and urllib3 2.2.1
    (as of requests' day); a lock now takes what the indexes serve today, and says so."""
    (tmp_path / "m.yaml").write_text(APP.format(as_of=""))
    os_release_base(tmp_path / "base.tar")  # a base the plan opens (nothing runs)
    ran = run_cli_here(["lock", "m.yaml"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    assert "(no resolve_as_of: the newest versions when it was locked)" in ran.out, ran.out
    pins = next(iter(read_lock(tmp_path / "m.lock").sets.values())).constraints()
    assert pins["certifi"] == f"certifi=={_newest('certifi')}", pins
    assert pins["urllib3"] == f"urllib3=={_newest('urllib3')}", pins
    planned = run_cli_here(["plan", "m.yaml", "--locked"], cwd=tmp_path)
    assert planned.code == 0 and "no resolve_as_of: the newest versions when it was locked" in planned.out, planned
    # the manifest that copies upstream's pins asks for their era
    (tmp_path / "m.yaml").write_text(APP.format(as_of="resolve_as_of: newest-pin\n"))
    ran = run_cli_here(["lock", "m.yaml"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    pins = next(iter(read_lock(tmp_path / "m.lock").sets.values())).constraints()
    assert pins["certifi"] == "certifi==2024.2.2" and pins["urllib3"] == "urllib3==2.2.1", pins
    assert "resolved as of 2024-05-29T23:59:59Z (resolve_as_of newest-pin" in ran.out, ran.out


def test_the_rule_said_is_the_one_the_date_came_from() -> None:
    """lock and plan --locked say why an environment has its date; --upgrade (a moment, not a
    day's end) sets a stated resolve_as_of aside, and says so."""
    from assembler.manifest.schema.pysets import as_of_rule

    day, moment = "2025-05-17T23:59:59Z", "2026-11-27T18:41:38Z"
    assert as_of_rule(None, moment) == "no resolve_as_of: the newest versions when it was locked"
    assert "an older assemble took its newest exact pin's day: assemble lock resolves it anew" in as_of_rule(None, day)
    assert as_of_rule({"date": "2025-05-17"}, day) == "resolve_as_of 2025-05-17"
    assert as_of_rule({"release": "vllm==0.8.5"}, day) == "resolve_as_of vllm==0.8.5: the day its index published it"
    assert as_of_rule({"newest_pin": True}, day).endswith("the day its newest exact pin was published")
    upgraded = as_of_rule({"date": "2025-05-17"}, moment)
    assert (
        upgraded == "resolve_as_of 2025-05-17, but lock --upgrade set it aside: the newest versions when it was locked"
    )
    assert "or it names no release exactly" in as_of_rule({"newest_pin": True}, moment)
