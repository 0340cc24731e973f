"""Many variants in one run: repeated --target, --all-targets, a manifest's matrix:, output
templates, and their errors (before anything is built).

The must-show (manifests/llamacpp.yaml's CPU backend as server, light and full in one run,
pushed as three tags to the real registry, its one compile step run once) is
test_manifest_llamacpp.py's module build: that module built the same stand-in again.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from tests.helpers import layout_index, run_cli, run_cli_here, small_project
from tests.plugins.registry import RunningRegistry

MATRIX = """\
name: m
params:
  flavor: plain
  greeting: hello
matrix:
  flavor: [plain, fancy]
bases: {b: scratch}
image:
  base: b
  layers:
    - copy: {from: ./a.txt, to: /a.txt}
  config:
    labels: {flavor: "${flavor}"}
default_target: one
targets:
  one:
    add_layers: [{copy: {from: ./b.txt, to: /one.txt}}]
  two:
    add_layers: [{copy: {from: ./b.txt, to: /two.txt}}]
"""


def _tags(layout: Path) -> set[str]:
    # The images' tags (their SBOMs and provenances are listed untagged beside them).
    entries = layout_index(layout)["manifests"]
    return {m["annotations"]["org.opencontainers.image.ref.name"] for m in entries if not m.get("artifactType")}


@pytest.mark.integration  # seconds
def test_matrix_times_targets_one_image_each(tmp_path: Path) -> None:
    project = small_project(tmp_path / "p", MATRIX)
    ran = run_cli(
        ["m.yaml", "--all-targets", "-o", "oci:out:${target}-${flavor}", "--cache", "cache", "--json"], cwd=project
    )
    assert ran.code == 0, str(ran)
    report = ran.json
    assert [(r["target"], r["matrix"], r["params"]["flavor"]) for r in report] == [
        ("one", {"flavor": "plain"}, "plain"),
        ("two", {"flavor": "plain"}, "plain"),
        ("one", {"flavor": "fancy"}, "fancy"),
        ("two", {"flavor": "fancy"}, "fancy"),
    ]
    assert _tags(project / "out") == {"one-plain", "two-plain", "one-fancy", "two-fancy"}
    for r in report:
        assert r["outputs"][0]["ref"].endswith(f"out:{r['target']}-{r['params']['flavor']}")
        assert r["variant"] == f"{r['target']} flavor={r['params']['flavor']}"
    assert len({r["digest"] for r in report}) == 4
    # --set of a matrix param narrows the matrix to that value; --target picks targets.
    ran = run_cli(
        [
            "plan",
            "m.yaml",
            "--set",
            "flavor=fancy",
            "--target",
            "two",
            "--target",
            "one",
            "-o",
            "oci:out:${variant}",
            "--cache",
            "cache",
            "--json",
        ],
        cwd=project,
    )
    assert ran.code == 0, str(ran)
    assert [(p["variant"], p["outputs"][0].rpartition(":")[2]) for p in ran.json] == [
        ("two flavor=fancy", "two-fancy"),
        ("one flavor=fancy", "one-fancy"),
    ]
    # One variant: the report is the one image's, as before.
    ran = run_cli_here(["plan", "m.yaml", "--set", "flavor=fancy", "--json"], cwd=project)
    assert ran.code == 0 and isinstance(ran.json, dict), str(ran)


def test_tag_template_names_each_variant_under_a_prefix(tmp_path: Path, registry: RunningRegistry) -> None:
    manifest = MATRIX.replace("matrix:", 'tag_template: "${name}-${flavor}:${target}"\nmatrix:')
    project = small_project(tmp_path / "p", manifest)
    ran = run_cli(
        [
            "m.yaml",
            "--target",
            "one",
            "--target",
            "two",
            "--set",
            "flavor=plain",
            "-o",
            f"docker://{registry.host}/ns/",
            "--tls-verify=false",
            "--cache",
            "cache",
            "--json",
            "--progress",
            "plain",
        ],
        cwd=project,
    )
    assert ran.code == 0, str(ran)
    refs = [r["outputs"][0]["ref"] for r in ran.json]
    assert refs == [f"docker://{registry.host}/ns/m-plain:one", f"docker://{registry.host}/ns/m-plain:two"]
    for r in ran.json:
        got = run_cli(["inspect", r["outputs"][0]["ref"], "--tls-verify=false", "--json"])
        assert got.code == 0 and got.json["digest"] == r["digest"], str(got)
    assert "variant one flavor=plain" in ran.err and "variant two flavor=plain" in ran.err


def _error(project: Path, *args: str) -> str:
    ran = run_cli_here(["plan", "m.yaml", "--cache", "cache", *args], cwd=project)
    assert ran.code == 2 and "Traceback" not in ran.err, str(ran)
    return ran.err


MATRIX_FLAVOR = "matrix:\n  flavor: [plain, fancy]\n"


@pytest.mark.integration  # seconds
@pytest.mark.parametrize(
    ("matrix", "args", "message"),
    [
        (
            MATRIX_FLAVOR,
            ("--all-targets", "-o", "oci:out:x"),
            "oci:out:x: variants 'one flavor=plain' and 'two flavor=plain' would both write it",
        ),
        (MATRIX_FLAVOR, ("--all-targets", "-o", "oci:out:${tgt}"), "-o oci:out:${tgt}: unknown variable ${tgt}"),
        (MATRIX_FLAVOR, ("--target", "three"), "m.yaml:15: targets: unknown target 'three'"),
        ("matrix: [plain, fancy]\n", (), "m.yaml:5: matrix: expected a mapping"),
        ("matrix:\n  flavor: []\n", (), "m.yaml:6: matrix.flavor: expected a non-empty list of values"),
        ("matrix:\n  flavour: [plain]\n", (), "m.yaml:6: matrix.flavour: unknown param 'flavour'"),
        ("matrix:\n  flavor: [plain, plain]\n", (), "m.yaml:6: matrix.flavor.1: 'plain' is listed twice"),
        ("matrix:\n  platform: [linux]\n", (), "m.yaml:6: matrix.platform.0: "),
        (
            "matrix:\n  platform: [linux/amd64, linux/arm64]\n",
            ("-o", "docker-archive:x.tar"),
            "images of several platforms under one name go to oci: or docker:// outputs only",
        ),
    ],
)
def test_bad_variants_are_input_errors_with_where(
    tmp_path: Path, matrix: str, args: tuple[str, ...], message: str
) -> None:
    project = small_project(tmp_path / "p", MATRIX.replace(MATRIX_FLAVOR, matrix))
    assert message in _error(project, *args)


def _wide(values: dict[str, int]) -> str:
    """A manifest whose matrix lists ``values[param]`` values for each param."""
    params = "".join(f"  {name}: v0\n" for name in values)
    matrix = "".join(f"  {name}: [{', '.join(f'v{i}' for i in range(n))}]\n" for name, n in values.items())
    return f"name: m\nparams:\n{params}matrix:\n{matrix}bases: {{b: scratch}}\nimage: {{base: b}}\n"


@pytest.mark.integration  # seconds
@pytest.mark.parametrize(
    ("values", "args", "message"),
    [
        ({"a": 40, "b": 40, "c": 40}, (), "m.yaml:6: matrix: 64000 variants (40 a x 40 b x 40 c): more than 256"),
        ({"a": 100_000}, (), "m.yaml:4: matrix: 100000 variants (100000 a): more than 256"),
        ({"a": 17, "b": 16}, (), "m.yaml:5: matrix: 272 variants (17 a x 16 b): more than 256"),
        ({"a": 200}, ("--platform", "linux/amd64", "--platform", "linux/arm64"), "400 variants (200 a x 2 platforms)"),
    ],
)
def test_a_matrix_of_too_many_variants_is_refused_at_once(
    tmp_path: Path, values: dict[str, int], args: tuple[str, ...], message: str
) -> None:
    project = small_project(tmp_path / "p", _wide(values))
    started = time.monotonic()
    ran = run_cli_here(["plan", "m.yaml", "--cache", "cache", *args], cwd=project)
    assert ran.code == 2 and "Traceback" not in ran.err and message in ran.err, str(ran)
    assert "--set" in ran.err  # the hint: how to narrow it
    assert time.monotonic() - started < 30
    # Narrowed by --set: planned once under the bound.
    left = math.prod(n for name, n in values.items() if name != "a") * max(1, args.count("--platform"))
    ran = run_cli_here(["plan", "m.yaml", "--cache", "cache", "--set", "a=v1", *args], cwd=project)
    assert ran.code == (0 if left <= 256 else 2), str(ran)


def test_clashing_manifest_outputs_are_refused_before_any_build(tmp_path: Path) -> None:
    project = small_project(tmp_path / "p", MATRIX + "outputs: [oci:out:same]\n")
    err = _error(project, "--all-targets", "--set", "flavor=plain")
    assert "would both write it" in err
    assert not (project / "out").exists() and not (project / "cache").exists()


# llama.cpp's three CPU images in one run: test_manifest_llamacpp.py, whose stand-in build it is.


PLATFORMS = """\
name: multi
matrix:
  platform: [linux/amd64, linux/arm64]
