"""Progress as the user sees it, on a real build (one compile step with a log, on the demo bases).

Under a pseudo-terminal: the rich live view (steps with their state and time, the running
step's log tail, the final digest). Without one: timestamped plain lines. ``--progress
json``: one JSON object per line. ``-q``: the digest only. ``--digestfile``: the digest in a file.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import reclaim_at_teardown
from tests.helpers import PYTHON, run_cli

MANIFEST = """\
name: progress
params: {{fail: "no", spare: "x"}}
bases:
  devel: oci:{devel}:latest
  runtime: oci:{runtime}:latest
compile:
  - name: hello
    base: devel
    run:
      - for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.3; done
      - test "${{fail}}" = no
      - mkdir -p /out && echo hello > /out/hello.txt
    artifacts:
      txt: {{path: /out/hello.txt, to: /app/hello.txt}}
image:
  base: runtime
  layers:
    - artifact: hello.txt
sif: {{level: 1}}  # the byte bar is the point: gzip 1 takes 2 s of CPU here, gzip 9 20 (test_sif's)
"""

_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Project:
    root: Path
    cache: Path

    def args(self, *more: str) -> list[str]:
        return ["m.yaml", "--cache", str(self.cache), "-o", f"oci:{self.root / 'out'}:x", *more]


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, demo_bases: dict[str, Path], request: pytest.FixtureRequest
) -> Project:
    root = tmp_path_factory.mktemp("progress")
    reclaim_at_teardown(request, root)  # a cache with buildah's storage: gigabytes
    (root / "m.yaml").write_text(MANIFEST.format(devel=demo_bases["devel"], runtime=demo_bases["runtime"]))
    return Project(root, root / "cache")


def run_in_terminal(argv: list[str], *, cwd: Path, timeout: float = 600) -> tuple[int, str]:
    """Run ``argv`` with stdin, stdout and stderr on a fresh pseudo-terminal (120x40, xterm);
    returns its exit status and everything it drew, escape sequences removed."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_INTERACTIVE", "CI")}
    env.update(TERM="xterm-256color", COLUMNS="120", LINES="40")
    env.pop("ASSEMBLE_TRACEBACK", None)
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed, the program is done
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


def test_terminal_shows_a_live_view_with_steps_times_log_tail_and_digest(project: Project) -> None:
    digestfile = project.root / "live.digest"
    sif = ["-o", f"sif:{project.root / 'live.sif'}"]
    argv = [PYTHON, "-m", "assembler", *project.args("--rebuild", "hello", "--digestfile", str(digestfile), *sif)]
    code, screen = run_in_terminal(argv, cwd=project.root)
    assert code == 0, screen[-3000:]
    digest = digestfile.read_text()
    assert DIGEST.fullmatch(digest), digest
    # While it ran: the step, its state and time so far, the last lines of its log under it.
    assert re.search(r"step\s+hello\s+running\s+\d+\.\ds", screen), screen[-3000:]
    assert re.search(r"│ tick-[3-6]", screen), screen[-3000:]
    # What stays: a line per base and step with state and time, the layers, the image.
    assert re.search(r"✓ step\s+hello\s+built\s+\d+\.\ds", screen), screen[-3000:]
    assert re.search(r"✓ base\s+runtime\s+ready\s+\d+\.\ds", screen), screen[-3000:]
    assert re.search(r"layer\s+\d+ artifact hello\.txt\s+built", screen), screen[-3000:]
    assert f"✓ image  {digest}" in screen and f"image {digest}" in screen  # the view, then the summary
    assert re.search(r"✓ output\s+oci:\S+\s+written", screen), screen[-3000:]
    # While the SIF was written: its byte bar, with the bytes so far and their speed.
    assert re.search(r"SIF\s+━+\s+\d+(\.\d)? (B|KiB|MiB)  \d+(\.\d)? (B|KiB|MiB)/s", screen), screen[-3000:]
    assert re.search(r"✓ output\s+sif:\S+live\.sif\s+written", screen), screen[-3000:]
    assert "Traceback" not in screen


def test_terminal_shows_a_failed_step_then_its_command_and_log_tail(project: Project) -> None:
    argv = [PYTHON, "-m", "assembler", *project.args("--set", "fail=yes", "-v")]
    code, screen = run_in_terminal(argv, cwd=project.root)
    assert code == 1, screen[-3000:]
    assert "  [hello] tick-1" in screen, screen[-3000:]  # -v: every log line stays, not only the tail
    failed = re.search(r"✗ step\s+hello\s+failed\s+\d+\.\ds", screen)
    assert failed, screen[-3000:]
    after = screen[failed.end() :]
    assert 'error: step hello: command failed (exit 1): test "yes" = no' in after, after
    assert "tick-6" in after and "--- full log: " in after, after


