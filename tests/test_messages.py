"""What a person reads, without running a tool (issue 36's "output a person can follow"):
a line at least every 30 s while anything runs, in plain and JSON progress; no warning
for what the user cannot or need not change (the demo's own ``--set``, libraries the
loading program provides); a mistyped key, target or ``--rebuild`` step named with the
name it is most like, the real problem first; ``inspect`` showing labels and history."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from assembler.cli.build import check_rebuild
from assembler.cli.progress import JsonLines, Plain
from assembler.deps.check import Note, Report
from assembler.errors import InputError, ManifestError
from assembler.manifest.load.manifest import load_manifest
from assembler.pipeline.checks.depcheck import report_notes
from assembler.pipeline.checks.idle import idle_sets
from assembler.pipeline.options import Event
from assembler.pipeline.variants import load_variants
from tests.helpers import ROOT, run_cli_here


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stderr_of(display: Any, *events: Event) -> str:
    """What ``display`` writes to stderr for ``events`` (the CLI's console looks stderr up
    at each line); the timestamps of plain lines left out."""
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        for event in events:
            display(event)
    return "\n".join(line.split(" ", 1)[1] for line in captured.getvalue().splitlines())


def beat(display: Any) -> str:
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        display.beat()
    return captured.getvalue().split(" ", 1)[1].rstrip("\n")


# -- a line at least every 30 s --------------------------------------------------------------


def test_plain_says_what_still_runs_after_30_quiet_seconds() -> None:
    clock = Clock()
    plain = Plain(verbose=0, clock=clock)
    stderr_of(
        plain,
        Event("base", {"name": "devel", "state": "resolving"}),
        # the bootstrap's own log record (shown with -v only): what the base is doing
        Event("info", {"text": "bootstrapping bookworm (minbase) with mmdebstrap from http://deb.debian.org/debian"}),
    )
    clock.now += 29.0
    assert not plain.due()
    clock.now += 1.0
    assert plain.due()
    assert beat(plain) == (
        "still running: base devel for 30 s; "
        "last: bootstrapping bookworm (minbase) with mmdebstrap from http://deb.debian.org/debian"
    )
    assert not plain.due()  # the heartbeat is a line: the next one is 30 s later
    shown = stderr_of(
        plain,
        Event("step", {"name": "nvidia", "state": "running"}),
        Event("log", {"step": "nvidia", "line": "\x1b[1mUnpacking cuda-nvcc-13-0\x1b[0m"}),
        Event("bytes", {"n": 3 << 20, "what": "compressed"}),
    )
    assert shown.splitlines() == [
        "step nvidia: running",
        "[nvidia] Unpacking cuda-nvcc-13-0",
        "bytes: 3.0 MiB compressed",
    ]
    clock.now += 420.0
    assert beat(plain) == (
        "still running: base devel for 7 min 30 s; "
        "step nvidia for 7 min 00 s, its last line 7 min 00 s ago: Unpacking cuda-nvcc-13-0; so far 3.0 MiB compressed"
    )
    stderr_of(plain, Event("base", {"name": "devel", "state": "ready", "digest": "sha256:1", "what": "bootstrap"}))
    stderr_of(plain, Event("step", {"name": "nvidia", "state": "built", "seconds": 430.0}))
    clock.now += 45.0
    assert beat(plain) == "still working (45 s since the last line); so far 3.0 MiB compressed"


def test_the_heartbeat_thread_speaks_in_a_silence_only() -> None:
    plain = Plain(verbose=0, every=0.2)
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        plain.start()
        plain(Event("step", {"name": "quiet", "state": "running"}))
        time.sleep(0.9)
        plain.stop(failed=False)
        stopped = captured.getvalue()
        time.sleep(0.3)
    beats = [line for line in stopped.splitlines() if " still running: step quiet for 0 s" in line]
    assert 2 <= len(beats) <= 5, stopped
    assert captured.getvalue() == stopped  # stopped means stopped


def test_json_progress_says_what_still_runs() -> None:
    clock, stream = Clock(), io.StringIO()
    lines = JsonLines(stream, clock=clock)
    lines(Event("step", {"name": "nvidia", "state": "running"}))
    lines(Event("log", {"step": "nvidia", "line": "Downloading cuda-nvcc (40 MB)"}))
    lines(Event("bytes", {"n": 1024, "what": "pushed"}))
    clock.now += 30.0
    assert lines.due()
    lines.beat()
    last = json.loads(stream.getvalue().splitlines()[-1])
    assert last["kind"] == "running" and last["bytes"] == {"pushed": 1024}, last
    assert last["running"] == [
        {
            "kind": "step",
            "name": "nvidia",
            "seconds": 30.0,
            "last_line": "Downloading cuda-nvcc (40 MB)",
            "last_line_seconds": 30.0,
        }
    ]
    assert not lines.due()


# -- no warning for what the user cannot or need not change ------------------------------------


def test_the_demos_own_set_is_no_warning() -> None:
    """README's first command: ``scripts/demo`` passes --set registry=127.0.0.1:$port with
    its -o outputs; at the default port that is the value the param has already."""
    path = ROOT / "manifests" / "demo.yaml"
    outputs = ["oci:demo-out/demo:latest", "docker://127.0.0.1:5000/demo:latest"]
    for port in ("5000", "5001"):
        sets = {"registry": f"127.0.0.1:{port}"}
        variants = load_variants(path, sets=sets, outputs=outputs)
        lines = idle_sets(path, variants, sets=sets, unlocked=(), bases={}, sources={}, outputs=outputs)
        assert lines == [], (port, lines)


def test_a_set_nothing_uses_is_still_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: m\nparams: {spare: x, used: a}\nbases: {b: scratch}\n"
        "image: {base: b, layers: [{run: ['echo ${used}']}]}\n"
    )

    def idle(**sets: str) -> list[str]:
        variants = load_variants(path, sets=sets)
        return idle_sets(path, variants, sets=sets, unlocked=(), bases={}, sources={}, outputs=None)

    assert idle(spare="y") == ["--set spare=y changes nothing in this manifest: nothing there uses spare"]
    assert idle(spare="x", used="a") == []  # their values already: the image is what was asked for
    assert idle(used="b") == []


def _note(file: str, library: str, workdir: str = "") -> Note:
    return Note(file, 3, library, (f"/usr/local/lib/python3.12/site-packages/torch/lib/{library}",), workdir)


def test_libraries_a_loaded_program_provides_are_said_once_not_warned() -> None:
    """vLLM's extensions need torch's libraries, which Python loads first: 40 such needs
    were six warnings and "... and 34 more such libraries" on every build."""
    site = "/usr/local/lib/python3.12/site-packages/vllm"
    notes = [_note(f"{site}/_C{i % 6}.abi3.so", f"lib{name}{i}.so") for i, name in enumerate(["torch"] * 40)]
    relative = _note("/app/bin/tool", "libhelper.so", workdir="/app")
    events: list[Event] = []
    report_notes(Report((1, 2, 3), 812, (), (*notes, relative), ("libcuda.so.1",)), 3, report=events.append)
    warnings = [e.fields["text"] for e in events if e.kind == "warning"]
    assert warnings == [str(relative)]  # a relative RUNPATH: the user can fix it
    (info,) = [e.fields["text"] for e in events if e.kind == "info"]
    assert info == (
        "dependency check: 812 ELF files in 3 layers; 40 libraries needed off the search path of 6 shared objects, "
        "loaded first by the program that loads them (`assemble deps IMAGE` lists them); "
        "left to the host: libcuda.so.1"
    )


# -- did you mean, the real problem first ------------------------------------------------------

TARGETS = """\
name: m
bases:
  runtime:
    bootstrap: {suite: bookworm}