bases: {b: scratch}
image:
  base: b
  layers:
    - copy: {from: ./a.txt, to: /a.txt}
"""


def test_platform_variants_are_one_index(tmp_path: Path, registry: RunningRegistry) -> None:
    project = small_project(tmp_path / "p", PLATFORMS)
    remote = f"docker://{registry.host}/multi:1"
    ran = run_cli(
        ["m.yaml", "-o", "oci:out:1", "-o", remote, "--tls-verify=false", "--cache", "cache", "--json"], cwd=project
    )
    assert ran.code == 0, str(ran)
    report = ran.json
    assert [r["platform"] for r in report] == ["linux/amd64", "linux/arm64"]
    assert report[0]["digest"] != report[1]["digest"]
    # The layout's tag names an index of the two images, each with its platform; each
    # image's SBOM and provenance are listed beside it, their subject that image.
    index = layout_index(project / "out")
    images = [m for m in index["manifests"] if "artifactType" not in m]
    assert [m["mediaType"] for m in images] == ["application/vnd.oci.image.index.v1+json"]
    subjects = sorted(
        json.loads((project / "out/blobs" / m["digest"].replace(":", "/")).read_bytes())["subject"]["digest"]
        for m in index["manifests"]
        if "artifactType" in m
    )
    assert subjects == sorted([report[0]["digest"]] * 2 + [report[1]["digest"]] * 2)
    for r in report:
        got = run_cli(["referrers", f"docker://{registry.host}/multi@{r['digest']}", "--tls-verify=false", "--json"])
        assert got.code == 0, str(got)
        assert {x["digest"] for x in got.json["referrers"]} == {x["digest"] for x in r["referrers"]}, str(got)
    index["manifests"] = images
    inner = json.loads((project / "out/blobs" / index["manifests"][0]["digest"].replace(":", "/")).read_bytes())
    assert [(m["digest"], m["platform"]["architecture"]) for m in inner["manifests"]] == [
        (report[0]["digest"], "amd64"),
        (report[1]["digest"], "arm64"),
    ]
    # The registry's tag is the same index; a reader picks its platform from it.
    assert {w["digest"] for r in report for w in r["outputs"]} == {index["manifests"][0]["digest"]}
    for arch, r in (("amd64", report[0]), ("arm64", report[1])):
        got = run_cli(["inspect", remote, "--platform", f"linux/{arch}", "--tls-verify=false", "--json"])
        assert got.code == 0 and got.json["digest"] == r["digest"], str(got)
    # --platform narrows the matrix: one image, no index.
    ran = run_cli(["m.yaml", "--platform", "linux/arm64", "-o", "oci:one:1", "--cache", "cache", "--json"], cwd=project)
    assert ran.code == 0 and ran.json["digest"] == report[1]["digest"], str(ran)


def test_a_failure_names_its_variant(tmp_path: Path) -> None:
    project = small_project(tmp_path / "p", MATRIX)
    # Nothing listens on port 1: the first variant's push fails, and says which variant it was.
    ran = run_cli(
        [
            "m.yaml",
            "--all-targets",
            "--set",
            "flavor=fancy",
            "-o",
            "docker://127.0.0.1:1/m:${target}",
            "--tls-verify=false",
            "--retries",
            "1",
            "--cache",
            "cache",
        ],
        cwd=project,
    )
    assert ran.code == 1 and "Traceback" not in ran.err, str(ran)
    assert "error: variant one flavor=fancy: " in ran.err, str(ran)
