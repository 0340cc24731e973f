"""The ``user`` fixture: an unprivileged user made with useradd (subuids come with it), as
on an HPC node, and a way to run a command as that user."""

from __future__ import annotations

import fcntl
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_CACHE
from tests.helpers import ROOT, sh


@dataclass
class User:
    name: str
    uid: int
    home: Path

    def env(self) -> dict[str, str]:
        """The user's own environment: none of this process's variables but PATH."""
        return {"PATH": os.environ["PATH"], "HOME": str(self.home), "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run as the user (with :meth:`env` as its environment)."""
        return ["setpriv", f"--reuid={self.name}", f"--regid={self.name}", "--init-groups", "--", *argv]

    def run(self, argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(argv),
            cwd=cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )


@pytest.fixture(scope="module")
def user() -> User:
    """An unprivileged user made with useradd (subuids come with it), as on an HPC node."""
    name = "asmtest"
    TEST_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TEST_CACHE / ".user.lock", "w") as lock:  # the suite's workers may all ask
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            sh(["useradd", "--create-home", name])
    home = Path(sh(["sh", "-c", f"getent passwd {name} | cut -d: -f6"]).stdout.strip())
    return User(name, int(sh(["id", "-u", name]).stdout), home)
