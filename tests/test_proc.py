"""The one runner of outside programs (assembler.proc): what it writes to a step's log.

A real ``sh`` prints a multi-line secret (a PEM key, as a step that writes its key file
and fails would) and a one-line token; the log and the tail shown on failure must hold
neither, while the rest of each line stays readable. The logs folder is its owner's.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

from assembler.cache.store import Store
from assembler.proc import Runner

KEY = """-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDp6Zg2mZ0b9f1n3r7m0x1QpXz6R4u8W2sT5vY7aK9cJgAAAJhWq0sXVqtL
Fw==
-----END OPENSSH PRIVATE KEY-----"""
TOKEN = "tok-8c1f0e2b9d4a7c3e"


def test_a_multi_line_secret_is_masked_line_by_line(tmp_path: Path) -> None:
    script = 'printf "%s\\n" "$KEY"; echo "pushing with $TOKEN now"; echo "plain line"'
    log = io.StringIO()
    code, last = Runner().stream(
        ["sh", "-c", script], log_file=log, env={"KEY": KEY, "TOKEN": TOKEN}, redact=[KEY, TOKEN]
    )
    assert code == 0
    text = log.getvalue()
    for line in KEY.splitlines():
        if len(line) >= 8:
            assert line not in text and line not in last
    assert TOKEN not in text and "pushing with *** now" in text
    assert "plain line" in text and "Fw==" in text  # short lines stay: they hide almost nothing
    assert text.count("***") == 5  # four lines of the key, the token


def test_the_logs_folder_is_the_owners_only(tmp_path: Path) -> None:
    Store(tmp_path / "cache")
    mode = stat.S_IMODE(os.stat(tmp_path / "cache" / "logs").st_mode)
    assert mode == 0o700, oct(mode)


def test_a_followed_file_is_read_to_its_end_then_the_programs_own_output(tmp_path: Path) -> None:
    """What a container's command writes to a mounted file is the log, read as it grows
    and to its end after the program exits (a last line without its newline too), masked
    as stdout would be; the program's own stdout (buildah's messages) comes after."""
    out = tmp_path / "output.log"
    out.touch()
    script = (
        'echo "own first"; for i in $(seq 1 300); do echo "line-$i" >> "$OUT"; done; sleep 0.2;'
        ' echo "with $TOKEN" >> "$OUT"; printf "no newline" >> "$OUT"; exit 3'
    )
    log = io.StringIO()
    lines: list[str] = []
    code, last = Runner().stream(
        ["sh", "-c", script],
        log_file=log,
        env={"OUT": str(out), "TOKEN": TOKEN},
        redact=[TOKEN],
        follow=out,
        on_line=lines.append,
        keep=3,
    )
    assert code == 3
    assert lines == [*(f"line-{i}" for i in range(1, 301)), "with ***", "no newline", "own first"]
    assert log.getvalue() == "".join(line + "\n" for line in lines)
    assert last == "with ***\nno newline\nown first"