compile:
  - name: brotli
    base: runtime
    run: [make]
    artifacts: {lib: {path: /out/libbrotli.so, to: /usr/lib/libbrotli.so}}
image:
  base: runtime
  layers:
    - artifact: brotli.lib
    - packages: [curl]
targets:
  megatron: {}
  vllm: {}
"""


def manifest_error(tmp_path: Path, text: str, **kw: Any) -> ManifestError:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, **kw)
    return caught.value


def test_a_mistyped_key_is_the_problem_named_with_the_key_it_is_most_like(tmp_path: Path) -> None:
    e = manifest_error(tmp_path, TARGETS.replace("    bootstrap:", "    bootsrap:"))
    assert str(e) == f"{tmp_path / 'm.yaml'}:4: bases.runtime.bootsrap: unknown key", str(e)
    assert e.hint == "did you mean 'bootstrap'?"
    e = manifest_error(tmp_path, TARGETS.replace("image:", "imgae:"))
    assert str(e).endswith(":10: imgae: unknown key") and e.hint == "did you mean 'image'?", (str(e), e.hint)
    e = manifest_error(tmp_path, TARGETS.replace("- packages: [curl]", "- pakages: [curl]"))
    assert str(e).endswith(":14: image.layers.1: a layer is one of copy:, artifact:, run:, packages:, pip:, url:")
    assert e.hint == "did you mean 'packages'?"
    e = manifest_error(tmp_path, TARGETS.replace("{path: /out", "{pth: /out"))
    assert str(e).endswith(":9: compile.0.artifacts.lib.pth: unknown key") and e.hint == "did you mean 'path'?"
    e = manifest_error(tmp_path, TARGETS.replace("run: [make]", "run: [make]\n    frobnicate: 1"))
    assert str(e).endswith("compile.0.frobnicate: unknown key") and e.hint is not None
    assert e.hint.startswith("keys here: ") and "artifacts, base," in e.hint  # nothing close: the keys


def test_a_mistyped_target_or_set_gets_a_did_you_mean(tmp_path: Path) -> None:
    e = manifest_error(tmp_path, TARGETS, target="megatrn")
    assert "unknown target 'megatrn'" in str(e)
    assert e.hint == "did you mean 'megatron'? targets in this manifest: megatron, vllm"
    e = manifest_error(
        tmp_path, TARGETS.replace("name: m\n", "name: m\nparams: {cuda_version: '12'}\n"), sets={"cuda_verison": "13"}
    )
    assert e.hint == "did you mean 'cuda_version'? params: cuda_version"


def test_a_mistyped_rebuild_step_is_refused_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(TARGETS)
    variants = load_variants(tmp_path / "m.yaml", sets={}, targets=["vllm"])
    check_rebuild(["brotli", "packages-2"], variants, tmp_path / "m.yaml")  # a compile step, a packages: layer
    with pytest.raises(InputError) as caught:
        check_rebuild(["brotlii"], variants, tmp_path / "m.yaml")
    assert str(caught.value) == f"--rebuild brotlii: no step 'brotlii' in {tmp_path / 'm.yaml'}"
    assert caught.value.hint == "did you mean 'brotli'? its steps: brotli, packages-2"
    # through the command line: exit 2 before a base is bootstrapped or a step runs
    ran = run_cli_here(["build", "m.yaml", "--cache", "cache", "--rebuild", "brotlii"], cwd=tmp_path)
    assert ran.code == 2 and ran.err.startswith("error: --rebuild brotlii: no step 'brotlii'"), str(ran)
    assert "hint: did you mean 'brotli'?" in ran.err and not (tmp_path / "cache").exists(), str(ran)


# -- inspect: labels and history ---------------------------------------------------------------


def _blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def test_inspect_shows_labels_annotations_and_history(tmp_path: Path) -> None:
    layout = tmp_path / "lay"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    tar = b"\0" * 1024
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, gzip.compress(tar, mtime=0))}
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/bin"],
            "Labels": {"org.opencontainers.image.title": "demo", "com.nvidia.cuda.version": "13.0"},
            "ExposedPorts": {"80/tcp": {}},
        },
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"] * 2},
        "history": [
            {"created_by": "mmdebstrap minbase bookworm"},
            {"created_by": "ENV PATH=/usr/bin", "empty_layer": True},
            {"created_by": "assemble: packages libgomp1", "comment": "the runtime step (apt)"},
        ],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_blob(layout, json.dumps(config).encode()),
        },
        "layers": [layer, layer],
        "annotations": {"org.opencontainers.image.source": "https://example.invalid/demo.yaml"},
    }
    man = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_blob(layout, json.dumps(manifest).encode())}
    man["annotations"] = {"org.opencontainers.image.ref.name": "t"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [man]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    ran = run_cli_here(["inspect", f"oci:{layout}:t"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    lines = ran.out.splitlines()
    for shown in (
        "  port       80/tcp",
        "  label      com.nvidia.cuda.version=13.0",
        "  label      org.opencontainers.image.title=demo",
        "  annotation org.opencontainers.image.source=https://example.invalid/demo.yaml",
    ):
        assert shown in lines, ran.out
    history = lines[lines.index("  history") + 1 :]
    assert history == [
        "     0  mmdebstrap minbase bookworm",
        "     -  ENV PATH=/usr/bin",
        "     1  assemble: packages libgomp1  (the runtime step (apt))",
    ], ran.out


def test_the_terminal_view_never_goes_blank_while_the_build_works() -> None:
    """Between steps (the dependency check, the SBOM) nothing tracked runs: the live view
    still shows a spinner, the time since the last event and what was done last."""
    from rich.console import Console

    from assembler.cli.live import LiveView

    clock, drawn = Clock(), io.StringIO()
    console = Console(file=drawn, width=160, color_system=None)
    view = LiveView(console)
    view.clock = clock
    view(Event("step", {"name": "kernels", "state": "running"}))
    view(Event("step", {"name": "kernels", "state": "built", "seconds": 3.0}))
    view(Event("info", {"text": "SBOM and provenance: sha256:0123456789ab"}))
    clock.now += 12.5
    console.print(view._render())
    assert "working 12.5s  SBOM and provenance: sha256:0123456789ab" in drawn.getvalue(), drawn.getvalue()


def test_a_push_ends_with_the_bytes_it_pushed_not_a_count_seconds_old() -> None:
    """Issue 50, item 6: "16.0 KiB pushed" (the last count, throttled to one line in 10 s)
    then "58.9 MiB uploaded": the count is brought up to date before the output's line."""
    clock = Clock()
    plain = Plain(verbose=0, clock=clock)
    clock.now += 11.0
    first = stderr_of(plain, Event("bytes", {"n": 16 << 10, "what": "pushed"}))
    assert first.splitlines() == ["bytes: 16.0 KiB pushed"]
    clock.now += 2.0
    quiet = stderr_of(plain, *(Event("bytes", {"n": 1 << 20, "what": "pushed"}) for _ in range(58)))
    assert quiet == ""  # within 10 s of the last count: no line
    done = {"ref": "docker://r/x:1", "state": "done", "digest": "sha256:1", "uploaded": (58 << 20) + (16 << 10)}
    shown = stderr_of(plain, Event("output", done))
    assert shown.splitlines()[0] == "bytes: 58.0 MiB pushed", shown
    assert "58.0 MiB uploaded" in shown.splitlines()[1], shown
    # nothing new since: no second count line
    assert stderr_of(plain, Event("output", done)).splitlines()[0].startswith("wrote ")


