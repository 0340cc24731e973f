"""The real llama.cpp, not a stand-in: the tree PyPI's llama-cpp-python sdist vendors.

``manifests/llamacpp.yaml --set backend=cpu --source llama.cpp=TREE`` (with one CPU variant,
``ONE_CPU_VARIANT``) must build the CPU server image as shipped (no edited manifest, no copied
recipe), run ``llama-server
--version``, carry CA certificates, label the source actually built, and keep the
README's promises on real code: no change builds nothing and gives the same digest; a
one-line edit in the server recompiles that one file and changes only the server's layer.

That the image is upstream's own is checked by a benchmark, not here: it takes upstream's
``.devops/cpu.Dockerfile`` built by ``buildah bud``, a second cold compile of llama.cpp
(with it, this module took about 36 minutes on 2 cores from an empty test cache).
``scripts/bench-rebuild llamacpp`` builds both images from the same tree on the same runtime
base anyway, and exits 1 unless ``assemble diff --rootfs`` shows upstream's image
(``scripts/upstreamdiff.py``: the same entrypoint, env, workdir and healthcheck, port
8080 added, nothing of upstream's missing from ours but apt's leftovers and buildah's
mount points, ``app/`` as upstream's plus llama-cli).

The sdist is downloaded once into the shared test cache (never committed); the first build
runs once per session and the other tests build on it. What a CI runner keeps between runs
is kept in the shared test cache too: the compiler cache the manifest's step shares
(``shared_cache:``, as ``--cache-to`` would carry it), so the first build runs every
compile command through ccache; the image, this project's output, is built every run.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assembler.cache import key_of
from assembler.cache.marker import claim
from assembler.compile.sources import tree_digest
from tests.conftest import TEST_CACHE, reclaim_at_teardown
from tests.helpers import ROOT, Buildah, Ran, config_of, layout_digest, run_cli

SDIST = "llama-cpp-python==0.3.16"
# One CPU backend instead of upstream's fourteen (GGML_CPU_ALL_VARIANTS, x64 to sapphirerapids:
# ggml's CPU code compiled once per variant), through the manifest's own parameter for the
# backend's CMake flags, which a later -D overrides. Alone on an idle 2-core machine, with
# no compiler cache, this module took 235 s (its build 195 s, the apt packages included);
# in a cold run of the whole suite it took 1,500 worker-seconds and more, most of them
# waiting for the cores, which the suite keeps busy from start to end. What the variants
# change is a file list, which test_manifest_llamacpp.py checks (every libggml-cpu-*.so and
# its SONAME links) and scripts/bench-rebuild llamacpp compares with upstream's image.
ONE_CPU_VARIANT = ("--set", "backend_flags=-DGGML_CPU_ALL_VARIANTS=OFF")
# The cold build of llama.cpp takes a while on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def upstream_tree() -> Path:
    """llama.cpp as vendored by the llama-cpp-python sdist, downloaded and unpacked once per
    machine (parallel test processes wait for the first)."""
    folder = TEST_CACHE / "upstream"
    tree = folder / "llama.cpp-0.3.16"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # upstream's image as the suite once kept it (a docker-archive, hundreds of MB): that
        # comparison is scripts/bench-rebuild's now, and a reused machine keeps its test cache
        for old in folder.glob("server-*.tar"):
            old.unlink()
        if tree.is_dir():
            return tree
        archive = folder / "llama_cpp_python-0.3.16.tar.gz"
        if not archive.is_file():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    SDIST,
                    "-d",
                    str(folder),
                ],
                check=True,
            )
        tmp = folder / ".tmp-tree"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        prefix = "llama_cpp_python-0.3.16/vendor/llama.cpp/"
        with tarfile.open(archive) as tf:
            members = [
                m
                for m in tf.getmembers()
                if m.name.startswith(prefix)
                and len(m.name) > len(prefix)
                and ".." not in m.name.split("/")
                and (m.isfile() or m.isdir() or m.issym())
            ]
            for m in members:
                m.name = m.name[len(prefix) :]
            tf.extractall(tmp, members=members)  # no filter= before Python 3.11.4 (Debian 12 has 3.11.2)
        tmp.rename(tree)
    return tree


@dataclass
class Real:
    work: Path
    source: Path
    bases: dict[str, Path]
    cold: Ran

    def build(self, *args: str) -> Ran:
        return build(self.work, self.source, self.bases, *args)


def build(work: Path, source: Path, bases: dict[str, Path], *args: str) -> Ran:
    ran = run_cli(
        [
            str(ROOT / "manifests/llamacpp.yaml"),
            "--set",
            "backend=cpu",
            *ONE_CPU_VARIANT,
            "--source",
            f"llama.cpp={source}",
            "--base",
            f"devel=oci:{bases['devel']}:latest",
            "--base",
            f"runtime=oci:{bases['runtime']}:latest",
            "--cache",
            str(work / "cache"),
            "--json",
            "-o",
            f"oci:{work / 'out'}:server",
            *args,
        ],
        cwd=work,
        timeout=3600,
    )
    assert ran.code == 0, str(ran)
    return ran


# The step's compiler cache (layers/llama-cpp.yaml shared_cache), as the cache folder holds it.
CCACHE = ("step-caches", "_shared", key_of({"path": "/root/.cache/ccache"})[:16])
KEPT_CCACHE = TEST_CACHE / "upstream" / "ccache"


def _copy_tree(src: Path, dest: Path) -> None:
    """``dest`` replaced by a copy of ``src`` (through a temporary name: never half there)."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(tmp)], check=True)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


