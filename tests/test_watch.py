"""``assemble watch``: a one-line save rebuilds and pushes one layer (counted at a real
registry's access log), says what changed and how long from the save to pushed; a broken
manifest says why and the watch goes on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.plugins.registry import RunningRegistry, start_registry

MANIFEST = """name: watched
bases: {b: scratch}
image:
  base: b
  layers:
    - copy: {from: etc/, to: /etc/watched/}
    - copy: {from: app/, to: /app/}
"""


def _start(tmp_path: Path, ref: str, rounds: int) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "assembler", "watch", str(tmp_path / "m.yaml"), "-o", ref, "--tls-verify=false"]
    argv += ["--cache", str(tmp_path / "cache"), "--rounds", str(rounds), "--interval", "0.2", "--progress", "plain"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _until_watching(proc: subprocess.Popen[str]) -> str:
    """What the watch printed up to its "watching" line (its first round done)."""
    assert proc.stdout is not None
    seen = ""
    for line in proc.stdout:
        seen += line
        if line.startswith("watching "):
            return seen
    raise AssertionError(f"the watch ended (exit {proc.wait()}) before watching:\n{seen}")


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    """A registry whose access log counts the uploads."""
    reg = start_registry(tmp_path / "registry", access_log=True)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.mark.integration  # a registry
@pytest.mark.timeout(300)
def test_a_save_rebuilds_and_pushes_the_one_layer_that_changed(tmp_path: Path, registry: RunningRegistry) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "watched.conf").write_text("level = 1\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('one')\n")
    (tmp_path / "m.yaml").write_text(MANIFEST)
    ref = f"docker://{registry.host}/watched/app:dev"
    proc = _start(tmp_path, ref, rounds=2)
    try:
        first = _until_watching(proc)
        assert f"-> {ref}: 3 blob(s)" in first, first  # two layers and the config
        since = registry.log.stat().st_size
        (tmp_path / "app" / "main.py").write_text("print('two')\n")  # the save
        second = _until_watching(proc)
        (tmp_path / "m.yaml").write_text(MANIFEST.replace("layers:", "layers: oops"))  # a broken save
        third, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, third
    assert "changed: app/main.py" in second, second
    changed = re.findall(r"^  layer (\d+) (\w+): (.*)$", second, flags=re.M)
    assert [(index, origin) for index, origin, _ in changed] == [("1", "built")], second
    assert f"-> {ref}: 2 blob(s)" in second and "1 there already" in second, second  # the layer and the config
    assert re.search(r"^saved -> written in \d+\.\d s$", second, flags=re.M), second
    uploaded = [
        p.rsplit("digest=", 1)[1]
        for method, p, _ in registry.requests(since)
        if method == "PUT" and "/blobs/uploads/" in p
    ]
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", ref], capture_output=True, text=True, check=True
    ).stdout
    pushed = json.loads(raw)
    unchanged, layer = (d["digest"] for d in pushed["layers"])
    # the new layer and config, and the new SBOM's and provenance's blob (referrers of the new
    # digest): the unchanged layer is not sent again
    assert unchanged not in uploaded and layer in uploaded and pushed["config"]["digest"] in uploaded, uploaded
    assert len(uploaded) == 4, "\n".join(map(str, registry.requests(since)))
    assert "changed: m.yaml" in third and "build failed: " in third, third


def _run(args: list[str], root: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "assembler", "run", *args]
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # buildah runs the image
def test_run_mount_runs_the_code_on_the_host_without_a_build(tmp_path: Path, demo_bases: dict[str, Path]) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.sh").write_text("echo built\n")
    (tmp_path / "VERSION").write_text("1\n")
    (tmp_path / "m.yaml").write_text(
        f"""name: code
bases: {{b: "oci:{demo_bases["runtime"]}:latest"}}
image:
  base: b
  layers:
    - copy: {{from: app/, to: /app/}}
    - copy: {{from: VERSION, to: /etc/code/}}
