"""Step results shared through a registry: two cache folders stand for two machines, the
real docker-registry for the cache repository (``--cache-to`` / ``--cache-from``).

One cold demo build (machine A, exporting) is shared by the module; every other build here
runs no step, so the module costs one compile of the demo.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import reclaim_at_teardown
from tests.helpers import Ran, run_cli
from tests.plugins.demo import base_args, copy_project, steps_by_state
from tests.plugins.faultproxy import Fault, FaultProxy
from tests.plugins.registry import RunningRegistry, start_registry


@dataclass
class Shared:
    registry: RunningRegistry
    project: Path
    manifest: Path
    bases: dict[str, Path]
    cold: Ran

    def build(self, cache: str, *extra: str, out: str = "demo", host: str | None = None) -> Ran:
        args = [
            str(self.manifest),
            "--cache",
            str(self.project / cache),
            "--json",
            *base_args(self.bases),
            "--tls-verify=false",
            "-o",
            f"oci:out/{out}:latest",
            *extra,
        ]
        ran = run_cli(args, cwd=self.project)
        assert ran.code == 0, str(ran)
        return ran

    def repo(self, name: str = "cache", host: str | None = None) -> str:
        return f"docker://{host or self.registry.host}/{name}"


@pytest.fixture(scope="module")
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo_bases: dict[str, Path]
) -> Iterator[Shared]:
    base = tmp_path_factory.mktemp("regcache")
    reclaim_at_teardown(request, base)
    registry = start_registry(base / "registry")
    try:
        manifest = copy_project(base / "project")
        project = manifest.parent.parent
        made = Shared(registry, project, manifest, demo_bases, Ran([], 0, "", ""))
        made.cold = made.build("cache-a", "--cache-to", made.repo(), out="a")
        yield made
    finally:
        registry.stop()


@pytest.fixture(autouse=True)
def _drop_other_caches(shared: Shared) -> Iterator[None]:
    """Each test's second machine is its own cache folder (with buildah's storage, about
    2 GiB): gone when the test passes; machine A's cache-a stays for the module."""
    yield
    for cache in shared.project.glob("cache-*"):
        if cache.name != "cache-a":
            shutil.rmtree(cache, ignore_errors=True)


def _image_bytes(ran: Ran) -> int:
    return sum(layer["size"] or 0 for layer in ran.json["layers"])


def test_cold_build_exports_every_step(shared: Shared) -> None:
    cold = shared.cold.json
    ran = {s["name"] for s in cold["steps"] if s["state"] == "built"}
    assert ran, "the cold build ran steps"
    # ... and the one compile step with packages: (cuda, python3-pip) exports them as a layer
    assert cold["step_cache"]["exported"] == len(ran) + 1


def test_empty_cache_with_cache_from_runs_no_step(shared: Shared) -> None:
    ran = shared.build("cache-b", "--cache-from", shared.repo(), out="b")
    assert "built" not in steps_by_state(ran), steps_by_state(ran)
    assert ran.json["digest"] == shared.cold.json["digest"]
    down, image = ran.json["step_cache"]["downloaded_bytes"], _image_bytes(ran)
    print(f"\nempty cache + --cache-from: 0 steps run, {down} bytes downloaded; the image's layers: {image} bytes")
    assert 0 < down <= image


def test_no_change_cache_to_uploads_no_blob(shared: Shared) -> None:
    ran = shared.build("cache-a", "--cache-to", shared.repo(), out="a2")
    assert "built" not in steps_by_state(ran)
    stats = ran.json["step_cache"]
    assert (stats["uploaded_blobs"], stats["uploaded_bytes"], stats["exported"]) == (0, 0, 0), stats