def test_plain_lines_without_a_terminal(project: Project) -> None:
    ran = run_cli(project.args("--rebuild", "hello"), cwd=project.root)
    assert ran.code == 0, str(ran)
    lines = ran.err.splitlines()
    assert "\r" not in ran.err and "\x1b" not in ran.err, repr(ran.err)
    assert lines and all(re.match(r"\d\d:\d\d:\d\d \S", line) for line in lines), ran.err
    texts = [line[9:] for line in lines]
    assert "step hello: running" in texts, ran.err
    ticks = [t for t in texts if t.startswith("[hello] tick-")]
    assert ticks == [f"[hello] tick-{i}" for i in range(1, 7)], ran.err  # every log line, with its step
    built = next(t for t in texts if t.startswith("step hello: built in "))
    assert texts.index(built) > texts.index(ticks[-1])
    digest = ran.out.splitlines()[0].removeprefix("image ")
    assert f"image {digest}" in texts and any(t.startswith("wrote oci:") for t in texts), ran.err


def test_progress_json_is_one_object_per_line(project: Project) -> None:
    ran = run_cli(project.args("--rebuild", "hello", "--progress", "json"), cwd=project.root)
    assert ran.code == 0, str(ran)
    events = [json.loads(line) for line in ran.err.splitlines()]
    assert all(isinstance(e["time"], float) and isinstance(e["kind"], str) for e in events)
    steps = [(e["name"], e["state"]) for e in events if e["kind"] == "step"]
    assert steps == [("hello", "running"), ("hello", "built")], steps
    logged = [e["line"] for e in events if e["kind"] == "log" and e["step"] == "hello"]
    assert [line for line in logged if line.startswith("tick-")] == [f"tick-{i}" for i in range(1, 7)], logged
    assert any(line.startswith("$ for i in 1 2 3") for line in logged), logged  # the command, as run
    image = next(e for e in events if e["kind"] == "image")
    assert ran.out.startswith(f"image {image['digest']}\n"), ran.out
    # A failure ends the stream with an error object, still exit 1 with its message.
    failed = run_cli(project.args("--set", "fail=yes", "--progress", "json"), cwd=project.root)
    assert failed.code == 1, str(failed)
    events = [json.loads(line) for line in failed.err.splitlines()]
    assert {"kind": "step", "name": "hello", "state": "failed"}.items() <= events[-2].items(), events[-2:]
    assert events[-1]["kind"] == "error" and events[-1]["exit"] == 1, events[-1]
    assert events[-1]["text"].startswith("step hello: command failed (exit 1)"), events[-1]


def test_a_set_that_changes_nothing_is_a_warning_event(project: Project) -> None:
    ran = run_cli(project.args("--set", "spare=y", "--progress", "json"), cwd=project.root)
    assert ran.code == 0, str(ran)
    events = [json.loads(line) for line in ran.err.splitlines()]
    warnings = [e["text"] for e in events if e["kind"] == "warning"]
    assert warnings == ["--set spare=y changes nothing in this manifest: nothing there uses spare"], events
    plain = run_cli(project.args("--set", "spare=y", "--set", "fail=no", "--progress", "plain"), cwd=project.root)
    assert plain.code == 0, str(plain)
    lines = [line.split(" ", 1)[1] for line in plain.err.splitlines() if " warning: " in line]
    # fail=no is its value already: the image is what was asked for, nothing to warn of
    assert lines == ["warning: --set spare=y changes nothing in this manifest: nothing there uses spare"]


def test_quiet_prints_only_the_digest_and_digestfile_writes_it(project: Project) -> None:
    digestfile = project.root / "quiet.digest"
    ran = run_cli(project.args("-q", "--digestfile", str(digestfile)), cwd=project.root)
    assert ran.code == 0, str(ran)
    assert ran.err == "", ran.err
    assert DIGEST.fullmatch(ran.out.strip()) and ran.out == ran.out.strip() + "\n", ran.out
    assert digestfile.read_text() == ran.out.strip()  # no newline, as podman's --digestfile
    # --json keeps the result on stdout, with no progress on stderr.
    as_json = run_cli(project.args("--json"), cwd=project.root)
    assert as_json.code == 0 and as_json.err == "" and as_json.json["digest"] == ran.out.strip(), str(as_json)
    # Bad input stays one error line, exit 2; -q and --progress do not go together.
    both = run_cli(project.args("-q", "--progress", "plain"), cwd=project.root)
    assert both.code == 2 and both.err.startswith("error: ") and "not allowed with" in both.err, str(both)
    missing = run_cli(project.args("-q", "--digestfile", str(project.root / "no/such/dir/d")), cwd=project.root)
    assert missing.code == 2 and missing.err.startswith("error: --digestfile "), str(missing)
    assert "Traceback" not in missing.err
