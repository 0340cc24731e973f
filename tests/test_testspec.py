"""``tests:`` without running a container: the model (errors with file, line and field),
where tests come from (manifest, target, recipe, step), the argv each starts as ``docker
run`` would, how a run is judged, and the test-result statement and where it goes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from assembler.compile import gpudriver
from assembler.compile.imagerun import docker_argv
from assembler.errors import InputError, ManifestError
from assembler.manifest.load.manifest import load_manifest
from assembler.manifest.schema.imagetests import from_definition
from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.pipeline.image.imagetests import judge, planned
from assembler.sbom import made_by_assemble
from assembler.sbom.testresult import Outcome, Suite, attestation, statement
from assembler.transports.sidecar import kind_of, sidecar_path

MANIFEST = """\
name: t
bases: {runtime: scratch, devel: scratch}
compile:
  - name: tool
    use: tool
    base: devel
  - name: helper
    base: devel
    run: ["true"]
    artifacts: {x: {path: /x, to: /x}}
    tests: [{name: never, command: "false"}]
image:
  base: runtime
  layers: [{artifact: tool.bin}]
  config: {entrypoint: [/app/serve, --port, "80"], cmd: [--model, tiny]}
tests:
  - name: default
  - name: version
    args: [--version]
    output: ['^serve \\d+']
  - name: shell
    command: echo "$HOME" && exit 3
    exit: 3
    timeout: 1m30s
    not_output: [Traceback]
  - name: gpu
    command: [nvidia-smi]
    gpu: true
    on: slurm
    resources: {gpus: 2}
targets:
  other:
    tests: [{name: only, command: [/bin/true]}]
  more:
    add_tests: [{name: extra, args: [--help]}]
"""
RECIPE = """\
description: a tool
params: {prefix: /app}
run: ["true"]
artifacts: {bin: {path: /build/serve, to: "${prefix}/serve"}}
tests:
  - {name: runs, command: ["${prefix}/serve", --check]}