@pytest.fixture(scope="module")
def real(
    tmp_path_factory: pytest.TempPathFactory, demo_bases: dict[str, Path], request: pytest.FixtureRequest
) -> Iterator[Real]:
    work = tmp_path_factory.mktemp("upstream-llamacpp")
    reclaim_at_teardown(request, work)
    source = work / "llama.cpp"
    shutil.copytree(upstream_tree(), source, symlinks=True)  # this module edits its copy
    ccache = work.joinpath("cache", *CCACHE)
    if KEPT_CCACHE.is_dir():
        claim(work / "cache")  # a cache folder as a build makes one (a foreign folder is refused)
        ccache.parent.mkdir(parents=True)
        _copy_tree(KEPT_CCACHE, ccache)
    yield Real(work, source, demo_bases, build(work, source, demo_bases))
    if ccache.is_dir():
        _copy_tree(ccache, KEPT_CCACHE)


def edit_one_line(server_cpp: Path) -> None:
    """A one-line change of code that reaches the binary (a comment would be a ccache hit,
    and an unused constant would leave the binary as it was)."""
    text = server_cpp.read_text()
    assert text.count("cleaning up before exit...") == 1
    server_cpp.write_text(text.replace("cleaning up before exit...", "cleaning up before exit (edited)..."))


def states(ran: Ran) -> dict[str, str]:
    return {s["name"]: s["state"] for s in ran.json["steps"]}


def layers(ran: Ran) -> dict[str, str]:
    return {x["what"]: x["digest"] for x in ran.json["layers"]}


def test_the_shipped_manifest_builds_upstream_and_the_server_runs(real: Real, tmp_path: Path) -> None:
    assert states(real.cold) == {"llama": "built", "runtime-packages": "built", "bin-links": "built"}
    layout = real.work / "out"
    assert layout_digest(layout, "server") == real.cold.json["digest"]
    assert run_cli(["validate", f"oci:{layout}:server"]).code == 0
    b = Buildah(tmp_path / "b")
    # From another folder than /app, as Apptainer starts it: the libraries come through $ORIGIN.
    out = b.run_image(f"oci:{layout}:server", ["sh", "-c", "cd /tmp && /app/llama-server --version 2>&1"])
    assert re.search(r"version: \d+ \(", out), out  # it prints to stderr
    # The seed's path (/usr/local/bin) is a link: $ORIGIN and ggml's backend search still find /app.
    out = b.run_image(
        f"oci:{layout}:server",
        [
            "sh",
            "-c",
            "cd /tmp && /usr/local/bin/llama-server --version 2>&1 && /usr/local/bin/llama-cli --version 2>&1",
        ],
    )
    assert len(re.findall(r"version: \d+ \(", out)) == 2, out
    # HTTPS model downloads (llama-server -hf ...) need the CA certificates upstream's image has.
    certs = b.run_image(f"oci:{layout}:server", ["sh", "-c", "ls /etc/ssl/certs | wc -l"])
    assert int(certs.strip()) > 100
    assert "BEGIN CERTIFICATE" in b.run_image(
        f"oci:{layout}:server", ["head", "-1", "/etc/ssl/certs/ca-certificates.crt"]
    )


def test_labels_follow_the_source_actually_built(real: Real) -> None:
    cfg = config_of(real.work / "out", "server")["config"]
    labels: dict[str, Any] = cfg["Labels"]
    # --source replaced the pinned tag: no version is claimed, the revision is the tree's digest.
    assert "org.opencontainers.image.version" not in labels
    assert labels["org.opencontainers.image.revision"] == tree_digest(upstream_tree())


def test_no_change_builds_nothing_and_gives_the_same_digest(real: Real) -> None:
    again = real.build()
    assert set(states(again).values()) == {"cached"}
    assert again.json["digest"] == real.cold.json["digest"]


def test_one_line_edit_recompiles_one_file_and_changes_one_layer(real: Real) -> None:
    server_cpp = real.source / "tools/server/server.cpp"
    edit_one_line(server_cpp)
    edited = real.build()
    # the links' layer runs again on the new image below it, and is the same layer
    assert states(edited) == {"llama": "built", "runtime-packages": "cached", "bin-links": "built"}
    step = next(s for s in edited.json["steps"] if s["name"] == "llama")
    log = (real.work / "cache" / "logs" / f"llama-{step['key'][:12]}.log").read_text()
    compiled = re.findall(r"Building (?:C|CXX) object (\S+)", log)
    assert compiled == ["tools/server/CMakeFiles/llama-server.dir/server.cpp.o"], log[-3000:]
    before, after = layers(real.cold), layers(edited)
    changed = sorted(what for what in after if after[what] != before.get(what))
    assert changed == ["artifact llama.server"]
