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

from assembler.compile import gpudriver
from assembler.compile.binfmt import Emulator, emulator
from assembler.debian.bootstrap import hint_for
from assembler.oci.descriptor import Platform
from assembler.oci.image import Image
from assembler.oci.mutate import scratch
from assembler.pipeline.image.imagetests import where_it_runs
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


# -- tests of a foreign image under qemu-user (issue 69, item 4) ------------------------------


def test_binfmt_entries_say_which_interpreter_a_container_needs(tmp_path: Path) -> None:
    qemu = tmp_path / "qemu-aarch64-static"
    qemu.write_bytes(b"\x7fELF")
    link = tmp_path / "aarch64-binfmt-P"
    link.symlink_to(qemu)
    entry = "{state}\ninterpreter {path}\nflags: {flags}\noffset 0\nmagic 7f454c46\n"
    (tmp_path / "qemu-aarch64").write_text(entry.format(state="enabled", path=link, flags="P"))
    found = emulator("arm64", root=tmp_path)
    assert found is not None and found.machine == "aarch64"
    assert found.mounts == ((str(qemu), str(link), True),)  # the file itself where the kernel opens it
    assert "qemu-aarch64-static" in found.said
    (tmp_path / "qemu-aarch64").write_text(entry.format(state="enabled", path=link, flags="PF"))
    assert emulator("arm64", root=tmp_path) == Emulator("aarch64", str(link), ())  # opened at registration
    (tmp_path / "qemu-aarch64").write_text(entry.format(state="disabled", path=link, flags="PF"))
    assert emulator("arm64", root=tmp_path) is None
    (tmp_path / "qemu-aarch64").write_text(entry.format(state="enabled", path=tmp_path / "gone", flags="P"))
    assert emulator("arm64", root=tmp_path) is None  # opened at each start: it must be there
    assert emulator("riscv64", root=tmp_path) is None  # no entry
    # registered with F: the kernel holds the interpreter, which need not be on the host's path
    (tmp_path / "qemu-aarch64").write_text(entry.format(state="enabled", path=tmp_path / "gone", flags="F"))
    assert emulator("arm64", root=tmp_path) == Emulator("aarch64", str(tmp_path / "gone"), ())
    # binfmt-support's and systemd's entry names: qemu-arm for arm (armv7l machines), qemu-i386 for 386
    (tmp_path / "qemu-arm").write_text(entry.format(state="enabled", path=link, flags="F"))
    found = emulator("arm", root=tmp_path)
    assert found is not None and found.machine == "armv7l"


def _image(architecture: str) -> Image:
    return scratch(Platform("linux", architecture), epoch=0)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="which images are foreign depends on the machine")
def test_a_foreign_images_test_runs_only_under_an_emulator_asked_for_and_found(monkeypatch: pytest.MonkeyPatch) -> None:
    arm, native = _image("arm64"), _image("amd64")
    qemu = Emulator("aarch64", "/usr/libexec/qemu-binfmt/aarch64-binfmt-P", ())
    monkeypatch.setattr(gpudriver, "missing", lambda: "no NVIDIA GPU on this machine")
    assert where_it_runs(native, False, asked=True, emulator=lambda _: qemu) == (None, None)  # natively
    assert where_it_runs(native, True, asked=False, emulator=lambda _: qemu) == ("no NVIDIA GPU on this machine", None)
    why, under = where_it_runs(arm, False, asked=False, emulator=lambda _: qemu)
    assert why == "the image is for linux/arm64, this machine is x86_64" and under is None
    assert where_it_runs(arm, False, asked=True, emulator=lambda _: qemu) == (None, qemu)
    why, under = where_it_runs(arm, False, asked=True, emulator=lambda _: None)
    assert why is not None and why.endswith("and no qemu-user for it is enabled here") and under is None
    # a GPU test never runs emulated (the host's driver libraries are not arm64's), GPU or not
    for missing in ("no NVIDIA GPU on this machine", None):
        monkeypatch.setattr(gpudriver, "missing", lambda m=missing: m)
        why, under = where_it_runs(arm, True, asked=True, emulator=lambda _: qemu)
        assert why is not None and why.endswith("a GPU test does not run under an emulator") and under is None


_TESTED = """name: arm-tests
bases:
  b: {bootstrap: {suite: bookworm, variant: minbase}}
image:
  base: b
tests:
  - {name: machine, command: [uname, -m], output: ['^aarch64$'], emulate: true}
  - {name: shell, command: [sh, -c, 'echo "hi from $(uname -m)"'], output: ['^hi from aarch64$']}
  # past its own timeout, inside the 10 times it gets under the emulator
  - {name: slow, command: [sh, -c, 'sleep 2 && echo slept'], output: ['^slept$'], timeout: 1s, emulate: true}
"""


