"""Golden digests: the bytes a manifest gives are pinned, so a change of the pipeline's
code that changes an image shows here, not in a user's registry.

A digest here changes only with a commit that says why (a new layer format, a config
field): never as a side effect of a refactor.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from assembler.archive.compress import decompressed
from assembler.sbom.databases import installed_versions
from tests.helpers import layout_digest, manifest_of, run_cli
from tests.plugins.demo import Demo

# Only host files (no base, no container): the same bytes on every machine.
COPY_ONLY = """\
name: golden
epoch: 1700000000
bases: {nothing: scratch}
image:
  base: nothing
  layers:
    - copy: {from: ./app, to: /opt/app}
    - copy: {from: ./etc/app.conf, to: /etc/app.conf, mode: "0600", owner: "1000:1000"}
      comment: the configuration
  config:
    entrypoint: [/opt/app/run.sh]
    env: {APP_HOME: /opt/app, PATH: "/opt/app:${PATH}"}
    labels: {org.example.role: golden}
    workdir: /opt/app
annotations: {org.example.note: pinned}
outputs: ['oci:out:golden']
"""

GOLDEN_COPY_ONLY = {
    "zstd": "sha256:613d79f74e24289e635d2ec30b3bda172127f9a4ebc1061e6b1338ec51174ad3",
    "gzip": "sha256:5cd3aca22b1c6e13fbe5d9a6b0862184dd7370c000bce129d25ebe4a120e2c3e",
}

# The demo built cold from the shared test bases (tests/conftest.py demo_bases). Its digest
# holds for these bases only: other package versions give other compilers and other bytes.
# So the bases are pinned by digest and by every package version they hold
# (tests/golden_demo_bases.txt): when Debian's mirror moves, this fails and says which
# packages moved; re-pin with `python -m tests.test_golden` in a commit that says why.
GOLDEN_DEMO_BASES = {
    "devel": "sha256:bfc41b41d4a8a0d6a1736a633a608bcb626f81d36f37e18fc4655724d9a366f6",
    "runtime": "sha256:583c18328103ef9e7d30bb73582bf3fb05d63a8df4c629db546a9ab90ce6c541",
}
GOLDEN_DEMO = "sha256:001d62926b30b330d6c4840a4406ccaca80a39bb3035117cce15cbb42000cac7"
PINNED_PACKAGES = Path(__file__).with_name("golden_demo_bases.txt")


def _copy_only_project(folder: Path) -> Path:
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "run.sh").write_text("#!/bin/sh\necho golden\n")
    (folder / "app" / "run.sh").chmod(0o755)
    (folder / "app" / "data").mkdir()
    (folder / "app" / "data" / "table.txt").write_text("a 1\nb 2\n")
    (folder / "app" / "README").symlink_to("data/table.txt")
    (folder / "etc").mkdir()
    (folder / "etc" / "app.conf").write_text("level = 3\n")
    manifest = folder / "golden.yaml"
    manifest.write_text(COPY_ONLY)
    return manifest


@pytest.mark.integration  # seconds
def test_copy_only_manifest_has_its_golden_digest(tmp_path: Path) -> None:
    manifest = _copy_only_project(tmp_path)
    for compression, golden in GOLDEN_COPY_ONLY.items():
        args = [str(manifest), "--cache", str(tmp_path / "cache"), "--json", "--compression", compression]
        ran = run_cli(args, cwd=tmp_path, env={"SOURCE_DATE_EPOCH": ""})
        assert ran.code == 0, str(ran)
        assert ran.json["digest"] == layout_digest(tmp_path / "out", "golden")
        assert ran.json["digest"] == golden, f"{compression}: {ran.json['digest']}"


def base_packages(layout: Path) -> set[str]:
    """``NAME VERSION`` of every package installed in a one-layer base (dpkg's status file)."""
    manifest = manifest_of(layout, "latest")
    (layer,) = manifest["layers"]
    blob = layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
    with open(blob, "rb") as raw, decompressed(raw) as data, tarfile.open(fileobj=data, mode="r|") as tar:
        for member in tar:
            if member.name.lstrip("./") == "var/lib/dpkg/status":
                text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
                return {f"{name} {version}" for (name, _), version in installed_versions(text).items()}
    raise AssertionError(f"{layout}: no var/lib/dpkg/status")


def pinned_packages() -> dict[str, set[str]]:
    pins: dict[str, set[str]] = {name: set() for name in GOLDEN_DEMO_BASES}
    for line in PINNED_PACKAGES.read_text().splitlines():
        base, package = line.split(" ", 1)
        pins[base].add(package)
    return pins


def base_paths(layout: Path) -> set[str]:
    """Every path a one-layer base holds."""
    (layer,) = manifest_of(layout, "latest")["layers"]
    blob = layout / "blobs" / "sha256" / layer["digest"].split(":", 1)[1]
    with open(blob, "rb") as raw, decompressed(raw) as data, tarfile.open(fileobj=data, mode="r|") as tar:
        return {member.name.lstrip("./") for member in tar}


def test_a_bootstrapped_base_holds_nothing_of_the_machine_that_made_it(demo_bases: dict[str, Path]) -> None:
    """mmdebstrap copies the host's resolv.conf and hostname into the root: the same base
    made on two machines had two digests (and the golden demo's held on one machine only)."""
    for name in GOLDEN_DEMO_BASES:
        held = base_paths(demo_bases[name])
        assert "etc/os-release" in held or "usr/lib/os-release" in held, name  # a real base was read
        assert not held & {"etc/resolv.conf", "etc/hostname"}, name


def test_demo_has_its_golden_digest(demo: Demo) -> None:
    bases = {name: layout_digest(demo.bases[name], "latest") for name in GOLDEN_DEMO_BASES}
    digest = demo.cold.json["digest"]
    if bases != GOLDEN_DEMO_BASES:
        pins = pinned_packages()
        moved = []
        for name in GOLDEN_DEMO_BASES:
            now = base_packages(demo.bases[name])
            moved += [f"{name}: -{p}" for p in sorted(pins[name] - now)]
            moved += [f"{name}: +{p}" for p in sorted(now - pins[name])]
        pytest.fail(
            f"The golden demo digest no longer guards: the test bases are not the pinned ones.\n"
            f"Bases now {bases}, the demo on them {digest}.\n"
            + ("Packages that moved (Debian's mirror):\n  " + "\n  ".join(moved) if moved else "No package moved.")
            + "\nRe-pin: `python -m tests.test_golden` and the digests above, in a commit that says why."
        )
    assert digest == GOLDEN_DEMO
    warm = demo.build()  # from its cached steps: the same bytes again
    assert warm.json["digest"] == GOLDEN_DEMO


if __name__ == "__main__":
    # Re-pin the package versions of the shared test bases (after a mirror moved).
    from tests.conftest import TEST_BASES

    lines = [f"{name} {p}" for name in GOLDEN_DEMO_BASES for p in base_packages(TEST_BASES / name)]
    PINNED_PACKAGES.write_text("".join(line + "\n" for line in sorted(lines)))
    print(f"{PINNED_PACKAGES}: {len(lines)} packages")
