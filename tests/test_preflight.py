"""What a build reaches, and the check before its first long step (assembler/manifest/hosts/reach.py,
spec/toolhosts.py, pipeline/checks/preflight.py).

``reaches`` is read from the manifest: the package tools in steps' commands (pip, uv,
cargo, go, npm, apt) reach their indexes unless their command says otherwise; a step's
``reaches:`` names what avoids a host. A build asks each host its parts to make reach, all
at once, and stops within seconds naming the host, the part and the ``--set`` that avoids
it; ``--offline`` refuses a build that would reach any. Hosts that never resolve are the
``.invalid`` top-level domain's (RFC 2606); no fake stands in for the network.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from assembler.manifest.hosts import toolhosts
from assembler.manifest.hosts.reach import needs
from assembler.manifest.load.manifest import load_manifest
from tests.helpers import ROOT, resolver_says, run_cli_here

PYPI = {("pypi.org", "https"), ("files.pythonhosted.org", "https")}


def _tools(*commands: str, env: dict[str, str] | None = None) -> set[object]:
    return toolhosts.tools(commands, env or {})


def test_pip_and_uv_reach_pypi_unless_their_command_says_they_will_not() -> None:
    assert _tools("pip install torch") >= PYPI
    assert _tools("/opt/venv/bin/python -m pip install --quiet -r /tmp/r.txt") >= PYPI
    assert _tools("uv pip install --python /opt/venv/bin/python vllm") >= PYPI
    assert _tools('pip install --no-deps --only-binary :all: --target /t "$@"') >= PYPI  # "$@": anything
    assert not _tools("pip install --no-deps --no-index --target /build/site /build/wheels/*.whl")
    assert not _tools("cd /src/x && pip wheel --no-build-isolation --no-deps -w /build/wheels .")
    # built with isolation, pip installs the build's requirements from the index
    assert _tools("pip wheel --no-deps -w /build/wheels .") >= PYPI
    assert _tools("uv pip install --offline x") == set()


def test_cargo_reaches_crates_io_and_its_locks_git_hosts_unless_offline(tmp_path: Path) -> None:
    (tmp_path / "Cargo.lock").write_text(
        'version = 3\n[[package]]\nname = "dep"\nversion = "0.1.0"\n'
        'source = "git+https://git.example.invalid/org/dep?rev=1#0123"\n'
    )
    git = toolhosts.cargo_git_hosts(tmp_path)
    assert git == {("git.example.invalid", "https")}
    online = toolhosts.tools(["cargo build --release --manifest-path /src/x/Cargo.toml"], {}, cargo_git=git)
    assert online == {("index.crates.io", "https"), ("static.crates.io", "https"), ("git.example.invalid", "https")}
    assert not toolhosts.tools(["cargo build --release --locked --offline"], {}, cargo_git=git)
    assert not toolhosts.tools(["cargo build --frozen"], {}, cargo_git=git)
    assert not toolhosts.tools(["cargo build"], {"CARGO_NET_OFFLINE": "true"}, cargo_git=git)
    assert _tools("go build ./...") == {("proxy.golang.org", "https"), ("sum.golang.org", "https")}
    assert _tools("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y x") == {toolhosts.APT}


def test_a_git_crate_a_step_is_given_as_a_tree_is_not_fetched_from_its_host(tmp_path: Path) -> None:
    """rust-binaries' git_deps vendors the trees of Cargo.lock's git crates a step is given
    (TGI's router and outlines-core, where GitHub cannot be reached): cargo asks their git
    host nothing, so plan and the preflight leave it out; another git crate is still reached."""
    work = tmp_path / "ws"
    work.mkdir()
    (work / "Cargo.lock").write_text(
        'version = 3\n[[package]]\nname = "outlines-core"\nversion = "0.1.0"\n'
        'source = "git+https://github.com/dottxt-ai/outlines-core.git?rev=ba10#ba10"\n'
        '[[package]]\nname = "other"\nversion = "0.2.0"\nsource = "git+https://git.example.invalid/other?rev=1#1"\n'
    )
    given = tmp_path / "outlines"
    given.mkdir()
    (given / "Cargo.toml").write_text('[package]\nname = "outlines-core"\nversion = "0.1.0"\n')
    assert toolhosts.crate_name(given) == "outlines-core" and toolhosts.crate_name(work) is None
    assert toolhosts.cargo_git_hosts(work) == {("github.com", "https"), ("git.example.invalid", "https")}
    assert toolhosts.cargo_git_hosts(work, {"outlines-core"}) == {("git.example.invalid", "https")}
    step = {
        "name": "router",
        "use": "rust-binaries",
        "base": "b",
        "sources": ["outlines"],
        "with": {"source": "ws", "bins": "r", "git_deps": "outlines"},
    }
    manifest = {
        "name": "r",
        "bases": {"b": "docker://127.0.0.1:5000/rust:1"},
        "sources": {"ws": {"path": "ws"}, "outlines": {"path": "outlines"}},
        "compile": [step],
        "image": {"base": "b", "layers": [{"artifact": "router.bin"}]},
    }
    (tmp_path / "m.yaml").write_text(json.dumps(manifest))
    man = load_manifest(tmp_path / "m.yaml").manifest
    hosts = {n.host for n in needs(man, ["router"], [], folder=tmp_path)}
    assert "git.example.invalid" in hosts and "github.com" not in hosts and "index.crates.io" in hosts


def test_the_demo_reaches_pypi_for_its_cuda_wheels_only_and_its_mirror() -> None:
    """The "offline" demo: its CUDA toolkit comes from PyPI (the recipe's pip install); the
    launcher builds with cargo --offline and the Python extension with pip --no-index."""
    loaded = load_manifest(ROOT / "manifests" / "demo.yaml")
    man = loaded.manifest
    found = needs(
        man,
        [s.name for s in man.compile],
        list(man.bases),
        outputs=["docker://127.0.0.1:5000/demo:latest"],
        mirrors={name: "http://deb.debian.org/debian" for name in man.bases},
        folder=loaded.folder,
    )
    by_part: dict[str, set[str]] = {}
    for need in found:
        by_part.setdefault(need.where, set()).add(need.host)
    assert by_part["cuda"] == {"pypi.org", "files.pythonhosted.org", "deb.debian.org"}
    assert "launcher" not in by_part and "pyext" not in by_part and "kernels" not in by_part
    assert by_part["bases.devel"] == by_part["bases.runtime"] == by_part["layers.0"] == {"deb.debian.org"}
    assert by_part["outputs.0"] == {"127.0.0.1:5000"}


_UNREACHABLE = """\
name: pre
params: {jit: "true", mirror: "true"}
bases: {b: scratch}
sources:
  app: {git: "https://git.example.invalid/org/app.git", ref: v1}
compile:
  - name: build
    base: b
    sources: [app]
    run: ["make"]
    artifacts: {bin: {path: /b, to: /b}}
image:
  base: b
  layers:
    - copy: {from: f.txt, to: /f.txt}
    - artifact: build.bin
    - run: ["curl -fsSL -o /tmp/k.deb https://nvidia.example.invalid/repos/k.deb"]
      name: cuda-jit
      when: {jit: "true"}
      reaches:
        nvidia.example.invalid: {avoid: {jit: "false"}}
    - run: ["true"]
      name: ppa
      reaches:
        ppa.example.invalid: {only: "Ubuntu bases"}
"""


def test_a_build_stops_in_seconds_naming_the_host_the_step_and_the_set(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("f\n")
    (tmp_path / "m.yaml").write_text(_UNREACHABLE)
    cache = ["--cache", str(tmp_path / "cache"), "-o", f"oci:{tmp_path / 'out'}:1"]
    started = time.monotonic()
    ran = run_cli_here(["m.yaml", *cache], cwd=tmp_path)
    assert time.monotonic() - started < 30, ran
    assert ran.code == 1, ran
    assert "nvidia.example.invalid" in ran.err and "needed by layers.cuda-jit" in ran.err, ran
    assert "avoided with --set jit=false" in ran.err, ran
    assert "git.example.invalid" in ran.err and "needed by sources.app; avoided with --source app=PATH" in ran.err
    error = ran.err.split("error:", 1)[1].split("hint:")[0]
    assert "ppa.example.invalid" not in error, ran  # reached only sometimes: a warning, not a stop
    assert "warning: ppa.example.invalid does not answer" in ran.err, ran
    assert "layers.ppa needs it only sometimes: Ubuntu bases" in ran.err, ran
    assert "nothing was built; build again with --source app=PATH --set jit=false" in ran.err, ran
    assert not (tmp_path / "out").exists()

    # The --set the error names leaves that host out: the source's is what stops it now. A
    # step cache a build does without (--cache-from) that does not answer is a warning.
    step_cache = ["--cache-from", "docker://cache.example.invalid/steps"]
    ran = run_cli_here(["m.yaml", *cache, "--set", "jit=false", *step_cache], cwd=tmp_path)
    assert ran.code == 1 and "git.example.invalid" in ran.err and "nvidia.example.invalid" not in ran.err, ran
    assert "cache.example.invalid" not in ran.err.split("error:", 1)[1], ran
    assert "warning: cache.example.invalid does not answer" in ran.err, ran


def test_offline_refuses_a_build_that_would_reach_a_host_and_asks_none(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("f\n")
    (tmp_path / "m.yaml").write_text(_UNREACHABLE)
    cache = ["--cache", str(tmp_path / "cache")]
    ran = run_cli_here(["plan", "m.yaml", *cache, "--offline"], cwd=tmp_path)
    assert ran.code == 2 and "--offline: this build would reach the network" in ran.err, ran
    assert "nvidia.example.invalid: layers.cuda-jit" in ran.err and "--set jit=false" in ran.err, ran
    # What is only copied reaches nothing: built --offline, with the loopback registry an
    # output would be pushed to left aside (it is the user's own).
    (tmp_path / "m.yaml").write_text(
        "name: local\nbases: {b: scratch}\nimage: {base: b, layers: [{copy: {from: f.txt, to: /f}}]}\n"
    )
    out = ["-o", f"oci:{tmp_path / 'out'}:1"]
    ran = run_cli_here(["m.yaml", *cache, *out, "--offline", "--json"], cwd=tmp_path)
    assert ran.code == 0, ran
    plan = run_cli_here(["plan", "m.yaml", *cache, "--json", "-o", "docker://127.0.0.1:5000/x:1"], cwd=tmp_path)
    assert json.loads(plan.out)["reaches"] == {"127.0.0.1:5000": ["outputs.0"]}


_EVERY_KIND = """\
name: every
bases:
  devel: docker://registry.example.invalid/devel:1
  hub: docker://debian:bookworm
sources:
  app: {git: "https://git.example.invalid/org/app.git", ref: v1}
compile:
  - name: build
    base: devel
    sources: [app]
    run: ["make"]
    artifacts: {bin: {path: /b, to: /b}}
image:
  base: hub
  layers:
    - artifact: build.bin
    - run: ["pip install --index-url https://index.example.invalid/simple requests"]
      name: app
"""


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), 5).close()
    except OSError:
        return False
    return True


def test_one_run_names_every_host_bases_outputs_and_local_registries_included(tmp_path: Path) -> None:
    """Issue 50, item 5: a base's registry (Docker Hub among them) and the outputs'
    registries, a local one included, are asked in the same round as the sources and the
    indexes, before anything is built, each with what avoids it."""
    from tests.pyindex import closed_port

    (tmp_path / "m.yaml").write_text(_EVERY_KIND)
    local = f"127.0.0.1:{closed_port()}"
    started = time.monotonic()
    ran = run_cli_here(["m.yaml", "--cache", str(tmp_path / "cache"), "-o", f"docker://{local}/every:1"], cwd=tmp_path)
    assert time.monotonic() - started < 10, ran
    assert ran.code == 1, ran
    error = ran.err.split("hint:")[0]
    no_name = resolver_says("example.invalid")
    for named in (
        f"registry.example.invalid ({no_name}): needed by bases.devel",
        f"git.example.invalid ({no_name}): needed by sources.app; avoided with --source app=PATH",
        f"index.example.invalid ({no_name}): needed by layers.app",
        f"{local} (connection refused): needed by outputs.0; avoided with -o oci:DIR",
    ):
        assert named in error, (named, ran.err)
    assert "--base devel=REF" in error
    if not _answers("registry-1.docker.io", 443):  # Docker Hub, as this machine and CI have it
        assert (
            "registry-1.docker.io (Docker Hub, " in error
            and "needed by bases.hub; avoided with --base hub=REF" in error
        )
    assert f"start the registry at {local}" in ran.err, ran.err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.tar*"))


def test_the_tgi_manifest_names_every_host_it_cannot_reach_in_one_run(tmp_path: Path) -> None:
    """Issue 50's must-show: ``assemble manifests/tgi.yaml`` names GitHub, PyTorch's index,
    Docker Hub and its local output registry, each that does not answer here, at once."""
    hosts = {"github.com": 443, "download.pytorch.org": 443, "registry-1.docker.io": 443, "127.0.0.1": 5000}
    silent = [h for h, port in hosts.items() if not _answers(h, port)]
    if not silent:
        pytest.skip("every host TGI's build reaches answers here: it would build for hours")
    started = time.monotonic()
    ran = run_cli_here([str(ROOT / "manifests" / "tgi.yaml"), "--cache", str(tmp_path / "cache")], cwd=tmp_path)
    took = time.monotonic() - started
    assert ran.code == 1 and took < 10, (took, ran)
    error = ran.err.split("hint:")[0]
    for host in silent:
        assert f"  {host if host != '127.0.0.1' else '127.0.0.1:5000'} (" in error, (host, ran.err)
