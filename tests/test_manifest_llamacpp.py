"""manifests/llamacpp.yaml: llama.cpp's server/light/full images for CUDA, CPU and ROCm.

The CPU backend is built for real, offline: the project's stand-in source
(examples/llama-standin, same CMake options and outputs as llama.cpp) through
``--source llama.cpp=...`` and the session's bootstrapped Debian bases through ``--base``.
Its three images (server, light, full) are built in one run, pushed and written to a layout:
the server image runs (its healthcheck command, as upstream wrote it, answers from inside
the container), the light image reuses the compile step and the .so layer. Every backend
and target is planned offline to check what the manifest says: bases, cmake flags, layers,
outputs and the runtime config the Dockerfiles set.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from assembler.manifest.load.manifest import load_manifest
from tests.conftest import reclaim_at_teardown
from tests.helpers import (
    ROOT,
    Buildah,
    Ran,
    config_of,
    layout_digest,
    manifest_of,
    read_blob,
    run_cli,
    sh,
    uncompressed,
)
from tests.plugins.registry import RunningRegistry, start_registry

MANIFEST = ROOT / "manifests" / "llamacpp.yaml"
UPSTREAM_FLAGS = ("-DGGML_NATIVE=OFF", "-DGGML_BACKEND_DL=ON", "-DGGML_CPU_ALL_VARIANTS=ON", "-DLLAMA_CURL=ON")
HEALTHCHECK = ["CMD", "curl", "-f", "http://localhost:8080/health"]
CPU_VARIANTS = (
    "x64",
    "sse42",
    "sandybridge",
    "ivybridge",
    "piledriver",
    "haswell",
    "skylakex",
    "cannonlake",
    "cascadelake",
    "icelake",
    "cooperlake",
    "zen4",
    "alderlake",
    "sapphirerapids",
)
# The shared libraries and their SONAME links (the backend modules are unversioned files).
SONAME_LINKS = {
    "app/libggml-base.so": "libggml-base.so.0",
    "app/libggml-base.so.0": "libggml-base.so.0.9.4",
    "app/libggml.so": "libggml.so.0",
    "app/libggml.so.0": "libggml.so.0.9.4",
    "app/libllama.so": "libllama.so.0",
    "app/libllama.so.0": "libllama.so.0.0.0",
    "app/libmtmd.so": "libmtmd.so.0",
    "app/libmtmd.so.0": "libmtmd.so.0.0.0",
}


def build_cpu(project: Path, bases: dict[str, Path], *args: str) -> Ran:
    """The CPU backend from the stand-in source, on the session's Debian bases."""
    ran = run_cli(
        [
            str(project / "manifests/llamacpp.yaml"),
            "--set",
            "backend=cpu",
            "--source",
            f"llama.cpp={project / 'examples/llama-standin'}",
            "--base",
            f"devel=oci:{bases['devel']}:latest",
            "--base",
            f"runtime=oci:{bases['runtime']}:latest",
            "--cache",
            str(project / "cache"),
            "--json",
            *args,
        ],
        cwd=project,
    )
    assert ran.code == 0, str(ran)
    return ran


@dataclass
class Built:
    project: Path
    bases: dict[str, Path]
    run: Ran  # upstream's three targets in one run: server, light, full
    registry: RunningRegistry  # where that run pushed them too

    def report(self, target: str) -> dict[str, Any]:
        return next(r for r in self.run.json if r["target"] == target)

    @property
    def server(self) -> dict[str, Any]:
        return self.report("server")

    def build(self, *args: str) -> Ran:
        return build_cpu(self.project, self.bases, *args)


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory, demo_bases: dict[str, Path], request: pytest.FixtureRequest
) -> Iterator[Built]:
    """The CPU backend's three targets built in one run, into a layout (tagged by target) and
    a registry (tagged as upstream's), the way a release job makes them."""
    project = tmp_path_factory.mktemp("llamacpp")
    reclaim_at_teardown(request, project)
    for part in ("manifests", "layers"):
        shutil.copytree(ROOT / part, project / part)
    shutil.copytree(
        ROOT / "examples/llama-standin",
        project / "examples/llama-standin",
        ignore=shutil.ignore_patterns("build", "__pycache__"),
    )
    registry = start_registry(project / "registry")
    try:
        ran = build_cpu(
            project,
            demo_bases,
            # upstream's three (not the standin target: bookworm from the mirror, and an
            # inference test that needs llama.cpp itself, not the stand-in source)
            *("--target", "server", "--target", "light", "--target", "full"),
            "-o",
            "oci:out/llama:${target}",
            "-o",
            f"docker://{registry.host}/llama.cpp:${{target}}${{tag_suffix}}",
            "--tls-verify=false",
        )
        yield Built(project, demo_bases, ran, registry)
    finally:
        registry.stop()


