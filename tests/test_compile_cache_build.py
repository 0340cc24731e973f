"""Compile caches through a registry, in builds (buildah, the real ``docker-registry``):
machine A builds a small make project with ``--cache-to``; machine B, an empty cache
folder with ``--cache-from``, builds it after a one-line change and recompiles that one
file; machine C meets a damaged chunk: a warning, and a correct cold build. A step's
packages: travel as a layer: a fresh machine downloads them instead of running apt.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import zstandard

from assembler.stepcache.compile import CHUNK
from tests.helpers import Ran, run_cli
from tests.plugins.registry import RunningRegistry

MANIFEST = """\
name: ccache
bases:
  devel: oci:{devel}:latest
  runtime: oci:{runtime}:latest
sources:
  app: {{path: app}}
compile:
  - name: app
    base: devel
    sources: [app]
    cache: [/build]
    run: [make -C /src/app OUT=/build]
    artifacts:
      bin: {{path: /build/app, to: /app/bin}}
image:
  base: runtime
  layers:
    - artifact: app.bin
"""

MAKEFILE = """\
OBJS = $(OUT)/a.o $(OUT)/b.o $(OUT)/main.o
$(OUT)/app: $(OBJS)
\tg++ -o $@ $(OBJS)
$(OUT)/%.o: %.cpp
\tg++ -O1 -c $< -o $@
"""


def _project(root: Path, bases: dict[str, Path]) -> None:
    app = root / "app"
    app.mkdir(parents=True)
    (root / "m.yaml").write_text(MANIFEST.format(devel=bases["devel"], runtime=bases["runtime"]))
    (app / "Makefile").write_text(MAKEFILE)
    (app / "a.cpp").write_text("int a() { return 1; }\n")
    (app / "b.cpp").write_text("int b() { return 2; }\n")
    (app / "main.cpp").write_text("int a(); int b();\nint main() { return a() + b() == 3 ? 0 : 1; }\n")


def _build(root: Path, cache: str, *extra: str) -> Ran:
    args = ["m.yaml", "--cache", cache, "--json", "--progress", "plain", "--tls-verify=false", "-o", "oci:out:x"]
    ran = run_cli([*args, *extra], cwd=root)
    assert ran.code == 0, str(ran)
    return ran


def _compiled(ran: Ran) -> set[str]:
    return {name for name in ("a.cpp", "b.cpp", "main.cpp") if f"-c {name} " in ran.err}


def _corrupt_largest_chunk(registry: RunningRegistry) -> None:
    """The largest chunk a compile-cache entry names (a chunk of the build tree), damaged."""
    store = registry.root / "docker/registry/v2/blobs/sha256"
    chunks: set[str] = set()
    for path in store.glob("*/*/data"):
        if path.stat().st_size < 1 << 16 and path.read_bytes()[:1] == b"{":
            try:
                layers = json.loads(path.read_bytes()).get("layers") or []
            except ValueError:
                continue
            chunks |= {d["digest"].split(":")[1] for d in layers if isinstance(d, dict) and d.get("mediaType") == CHUNK}
    assert chunks, "no compile-cache chunk in the registry"
    largest = max((store / h[:2] / h / "data" for h in chunks), key=lambda p: p.stat().st_size)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))


def test_a_fresh_machine_recompiles_one_file_and_a_damaged_cache_builds_cold(
    tmp_path: Path, demo_bases: dict[str, Path], registry: RunningRegistry
) -> None:
    _project(tmp_path, demo_bases)
    repo = f"docker://{registry.host}/ccache"
    cold = _build(tmp_path, "cache-a", "--cache-to", repo)
    assert _compiled(cold) == {"a.cpp", "b.cpp", "main.cpp"}, cold.err
    assert cold.json["step_cache"]["compile_cache_exported"] == 1, cold.json["step_cache"]
    shutil.rmtree(tmp_path / "cache-a")

    (tmp_path / "app" / "a.cpp").write_text("int a() { return 1 + 0; }\n")
    warm = _build(tmp_path, "cache-b", "--cache-from", repo)
    assert warm.json["step_cache"]["compile_cache_restored"] == 1, warm.json["step_cache"]
    assert _compiled(warm) == {"a.cpp"}, warm.err
    shutil.rmtree(tmp_path / "cache-b")

    _corrupt_largest_chunk(registry)
    damaged = _build(tmp_path, "cache-c", "--cache-from", repo)
    assert "warning: compile cache" in damaged.err and "restoring failed" in damaged.err, damaged.err
    assert damaged.json["step_cache"]["compile_cache_restored"] == 0
    assert _compiled(damaged) == {"a.cpp", "b.cpp", "main.cpp"}, damaged.err
    assert damaged.json["digest"] == warm.json["digest"], "the cold build makes the same image"
    shutil.rmtree(tmp_path / "cache-c")


TOOLCHAIN = """\
name: toolchain
bases:
  devel: oci:{runtime}:latest
  runtime: oci:{runtime}:latest
compile:
  - name: calc
    base: devel
    packages: [bc]
    run: ["mkdir -p /out && echo '6*7' | bc > /out/answer"]
    artifacts:
      answer: {{path: /out/answer, to: /answer}}
image:
  base: runtime
  layers:
    - artifact: calc.answer
"""


def test_a_fresh_machine_downloads_a_steps_installed_packages_and_a_damaged_layer_installs_them(
    tmp_path: Path, demo_bases: dict[str, Path], registry: RunningRegistry
) -> None:
    (tmp_path / "m.yaml").write_text(TOOLCHAIN.format(runtime=demo_bases["runtime"]))
    repo = f"docker://{registry.host}/toolchain"
    installs = "$ apt-get install bc"
    cold = _build(tmp_path, "cache-a", "--cache-to", repo, "--storage", str(tmp_path / "storage-a"))
    assert installs in cold.err, cold.err
    exported = cold.json["step_cache"]["exported"]
    assert exported == 2, cold.json["step_cache"]  # the step's result and its packages' layer
    # The packages' layer (the registry's largest blob) leaves out manuals, docs and translations.
    store = registry.root / "docker/registry/v2/blobs/sha256"
    largest = max(store.glob("*/*/data"), key=lambda p: p.stat().st_size)
    with (
        largest.open("rb") as raw,
        zstandard.ZstdDecompressor().stream_reader(raw) as plain,
        tarfile.open(fileobj=plain, mode="r|") as tar,
    ):
        names = tar.getnames()
    assert "usr/bin/bc" in names, names
    assert not [n for n in names if n.startswith(("usr/share/doc/", "usr/share/man/", "usr/share/locale/"))]

    # Machine B: an empty cache, an empty buildah storage: the packages come from the registry.
    # --rebuild: the step itself runs again (its own result is in the registry too).
    fresh = _build(
        tmp_path, "cache-b", "--cache-from", repo, "--storage", str(tmp_path / "storage-b"), "--rebuild", "calc"
    )
    assert installs not in fresh.err, fresh.err
    assert fresh.json["step_cache"]["downloaded_bytes"] > 0, fresh.json["step_cache"]
    assert [s["state"] for s in fresh.json["steps"] if s["name"] == "calc"] == ["built"]
    assert fresh.json["digest"] == cold.json["digest"]

    # Machine C meets a damaged packages layer (the largest blob there): a warning, and apt.
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    largest.write_bytes(bytes(data))
    damaged = _build(
        tmp_path, "cache-c", "--cache-from", repo, "--storage", str(tmp_path / "storage-c"), "--rebuild", "calc"
    )
    assert "calc: packages: its layer could not be read" in damaged.err and installs in damaged.err, damaged.err
    assert damaged.json["digest"] == cold.json["digest"]
