"""manifests/coverage.md cannot lie: every row it marks covered is checked against the plan.

The table lists, per manifest, what the seed documents (../shared/seeds/, the upstream
Dockerfiles they describe) say an image has, with the seed file and lines, and whether the
manifest has it. A covered row names its evidence as checks on `assemble plan --json` of
the manifest (and, for what a step runs, on the step the manifest resolves to):

    step:NAME            a step (compile or runtime) named NAME
    step:NAME~TEXT       ... whose resolved behaviour (run, env, packages, artifacts, sources,
                         inputs, mounts, caches, python sets; never a comment) contains TEXT
    env:NAME[=V|~T]      an Env entry of the image config
    label:NAME[=V|~T]    a label of the image config
    config:KEY=JSON      a field of the image config (Entrypoint, Cmd, User, WorkingDir...);
                         null: not set (or empty)
    base:NAME[~TEXT]     a base the plan uses (whose reference contains TEXT)
    source:NAME[~TEXT]   a source a step of the plan builds from (whose git URL and ref, or
                         url, contain TEXT); a source no step uses is not evidence
    port:N               an ExposedPorts entry N/tcp
    layer:TEXT           a layer whose description contains TEXT
    output:TEXT          an output containing TEXT
    refused              the plan itself is refused (exit 2)
    cli:FLAG             the tool has FLAG (the README or the docs, its CLI reference, list it)

`@TARGET` plans that target, `+K=V` adds `--set K=V` and `--platform=P` asks for a
platform; `%20` in TEXT or V stands for a space. Each manifest must cover at least 90% of
its counted rows (`n/a` rows are things the seeds describe that are not part of an image,
such as `docker run` flags), and the summary line under each heading must say the numbers
the table gives.

Only behaviour counts: a row's evidence is what the plan does (a step's command or env, a
layer, a label, the config, a base, a source a step builds, an output). A param is not evidence (an unused param,
or one a step ignores, is only a string): `param:` checks are refused in covered rows, and
`step:NAME~TEXT` looks only at the fields that act, never at comments or descriptions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from assembler.manifest.load.manifest import load_manifest
from tests.helpers import ROOT
from tests.test_manifests import plan_in_process

TABLE = ROOT / "manifests" / "coverage.md"
# What the user reads: the README and the documentation site's pages (the command-line
# reference among them, written from the parser).
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SEEDS = ROOT.parent / "shared" / "seeds"  # next to the worktrees; absent elsewhere
STATES = ("covered", "missing", "refused", "n/a")
THRESHOLD = 0.9
# The fields of a step or layer that act (a comment, a name or a description does nothing).
ACTS = {
    "run",
    "env",
    "packages",
    "artifacts",
    "sources",
    "inputs",
    "mounts",
    "cache",
    "shared_cache",
    "python_sets",
    "workdir",
    "user",
    "pip",
    "url",
    "to",
    "copy_",
    "artifact",
}


@dataclass
class Row:
    manifest: str
    number: int
    seed: str
    what: str
    state: str
    evidence: str
    line: int  # in coverage.md


@dataclass
class Section:
    manifest: str
    summary: str
    rows: list[Row] = field(default_factory=list)

    def counts(self) -> tuple[int, int]:
        counted = [r for r in self.rows if r.state != "n/a"]
        return sum(r.state == "covered" for r in counted), len(counted)


def read_table(path: Path = TABLE) -> list[Section]:
    """The sections of coverage.md: `## NAME` headings, a summary line, then table rows."""
    sections: list[Section] = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if heading := re.match(r"^## (\S+)", line):
            sections.append(Section(heading.group(1), ""))
        elif sections and line.startswith("Coverage:"):
            sections[-1].summary = line
        elif sections and re.match(r"^\| \d+ \|", line):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == 5, f"coverage.md:{i}: a row has 5 cells: {line}"
            number, seed, what, state, evidence = cells
            sections[-1].rows.append(Row(sections[-1].manifest, int(number), seed, what, state, evidence, i))
    return sections


def seed_lines(text: str) -> list[tuple[str, int, int]]:
    """``000:210, 234, 003:7-10, UPSTREAM`` -> [(seed, first, last)...]; a bare line range
    is in the seed named before it. Empty when the text is not such a list."""
    out: list[tuple[str, int, int]] = []
    seed = None
    for item in text.split(", "):
        match = re.fullmatch(r"(?:(00\d):)?(\d+)(?:-(\d+))?", item)
        if item == "UPSTREAM":
            continue
        if match is None or (match.group(1) or seed) is None:
            return []
        seed = match.group(1) or seed
        out.append((str(seed), int(match.group(2)), int(match.group(3) or match.group(2))))
    return out


def evidence_of(row: Row) -> tuple[str | None, dict[str, str], list[str]]:
    """``(target, sets, checks)`` from a row's evidence cell (its `code` spans); a
    ``--platform=P`` token is kept in ``sets`` under ``--platform``."""
    tokens = [t for span in re.findall(r"`([^`]*)`", row.evidence) for t in span.split()]
    target = next((t[1:] for t in tokens if t.startswith("@")), None)
    sets = dict(_value(t[1:]).split("=", 1) for t in tokens if t.startswith("+"))
    sets.update(t[2:].split("=", 1) for t in tokens if t.startswith("--platform="))
    checks = [t for t in tokens if not t.startswith(("@", "+", "--platform="))]
    return target, sets, checks


class Planner:
    """Plans (and loaded manifests) of a manifests folder, each made once."""

    def __init__(self, manifests: Path, cache: Path) -> None:
        self.manifests, self.cache = manifests, cache
        self.memo: dict[tuple[Any, ...], Any] = {}

    def plan(self, name: str, target: str | None, sets: dict[str, str]) -> tuple[int, dict[str, Any]]:
        key = ("plan", name, target, tuple(sorted(sets.items())))
        if key not in self.memo:
            args = [*(["--target", target] if target else [])]
            for k, v in sets.items():
                args += ["--platform", v] if k == "platform" else ["--set", f"{k}={v}"]
            ran = plan_in_process(self.manifests / f"{name}.yaml", *args, cache=self.cache)
            self.memo[key] = (ran.code, ran.json if ran.code == 0 else {})
        return self.memo[key]  # type: ignore[no-any-return]

    def base_refs(self, name: str, target: str | None, sets: dict[str, str]) -> dict[str, str]:
        """Base name -> its reference as the manifest resolves it."""
        params = {k: v for k, v in sets.items() if k != "platform"}
        man = load_manifest(self.manifests / f"{name}.yaml", target=target, sets=params).manifest
        return {k: v if isinstance(v, str) else v.model_dump_json() for k, v in man.bases.items()}

    def source_texts(self, name: str, target: str | None, sets: dict[str, str]) -> dict[str, str]:
        """Source name -> its resolved definition as JSON text (git and ref, url, or path)."""
        params = {k: v for k, v in sets.items() if k != "platform"}
        man = load_manifest(self.manifests / f"{name}.yaml", target=target, sets=params).manifest
        return {k: v.model_dump_json() for k, v in man.sources.items()}

    def step_texts(self, name: str, target: str | None, sets: dict[str, str]) -> dict[str, str]:
        """Step name -> its resolved definition as JSON text (compile steps and named layers)."""
        key = ("steps", name, target, tuple(sorted(sets.items())))
        if key not in self.memo:
            params = {k: v for k, v in sets.items() if k != "platform"}
            man = load_manifest(self.manifests / f"{name}.yaml", target=target, sets=params).manifest
            texts = {s.name: json.dumps(s.model_dump(mode="json", by_alias=True, include=ACTS)) for s in man.compile}
            for layer in man.image.layers:
                layer_name = getattr(layer, "name", None)
                if layer_name:
                    texts[layer_name] = json.dumps(layer.model_dump(mode="json", by_alias=True, include=ACTS))
            self.memo[key] = texts
        return self.memo[key]  # type: ignore[no-any-return]


def _value(text: str) -> str:
    return text.replace("%20", " ")


def _matches(actual: str | None, spec: str) -> bool:
    """``spec`` is '' (present), '=V' (equal) or '~T' (contains)."""
    if actual is None:
        return False
    if spec.startswith("="):
        return actual == _value(spec[1:])
    if spec.startswith("~"):
        return _value(spec[1:]) in actual
    return True


def failed_checks(row: Row, planner: Planner) -> list[str]:
    """The checks of a row that do not hold (empty: the row's evidence is true)."""
    target, sets, checks = evidence_of(row)
    if not checks:
        return ["no evidence"]
    code, plan = planner.plan(row.manifest, target, sets)
    if checks == ["refused"]:
        return [] if code == 2 else [f"refused: plan exited {code}"]
    if code != 0:
        return [f"plan exited {code}"]
    context = _Planned(planner, row.manifest, target, sets, plan)
    return [check for check in checks if not _holds(check, context)]


@dataclass(frozen=True)
class _Planned:
    """What a row's checks are checked against: its plan, and the planner for step, base and source texts."""

    planner: Planner
    manifest: str
    target: str | None
    sets: dict[str, str]
    plan: dict[str, Any]

    @property
    def steps(self) -> set[str]:
        return {s["name"] for s in self.plan["steps"]}

    def step_texts(self) -> dict[str, str]:
        return self.planner.step_texts(self.manifest, self.target, self.sets)


def _holds(check: str, p: _Planned) -> bool:
    """Whether one check (``KIND:NAME[=VALUE|~TEXT]``) holds for the planned row."""
    kind, _, rest = check.partition(":")
    name, spec = re.match(r"^([^=~]*)(.*)$", rest).groups()  # type: ignore[union-attr]
    config = p.plan["config"]
    if kind == "step":
        return name in p.steps and (not spec or _matches(p.step_texts().get(name), spec))
    if kind == "env":
        return _matches(dict(item.split("=", 1) for item in config.get("Env") or []).get(name), spec)
    if kind == "label":
        return _matches((config.get("Labels") or {}).get(name), spec)
    if kind == "config":
        want = json.loads(spec.removeprefix("="))
        return not config.get(name) if want is None else bool(config.get(name) == want)
    if kind == "base":
        refs = p.planner.base_refs(p.manifest, p.target, p.sets)
        return name in p.plan["bases"] and _matches(refs.get(name), spec)
    if kind == "source":
        texts = p.step_texts()
        used = any(name in json.loads(texts[s]).get("sources", []) for s in p.steps if s in texts)
        return used and _matches(p.planner.source_texts(p.manifest, p.target, p.sets).get(name), spec)
    return _holds_in_outputs(kind, name, rest, p)


def _holds_in_outputs(kind: str, name: str, rest: str, p: _Planned) -> bool:
    """The checks of ports, layers, outputs and the documented command lines."""
    if kind == "port":
        return f"{name}/tcp" in (p.plan["config"].get("ExposedPorts") or {})
    if kind == "layer":
        return any(_value(rest) in layer["what"] for layer in p.plan["layers"])
    if kind == "output":
        return any(_value(rest) in out for out in p.plan["outputs"])
    if kind == "cli":
        documented = "\n".join(path.read_text() for path in DOCUMENTS)
        return re.search(rf"(?<![\w-]){re.escape(rest)}(?![\w-])", documented) is not None
    return False


SECTIONS = read_table() if TABLE.exists() else []
ROWS = [r for s in SECTIONS for r in s.rows]


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory) -> Planner:
    return Planner(ROOT / "manifests", tmp_path_factory.mktemp("coverage-cache"))