"""
    )
    assert run_cli(["m.yaml", "--cache", "cache", "-o", "oci:out:one"], cwd=tmp_path).code == 0
    (tmp_path / "app" / "hello.sh").write_text("echo edited; cat /etc/code/VERSION\n")  # no build after this
    (tmp_path / "VERSION").write_text("2\n")
    built = _run(["oci:out:one", "--cache", "cache", "--", "/bin/sh", "/app/hello.sh"], tmp_path)
    assert (built.returncode, built.stdout) == (0, "built\n"), built.stderr
    mounted = _run(["oci:out:one", "--cache", "cache", "--mount", "m.yaml", "--", "/bin/sh", "/app/hello.sh"], tmp_path)
    assert (mounted.returncode, mounted.stdout) == (0, "edited\n2\n"), mounted.stderr
    # a host folder bound read-only where the image has none, and a spec that is neither
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x").write_text("data\n")
    ro = ["--mount", f"{tmp_path / 'data'}:/data:ro", "--", "/bin/sh", "-c", "cat /data/x; touch /data/y"]
    bound = _run(["oci:out:one", "--cache", "cache", *ro], tmp_path)
    assert bound.stdout == "data\n" and bound.returncode != 0 and not (tmp_path / "data" / "y").exists(), bound
    bad = _run(["oci:out:one", "--cache", "cache", "--mount", "data", "--", "true"], tmp_path)
    assert bad.returncode == 2 and "expected HOST:PATH[:ro]" in bad.stderr, bad.stderr


def test_what_a_build_writes_is_not_watched() -> None:
    from assembler.cli.watch import left_out

    skipped = ["/p/out", "/p/img.sqsh"]
    assert left_out("/p/out", skipped) and left_out("/p/out/blobs/sha256/ab", skipped)
    assert left_out("/p/img.sqsh.spdx.json", skipped)  # a sidecar beside a file output
    assert not left_out("/p/output.txt", skipped) and not left_out("/p/app/out", skipped)


def test_what_is_watched_is_what_the_build_reads_from_the_host(tmp_path: Path) -> None:
    from assembler.cli.watch import snapshot, watched

    (tmp_path / "proj").mkdir()
    (tmp_path / "src" / "build").mkdir(parents=True)
    (tmp_path / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "src" / "build" / "main.o").write_text("object\n")
    (tmp_path / "proj" / "etc").mkdir()
    (tmp_path / "proj" / "etc" / "motd").write_text("hi\n")
    (tmp_path / "proj" / "m.yaml").write_text(
        """name: w
bases: {b: scratch}
sources: {app: {path: ../src, exclude: [build/]}}
image:
  base: b
  layers:
    - copy: {from: etc/motd, to: /etc/motd}
weights:
  tiny: {source: model, at: /models/tiny, exclude: ["*.md"]}
