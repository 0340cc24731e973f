"""A base nothing runs on is never downloaded: a runner with an empty cache that finds every
step in the registry step cache (with the facts read from the base's layers: its folders,
its packages, the dependency check's report) reads the base's manifest and config only, and
a push to the base's registry mounts its layers. The real docker-registry's access log is the
witness: every request a runner made.

Runner A builds cold, exports its steps to the cache repository and pushes the image. B and C
are new machines (empty cache folders, so fresh buildah storage) building the same manifest
with ``--cache-from``; the last build writes an ``oci:`` layout too, which needs the bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import OWN_STORAGE, reclaim_at_teardown
from tests.helpers import Ran, run_cli, run_cli_here, sh
from tests.plugins.demo import steps_by_state
from tests.plugins.registry import RunningRegistry, start_registry

MANIFEST = """\
name: lazy
bases:
  devel: oci:{devel}:latest
  runtime: docker://{registry}/base:1
sources:
  hello: {{path: ./hello}}
compile:
  - name: hello
    base: devel
    sources: [hello]
    run: ["mkdir -p /out && gcc -O2 -o /out/hello /src/hello/hello.c"]
    artifacts:
      bin: {{path: /out/hello, to: /app/bin/hello}}
image:
  base: runtime
  layers:
    - artifact: hello.bin
    - copy: {{from: ./motd, to: /etc/motd}}
  config:
    entrypoint: [/app/bin/hello]
"""
HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello from a lazy base"); return 0; }\n'


@dataclass
class Runners:
    registry: RunningRegistry
    project: Path
    base_layers: dict[str, int]  # digest -> size of the runtime base's layers
    base_config: str
    a: Ran

    def build(self, cache: str, *extra: str) -> tuple[Ran, list[tuple[str, str, int]]]:
        """A build on the machine whose cache folder is ``cache``; and the requests it made."""
        since = self.registry.log.stat().st_size
        args = ["m.yaml", "--cache", cache, "--json", "--tls-verify=false", *extra]
        # A new machine's buildah storage: its cache's (not the test process's shared one).
        ran = run_cli(args, cwd=self.project, env=None if cache == "cache-a" else OWN_STORAGE)
        assert ran.code == 0, str(ran)
        return ran, self.registry.requests(since)

    def repo(self, name: str) -> str:
        return f"docker://{self.registry.host}/{name}"


@pytest.fixture(scope="module")
def runners(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, demo_bases: dict[str, Path]
) -> Iterator[Runners]:
    root = tmp_path_factory.mktemp("lazy")
    reclaim_at_teardown(request, root)
    registry = start_registry(root / "registry", access_log=True)
    try:
        base = f"docker://{registry.host}/base:1"
        sh(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{demo_bases['runtime']}:latest", base])
        raw = sh(["skopeo", "inspect", "--raw", "--tls-verify=false", base]).stdout
        manifest = json.loads(raw)
        layers = {d["digest"]: d["size"] for d in manifest["layers"]}
        project = root / "project"
        (project / "hello").mkdir(parents=True)
        (project / "hello" / "hello.c").write_text(HELLO_C)
        (project / "motd").write_text("built by assemble on a base it never downloaded\n")
        (project / "m.yaml").write_text(MANIFEST.format(devel=demo_bases["devel"], registry=registry.host))
        made = Runners(registry, project, layers, manifest["config"]["digest"], Ran([], 0, "", ""))
        made.a, _ = made.build("cache-a", "--cache-to", made.repo("cache"), "-o", made.repo("app:1"))
        assert steps_by_state(made.a) == {"built": {"hello"}}
        assert made.a.json["base_bytes_read"] >= sum(layers.values())  # A read it (and devel): it had to
        yield made
    finally:
        registry.stop()


def _base_blob_gets(runners: Runners, requests: list[tuple[str, str, int]]) -> list[str]:
    """The base layers a runner's requests downloaded (a GET of the blob, from any repository)."""
    got = [re.sub(r"\?.*", "", path).rsplit("/", 1)[-1] for method, path, _ in requests if method == "GET"]
    return [d for d in got if d in runners.base_layers]


def _uploads(requests: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Blob uploads (a mount, POST ...?mount= answered 201, is not one)."""
    return [
        (method, path, status)
        for method, path, status in requests
        if "/blobs/uploads/" in path and not (method == "POST" and "mount=" in path and status == 201)
    ]


def test_a_runner_that_finds_everything_cached_reads_no_base_layer(runners: Runners) -> None:
    # B: a new machine pushes the same image again, and to a new repository of that registry.
    b, requests = runners.build(
        "cache-b", "--cache-from", runners.repo("cache"), "-o", runners.repo("app:1"), "-o", runners.repo("app-b:1")
    )
    assert "built" not in steps_by_state(b), steps_by_state(b)
    assert b.json["digest"] == runners.a.json["digest"]
    assert b.json["base_bytes_read"] == 0
    assert not _base_blob_gets(runners, requests)
    assert ("GET", f"/v2/base/blobs/{runners.base_config}", 200) in requests  # its config: all it read
    same, other = b.json["outputs"][0], next(o for o in b.json["outputs"] if "app-b" in o["ref"])
    assert same["uploaded_blobs"] == 0 and same["mounted_blobs"] == 0, same
    mounted = {
        re.search(r"mount=([^&]+)", path)[1]  # type: ignore[index]
        for method, path, status in requests
        if method == "POST" and "/v2/app-b/" in path and "from=base" in path and status == 201
    }
    assert mounted == set(runners.base_layers), mounted  # the base's layers: mounted, not sent
    assert other["uploaded_bytes"] < sum(runners.base_layers.values()) // 10, other
    # The step's facts came from the registry as well: the step cache says so.
    assert b.json["step_cache"]["facts_hits"] > 0, b.json["step_cache"]

    # C: one more new machine, nothing changed: not one blob goes up, no base layer comes down.
    c, requests = runners.build(
        "cache-c", "--cache-from", runners.repo("cache"), "-o", runners.repo("app:1"), "-o", runners.repo("app-b:1")
    )
    assert c.json["digest"] == runners.a.json["digest"]
    assert c.json["base_bytes_read"] == 0 and not _base_blob_gets(runners, requests)
    assert not _uploads(requests), _uploads(requests)
    assert all(o["uploaded_blobs"] == 0 for o in c.json["outputs"]), c.json["outputs"]
    print(
        f"\nrunner C: 0 of {sum(runners.base_layers.values())} base layer bytes read, "
        f"{len(requests)} requests, none an upload; step cache: {c.json['step_cache']}"
    )

    # A plan on C knows the base it never downloaded (its manifest and config) and the step.
    plan = run_cli_here(["plan", "m.yaml", "--cache", "cache-c", "--json"], cwd=runners.project)
    assert plan.code == 0, str(plan)
    assert {s["name"]: s["state"] for s in plan.json["steps"]} == {"hello": "cached"}, plan.out

    # C writes an OCI layout as well: that output needs the bytes, so the base comes down,
    # verified, and the layout holds the very image.
    d, requests = runners.build("cache-c", "--cache-from", runners.repo("cache"), "-o", "oci:out/lazy:1")
    assert d.json["digest"] == runners.a.json["digest"]
    assert d.json["base_bytes_read"] == sum(runners.base_layers.values())
    assert sorted(_base_blob_gets(runners, requests)) == sorted(runners.base_layers)
    ran = run_cli(["validate", "oci:out/lazy:1", "--cache", "vcache"], cwd=runners.project)
    assert ran.code == 0, str(ran)
