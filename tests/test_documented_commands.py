"""Every command a manifest's header gives works as written (issue 49, item 5), against the
shipped manifests and locks: a build or ``plan`` command plans (exit 0), a ``lock`` command
locks (exit 0, into a copy of the shipped lock). A command with a placeholder (``oci:...``)
is the user's to fill in, and is listed, not run."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli_here
from tests.test_manifests import plan_in_process

MANIFESTS = ROOT / "manifests"


def documented(path: Path) -> list[list[str]]:
    """The ``assemble`` commands of a manifest's leading comments (``\\`` continues a line,
    ``#`` after two spaces ends it), each as argv without ``assemble``."""
    commands: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if pending:
            text = pending + " " + text
            pending = ""
        elif not text.startswith("assemble "):
            continue
        text = re.split(r"\s{2,}#", text, maxsplit=1)[0].strip()
        if text.endswith("\\"):
            pending = text[:-1].strip()
            continue
        commands.append(text)
    return [shlex.split(c)[1:] for c in commands]


COMMANDS = [
    pytest.param(manifest.stem, argv, id=f"{manifest.stem}: {shlex.join(argv)}")
    for manifest in sorted(MANIFESTS.glob("*.yaml"))
    for argv in documented(manifest)
    if not any("..." in a for a in argv)
]


# What headers give inside a sentence: dynamo.yaml "`--set cuda_version=13.0` moves the vLLM
# and SGLang targets' bases to their CUDA 13 images"; vllm.yaml "`--locked` needs
# --allow-unresolved layers.flashinfer-jit-cache:jit-cache (or --set flashinfer_jit_cache=false)".
INLINE = [
    pytest.param("dynamo", ["plan", "manifests/dynamo.yaml", "--set", "cuda_version=13.0"], id="dynamo: cuda 13"),
    pytest.param(
        "vllm",
        ["plan", "manifests/vllm.yaml", "--locked", "--set", "flashinfer_jit_cache=false"],
        id="vllm: --locked without the jit cache",
    ),
]


def test_every_manifest_header_command_is_found() -> None:
    """The parser finds the headers' commands (a change in their layout must not leave the
    test below with nothing to run)."""
    found = {name for name, *_ in (p.values for p in COMMANDS)}
    assert {"cuda", "llamacpp", "verl-rocm", "verl", "vllm"} <= found, found
    assert ["lock", "manifests/vllm.yaml", "--set", "vllm_from=wheel", "--set", "vllm_version=0.12.0"] in [
        p.values[1] for p in COMMANDS
    ]


@pytest.mark.integration  # a lock command reaches PyPI
@pytest.mark.parametrize(("name", "argv"), [*COMMANDS, *INLINE])
def test_a_documented_command_works_as_written(name: str, argv: list[str], tmp_path: Path) -> None:
    if argv[0] == "lock":
        lock = tmp_path / f"{name}.lock"
        shutil.copy(MANIFESTS / f"{name}.lock", lock)
        ran = run_cli_here([*argv, "--lock", str(lock)], cwd=ROOT)
        assert ran.code == 0, str(ran)
        return
    args = argv[1:] if argv[0] == "plan" else argv
    manifest, rest = ROOT / args[0], [a for a in args[1:] if not a.startswith("--tls-verify")]
    planned = plan_in_process(manifest, *rest, cache=tmp_path / "cache", json_out=False)
    assert planned.code == 0, planned.err
