"""Bases of another architecture made on this one (issue 69, item 1): a ``bootstrap:`` base
for ``linux/arm64`` on an x86 host, by mmdebstrap's foreign-architecture support (the
packages' maintainer scripts run under qemu-user through binfmt_misc, which
``scripts/setup --test`` installs and enables: qemu-user-static, binfmt-support, arch-test).
Without them, the failure says what to install."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from assembler.debian.bootstrap import hint_for
from tests.conftest import BASES_CACHE
from tests.helpers import config_of, manifest_of, read_blob, run_cli, uncompressed

EM_AARCH64 = 183  # ELF e_machine


def test_a_foreign_bootstrap_without_qemu_says_what_to_install() -> None:
    # mmdebstrap 1.3's last line where arch-test is missing (as the issue quotes it)
    hint = hint_for("E: install arch-test for foreign architecture support", [])
    assert hint is not None and "qemu-user-static binfmt-support arch-test" in hint and "scripts/setup --test" in hint


@pytest.mark.slow  # the first time on a machine: minutes of maintainer scripts under qemu
@pytest.mark.integration
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="an arm64 base bootstrapped on an x86 host")
def test_an_arm64_base_is_bootstrapped_on_an_x86_host(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "name: arm-base\nbases:\n  b: {bootstrap: {suite: bookworm, variant: minbase}}\nimage:\n  base: b\n"
    )
    out = f"oci:{tmp_path / 'out'}:arm"
    # the bases' shared cache: bootstrapped once per machine, as the demo's bases are
    ran = run_cli(["b.yaml", "--platform", "linux/arm64", *BASES_CACHE, "-o", out, "--json"], cwd=tmp_path)
    assert ran.code == 0, str(ran)
    config = config_of(tmp_path / "out", "arm")
    assert (config["architecture"], config["os"]) == ("arm64", "linux")
    (layer,) = manifest_of(tmp_path / "out", "arm")["layers"]
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(tmp_path / "out", layer["digest"])))) as tar:
        member = tar.extractfile("usr/bin/dash")
        assert member is not None
        head = member.read(20)
        status = tar.extractfile("var/lib/dpkg/status")
        assert status is not None
        installed = status.read().decode()
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == EM_AARCH64
    # every package configured (its maintainer scripts ran, under qemu), for arm64
    stanzas = [s for s in installed.split("\n\n") if s.strip()]
    assert stanzas and all("Status: install ok installed" in s for s in stanzas)
    assert "Architecture: arm64" in installed and "Architecture: amd64" not in installed
    assert json.loads(ran.out)["digest"].startswith("sha256:")
