"""Golden digests: the bytes a manifest gives are pinned, so a change of the pipeline's
code that changes an image shows here, not in a user's registry.

A digest here changes only with a commit that says why (a new layer format, a config
field): never as a side effect of a refactor.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import layout_digest, run_cli
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
# holds for these bases only: mmdebstrap on a newer mirror makes other bases, and then
# other compilers make other bytes, so the bases are pinned alongside.
GOLDEN_DEMO_BASES = {
    "devel": "sha256:e209dff29f74b6d888155b9ad3c15baef2e0e4efc71f9478bce3246d18b7ca7f",
    "runtime": "sha256:d6ecc78f366e2a1b1cd654188b29823bd63d63d24d383dae20de362b8356b66b",
}
GOLDEN_DEMO = "sha256:bafc16958742208fe2ee4f8c7a3b48246405e833e120961dc493360ddfc4b821"


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


def test_copy_only_manifest_has_its_golden_digest(tmp_path: Path) -> None:
    manifest = _copy_only_project(tmp_path)
    for compression, golden in GOLDEN_COPY_ONLY.items():
        args = [str(manifest), "--cache", str(tmp_path / "cache"), "--json", "--compression", compression]
        ran = run_cli(args, cwd=tmp_path, env={"SOURCE_DATE_EPOCH": ""})
        assert ran.code == 0, str(ran)
        assert ran.json["digest"] == layout_digest(tmp_path / "out", "golden")
        assert ran.json["digest"] == golden, f"{compression}: {ran.json['digest']}"


def test_demo_has_its_golden_digest(demo: Demo) -> None:
    bases = {name: layout_digest(demo.bases[name], "latest") for name in GOLDEN_DEMO_BASES}
    if bases != GOLDEN_DEMO_BASES:
        # A machine whose bases were bootstrapped from a newer Debian mirror: other compilers,
        # other bytes. The pin says nothing there (the copy-only pin above still holds, and
        # test_reproducible checks two builds agree); record the new pair to pin it again.
        pytest.skip(f"the shared test bases are not the pinned ones (newer mirror): {bases}")
    assert demo.cold.json["digest"] == GOLDEN_DEMO
    warm = demo.build()  # from its cached steps: the same bytes again
    assert warm.json["digest"] == GOLDEN_DEMO
