"""A direct reference on a host this machine cannot reach (a release wheel on GitHub) is
left unlocked with why, as an index with no stand-in is, and the rest of its environment
resolves (issue 49: Dynamo's `--set cuda_version=13.0` took vLLM's +cu130 wheel from GitHub
and recorded the whole environment as one that cannot be installed, which
--allow-unresolved could not pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from assembler.manifest.lock.file import read_lock
from tests.helpers import os_release_base, run_cli_here

WHEEL = "https://unreached.invalid/releases/pkg-1.0-py3-none-any.whl"
MANIFEST = f"""\
name: unreached
bases: {{b: "rootfs:base.tar"}}
image:
  base: b
  layers:
    - name: app
      run: ["pip install 'pkg @ {WHEEL}' 'idna==3.4'"]
      python_sets: [{{requirements: ["pkg @ {WHEEL}", idna==3.4], python: "3.11"}}]
"""


@pytest.mark.integration  # PyPI: uv's resolution of the rest
def test_a_wheel_on_an_unreached_host_is_unlocked_with_why(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(MANIFEST)
    os_release_base(tmp_path / "base.tar")  # a base the plan opens (nothing runs)
    ran = run_cli_here(["lock", "m.yaml"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    lock = read_lock(tmp_path / "m.lock")
    (entry,) = lock.sets.values()
    assert entry.constraints() == {"idna": "idna==3.4"}, entry.constraints()
    assert entry.unresolved is not None and f"pkg @ {WHEEL}: https://unreached.invalid/" in entry.unresolved
    assert "cannot be reached from here" in entry.unresolved
    (env,) = lock.environments.values()
    assert env.error is None
    ran = run_cli_here(["plan", "m.yaml", "--locked"], cwd=tmp_path)
    assert ran.code == 2 and "could not be locked" in ran.err, str(ran)
    ran = run_cli_here(["plan", "m.yaml", "--locked", "--allow-unresolved", "layers.app:default"], cwd=tmp_path)
    assert ran.code == 0, str(ran)


@pytest.mark.parametrize(
    "reason",
    [
        f"Failed to download `pkg @ {WHEEL}` Request failed after 3 retries Failed to fetch: {WHEEL} dns error",
        # uv's explanation is cut to its last lines (resolve._reason): CI's began at the cause
        f"Failed to fetch: {WHEEL} error sending request for url ({WHEEL}) client error (Connect) dns error",
    ],
)
def test_either_form_of_uvs_download_failure_names_the_url(reason: str) -> None:
    from types import SimpleNamespace

    from assembler.python.env import _Run

    run = _Run.__new__(_Run)
    run.dropped, run.unfetched = {}, {}
    member = SimpleNamespace(digest="d", pyset=SimpleNamespace(requirements=[f"pkg @ {WHEEL}", "idna==3.4"]))
    assert run.drop_unfetched([member], reason)  # type: ignore[list-item]
    assert run.dropped == {"d": [f"pkg @ {WHEEL}"]}
    assert run.unfetched[f"pkg @ {WHEEL}"].startswith("https://unreached.invalid/ (")
    assert not run.drop_unfetched([member], "Failed to fetch: https://pypi.org/simple/idna/ 503")
