"""``assemble doctor``: each program assemble drives, found on PATH or not, its version, and
what to install (assembler/cli/doctor.py). The real programs of this machine; a PATH with
none of them is an empty folder."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.helpers import run_cli_here


def test_doctor_names_each_program_its_version_and_what_to_install(tmp_path: Path) -> None:
    ran = run_cli_here(["doctor", "--json"])
    assert ran.code == (0 if shutil.which("buildah") else 1), ran
    found = {t["command"]: t for t in json.loads(ran.out)["tools"]}
    for command, tool in found.items():
        assert (tool["path"] is not None) == (shutil.which(command) is not None), tool
    if shutil.which("umoci"):  # Debian 12's umoci 0.4.7 cannot read assemble's zstd layers
        version = subprocess.run(["umoci", "--version"], capture_output=True, text=True).stdout
        assert found["umoci"]["version"] in version
        old = version.split()[-1].startswith("0.4")
        assert ("cannot read zstd" in found["umoci"]["note"]) == old, found["umoci"]

    # Nothing on PATH: every program missing, one apt-get line for them, exit 1 (no buildah).
    empty = tmp_path / "bin"
    empty.mkdir()
    ran = run_cli_here(["doctor"], env={"PATH": str(empty)})
    assert ran.code == 1, ran
    assert "missing  buildah          apt-get install buildah" in ran.out, ran
    line = next(x for x in ran.out.splitlines() if x.startswith("to install what is missing:"))
    assert "--no-install-recommends buildah mmdebstrap uidmap git skopeo docker-registry squashfs-tools-ng" in line
    assert "apptainer" not in line and "scripts/build-apptainer" in ran.out, ran