"""


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    (tmp_path / "layers").mkdir()
    (tmp_path / "layers/tool.yaml").write_text(RECIPE)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    return tmp_path


def _argv(loaded: Any, config: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    return {t.name: t.argv for t in planned(loaded, config, test_on="local")}


CONFIG = {"Entrypoint": ["/app/serve", "--port", "80"], "Cmd": ["--model", "tiny"]}


def test_tests_start_the_image_as_docker_run_and_come_from_manifest_target_and_shipped_steps(project: Path) -> None:
    loaded = load_manifest(project / "m.yaml")
    argv = _argv(loaded, CONFIG)
    assert argv == {
        "default": ("/app/serve", "--port", "80", "--model", "tiny"),  # entrypoint + cmd
        "version": ("/app/serve", "--port", "80", "--version"),  # args replace the cmd
        "shell": ("/bin/sh", "-c", 'echo "$HOME" && exit 3'),  # a command replaces both
        "gpu": ("nvidia-smi",),
        # the recipe's test, its params substituted: the image ships tool's artifact, not helper's
        "tool.runs": ("/app/serve", "--check"),
    }
    tests = {t.name: t for t in planned(loaded, CONFIG, test_on="local")}
    assert tests["shell"].spec.exit == 3 and tests["shell"].seconds == 90.0
    assert tests["gpu"].where == "slurm" and tests["version"].where == "local"
    assert planned(loaded, CONFIG, test_on="slurm")[0].where == "slurm"  # --test-on: the tests that do not say
    assert tests["tool.runs"].origin == "step tool"
    assert tests["default"].to_json()["timeout"] == 120.0
    # a target replaces the manifest's tests (tests:) or adds to them (add_tests:)
    assert set(_argv(load_manifest(project / "m.yaml", target="other"), CONFIG)) == {"only", "tool.runs"}
    more = _argv(load_manifest(project / "m.yaml", target="more"), CONFIG)
    assert more["extra"] == ("/app/serve", "--port", "80", "--help") and "version" in more


def test_docker_run_semantics_and_an_image_with_nothing_to_run() -> None:
    assert docker_argv({"Cmd": ["sh"]}, command=None, args=None) == ["sh"]
    assert docker_argv({"Cmd": ["sh"]}, command=None, args=["ls", "/"]) == ["ls", "/"]  # no entrypoint: args run
    assert docker_argv({"Entrypoint": ["e"], "Cmd": ["c"]}, command=["x"], args=None) == ["x"]  # the cmd goes too
    assert docker_argv({"Entrypoint": ["e"], "Cmd": ["c"]}, command=["x"], args=["y"]) == ["x", "y"]
    assert docker_argv({"Entrypoint": ["e"], "Cmd": ["c"]}, command=None, args=[]) == ["e"]
    with pytest.raises(InputError, match="no entrypoint and no cmd"):
        docker_argv({}, command=None, args=None)


# (case, (old, new) text, the field, what the message says); the line is new text's (or tests:'s)
BAD = [
    ("bad regex", ("output: ['^serve \\d+']", "output: ['(unclosed']"), "tests.1.output", "not a regular expression"),
    ("bad exit", ("exit: 3", "exit: 300"), "tests.2.exit", "less than or equal to 255"),
    ("zero timeout", ("timeout: 1m30s", "timeout: 0s"), "tests.2.timeout", "longer than 0s"),
    ("bad timeout", ("timeout: 1m30s", "timeout: soon"), "tests.2.timeout", "duration"),
    ("empty command", ("command: [nvidia-smi]", "command: []"), "tests.3.command", "an empty command"),
    ("bad on", ("on: slurm", "on: cloud"), "tests.3.on", "'local' or 'slurm'"),
    ("unknown key", ("gpu: true", "gpus: true"), "tests.3.gpus", "unknown key"),
    ("twice", ("- name: default", "- name: gpu"), "tests", "two tests are named 'gpu'"),
    ("bad name", ("- name: default", "- name: 'a b'"), "tests.0.name", "names use letters"),
]


@pytest.mark.parametrize(("case", "edit", "field", "text"), BAD, ids=[b[0] for b in BAD])
def test_errors_name_file_line_and_field(
    project: Path, case: str, edit: tuple[str, str], field: str, text: str
) -> None:
    bad = MANIFEST.replace(*edit)
    assert bad != MANIFEST, case
    (project / "m.yaml").write_text(bad)
    with pytest.raises(ManifestError) as info:
        load_manifest(project / "m.yaml")
    err = info.value
    lines = bad.splitlines()
    line = 1 + (lines.index("tests:") if field == "tests" else next(i for i, t in enumerate(lines) if edit[1] in t))
    assert (err.file, err.line, err.field) == (str(project / "m.yaml"), line, field), str(err)
    assert text in str(err), str(err)


def test_a_target_adding_a_test_named_as_one_of_the_manifest_s_is_refused(project: Path) -> None:
    (project / "m.yaml").write_text(MANIFEST.replace("add_tests: [{name: extra,", "add_tests: [{name: version,"))
    loaded = load_manifest(project / "m.yaml", target="more")
    with pytest.raises(ManifestError, match="two tests are named 'version'"):
        planned(loaded, CONFIG, test_on="local")


def test_a_run_is_judged_by_its_exit_status_and_its_output(project: Path) -> None:
    tests = {t.name: t.spec for t in planned(load_manifest(project / "m.yaml"), CONFIG, test_on="local")}
    assert judge(tests["version"], 0, "serve 1.2\n") == ""
    assert judge(tests["version"], 1, "serve 1.2\n") == "exit 1, expected 0"
    assert judge(tests["version"], 0, "usage: serve\n") == "the output does not match '^serve \\\\d+'"
    assert judge(tests["version"], 0, "warning\nserve 2\n") == ""  # ^ is a line's start
    assert judge(tests["shell"], 3, "/root\n") == ""
    assert "matches 'Traceback'" in judge(tests["shell"], 3, "Traceback (most recent call last)\n")


def _outcomes() -> list[Outcome]:
    return [
        Outcome("version", "passed", ("/app/serve", "--version"), "local", False, 0),
        Outcome("gpu", "not-run", ("nvidia-smi",), "local", True, reason="no NVIDIA GPU on this machine"),
    ]


SUBJECT = Descriptor(mt.OCI_MANIFEST, "sha256:" + "ab" * 32, 123)
SUITE = Suite("t", "m.yaml", "sha256:" + "cd" * 32, "more", "0.1.0")


def test_the_statement_counts_a_test_not_run_as_neither_passed_nor_failed() -> None:
    doc = json.loads(statement(SUBJECT, SUITE, _outcomes()))
    assert doc["_type"] == "https://in-toto.io/Statement/v1"
    assert doc["predicateType"] == "https://in-toto.io/attestation/test-result/v0.1"
    assert doc["subject"] == [{"name": "t", "digest": {"sha256": "ab" * 32}}]
    predicate = doc["predicate"]
    assert predicate["result"] == "PASSED"
    assert (predicate["passedTests"], predicate["warnedTests"], predicate["failedTests"]) == (["version"], [], [])
    manifest, tester, version, gpu = predicate["configuration"]
    assert manifest == {"name": "m.yaml", "digest": {"sha256": "cd" * 32}, "annotations": {"target": "more"}}
    assert tester["uri"] == "https://assemble.invalid/builder/assemble"
    assert version["annotations"] == {
        "command": ["/app/serve", "--version"],
        "on": "local",
        "gpu": False,
        "status": "passed",
        "exit": 0,
    }
    assert gpu["annotations"]["status"] == "not-run" and "no NVIDIA GPU" in gpu["annotations"]["reason"]
    failed = [*_outcomes(), Outcome("help", "failed", ("x",), "slurm", False, 2, "exit 2, expected 0")]
    assert json.loads(statement(SUBJECT, SUITE, failed))["predicate"]["result"] == "FAILED"
    # Deterministic: the same outcomes, the same bytes.
    assert statement(SUBJECT, SUITE, _outcomes()) == statement(SUBJECT, SUITE, _outcomes())
    # A test that passed under an emulator is warned, never passed: the run is WARNED.
    emulated = [*_outcomes(), Outcome("arm", "emulated", ("uname",), "local", False, 0, "passed under qemu-user")]
    warned = json.loads(statement(SUBJECT, SUITE, emulated))["predicate"]
    assert (warned["result"], warned["passedTests"], warned["warnedTests"]) == ("WARNED", ["version"], ["arm"])
    assert json.loads(statement(SUBJECT, SUITE, [*emulated, *failed[-1:]]))["predicate"]["result"] == "FAILED"


def test_the_attestation_is_a_referrer_with_a_sidecar_of_its_own(tmp_path: Path) -> None:
    art = attestation(SUBJECT, SUITE, _outcomes(), epoch=0)
    assert art.artifact_type == mt.IN_TOTO_JSON and art.title == "t.tests.intoto.json"
    assert art.annotations[mt.ANNOTATION_PREDICATE_TYPE] == mt.PREDICATE_TYPES["testresult"]
    assert made_by_assemble(mt.IN_TOTO_JSON, art.data)
    other = {"_type": "https://in-toto.io/Statement/v1", "predicateType": mt.PREDICATE_TYPES["testresult"]}
    assert not made_by_assemble(mt.IN_TOTO_JSON, json.dumps({**other, "predicate": {"configuration": []}}).encode())
    # Next to an output without referrers: its own file, not the provenance's.
    assert sidecar_path(tmp_path / "x.tar", kind_of(art)).name == "x.tar.tests.intoto.json"


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["predicate"]["configuration"][0].pop("digest"),
        lambda d: d["predicate"]["configuration"].__setitem__(2, "version"),
        lambda d: d["predicate"]["configuration"][2].__setitem__("annotations", ["definition"]),
        lambda d: d.__setitem__("subject", []),
        lambda d: d["predicate"]["configuration"][0].__setitem__("digest", "sha256:" + "cd" * 32),
    ],
)
def test_an_images_recorded_tests_of_another_shape_are_said_never_a_traceback(damage: Any) -> None:
    """``assemble test IMAGE`` runs the tests the image's attestation records: whoever
    pushed the image wrote it, so a field of another shape is an InputError naming the image."""
    from assembler.pipeline.checks.runimage import recorded_suite

    doc = json.loads(statement(SUBJECT, SUITE, _outcomes()))
    suite = recorded_suite(doc, "oci:out:one", test_on="local")
    assert [t.name for t in suite.tests] == ["version", "gpu"] and suite.about.manifest_digest == SUITE.manifest_digest
    damage(doc)
    with pytest.raises(InputError, match=r"^oci:out:one: the test results attached to the image do not read"):
        recorded_suite(doc, "oci:out:one", test_on="local")


def test_a_test_s_definition_reads_back_as_the_same_test(project: Path) -> None:
    """What the attestation keeps of each test is enough to run it again (``assemble test REF``)."""
    for test in planned(load_manifest(project / "m.yaml"), CONFIG, test_on="local"):
        again = from_definition(test.name, test.definition())
        assert again.command == list(test.argv) and again.args is None
        fields = ("exit", "output", "not_output", "timeout", "gpu", "network", "env", "user", "workdir")
        assert {f: getattr(again, f) for f in fields} == {f: getattr(test.spec, f) for f in fields}, test.name
    with pytest.raises(InputError, match="test x: its recorded definition does not read"):
        from_definition("x", {"command": ["a"], "exit": "many"})


class _Ldconfig:
    """``ldconfig -p`` of a GPU host (none here): the one program gpudriver.find runs."""

    def __init__(self, text: str) -> None:
        self.text = text

    def run(self, argv: list[str], check: bool = True) -> Any:
        assert argv == ["ldconfig", "-p"]
        return type("Result", (), {"stdout": self.text})()


def test_a_gpu_host_s_driver_is_given_as_apptainer_nv_gives_it(tmp_path: Path) -> None:
    libs = tmp_path / "nvidia" / "lib64"
    libs.mkdir(parents=True)
    for name in ("libcuda.so.580.159.04", "libnvidia-ptxjitcompiler.so.580.159.04", "libEGL.so.1"):
        (libs / name).write_bytes(b"\x7fELF")
    (libs / "libcuda.so.1").symlink_to("libcuda.so.580.159.04")
    (libs / "libnvidia-ptxjitcompiler.so.1").symlink_to("libnvidia-ptxjitcompiler.so.580.159.04")
    text = (  # as a host with the driver in /usr/local/nvidia lists it (first wins; 32-bit ones are not ours)
        "82 libs found in cache `/etc/ld.so.cache'\n"
        f"\tlibcuda.so.1 (libc6,x86-64) => {libs}/libcuda.so.1\n"
        f"\tlibcuda.so.1 (libc6,x86-64) => /lib/libcuda.so.1\n"
        f"\tlibcuda.so.1 (libc6) => {libs}/libcuda.so.1\n"
        f"\tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => {libs}/libnvidia-ptxjitcompiler.so.1\n"
        f"\tlibnvidia-ml.so.1 (libc6,x86-64) => {libs}/libnvidia-ml.so.1\n"  # listed, but not on disk
        f"\tlibEGL.so.1 (libc6,x86-64) => {libs}/libEGL.so.1\n"  # not a compute library
    )
    driver = gpudriver.find(_Ldconfig(text))  # type: ignore[arg-type]
    assert driver.libraries == (
        (str(libs / "libcuda.so.580.159.04"), "libcuda.so.1"),
        (str(libs / "libnvidia-ptxjitcompiler.so.580.159.04"), "libnvidia-ptxjitcompiler.so.1"),
    )
    args = driver.buildah_args()
    assert f"{libs}/libcuda.so.580.159.04:{gpudriver.DRIVER_LIBS}/libcuda.so.1:ro" in args
    assert gpudriver.library_path("/opt/lib") == f"/opt/lib:{gpudriver.DRIVER_LIBS}"
    assert gpudriver.library_path(None) == gpudriver.DRIVER_LIBS


def test_an_image_of_another_architecture_is_not_run_here() -> None:
    from assembler.oci import mutate
    from assembler.oci.descriptor import Platform
    from assembler.pipeline.image.imagetests import foreign

    native = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}[os.uname().machine]
    other = "linux/arm64" if native == "linux/amd64" else "linux/amd64"
    assert foreign(mutate.scratch(Platform.parse(native), epoch=0)) is None
    why = foreign(mutate.scratch(Platform.parse(other), epoch=0))
    assert why == f"the image is for {other}, this machine is {os.uname().machine}"
