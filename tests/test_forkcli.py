"""tests/forkcli.py: a CLI call forked from a zygote answers as ``python -m assembler`` does
(exit status, stdout, stderr), is killed at its timeout with the zygote still serving, and an
environment that changes how Python starts gets a subprocess."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.forkcli import Zygotes
from tests.helpers import PYTHON, ROOT, run_cli


def test_a_forked_call_answers_as_a_subprocess_does(monkeypatch: pytest.MonkeyPatch) -> None:
    for args in (["--version"], ["plan", "manifests/demo.yaml"], ["nosuch.yaml"]):
        forked = run_cli(args)
        monkeypatch.setenv("ASSEMBLE_TEST_NO_FORK", "1")
        started = run_cli(args)
        monkeypatch.delenv("ASSEMBLE_TEST_NO_FORK")
        assert (forked.code, forked.out, forked.err) == (started.code, started.out, started.err), args
    assert run_cli(["nosuch.yaml"]).code == 2


def test_a_timeout_kills_the_child_and_the_zygote_serves_the_next_call() -> None:
    zygotes = Zygotes(ROOT, PYTHON)
    try:
        env = dict(os.environ)
        with pytest.raises(subprocess.TimeoutExpired):
            zygotes.call(["plan", "manifests/demo.yaml"], ROOT, env, timeout=0.001)
        done = zygotes.call(["--version"], ROOT, env, timeout=60)
        assert done is not None and done[0] == 0 and done[1].startswith("assemble "), done
    finally:
        zygotes.close()


def test_an_environment_python_reads_at_start_gets_a_subprocess() -> None:
    zygotes = Zygotes(ROOT, PYTHON)
    assert zygotes.usable(dict(os.environ, ASSEMBLE_CACHE="/x"))
    for name in ("PYTHONDONTWRITEBYTECODE", "COLUMNS"):
        other = os.environ.get(name, "") + "1"  # another value than this process's
        assert not zygotes.usable(dict(os.environ, **{name: other})), name
