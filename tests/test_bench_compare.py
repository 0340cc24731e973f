"""scripts/bench-compare's own logic, without building anything: the manifest it builds is
one the schema accepts, the other ways' files build the same app, its ratios are the
baseline's over each way's, and when it runs Apptainer as nobody."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import sys
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from assembler.manifest.schema.model import json_schemas
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def bench() -> Any:
    name = "bench_compare"
    loader = importlib.machinery.SourceFileLoader(name, str(ROOT / "scripts" / "bench-compare"))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    try:
        loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


def test_the_manifest_is_valid_and_the_ways_build_the_same_app(bench: Any) -> None:
    manifest = YAML(typ="safe", pure=True).load(io.StringIO(bench.MANIFEST.replace("BASES", "/b")))
    jsonschema.validate(manifest, json_schemas()["manifest"])
    assert manifest["image"]["config"]["entrypoint"] == ["python3", "/opt/app/app/main.py"]
    for text in (bench.DOCKERFILE, bench.APPTAINER_DEF):
        assert "pip install --no-cache-dir --no-compile --target /opt/app/site" in text
        assert "install -y -qq --no-install-recommends python3" in text
        assert "PYTHONPATH=/opt/app/site" in text and "/opt/app/main.py" not in text
    assert '"python3", "/opt/app/app/main.py"' in bench.DOCKERFILE
    assert "exec python3 /opt/app/app/main.py" in bench.APPTAINER_DEF
    # the one-line edit finds its line in both files it changes
    assert bench.MAIN_PY.count(bench.EDIT[0]) == 1 and bench.BENTO_SERVICE.count(bench.EDIT[0]) == 1


def test_ratios_are_the_baselines_over_each_way(bench: Any, capsys: pytest.CaptureFixture[str]) -> None:
    base = bench.Result("base", cold=60.0, no_change=4.0, edit=8.0, size=100, digests=["a", "b"])
    base.sent = {"one line edited": 30}
    ours = bench.Result("ours", cold=30.0, no_change=0.5, edit=2.0, size=50, digests=["c", "c"])
    ours.sent = {"one line edited": 0}
    sides, ratios = bench.report([base, ours], "base")
    assert ratios == {
        "cold: base / ours": 2.0,
        "no change: base / ours": 8.0,
        "one line edited: base / ours": 4.0,
        "size: base / ours": 2.0,
    }  # nothing sent after the edit: no ratio (not an infinity in the JSON)
    assert sides["cold: ours"] == [30.0] and sides["one line edited: base"] == [8.0]
    out = capsys.readouterr().out
    assert "sent after the edit nothing" in out
    assert [line.split()[-1] for line in out.splitlines() if line.strip().startswith(("base ", "ours "))][:2] == [
        "no",
        "yes",
    ]  # the same digest twice: reproducible


@pytest.mark.parametrize(
    ("bounding", "full"),
    [("000001ffffffffff", True), ("000001fffeffffff", False), ("0000003fffffffff", True)],
)
def test_apptainer_runs_as_nobody_only_where_a_capability_is_missing(bench: Any, bounding: str, full: bool) -> None:
    last_cap = 40 if bounding.startswith("000001") else 37
    status = f"Name:\tx\nCapInh:\t0000000000000000\nCapBnd:\t{bounding}\n"
    assert bench.full_bounding_set(status, last_cap) is full
    assert bench.full_bounding_set("Name:\tx\n", 40) is False
