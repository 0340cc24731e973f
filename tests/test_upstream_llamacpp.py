"""The real llama.cpp, not a stand-in: the tree PyPI's llama-cpp-python sdist vendors.

``manifests/llamacpp.yaml --set backend=cpu --source llama.cpp=TREE`` must build the CPU
server image as shipped (no edited manifest, no copied recipe), run ``llama-server
--version``, carry CA certificates, label the source actually built, and keep the
README's promises on real code: no change builds nothing and gives the same digest; a
one-line edit in the server recompiles that one file and changes only the server's layer.

The image must also be upstream's image: ``assemble diff --rootfs`` against ``buildah bud``
of upstream's own ``.devops/cpu.Dockerfile`` (target ``server``, on the same runtime base,
from the same tree) shows the same entrypoint, env, workdir and port, and nothing under
upstream's install folder that ours lacks.

The sdist is downloaded once into the shared test cache (never committed); the first build
runs once per session and the other tests build on it. What a CI runner keeps between runs
is kept in the shared test cache too, keyed by what made it: the compiler cache the
manifest's step shares (``shared_cache:``, as ``--cache-to`` would carry it), so the first
build runs every compile command through ccache, and upstream's image, ``buildah bud`` of its
Dockerfile, the tree and the base (neither is this project's output: ours is built every run).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
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
from tests.helpers import ROOT, Buildah, Ran, config_of, layout_digest, run_cli, sh

SDIST = "llama-cpp-python==0.3.16"
# The cold build of llama.cpp (every CPU variant) takes a while on 2 cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def upstream_tree() -> Path:
    """llama.cpp as vendored by the llama-cpp-python sdist, downloaded and unpacked once per
    machine (parallel test processes wait for the first)."""
    folder = TEST_CACHE / "upstream"
    tree = folder / "llama.cpp-0.3.16"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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


def bud_upstream(work: Path, runtime: Path) -> Path:
    """Upstream's ``.devops/cpu.Dockerfile``, target ``server``, built by ``buildah bud`` from
    the pristine tree with both its stages on our runtime base (``FROM ubuntu`` is not
    reachable here); the image as a docker-archive, which keeps its HEALTHCHECK. Kept in the
    shared test cache under the digest of its inputs (Dockerfile, tree, base, buildah)."""
    tree = upstream_tree()
    text = (tree / ".devops/cpu.Dockerfile").read_text()
    assert text.count("FROM ubuntu:$UBUNTU_VERSION") == 2, "upstream's Dockerfile changed: read it again"
    text = text.replace("FROM ubuntu:$UBUNTU_VERSION", "FROM localhost/upstream/runtime:1")
    inputs = {
        "dockerfile": text,
        "tree": tree_digest(tree),
        "base": layout_digest(runtime, "latest"),
        "buildah": sh(["buildah", "--version"]).stdout,
    }
    kept = TEST_CACHE / "upstream" / f"server-{hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]}.tar"
    if kept.is_file():
        return kept
    g = ["buildah", "--root", str(work / "bud/root"), "--runroot", str(work / "bud/run"), "--storage-driver", "overlay"]
    # buildah names a pulled layout after its path, and a dot-folder is not a valid name part
    pulled = sh([*g, "pull", "--quiet", f"oci:{runtime.name}:latest"], cwd=runtime.parent).stdout.split()[-1]
    sh([*g, "tag", pulled, "localhost/upstream/runtime:1"])
    dockerfile = work / "cpu.Dockerfile"
    dockerfile.write_text(text)
    ca = "/etc/ssl/certs/ca-certificates.crt"  # this network's HTTPS goes through its own CA
    sh(
        [
            *g,
            "bud",
            "--pull=never",
            "--isolation",
            "chroot",
            "--format",
            "docker",
            "--volume",
            f"{ca}:{ca}:ro",
            "--target",
            "server",
            "--build-arg",
            "TARGETARCH=amd64",
            "-t",
            "localhost/upstream/server:1",
            "-f",
            str(dockerfile),
            str(tree),
        ],
        timeout=3600,
    )
    archive = work / "upstream-server.tar"
    sh([*g, "push", "--quiet", "localhost/upstream/server:1", f"docker-archive:{archive}:localhost/upstream/server:1"])
    sh([*g, "rmi", "--all", "--force"], check=False)  # its build stage is gigabytes
    for old in kept.parent.glob("server-*.tar"):
        old.unlink()
    shutil.copyfile(archive, kept.with_suffix(".tmp"))
    os.replace(kept.with_suffix(".tmp"), kept)
    return kept


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


def test_diff_against_upstreams_own_dockerfile(real: Real) -> None:
    """``assemble diff --rootfs`` of upstream's server image (buildah bud of its own
    Dockerfile, same runtime base, same tree) and ours: the same entrypoint, env, workdir
    and healthcheck, our one exposed port is the one upstream's healthcheck probes, and no
    file upstream's image has is missing from ours but the apt step's logs."""
    theirs = bud_upstream(real.work, real.bases["runtime"])
    ours = f"oci:{real.work / 'out'}:server"
    ran = run_cli(["diff", "--json", "--rootfs", f"docker-archive:{theirs}", ours])
    assert ran.code == 1, str(ran)
    config = {c["path"]: (c["a"], c["b"]) for c in ran.json["config"] if c["path"].startswith("config.")}
    same = ("config.Entrypoint", "config.Env", "config.WorkingDir", "config.Healthcheck")
    assert not [p for p in config if p.startswith(same)], config
    # Upstream's cpu.Dockerfile has no EXPOSE; its HEALTHCHECK (the same in both) probes 8080.
    assert {p: v for p, v in config.items() if p.startswith("config.ExposedPorts")} == {
        "config.ExposedPorts.8080/tcp": (None, {})
    }
    assert "http://localhost:8080/health" in config_of(real.work / "out", "server")["config"]["Healthcheck"]["Test"]

    files = {f["path"]: f for f in ran.json["rootfs"]}
    missing = sorted(p for p, f in files.items() if f["change"] == "removed")
    # Besides the apt step's logs and lists: the empty files buildah bud leaves where it
    # mounted /etc/hosts, /etc/hostname and /etc/resolv.conf (Docker, which upstream's CI
    # builds with, commits none of them; our runtime steps leave them out, as Docker does).
    mounts = {"etc/hosts", "etc/hostname", "etc/resolv.conf"}
    assert all(p.startswith(("var/log/", "var/lib/apt/")) or p in mounts for p in missing), missing
    # upstream's install folder: every library and the server, built from the same tree
    app = {p: f for p, f in files.items() if p.startswith("app/")}
    assert {p for p, f in app.items() if f["change"] == "added"} == {"app/llama-cli"}  # the seed's server has it
    assert {p for p, f in app.items() if f["change"] == "changed"} >= {"app/llama-server", "app/libllama.so"}
    assert all(c["path"] not in ("kind", "mode") for f in app.values() for c in f["fields"]), app


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
