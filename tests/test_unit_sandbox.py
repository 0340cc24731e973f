"""scripts/unit-sandbox, where scripts/test --fast runs the unit tier: on PATH only the small
system programs it lists and the venv's python, and, as root, no network but the loopback;
the command's exit status comes back, and its PATH folder goes."""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

# The sandbox itself takes programs the unit tier may not run (mktemp, unshare, ip): its
# tests run outside it, in the full suite.
pytestmark = pytest.mark.integration

SANDBOX = ROOT / "scripts" / "unit-sandbox"

# What the sandboxed command finds, as JSON: which programs PATH has, the interpreter that
# `python` starts, what a connection to the loopback and to an address past it does.
PROBE = """
import json, os, shutil, socket, sys

def connect(address):
    try:
        socket.create_connection(address, timeout=3).close()
    except OSError as e:
        return e.errno
    return 0

with socket.create_server(("127.0.0.1", 0)) as server:
    loopback = connect(server.getsockname())
print(json.dumps({
    "path": os.environ["PATH"],
    "found": {p: shutil.which(p) is not None for p in sys.argv[1:]},
    "prefix": sys.prefix,
    "loopback": loopback,
    "past": connect(("192.0.2.1", 443)),  # TEST-NET-1: past the loopback, answered by none
}))
"""


def test_the_sandbox_has_the_listed_programs_the_venv_and_the_loopback_only() -> None:
    programs = ["sh", "tar", "git", "openssl", "buildah", "skopeo", "mmdebstrap", "uv", "curl"]
    ran = subprocess.run([SANDBOX, "python", "-c", PROBE, *programs], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["found"] == {p: p in ("sh", "tar", "git", "openssl") for p in programs}
    assert Path(seen["prefix"]) == ROOT / ".venv"  # `python` is the venv's, with its packages
    assert seen["loopback"] == 0  # the fake servers of the unit tests work
    if os.geteuid() == 0:
        assert seen["past"] == errno.ENETUNREACH, seen  # no route at all: at once, not a timeout
    else:
        assert "WARNING: not root, so the network stays reachable" in ran.stderr
    assert not Path(seen["path"]).exists(), "the PATH folder is removed"


def test_the_commands_exit_status_is_the_sandboxs() -> None:
    ran = subprocess.run([SANDBOX, "python", "-c", "raise SystemExit(7)"], capture_output=True, text=True)
    assert ran.returncode == 7, ran.stderr