"""
    )
    (tmp_path / "proj" / "NOTES").write_text("not read by the build\n")
    (tmp_path / "proj" / "model").mkdir()
    (tmp_path / "proj" / "model" / "config.json").write_text("{}\n")
    (tmp_path / "proj" / "model" / "README.md").write_text("left out\n")
    roots = watched(tmp_path / "proj" / "m.yaml", {})
    seen = sorted(Path(p).relative_to(tmp_path).as_posix() for p in snapshot(roots, []))
    # the source beside the manifest's folder, less its build/ (as the build leaves it out);
    # the model's folder less what its exclude: leaves out; nothing else of proj/ (its notes)
    assert seen == ["proj/etc/motd", "proj/m.yaml", "proj/model/config.json", "src/main.c"]
    assert [Path(w.path).name for w in roots] == ["m.yaml", "src", "motd", "model"]  # what the build reads, no more


def test_a_file_beside_a_folder_output_is_still_watched(tmp_path: Path) -> None:
    from assembler.cli.watch import left_out

    (tmp_path / "out").mkdir()  # oci:out, written
    assert not left_out(str(tmp_path / "out.py"), [str(tmp_path / "out")])
    assert left_out(str(tmp_path / "out" / "index.json"), [str(tmp_path / "out")])


def test_a_source_given_on_the_command_line_is_what_is_watched(tmp_path: Path) -> None:
    from assembler.cli.watch import snapshot, watched

    for name in ("src", "src-dev"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "main.c").write_text("int main(void) { return 0; }\n")
    (tmp_path / "m.yaml").write_text(
        "name: w\nbases: {b: scratch}\nsources: {app: {path: src}}\nimage:\n  base: b\n  layers: []\n"
    )
    roots = watched(tmp_path / "m.yaml", {}, sources={"app": str(tmp_path / "src-dev")})
    seen = sorted(Path(p).relative_to(tmp_path).as_posix() for p in snapshot(roots, []))
    assert seen == ["m.yaml", "src-dev/main.c"]  # --source app=src-dev: the manifest's src/ is not read


def test_a_requirements_files_includes_are_watched(tmp_path: Path) -> None:
    """A set's requirements.txt names others (-r base.txt, -c constraints.txt): a save of
    any of them changes what the set installs, so each is watched."""
    from assembler.cli.watch import watched

    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs" / "requirements.txt").write_text("-r base.txt\n-c ../constraints.txt\nrich==13.9.4\n")
    (tmp_path / "reqs" / "base.txt").write_text("packaging==24.2\n")
    (tmp_path / "constraints.txt").write_text("pygments==2.18.0\n")
    (tmp_path / "m.yaml").write_text(
        """name: reqs
bases: {b: scratch}
image:
  base: b
  layers:
    - run: ["pip install -r /dev/null"]
      name: deps
      python_sets: [{name: app, requirements_file: reqs/requirements.txt, python: "3.11"}]
"""
    )
    roots = sorted(Path(w.path).relative_to(tmp_path).as_posix() for w in watched(tmp_path / "m.yaml", {}))
    assert roots == ["constraints.txt", "m.yaml", "reqs/base.txt", "reqs/requirements.txt"]


def test_the_watch_s_own_log_in_the_watched_folder_starts_no_round(tmp_path: Path) -> None:
    """``assemble watch m.yaml > watch.log`` of a manifest that does not load watches its
    folder, log included: each round's "build failed" line would start the next round."""
    import os

    from assembler.cli.watch import snapshot, watched

    (tmp_path / "m.yaml").write_text("name: [broken\n")
    (tmp_path / "app.py").write_text("print('hi')\n")
    log = tmp_path / "watch.log"
    saved = os.dup(1)
    with open(log, "w") as f:
        os.dup2(f.fileno(), 1)
    try:
        seen = snapshot(watched(tmp_path / "m.yaml", {}), [])
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    assert sorted(Path(p).name for p in seen) == ["app.py", "m.yaml"]


def test_a_link_out_of_the_project_is_not_followed(tmp_path: Path) -> None:
    """A source folder that is (or becomes) a link to ``/`` is not walked: the watch would
    read every file of the host."""
    from assembler.cli.watch import Watched, snapshot, watched

    proj = tmp_path / "proj"
    (proj / "etc").mkdir(parents=True)
    (proj / "etc" / "motd").write_text("hi\n")
    (proj / "src").symlink_to("/")
    (proj / "m.yaml").write_text(
        "name: w\nbases: {b: scratch}\nsources: {app: {path: src}}\n"
        "image: {base: b, layers: [{copy: {from: etc, to: /etc/x}}]}\n"
    )
    roots = watched(proj / "m.yaml", {})
    assert [Path(w.path).name for w in roots] == ["m.yaml", "etc"]
    # a folder watched, then replaced by a link to / while the watch waits
    (proj / "etc" / "motd").unlink()
    (proj / "etc").rmdir()
    (proj / "etc").symlink_to("/")
    assert sorted(snapshot([*roots, Watched(str(proj / "etc"))], [])) == [str(proj / "m.yaml")]