def test_the_table_has_a_section_per_manifest() -> None:
    names = {s.manifest for s in SECTIONS}
    # The demo and the CUDA bases built from NVIDIA's wheels (cuda.yaml) are the project's own
    # images: no seed document describes them.
    assert names == {p.stem for p in (ROOT / "manifests").glob("*.yaml")} - {"demo", "cuda"}
    for section in SECTIONS:
        assert section.rows, section.manifest
        assert [r.number for r in section.rows] == list(range(1, len(section.rows) + 1)), section.manifest
        for row in section.rows:
            assert row.state in STATES, f"coverage.md:{row.line}: state {row.state!r}"
            assert seed_lines(row.seed) or row.seed == "UPSTREAM", f"coverage.md:{row.line}: seed {row.seed!r}"
            if row.state == "covered":
                checks = evidence_of(row)[2]
                assert checks, f"coverage.md:{row.line}: a covered row names its evidence"
                params = [c for c in checks if c.startswith("param:")]
                assert not params, (
                    f"coverage.md:{row.line}: {params}: a param is not evidence: name the step, env, "
                    "layer, label or config that uses it"
                )
            targets = re.findall(r"(?<![\w-])@[\w.-]+", row.evidence)
            assert len(targets) <= 1, f"coverage.md:{row.line}: one target per row, not {targets}"


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the seed documents are not next to this checkout")
def test_seed_references_point_into_the_seeds() -> None:
    lengths = {p.name[:3]: len(p.read_text().splitlines()) for p in SEEDS.glob("*.txt")}
    for row in ROWS:
        for seed, first, last in seed_lines(row.seed):
            assert seed in lengths and 1 <= first <= last <= lengths[seed], f"coverage.md:{row.line}: {row.seed}"


