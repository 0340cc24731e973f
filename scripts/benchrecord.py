"""What a benchmark (``scripts/bench-*``) records with ``--json FILE``: its sides' times in
seconds (each run, the sides alternating as the script runs them), the ratios it prints,
its goal, and where it ran: the date, the machine (cores, memory, CPU model, kernel) and
how long ``sum(range(3*10**7))`` took there just before (how busy the machine was). The
documentation's benchmark page draws its charts from these files
(``docs/benchmarks/*.json``, by ``docs/hooks/benchcharts.py`` at build time).

A script loads this module by path (scripts/ is no package) and calls :func:`write`; one
benchmark built on another loads that one with :func:`load_script`."""

from __future__ import annotations

import datetime
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

FORMAT = 1


def load_script(name: str) -> ModuleType:
    """scripts/NAME (``bench-pull``) as the module ``bench_pull``, registered in
    ``sys.modules`` (its dataclasses look their module up there): a benchmark that builds on
    another's registry, images or nodes."""
    module_name = name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(module_name, str(Path(__file__).resolve().parent / name))
    spec = importlib.util.spec_from_loader(module_name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    loader.exec_module(module)
    return module


def load_probe() -> float:
    """Seconds ``sum(range(3*10**7))`` takes here now, the best of three."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(range(3 * 10**7))
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def machine() -> dict[str, Any]:
    """Where a benchmark runs."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = next(
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
    except (OSError, StopIteration, ValueError):
        memory = 0
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def record(
    bench: str,
    *,
    sides: Mapping[str, Sequence[float]],
    ratios: Mapping[str, float],
    goal: str = "",
    unit: str = "s",
    notes: str = "",
    probe: float | None = None,
) -> dict[str, Any]:
    """One run of ``bench`` as data (``probe``: the load probe taken before the runs)."""
    return {
        "format": FORMAT,
        "bench": bench,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "sum_range_seconds": probe if probe is not None else load_probe(),
        "unit": unit,
        "sides": {label: [round(t, 3) for t in times] for label, times in sides.items()},
        "ratios": {label: round(r, 3) for label, r in ratios.items()},
        "goal": goal,
        "notes": notes,
    }


def write(path: Path | None, data: Mapping[str, Any]) -> None:
    """Write ``data`` to ``path`` as JSON (None: nowhere)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"bench: wrote {path}", flush=True)