def test_a_plain_build_says_what_each_push_uploaded_its_weights_too() -> None:
    """``watch`` said what each output uploaded; a plain build said only where it went
    (issue 67: the weights' push, gigabytes or none, went unsaid)."""
    from assembler.assemble import Result
    from assembler.cli.build import summary_lines
    from assembler.oci import mutate
    from assembler.oci.descriptor import Platform
    from assembler.transports.context import Written

    pushed = Written("reg/app@sha256:b (weights tiny, referrer of sha256:a)", "sha256:b", 3 << 30, 2, 0, 1)
    written = Written("oci:out:app", "sha256:a")
    image = mutate.scratch(Platform.parse("linux/amd64"), epoch=0)
    lines = summary_lines(Result(image, (), (), (written, pushed), 1.0))
    assert "  -> oci:out:app" in lines, lines  # a file: nothing uploaded, nothing said of it
    assert f"  -> {pushed.ref}: 2 blob(s), 3.0 GiB uploaded, 1 there already" in lines, lines


def test_ctrl_c_says_what_a_build_keeps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ "interrupted" alone left a user to guess whether the minute spent bootstrapping was
    lost (issue 67): a build says what it keeps, and where; "interrupted" stays last."""
    import assembler.cli as cli

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "command", lambda name: interrupted)
    ran = run_cli_here(["m.yaml", "--cache", str(tmp_path / "c")], cwd=tmp_path)
    assert ran.code == 130, ran
    assert f"kept: the bases, steps and layers that finished, in the cache {tmp_path / 'c'}" in ran.err, ran
    assert ran.err.rstrip().endswith("\ninterrupted"), ran
    assert run_cli_here(["doctor"], cwd=tmp_path).err.strip() == "interrupted"  # keeps nothing


def test_a_copy_from_that_is_not_there_is_named(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "name: c\nbases: {b: scratch}\nimage:\n  base: b\n  layers:\n    - copy: {from: app/, to: /app/}\n"
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path / "m.yaml")
    assert info.value.line == 6 and f"path does not exist: app/ (looked for {tmp_path / 'app'}" in str(info.value)