COUNTED = [r for r in ROWS if r.state != "n/a"]


@pytest.mark.parametrize("row", COUNTED, ids=[f"{r.manifest}-{r.number}" for r in COUNTED])
def test_covered_rows_hold_and_others_do_not(planner: Planner, row: Row) -> None:
    failed = failed_checks(row, planner)
    if row.state in ("covered", "refused"):
        assert not failed, f"coverage.md:{row.line}: {row.what}: {failed}"
    elif evidence_of(row)[2]:
        # a missing row that names a check: the check shows it is still missing
        assert failed, f"coverage.md:{row.line}: marked missing but its check holds: {row.what}"


@pytest.mark.parametrize("section", SECTIONS, ids=[s.manifest for s in SECTIONS])
def test_every_manifest_covers_at_least_90_percent(section: Section) -> None:
    covered, counted = section.counts()
    assert section.summary == f"Coverage: {covered}/{counted} rows ({100 * covered // counted}%).", section.summary
    assert covered / counted >= THRESHOLD, f"{section.manifest}: {covered}/{counted}"


SOURCES_MANIFEST = """\
name: m
bases:
  devel: {bootstrap: {suite: bookworm, variant: minbase}}
sources:
  used: {git: https://example.invalid/used.git, ref: v1}
  unused: {git: https://example.invalid/unused.git, ref: v2}
compile:
  - name: build
    base: devel
    sources: [used]
    run: [make -C /src/used]
    artifacts:
      bin: {path: /src/used/bin, to: /app/bin}
image:
  base: devel
  layers:
    - artifact: build.bin
outputs: ["oci:out/m:latest"]
"""


@pytest.mark.parametrize(
    ("evidence", "holds"),
    [
        ('`source:used~"ref":"v1"`', True),
        ('`source:used~"ref":"v9"`', False),  # another ref
        ('`source:unused~"ref":"v2"`', False),  # declared, but no step builds from it
        ("`source:absent`", False),
    ],
)
def test_a_source_is_evidence_only_where_a_step_builds_from_it(tmp_path: Path, evidence: str, holds: bool) -> None:
    (tmp_path / "m.yaml").write_text(SOURCES_MANIFEST)
    row = Row("m", 1, "UPSTREAM", "a source", "covered", evidence, 1)
    assert (failed_checks(row, Planner(tmp_path, tmp_path / "cache")) == []) is holds
