"""The documents a user learns from (issue 52): a short README whose first manifest runs
as written, and a documentation site (``mkdocs.yml``, ``docs/``) that builds with
``--strict`` (a broken link or a page left out of the navigation fails), its reference
pages written from the schema and the parser."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, run_cli, run_cli_here

README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_LINES = 150


def _blocks(text: str, lang: str) -> list[str]:
    """The fenced code blocks of ``text`` in language ``lang``."""
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.M | re.S)


def first_manifest() -> str:
    """The README's first manifest (its first YAML block)."""
    return _blocks(README.read_text(), "yaml")[0]


def test_the_readme_stays_short_and_its_first_lines_set_up_a_machine() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= README_LINES, "the README is a doorway: move the detail into docs/"
    setup = _blocks(text, "sh")[0]
    assert setup.startswith("scripts/demo ") and "\nscripts/test " in setup


def test_the_first_manifest_is_the_same_in_the_readme_and_the_site() -> None:
    site = _blocks((DOCS / "getting-started.md").read_text(), "yaml")
    assert site and site[0] == first_manifest()


def test_the_first_manifest_plans_as_written(tmp_path: Path) -> None:
    """Saved in a clone's folder as the README says, it loads and plans (nothing is built:
    both bases are still to be bootstrapped, the step to run)."""
    (tmp_path / "hello.yaml").write_text(first_manifest())
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    ran = run_cli_here(["plan", "hello.yaml", "--cache", str(tmp_path / "cache"), "--json"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    assert [s["name"] for s in ran.json["steps"]] == ["hello"]
    assert ran.json["outputs"] == [f"oci:{tmp_path / 'out'}:hello"]


@pytest.mark.integration  # buildah: the step runs, the image runs
def test_the_first_manifest_builds_and_says_hello(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    """Built as written but for its two bases (the demo's, bootstrapped once for the
    suite from the same suite and variant), run as the README runs it, built again."""
    (tmp_path / "hello.yaml").write_text(first_manifest())
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    bases = ["--base", f"devel=oci:{demo_bases['devel']}", "--base", f"runtime=oci:{demo_bases['runtime']}"]
    cache = ["--cache", str(tmp_path / "cache")]
    built = run_cli(["hello.yaml", *bases, *cache, "--json"], cwd=tmp_path)
    assert built.code == 0, str(built)
    said = run_cli(["run", "oci:out:hello", *cache, "--", "world"], cwd=tmp_path)
    assert said.code == 0 and said.out.strip() == "hello from world", str(said)
    again = run_cli(["hello.yaml", *bases, *cache, "--json"], cwd=tmp_path)
    assert again.code == 0, str(again)
    assert again.json["digest"] == built.json["digest"]
    assert [s["state"] for s in again.json["steps"]] == ["cached"]


def test_the_site_builds_strict_with_every_page_in_its_navigation(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a link to a page or anchor that is not there, or a page
    the navigation leaves out, fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml")]
    ran = subprocess.run([*argv, "-d", str(tmp_path / "site")], capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    pages = {p.relative_to(DOCS).with_suffix("") for p in DOCS.rglob("*.md")}
    built = {p.relative_to(tmp_path / "site").parent for p in (tmp_path / "site").rglob("index.html")}
    assert {p.parent if p.name == "index" else p for p in pages} <= built  # every page, at its own URL
    assert (tmp_path / "site" / "search" / "search_index.json").is_file()  # a site people can search


def test_a_broken_link_fails_the_site(tmp_path: Path) -> None:
    """The strict build is no formality: one link to a page that is not there fails it."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# x\n\nSee [the guide](guides/nowhere.md).\n")
    config = (ROOT / "mkdocs.yml").read_text().split("\nnav:\n")[0]  # the site's settings, its own pages
    config = re.sub(r"^hooks:\n(  - .*\n)+", "", config, flags=re.M)  # the hook lives beside the real config
    (tmp_path / "mkdocs.yml").write_text(config + "\n")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    argv = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(tmp_path / "mkdocs.yml")]
    ran = subprocess.run([*argv, "-d", str(tmp_path / "site")], capture_output=True, text=True, env=env)
    assert ran.returncode != 0 and "guides/nowhere.md" in ran.stderr, ran.stderr[-2000:]


def _script_module(name: str) -> Any:
    loader = importlib.machinery.SourceFileLoader(name, str(ROOT / "scripts" / f"{name}.py"))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_a_recorded_benchmark_becomes_a_chart_with_where_it_ran(tmp_path: Path) -> None:
    """What ``scripts/bench-* --json`` writes (scripts/benchrecord.py) is what the site's
    hook draws (scripts/benchcharts.py): a bar per side at its best time, the ratios and
    goal, the date, the machine and the load probe's time."""
    record = _script_module("benchrecord").record(
        "bench-x", sides={"baseline": [2.0, 2.5], "ours": [1.0, 1.2]}, ratios={"baseline / ours": 2.0}, goal=">= 1"
    )
    figure = _script_module("benchcharts").chart(json.loads(json.dumps(record)))
    assert record["machine"]["cores"] and record["sum_range_seconds"] > 0 and record["date"].endswith("Z")
    assert figure.count("<rect ") == 2 and "2.00 s" in figure and "1.00 s" in figure
    assert "baseline / ours: <strong>2.00</strong> (goal: &gt;= 1)" in figure
    assert record["date"] in figure and "sum(range(3*10**7))</code> " + str(record["sum_range_seconds"]) in figure