def test_concurrent_exporters_keep_every_entry(shared: Shared) -> None:
    """Two builds export the demo's steps to one fresh repository at once; a third machine
    then finds every step there."""
    results: dict[str, Ran] = {}

    def export(cache: str) -> None:
        results[cache] = shared.build(cache, "--cache-to", shared.repo("shared"), out=cache)

    threads = [threading.Thread(target=export, args=(c,)) for c in ("cache-a", "cache-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"cache-a", "cache-b"}
    ran = shared.build("cache-c", "--cache-from", shared.repo("shared"), out="c")
    assert "built" not in steps_by_state(ran), steps_by_state(ran)
    assert ran.json["digest"] == shared.cold.json["digest"]


def test_a_push_mounts_the_steps_blobs_from_the_cache_repository(shared: Shared) -> None:
    ran = shared.build("cache-f", "--cache-from", shared.repo(), "-o", f"docker://{shared.registry.host}/app:f")
    pushed = next(o for o in ran.json["outputs"] if o["ref"].startswith("docker://"))
    print(f"\npush after --cache-from: {pushed}")
    assert pushed["mounted_blobs"] > 0, pushed
    assert pushed["uploaded_bytes"] < _image_bytes(ran), pushed


def test_flaky_cache_registry_gives_the_same_image(shared: Shared) -> None:
    """Through a proxy failing a share of the requests, a fresh machine still runs no step."""
    proxy = FaultProxy(shared.registry.host).start()
    try:
        proxy.add(Fault("status", status=503, times=None, rate=0.2, seed=3))
        ran = shared.build("cache-d", "--cache-from", shared.repo(host=proxy.host), out="d")
    finally:
        proxy.stop()
    assert "built" not in steps_by_state(ran), steps_by_state(ran)
    assert ran.json["digest"] == shared.cold.json["digest"]


def test_cache_registry_down_is_a_warning(shared: Shared) -> None:
    """A cache registry that always fails: a warning, and the local cache builds the image."""
    proxy = FaultProxy(shared.registry.host).start()
    try:
        proxy.add(Fault("status", status=503, times=None))
        args = [
            "--cache-from",
            shared.repo(host=proxy.host),
            "--cache-to",
            shared.repo(host=proxy.host),
            "--retries=2",
            "--progress",
            "plain",
        ]
        ran = shared.build("cache-a", *args, out="e")
    finally:
        proxy.stop()
    assert "step cache" in ran.err and "building locally" in ran.err, ran.err
    assert ran.json["digest"] == shared.cold.json["digest"]


def test_bad_cache_reference_is_exit_2(shared: Shared, tmp_path: Path) -> None:
    ran = run_cli([str(shared.manifest), "--cache", str(tmp_path), "--cache-from", "http://x/y"], cwd=shared.project)
    assert ran.code == 2 and "docker://REG/REPO" in ran.err, str(ran)
    bad = shared.manifest.with_name("bad-cache.yaml")
    bad.write_text(shared.manifest.read_text() + "cache:\n  registry: oci:/tmp/x\n")
    ran = run_cli([str(bad), "--cache", str(tmp_path)], cwd=shared.project)
    assert ran.code == 2 and "bad-cache.yaml:" in ran.err and "cache.registry" in ran.err, str(ran)


# The devel base is bootstrapped (Essential packages only: the step needs a shell and cat).
BOOTSTRAPPED = """\
name: boot
bases:
  devel: {{bootstrap: {{suite: bookworm, variant: essential}}}}
  runtime: oci:{runtime}:latest
compile:
  - name: hello
    base: devel
    run: ["mkdir -p /out && cat /etc/debian_version > /out/version"]
    artifacts:
      version: {{path: /out/version, to: /app/debian_version}}
image:
  base: runtime
  layers:
    - artifact: hello.version
"""


def _base_layers(events: str, cache: Path, name: str) -> set[str]:
    """The layer digests of base ``name`` as a build reported it (``--progress json``)."""
    import json

    ready = [
        e
        for e in map(json.loads, events.splitlines())
        if e.get("kind") == "base" and e.get("name") == name and e.get("state") == "ready"
    ]
    manifest = json.loads((cache / "blobs/sha256" / ready[0]["digest"].split(":")[1]).read_bytes())
    return {layer["digest"] for layer in manifest["layers"]}


def test_a_bootstrapped_devel_base_is_neither_made_nor_downloaded_for_cached_steps(
    shared: Shared, tmp_path: Path
) -> None:
    (tmp_path / "boot.yaml").write_text(BOOTSTRAPPED.format(runtime=shared.bases["runtime"]))
    repo = shared.repo("boot-cache")

    def build(cache: str, *extra: str) -> Ran:
        ran = run_cli(
            [
                "boot.yaml",
                "--cache",
                cache,
                "--json",
                "--progress",
                "json",
                "--tls-verify=false",
                "-o",
                f"oci:out/{cache}:latest",
                *extra,
            ],
            cwd=tmp_path,
        )
        assert ran.code == 0, str(ran)
        return ran

    a = build("a", "--cache-to", repo)
    assert steps_by_state(a) == {"built": {"hello"}}
    devel_layers = _base_layers(a.err, tmp_path / "a", "devel")
    b = build("b", "--cache-from", repo)
    assert "built" not in steps_by_state(b), steps_by_state(b)
    assert b.json["digest"] == a.json["digest"]
    # The devel base was read as a manifest and a config (its digest is in the step's key):
    # none of its layers is on machine B, neither bootstrapped there nor downloaded.
    here = {f"sha256:{p.name}" for p in (tmp_path / "b/blobs/sha256").iterdir()}
    assert devel_layers and not devel_layers & here
    print(
        f"\nbootstrapped devel base: {len(devel_layers)} layer(s) neither made nor downloaded on machine B; "
        f"{b.json['step_cache']['downloaded_bytes']} bytes downloaded"
    )
    # Machine B now builds something on that base: its layers come down then, verified.
    (tmp_path / "boot.yaml").write_text(
        (tmp_path / "boot.yaml").read_text().replace("> /out/version", "> /out/version && echo edited >> /out/version")
    )
    c = build("b", "--cache-from", repo)
    assert steps_by_state(c) == {"built": {"hello"}}
    here = {f"sha256:{p.name}" for p in (tmp_path / "b/blobs/sha256").iterdir()}
    assert devel_layers <= here


SIX = "six==1.16.0 --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254"
INICONFIG_SDIST = (
    "https://files.pythonhosted.org/packages/d7/4b/cbd8e699e64a6f16ca3a8220661b5f83792b3017d0f79807cb8708d33913/"
    "iniconfig-2.0.0.tar.gz"
)
PREBUILT = f"""\
name: prebuilt
bases: {{runtime: scratch}}
image:
  base: runtime
  layers:
    - pip: ["{SIX}"]
      prefix: /opt/venv
      python: "3.12"
    - url: {INICONFIG_SDIST}
      sha256: 2d91e135bf72d31a410b17c16da610a82cb55f6b0477d1a902134b24a455b8b3
      to: /opt/src/
"""


def test_pip_and_url_layers_come_from_the_cache_registry_without_the_internet(shared: Shared, tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(PREBUILT)
    repo = shared.repo("prebuilt-cache")

    def build(cache: str, *extra: str, env: dict[str, str] | None = None) -> Ran:
        ran = run_cli(
            [
                "m.yaml",
                "--cache",
                str(tmp_path / cache),
                "--json",
                "--tls-verify=false",
                "-o",
                f"oci:out-{cache}:1",
                *extra,
            ],
            cwd=tmp_path,
            env=env,
        )
        assert ran.code == 0, str(ran)
        return ran

    first = build("a", "--cache-to", repo)
    assert first.json["step_cache"]["exported"] == 2, first.json["step_cache"]
    # A runner with an empty cache and no way out but to the registry on loopback.
    offline = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1"}
    second = build("b", "--cache-from", repo, env=offline)
    assert second.json["digest"] == first.json["digest"]
    assert second.json["step_cache"]["hits"] == 2, second.json["step_cache"]
    # The proxy is really in the way: without the registry the same build cannot reach PyPI.
    ran = run_cli(["m.yaml", "--cache", str(tmp_path / "c"), "-o", "oci:out-c:1"], cwd=tmp_path, env=offline)
    assert ran.code != 0 and "pypi" in ran.err.lower(), str(ran)


def test_plan_looks_in_the_cache_registry_and_fetches_no_blob(shared: Shared, tmp_path: Path) -> None:
    def plan(*extra: str) -> Ran:
        args = [
            "plan",
            str(shared.manifest),
            "--cache",
            str(tmp_path / "c"),
            "--json",
            *base_args(shared.bases),
            "--tls-verify=false",
            *extra,
        ]
        ran = run_cli(args, cwd=shared.project)
        assert ran.code == 0, str(ran)
        return ran

    alone = plan()
    compile_steps = {s["name"] for s in alone.json["steps"] if s["kind"] == "compile"}
    assert compile_steps and all(s["state"] == "will-run" for s in alone.json["steps"])
    looked = plan("--cache-from", shared.repo())
    states = {s["name"]: (s["state"], s["reason"]) for s in looked.json["steps"]}
    for name in compile_steps:  # what a build on this runner would take from the registry
        assert states[name] == ("cached", "in the registry step cache"), states
    built = {s["name"] for s in shared.cold.json["steps"] if s["state"] == "built"}
    assert compile_steps <= built
    # Records only: the step caches' blobs stay in the registry.
    blobs = sum(p.stat().st_size for p in (tmp_path / "c").rglob("*") if p.is_file())
    assert blobs < _image_bytes(shared.cold) // 10, (blobs, _image_bytes(shared.cold))
