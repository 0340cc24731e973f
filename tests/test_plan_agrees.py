"""Plan and build agree: what ``assemble plan --json`` predicts for each step (cached, or
will-run) is what ``assemble --json`` then does (cached, or built), with the same keys,
for a cold cache, no change, one source edit, a runtime base swap and a param change.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from tests.helpers import Ran, run_cli
from tests.plugins.demo import Demo, base_args

PREDICTS = {"cached": "cached", "will-run": "built"}


def _plan(demo: Demo, cache: Path, *extra: str, runtime: str = "runtime") -> Ran:
    args = [
        "plan",
        str(demo.manifest),
        "--cache",
        str(cache),
        "--json",
        *base_args(demo.bases, runtime),
        "-o",
        "oci:out/demo:latest",
        *extra,
    ]
    ran = run_cli(args, cwd=demo.project)
    assert ran.code == 0, str(ran)
    return ran


def _agree(plan: dict[str, Any], built: dict[str, Any]) -> dict[str, str]:
    """The build's step states, checked against the plan's; keys the plan knew are the build's."""
    predicted = {s["name"]: PREDICTS[s["state"]] for s in plan["steps"]}
    done = {s["name"]: s["state"] for s in built["steps"]}
    assert done == predicted
    for p, b in zip(plan["steps"], built["steps"], strict=True):
        assert p["name"] == b["name"] and p["depends_on"] == b["depends_on"]
        if p["key"] is not None:
            assert p["key"] == b["key"], p["name"]
    return done


def test_plan_and_build_agree(demo: Demo, tmp_path: Path) -> None:
    # Cold: the plan of an empty cache against the session's cold build into an empty cache.
    cold = _plan(demo, tmp_path / "empty-cache").json
    assert set(_agree(cold, demo.cold.json).values()) == {"built"}
    graph = {n["id"]: n for n in cold["graph"]}
    assert graph["step:kernels"]["depends_on"] == ["base:devel", "step:cuda"]
    for independent in ("cuda", "tokenizer", "launcher", "pyext"):
        assert graph[f"step:{independent}"]["depends_on"] == ["base:devel"]  # may run side by side
    assert graph["step:packages-1"]["depends_on"] == ["base:runtime"]  # the first layer: on the base only

    # No change.
    states = _agree(_plan(demo, demo.cache).json, demo.build().json)
    assert set(states.values()) == {"cached"}

    # One source edit (a new one each run, so never cached).
    main_cpp = demo.project / "examples/cpp-tokenizer/src/main.cpp"
    original = main_cpp.read_text()
    try:
        main_cpp.write_text(original + f"\n// {uuid.uuid4()}\n")
        states = _agree(_plan(demo, demo.cache).json, demo.build().json)
    finally:
        main_cpp.write_text(original)
    assert states["tokenizer"] == "built" and states["kernels"] == "cached"

    # Runtime base swap: no compile step runs, whatever the runtime step does.
    states = _agree(_plan(demo, demo.cache, runtime="runtime-alt").json, demo.build(runtime="runtime-alt").json)
    assert {states[s] for s in ("cuda", "kernels", "tokenizer", "launcher", "pyext")} == {"cached"}

    # A param change: the one step that uses it runs.
    jobs = str(3 + uuid.uuid4().int % 5)
    planned = _plan(demo, demo.cache, "--set", f"max_jobs={jobs}").json
    states = _agree(planned, demo.build("--set", f"max_jobs={jobs}").json)
    assert states["tokenizer"] == "built" and states["launcher"] == "cached"
