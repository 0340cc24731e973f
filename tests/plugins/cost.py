"""Where the suite's time goes, measured by every run and kept: the order of the next run.

Each run adds up, per test module, the seconds its tests' set-up, call and tear-down took
on their worker (a module fixture's build counts for the module whose first test made it;
a session fixture's for the first module on that worker that asked for it), and writes them
into the test cache's record (``suite-cost.json``), with the run's wall time, its test count,
its slowest tests by name and what ``scripts/setup`` last measured of itself. Only modules whose every collected test
ran are written (a run cut short, or narrowed by ``-k``, ``--deselect`` or a test's id, changes nothing), and each lane
keeps its own figures: the full suite's, and the unit lane's (``-m unit``).

The next run sends modules to its workers longest first by that record (``order``): on a
fresh machine, whose test cache has none, by the copy committed beside this file
(``tests/suite-cost.json``, from a run on a fresh machine). A module neither names goes
first: a new module's cost is not known, and one found long would otherwise run alone at
the end. The run ends by printing its wall time, the tests it ran and its ten most
expensive modules.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_CACHE

RECORD = TEST_CACHE / "suite-cost.json"
COMMITTED = Path(__file__).resolve().parent.parent / "suite-cost.json"
SETUP_RECORD = TEST_CACHE / "setup-cost.json"  # written by scripts/setup --test
FORMAT = 1
LANES = {"": "full", "unit": "unit"}  # -m expression -> the lane it measures


SLOWEST = 40  # tests kept by name in the record, slowest first


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0].rsplit("/", 1)[-1]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def recorded(lane: str = "full") -> dict[str, float]:
    """Each module's worker-seconds in ``lane``: this machine's record over the committed one."""
    seconds: dict[str, float] = {}
    for path in (COMMITTED, RECORD):
        modules = _read(path).get("lanes", {}).get(lane, {}).get("modules", {})
        if isinstance(modules, dict):
            seconds.update({k: float(v) for k, v in modules.items() if isinstance(v, int | float)})
    return seconds


def order(modules: list[str], lane: str = "full") -> list[str]:
    """``modules``, longest first by the record; those it does not name first of all."""
    seconds = recorded(lane)
    return sorted(modules, key=lambda m: (m in seconds, -seconds.get(m, 0.0), m))


class Cost:
    """One run's measure (the controller's, under xdist: the workers' reports reach it)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = time.monotonic()
        self.seconds: dict[str, float] = defaultdict(float)
        self.per_test: dict[str, float] = defaultdict(float)
        self.collected: Counter[str] = Counter()
        self.ran: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()

    @property
    def whole(self) -> bool:
        """Whether the run took the whole suite (no path named but the configured ones)."""
        paths = {str(Path(p)) for p in self.config.getini("testpaths")}
        return all(str(Path(a)) in paths for a in self.config.args)

    @property
    def lane(self) -> str | None:
        narrowed = any("::" in str(a) for a in self.config.args) or self.config.getoption("deselect", None)
        if narrowed or self.config.option.keyword or self.config.getoption("lf", False):
            return None  # a part of some modules: no module's cost
        return LANES.get(self.config.option.markexpr or "")

    def collected_ids(self, ids: list[str]) -> None:
        if not self.collected:  # every worker collects the same tests: count them once
            self.collected.update(_module(i) for i in ids)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        self.collected_ids([item.nodeid for item in items])  # without xdist: the controller's own items

    @pytest.hookimpl(optionalhook=True)  # xdist's hook: none without it
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.collected_ids(list(ids))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        module = _module(report.nodeid)
        self.seconds[module] += report.duration
        self.per_test[report.nodeid] += report.duration
        if report.when == "call" or (report.when == "setup" and not report.passed):
            self.ran[module] += 1
            self.outcomes[report.outcome] += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        wall = time.monotonic() - self.started
        tests = sum(self.ran.values())
        write = terminalreporter.write_line
        prelude = os.environ.get("ASSEMBLE_TEST_PRELUDE_S", "")  # scripts/test's set-up and linters
        before = f" after {prelude} s of set-up and linters" if prelude.isdigit() else ""
        write(
            f"suite cost: {tests} tests run in {wall:.0f} s wall{before} ({dict(self.outcomes)}); by module (worker-s):"
        )
        top = sorted(self.seconds.items(), key=lambda kv: -kv[1])[:10]
        for module, seconds in top:
            write(f"  {seconds:8.1f}  {module}")
        with contextlib.suppress(OSError):
            self._keep(wall, tests)

    def _keep(self, wall: float, tests: int) -> None:
        lane = self.lane
        whole = {m: round(s, 1) for m, s in self.seconds.items() if self.ran[m] and self.ran[m] >= self.collected[m]}
        if lane is None or not whole:
            return
        data = _read(RECORD) or {"format": FORMAT, "lanes": {}}
        kept = data["lanes"].setdefault(lane, {})
        kept.setdefault("modules", {}).update(whole)
        if self.whole:  # a run of the whole lane: its figures, not those of a few modules
            kept["last"] = {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "wall_s": round(wall),
                "tests": tests,
                "modules_run": len(whole),
                "workers": self.config.getoption("numprocesses", None) or 0,
                "cpus": os.cpu_count(),
            }
            # where a module's seconds go, for whoever cuts them next: this run's slowest tests
            # (set-up, call and tear-down; a module fixture's build counts for its first test),
            # slowest first (a list: the record's keys are written sorted)
            slowest = sorted(self.per_test.items(), key=lambda kv: -kv[1])[:SLOWEST]
            kept["slowest"] = [[nodeid, round(seconds, 1)] for nodeid, seconds in slowest]
        setup = _read(SETUP_RECORD)
        if setup:
            data["setup"] = setup
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        tmp = RECORD.with_name(f".{RECORD.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, RECORD)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or the only process)
        config.pluginmanager.register(Cost(config), "suite-cost")