def config(layout: Path, tag: str) -> dict[str, Any]:
    """The image's runtime config as written (skopeo's OCI view drops Docker's Healthcheck)."""
    return dict(config_of(layout, tag)["config"])


def layer_members(layout: Path, digest: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, digest)))) as tf:
        return {m.name: m for m in tf.getmembers()}


def in_isolated_network(argv: list[str]) -> list[str]:
    """``argv`` in a network namespace of its own with loopback up: the server can listen on
    8080, as the image's healthcheck expects, without meeting anything else on this host."""
    return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def test_cpu_server_image_is_upstreams(built: Built) -> None:
    states = {s["name"]: s["state"] for s in built.server["steps"]}
    assert states == {"llama": "built", "runtime-packages": "built", "bin-links": "built"}
    layout = built.project / "out/llama"
    assert layout_digest(layout, "server") == built.server["digest"]
    assert run_cli(["validate", f"oci:{layout}:server"]).code == 0
    assert [x["what"] for x in built.server["layers"][1:]] == [
        "packages libgomp1 curl ca-certificates",
        "artifact llama.libs",
        "artifact llama.server",
        "artifact llama.cli",
        "run ln -s /app/llama-server /app/llama-cli /usr/local/bin/",
    ]
    cfg = config(layout, "server")
    # What cpu.Dockerfile's server stage says: ENV, WORKDIR, HEALTHCHECK, ENTRYPOINT.
    assert cfg["Healthcheck"] == {"Test": HEALTHCHECK}
    assert cfg["Entrypoint"] == ["/app/llama-server"]
    assert not cfg.get("Cmd")
    assert cfg["WorkingDir"] == "/app"
    assert "LLAMA_ARG_HOST=0.0.0.0" in cfg["Env"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.title"] == "llama.cpp"
    assert labels["io.assemble.build.llama"] == "GGML_CUDA=OFF GGML_HIP=OFF GGML_NATIVE=OFF"
    assert not {k for k in labels if k.endswith(".archs")}  # a CPU image claims no GPU architecture
    assert labels.get("io.assemble.gpu.cuda.version", "") == labels.get("io.assemble.gpu.rocm.version", "") == ""
    # The runtime step: libgomp1 and curl installed, apt's lists and caches left out of the layer.
    apt = next(x for x in built.server["layers"] if x["what"] == "packages libgomp1 curl ca-certificates")
    names = set(layer_members(layout, apt["digest"]))
    assert {"usr/bin/curl", "usr/lib/x86_64-linux-gnu/libgomp.so.1"} <= names
    assert not [n for n in names if n.startswith(("var/lib/apt/lists/", "var/cache/apt/"))]


def test_so_set_keeps_its_soname_links_and_every_cpu_variant(built: Built) -> None:
    libs = next(x for x in built.server["layers"] if x["what"] == "artifact llama.libs")
    members = layer_members(built.project / "out/llama", libs["digest"])
    links = {name: m.linkname for name, m in members.items() if m.issym()}
    assert links == SONAME_LINKS
    files = {name for name, m in members.items() if m.isfile()}
    versioned = {"app/libggml-base.so.0.9.4", "app/libggml.so.0.9.4", "app/libllama.so.0.0.0", "app/libmtmd.so.0.0.0"}
    assert files == versioned | {f"app/libggml-cpu-{v}.so" for v in CPU_VARIANTS}
    assert not any("cuda" in name or "hip" in name for name in members)  # the CPU build has no GPU backend


def test_server_answers_its_healthcheck_inside_the_image(built: Built, tmp_path: Path) -> None:
    layout = built.project / "out/llama"
    cfg = config(layout, "server")
    server = " ".join(cfg["Entrypoint"])
    check = " ".join(cfg["Healthcheck"]["Test"][1:])  # the CMD form, run as written
    script = f"""
{server} > /tmp/server.log 2>&1 &
pid=$!
ok=no
for i in $(seq 1 100); do
  if {check} > /tmp/health.out 2>/dev/null; then ok=yes; break; fi
  sleep 0.1
done
echo "healthcheck: $ok $(cat /tmp/health.out)"
kill -TERM $pid; wait $pid; echo "server exit: $?"
cat /tmp/server.log
/app/llama-server --version 2>&1
echo "unresolved: $(ldd /app/llama-server /app/libggml-cpu-*.so | grep -c 'not found')"
"""
    b = Buildah(tmp_path / "b")
    ctr = sh([*b.argv, "from", "--quiet", f"oci:{layout}:server"]).stdout.strip().splitlines()[-1]
    try:
        argv = [*b.argv, "run", "--isolation", "chroot", ctr, "--", "sh", "-c", script]
        out = subprocess.run(in_isolated_network(argv), capture_output=True, text=True, timeout=300)
    finally:
        sh([*b.argv, "rm", ctr], check=False)
    print(f"\n{out.stdout}{out.stderr}")
    assert out.returncode == 0, out.stderr
    assert 'healthcheck: yes {"status":"ok"}' in out.stdout
    assert "server exit: 0" in out.stdout
    # LLAMA_ARG_HOST=0.0.0.0 from the image's Env took effect; a CPU variant was picked at run time.
    assert "main: server is listening on http://0.0.0.0:8080" in out.stdout
    assert "load_backend: loaded CPU backend from /app/libggml-cpu-" in out.stdout
    assert "request: GET /health" in out.stdout
    assert "version: 0 (standin)" in out.stdout and "built with GNU" in out.stdout
    assert "unresolved: 0" in out.stdout  # libgomp1 and libcurl4 came with the runtime step


def test_the_three_targets_in_one_run_compile_once_and_push_each(built: Built) -> None:
    """``--target`` three times: server, light and full in one run, the compile step and the
    runtime base's apt step run by the first and found by the others, each image pushed to
    its own tag (``${target}${tag_suffix}``, upstream's names for the CPU images)."""
    report: list[dict[str, Any]] = built.run.json
    assert [r["target"] for r in report] == ["server", "light", "full"]
    assert all(r["matrix"] == {} and r["params"]["backend"] == "cpu" for r in report)
    compiles = [s["state"] for r in report for s in r["steps"] if s["kind"] == "compile"]
    assert compiles == ["built", "cached", "cached"], json.dumps(report, indent=1)[:3000]
    packages = [s["state"] for r in report for s in r["steps"] if s["name"] == "runtime-packages"]
    assert packages == ["built", "cached", "cached"]
    repo = f"docker://{built.registry.host}/llama.cpp"
    for r, tag in zip(report, ("server", "light", "full"), strict=True):
        assert [w["ref"] for w in r["outputs"] if w["ref"].startswith("docker://")] == [f"{repo}:{tag}"]
        got = run_cli(["inspect", f"{repo}:{tag}", "--tls-verify=false", "--json"])
        assert got.code == 0 and got.json["digest"] == r["digest"], str(got)
        assert layout_digest(built.project / "out/llama", tag) == r["digest"]
    assert len({r["digest"] for r in report}) == 3


def test_light_image_reuses_the_build_and_runs_llama_cli(built: Built, tmp_path: Path) -> None:
    light = built.report("light")
    assert {s["name"]: s["state"] for s in light["steps"]} == {"llama": "cached", "runtime-packages": "cached"}
    whats = [x["what"] for x in light["layers"]]
    assert whats[1:] == ["packages libgomp1 curl ca-certificates", "artifact llama.libs", "artifact llama.cli"]
    same = {x["what"]: x["digest"] for x in built.server["layers"]}
    assert {x["what"]: x["digest"] for x in light["layers"][:3]} == {w: same[w] for w in whats[:3]}
    cfg = config(built.project / "out/llama", "light")
    assert cfg["Entrypoint"] == ["/app/llama-cli"] and "Healthcheck" not in cfg
    assert not any(e.startswith("LLAMA_ARG_HOST=") for e in cfg.get("Env") or [])
    out = Buildah(tmp_path / "b").run_image(
        f"oci:{built.project}/out/llama:light", ["/app/llama-cli", "-p", "images without Dockerfiles"]
    )
    assert out.splitlines() == ["images without Dockerfiles", "Dockerfiles without images"]
    manifest = manifest_of(built.project / "out/llama", "light")
    assert manifest["annotations"]["org.opencontainers.image.source"] == "https://github.com/ggml-org/llama.cpp"


def test_an_edit_links_what_changed_alone_and_an_old_library_version_is_never_shipped(built: Built) -> None:
    """The build tree stays between builds (layers/llama-cpp.yaml, ``cache: [/build]``): an
    edit of the server's source recompiles that file and links the server alone, no library
    or other program again. A version bump of ggml (its SONAME files renamed) ships the new
    files and none of the old ones the kept tree still held."""
    source = built.project / "examples/llama-standin"
    server, ggml = source / "tools/server/server.cpp", source / "ggml/CMakeLists.txt"
    originals = {path: path.read_text() for path in (server, ggml)}
    try:
        server.write_text(originals[server] + "\nint assemble_test_edit = 1;\n")
        log = step_log(built, built.build("-o", "oci:out/llama:edited"))
        assert re.findall(r"Building (?:C|CXX) object (\S+)", log) == [
            "tools/server/CMakeFiles/llama-server.dir/server.cpp.o"
        ], log[-3000:]
        assert re.findall(LINKED, log) == ["bin/llama-server"], log[-3000:]
        ggml.write_text(originals[ggml].replace("set(GGML_VERSION 0.9.4)", "set(GGML_VERSION 0.9.5)"))
        bumped = built.build("-o", "oci:out/llama:bumped")
    finally:
        for path, text in originals.items():
            path.write_text(text)
    libs = next(x for x in bumped.json["layers"] if x["what"] == "artifact llama.libs")
    members = layer_members(built.project / "out/llama", libs["digest"])
    links = {name: m.linkname for name, m in members.items() if m.issym()}
    assert links == {name: target.replace("0.9.4", "0.9.5") for name, target in SONAME_LINKS.items()}
    files = {name for name, m in members.items() if m.isfile()}
    versioned = {"app/libggml-base.so.0.9.5", "app/libggml.so.0.9.5", "app/libllama.so.0.0.0", "app/libmtmd.so.0.0.0"}
    assert files == versioned | {f"app/libggml-cpu-{v}.so" for v in CPU_VARIANTS}


# What ninja (and make) print for each link: "Linking CXX executable bin/llama-server".
LINKED = r"Linking (?:C|CXX) (?:executable|shared library|shared module|static library) (\S+)"


def step_log(built: Built, ran: Ran) -> str:
    """The compile step's log of the build ``ran`` (one file per step key)."""
    step = next(s for s in ran.json["steps"] if s["name"] == "llama")
    return (built.project / "cache" / "logs" / f"llama-{step['key'][:12]}.log").read_text()


# -- every backend and target, planned offline -------------------------------------------------

BASES = {
    "cuda": ("docker://nvidia/cuda:12.8.1-devel-ubuntu24.04", "docker://nvidia/cuda:12.8.1-runtime-ubuntu24.04"),
    "cpu": ("docker://ubuntu:24.04", "docker://ubuntu:24.04"),
    "rocm": ("docker://rocm/dev-ubuntu-24.04:6.4-complete", "docker://rocm/dev-ubuntu-24.04:6.4-complete"),
}
TAG = {"cuda": "-cuda", "cpu": "", "rocm": "-rocm"}
TARGET_LAYERS = {
    "server": ["artifact llama.server", "artifact llama.cli", "run ln -s /app/llama-server /app/llama-cli"],
    "light": ["artifact llama.cli"],
    "full": ["artifact llama.full", "run apt-get update && apt-get install -y git python3 python3-pip python3-wheel"],
}
BUILD_LABEL = {
    "cuda": "GGML_CUDA=ON GGML_HIP=OFF GGML_NATIVE=OFF",
    "cpu": "GGML_CUDA=OFF GGML_HIP=OFF GGML_NATIVE=OFF",
    "rocm": "GGML_CUDA=OFF GGML_HIP=ON GGML_NATIVE=OFF",
}
ROCM_ARCHS = (
    "gfx803;gfx900;gfx906;gfx908;gfx90a;gfx942;gfx1010;gfx1030;gfx1032;gfx1100;gfx1101;gfx1102;gfx1200;gfx1201;gfx1151"
)
ARCH_LABELS: dict[str, dict[str, str]] = {
    # Read from the built libraries: a plan shows where they will come from (never "default").
    "cuda": {
        "io.assemble.gpu.cuda.archs": "${steps.llama.cuda_archs}",
        "io.assemble.step.llama.cuda.archs": "${steps.llama.cuda_archs}",
    },
    "cpu": {},
    "rocm": {
        "io.assemble.gpu.rocm.archs": "${steps.llama.rocm_archs}",
        "io.assemble.step.llama.rocm.archs": "${steps.llama.rocm_archs}",
    },
}
ENTRYPOINT = {"server": ["/app/llama-server"], "light": ["/app/llama-cli"], "full": ["/app/tools.sh"]}


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("target", ["server", "light", "full"])
@pytest.mark.parametrize("backend", ["cuda", "cpu", "rocm"])
def test_plan_of_every_backend_and_target(backend: str, target: str, tmp_path: Path) -> None:
    ran = run_cli(
        [
            "plan",
            str(MANIFEST),
            "--set",
            f"backend={backend}",
            "--target",
            target,
            "--json",
            "--cache",
            str(tmp_path / "cache"),
        ],
        cwd=tmp_path,
    )
    assert ran.code == 0, str(ran)
    plan = ran.json
    assert plan["target"] == target
    expected = [("runtime-packages", "runtime"), ("llama", "compile")]
    if target == "full":
        expected.append(("python-requirements", "runtime"))
    if target == "server":
        expected.append(("bin-links", "runtime"))
    assert [(s["name"], s["kind"]) for s in plan["steps"]] == expected
    assert {s["state"] for s in plan["steps"]} == {"will-run"}
    assert next(s for s in plan["steps"] if s["name"] == "llama")["artifacts"] == ["libs", "server", "cli", "full"]
    whats = [x["what"] for x in plan["layers"]]
    assert whats[0] == "runtime"
    assert whats[1:3] == ["packages libgomp1 curl ca-certificates", "artifact llama.libs"]
    assert [w[: len(e)] for w, e in zip(whats[3:], TARGET_LAYERS[target], strict=True)] == TARGET_LAYERS[target]
    assert plan["outputs"] == [f"oci:{tmp_path}/out/llama.cpp:{target}{TAG[backend]}"]
    cfg = plan["config"]
    assert cfg["Entrypoint"] == ENTRYPOINT[target] and cfg["WorkingDir"] == "/app"
    if target == "server":
        assert cfg["Healthcheck"] == {"Test": HEALTHCHECK} and cfg["Env"] == ["LLAMA_ARG_HOST=0.0.0.0"]
    else:
        assert "Healthcheck" not in cfg and not cfg.get("Env")
    labels = cfg["Labels"]
    assert labels["io.assemble.target"] == target
    assert labels["io.assemble.build.llama"] == BUILD_LABEL[backend]
    assert {k: v for k, v in labels.items() if k.endswith(".archs")} == ARCH_LABELS[backend]
    assert plan["annotations"]["org.opencontainers.image.version"] == "b7046"
    assert plan["annotations"]["org.opencontainers.image.revision"] == "${sources.llama.cpp.revision}"  # not fetched


@pytest.mark.parametrize("backend", ["cuda", "cpu", "rocm"])
def test_bases_source_and_cmake_flags_per_backend(backend: str) -> None:
    loaded = load_manifest(MANIFEST, sets={"backend": backend})
    man = loaded.manifest
    assert (man.bases["devel"], man.bases["runtime"]) == BASES[backend]
    src = man.sources["llama.cpp"]
    assert (src.git, src.ref) == ("https://github.com/ggml-org/llama.cpp.git", "b7046")  # type: ignore[union-attr]
    step = next(s for s in man.compile if s.name == "llama")
    configure = step.run[0]
    assert configure.split()[configure.split().index("cmake") + 1 : configure.split().index("cmake") + 5] == [
        "-S",
        "/src/llama.cpp",
        "-B",
        "/build",
    ]
    assert all(flag in configure.split() for flag in UPSTREAM_FLAGS), configure
    assert step.env["GGML_NATIVE"] == "OFF"
    # upstream's build packages (less python, which the build never runs), plus ccache and
    # ninja for rebuilds (its log tells what an earlier build made that this one does not)
    assert step.packages == [
        "build-essential",
        "cmake",
        "git",
        "libcurl4-openssl-dev",
        "libgomp1",
        "ccache",
        "ninja-build",
    ]
    assert "-G Ninja" in configure and "ninja -C /build -t cleandead" in step.run[1]
    assert "find /build/bin" not in step.run[1]  # the kept tree's programs are not linked again
    assert step.artifacts["libs"].path == "/out/lib/*" and step.artifacts["libs"].to == "/app/"
    assert 'find /build -name "*.so*" -exec cp -P {} /out/lib' in step.run[2]
    if backend == "cuda":
        assert "-DGGML_CUDA=ON" in configure and "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined" in configure
        assert step.env["CUDA_DOCKER_ARCH"] == "default"
    elif backend == "rocm":
        assert configure.startswith('HIPCXX="$(hipconfig -l)/clang" HIP_PATH="$(hipconfig -R)" cmake ')
        assert '-DGGML_HIP=ON -DGGML_HIP_ROCWMMA_FATTN=ON -DAMDGPU_TARGETS="$AMDGPU_TARGETS"' in configure
        assert step.env["AMDGPU_TARGETS"] == ROCM_ARCHS
    else:
        assert "GGML_CUDA=ON" not in configure and "GGML_HIP=ON" not in configure
        assert "allow-shlib-undefined" not in configure  # cpu.Dockerfile has no such flag


@pytest.mark.parametrize(("arch", "expected"), [("default", ""), ("86;89", "-DCMAKE_CUDA_ARCHITECTURES=86;89")])
def test_cuda_arch_flag_only_when_a_list_is_given(arch: str, expected: str) -> None:
    """As cuda.Dockerfile: CUDA_DOCKER_ARCH=default leaves the architectures to ggml."""
    loaded = load_manifest(MANIFEST, sets={"backend": "cuda", "cuda_docker_arch": arch})
    step = next(s for s in loaded.manifest.compile if s.name == "llama")
    assert step.env["CUDA_DOCKER_ARCH"] == arch
    configure = step.run[0]
    flags = configure[configure.index("-DGGML_CUDA=ON") :]
    words = sh(["sh", "-c", f"printf '%s\\n' {flags}"], env={"CUDA_DOCKER_ARCH": arch, "PATH": "/usr/bin:/bin"})
    assert [w for w in words.stdout.split() if w.startswith("-DCMAKE_CUDA_ARCHITECTURES")] == (
        [expected] if expected else []
    )