@pytest.mark.slow  # the arm64 base: bootstrapped by the test above once per machine, a cache hit here
@pytest.mark.integration
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="an arm64 image tested on an x86 host")
def test_an_arm64_images_tests_run_under_qemu_only_when_asked_and_never_pass(tmp_path: Path) -> None:
    assert emulator("arm64") is not None, "scripts/setup --test enables qemu-aarch64 in binfmt_misc"
    (tmp_path / "t.yaml").write_text(_TESTED)
    out = f"oci:{tmp_path / 'out'}:arm"
    # a build runs the test that asks for emulation under qemu-user; the other is not run
    built = run_cli(["t.yaml", "--platform", "linux/arm64", *BASES_CACHE, "-o", out], cwd=tmp_path)
    assert built.code == 0, str(built)

    def tested(*more: str) -> dict[str, dict[str, object]]:
        save = tmp_path / "statement.json"
        ran = run_cli(["test", "--json", *BASES_CACHE[:2], out, "t.yaml", "--save", str(save), *more], cwd=tmp_path)
        assert ran.code == 0, str(ran)
        tests = {t["name"]: t for t in json.loads(ran.out)["tests"]}
        tests["statement"] = json.loads(save.read_text())["predicate"]
        return tests

    plain = tested()
    assert (plain["machine"]["status"], plain["shell"]["status"], plain["slow"]["status"]) == (
        "emulated",
        "not-run",
        "emulated",
    )
    assert "qemu-user (qemu-aarch64-static) for aarch64" in str(plain["machine"]["reason"])
    assert "not a run on the target" in str(plain["machine"]["reason"])
    assert str(plain["shell"]["reason"]).startswith("the image is for linux/arm64, this machine is x86_64")
    every = tested("--emulate")
    assert (every["machine"]["status"], every["shell"]["status"]) == ("emulated", "emulated")
    # the statement counts them warned: they ran, and passed, but not on an arm64 machine
    warned = ["machine", "shell", "slow"]
    assert every["statement"]["passedTests"] == [] and every["statement"]["warnedTests"] == warned
    assert every["statement"]["result"] == "WARNED"
    # a test that fails under the emulator fails, and says it was emulated
    (tmp_path / "t.yaml").write_text(_TESTED.replace("'^hi from aarch64$'", "'^hi from x86_64$'"))
    ran = run_cli(["test", "--json", *BASES_CACHE[:2], out, "t.yaml", "--emulate"], cwd=tmp_path)
    assert ran.code != 0
    failed = {t["name"]: t for t in json.loads(ran.out)["tests"]}["shell"]
    assert failed["status"] == "failed" and "(under qemu-user" in str(failed["reason"])


_EMULATED = """name: arm-steps
bases:
  b: {bootstrap: {suite: bookworm, variant: minbase}}
compile:
  - {name: s, base: b, run: ["true"], artifacts: {o: {path: /o, to: /o}}}
image:
  base: b
  layers:
    - artifact: s.o
    - run: ["true"]
      name: hello
"""


def test_steps_and_run_layers_of_another_architecture_run_emulated_only_when_the_manifest_says_so(
    tmp_path: Path,
) -> None:
    """Issue 69 item 3: buildah would run an arm64 step here under qemu-user without a word;
    a plan refuses it where it is written, unless ``emulate: true``, and then names it."""
    (tmp_path / "m.yaml").write_text(_EMULATED)
    plan = ["plan", "m.yaml", "--platform", "linux/arm64", *BASES_CACHE]
    ran = run_cli(plan, cwd=tmp_path)
    assert ran.code == 2, ran
    assert "m.yaml:5: compile.0: step s (aarch64) would run under qemu-user" in ran.err, ran.err
    assert "(and layer hello (aarch64))" in ran.err and "emulate: true" in ran.err
    assert "pip:, url:, copy: or artifact:" in ran.err
    # with --executor slurm the step runs on a node (the partition's architecture): only the layer is emulated
    slurm = run_cli([*plan, "--executor", "slurm"], cwd=tmp_path)
    assert slurm.code == 2 and "image.layers.1: layer hello (aarch64) would run under qemu-user" in slurm.err, slurm
    assert run_cli([*plan[:2], *BASES_CACHE], cwd=tmp_path).code == 0  # amd64: nothing emulated
    (tmp_path / "m.yaml").write_text(_EMULATED.replace("name: arm-steps\n", "name: arm-steps\nemulate: true\n"))
    ran = run_cli(plan, cwd=tmp_path)
    assert ran.code == 0, ran
    said = ran.out.split("emulated (emulate: true; qemu-user here):\n", 1)[1].splitlines()[:2]
    assert said == ["  step s (aarch64)", "  layer hello (aarch64)"], ran.out


def test_a_step_on_a_base_of_this_machines_platform_is_native() -> None:
    """A step whose base names its own platform (a cross toolchain on the build machine's)
    runs natively whatever the image's platform."""
    from assembler.compile.binfmt import native
    from assembler.manifest.schema import model as m
    from assembler.pipeline.runs.emulation import step_platform

    arm = Platform.parse("linux/arm64")
    assert native("arm64", "aarch64") and not native("arm64", "x86_64") and native("386", "x86_64")
    assert not native("arm", "aarch64")  # Grace has no AArch32
    man = m.Manifest.model_validate(
        {
            "name": "x",
            "bases": {"dev": {"ref": "oci:./dev:1", "platform": "linux/amd64"}, "b": "scratch"},
            "compile": [
                {"name": "cross", "base": "dev", "run": ["true"], "artifacts": {"o": {"path": "/o", "to": "/o"}}}
            ],
            "image": {"base": "b", "layers": [{"artifact": "cross.o"}]},
        }
    )
    assert str(step_platform(man, man.compile[0], arm)) == "linux/amd64"
