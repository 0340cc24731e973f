"""``scripts/build-seeds``: its rows name real stand-in targets, an sdist is unpacked only
inside its folder, and the table says for every system what was built or why not."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest

from tests import yaml_helper
from tests.helpers import ROOT

SCRIPT = ROOT / "scripts" / "build-seeds"


def _script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("build_seeds", str(SCRIPT))
    spec = importlib.util.spec_from_loader("build_seeds", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_seeds"] = module  # its dataclasses look their module up there
    loader.exec_module(module)
    return module


def test_every_row_is_a_stand_in_target_of_its_manifest_or_says_why_not() -> None:
    bs = _script()
    systems = {seed.system for seed in bs.SEEDS}
    assert {"llama.cpp", "DeepSpeed", "vLLM", "verl", "Dynamo", "TGI", "vLLM-ROCm", "verl-ROCm"} <= systems
    for seed in bs.SEEDS:
        manifest = yaml_helper.load(ROOT / "manifests" / seed.manifest)
        if seed.blocked:
            assert len(seed.blocked) > 40, seed  # a reason, not a word
            continue
        target = manifest["targets"][seed.target]
        # the manifest says what the target stands in for, beside upstream's targets, which stay
        assert target["description"].startswith("stands in for "), seed
        # on a base made from the apt mirror (Debian's, or Debian's with its ROCm)
        assert "debian" in target["base"] and "bootstrap" in manifest["bases"][target["base"]], seed
        # upstream's image stays: another target, or the manifest as it is (no default target)
        assert len(manifest["targets"]) > 1 or "default_target" not in manifest, seed
        assert manifest.get("default_target") != seed.target, seed


def _sdist(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def test_an_sdist_is_unpacked_inside_its_folder_only(tmp_path: Path) -> None:
    bs = _script()
    good = _sdist(
        tmp_path / "good.tar.gz", [_file("pkg-1.0/setup.py", b"print()\n"), _file("pkg-1.0/bin/x", b"#!", 0o755)]
    )
    dest = tmp_path / "good"
    bs.unpack(good, dest)
    assert (dest / "pkg-1.0" / "setup.py").read_bytes() == b"print()\n"
    assert (dest / "pkg-1.0" / "bin" / "x").stat().st_mode & 0o111

    link = tarfile.TarInfo("pkg-1.0/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    bad: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
        "escape": [_file("../outside", b"x")],
        "absolute": [_file(str(tmp_path / "abs"), b"x")],
        "link": [(link, None)],
    }
    for name, members in bad.items():
        archive = _sdist(tmp_path / f"{name}.tar.gz", members)
        with pytest.raises(SystemExit, match="is not a file or folder inside it"):
            bs.unpack(archive, tmp_path / name)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "abs").exists()
    with pytest.raises(SystemExit, match="unpacks to more than 5 bytes"):
        bs.unpack(good, tmp_path / "big", limit=5)
    assert not (tmp_path / "big").exists()


def test_an_sdist_that_is_not_the_named_file_is_refused(tmp_path: Path) -> None:
    bs = _script()
    archive = _sdist(tmp_path / "pkg-1.0.tar.gz", [_file("pkg-1.0/setup.py", b"print()\n")])
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    bs.check_sha256(archive, digest)
    with pytest.raises(SystemExit, match=f"sha256 {digest}, not the 00"):
        bs.check_sha256(archive, "00" * 32)
    for seed in bs.SEEDS:
        for sdist in seed.sdists:
            assert len(sdist.sha256) == 64 and int(sdist.sha256, 16) >= 0, sdist


def test_the_table_has_every_system_with_what_was_built_or_why_not(tmp_path: Path) -> None:
    bs = _script()
    built = next(seed for seed in bs.SEEDS if not seed.blocked)
    failed = [seed for seed in bs.SEEDS if not seed.blocked][1]
    warm = [seed for seed in bs.SEEDS if not seed.blocked][-1]
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps(
            {
                built.key: {
                    "state": "built",
                    "cold_s": 754,
                    "again_s": 31,
                    "compressed": 3 * 2**30,
                    "unpacked": 7 * 2**30 + 2**29,
                    "resumed": True,
                    "tests": [["import", "passed", "0.16.4"], ["cuda", "not-run", "no NVIDIA GPU"]],
                },
                failed.key: {"state": "failed", "why": "step wheel: command failed"},
                warm.key: {"state": "built", "cold_s": 60, "again_s": 2, "cold_steps_built": 0, "tests": []},
            }
        )
    )
    text = bs.table(bs.Results(results))
    rows = {
        tuple(line.removeprefix("| ").split(" | ")[:2]): line for line in text.splitlines() if line.startswith("| ")
    }
    assert set(rows) == {("system", "target")} | {(seed.system, seed.target) for seed in bs.SEEDS}
    assert (
        "| 12m34s (after a failed try) | 0m31s | 3.00 GiB | 7.50 GiB | import passed, cuda not-run |"
        in rows[built.system, built.target]
    )
    assert "failed: step wheel: command failed" in rows[failed.system, failed.target]
    assert "| 1m00s (every step cached by an earlier build) | 0m02s |" in rows[warm.system, warm.target]
    for seed in bs.SEEDS:
        if seed.blocked:
            assert f"not run: {seed.blocked}" in rows[seed.system, seed.target]
    log = tmp_path / "cold.log"
    log.write_text("05:11:12 step system: cached\n05:40:14 step router: built in 1729.0 s\n")
    assert bs.Builder.steps_built(log) == 1
    assert "cores" in text.splitlines()[-1]


def _git(*args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return done.stdout.strip()


def test_a_clone_is_taken_only_at_the_commit_the_row_names_and_unchanged(tmp_path: Path) -> None:
    bs = _script()
    tree = tmp_path / "tree"
    tree.mkdir()
    _git("init", "-q", cwd=tree)
    (tree / "Cargo.toml").write_text("[workspace]\n")
    _git("add", ".", cwd=tree)
    _git("commit", "-q", "-m", "one", cwd=tree)
    first = _git("rev-parse", "HEAD", cwd=tree)
    clone = bs.Clone("src", "https://example.invalid/src.git", "v1", first)
    bs.check_clone(tree, clone)
    (tree / "Cargo.toml").write_text("[workspace]\nmembers = []\n")
    with pytest.raises(SystemExit, match="files changed from v1"):
        bs.check_clone(tree, clone)
    _git("commit", "-q", "-am", "two", cwd=tree)
    with pytest.raises(SystemExit, match=f"not {first} \\(v1\\): git -C .* checkout {first}"):
        bs.check_clone(tree, clone)
    with pytest.raises(SystemExit, match="not a git clone"):
        bs.check_clone(tmp_path, clone)


def test_a_row_whose_clone_is_not_given_says_what_to_clone_and_builds_nothing(tmp_path: Path) -> None:
    bs = _script()
    seed = next(seed for seed in bs.SEEDS if seed.clones)
    results = bs.Results(tmp_path / "results.json")
    bs.Builder(tmp_path, results).build(seed)
    got = json.loads((tmp_path / "results.json").read_text())[seed.key]
    clone = seed.clones[0]
    assert got["state"] == "not built"
    assert (
        f"needs a clone of {clone.url} at {clone.ref} ({clone.commit}), given with --clone {clone.source}=PATH"
        in got["why"]
    )
    assert not (tmp_path / "out").exists() and not list((tmp_path / "logs").iterdir())
    # the manifest (its target, params resolved) names the same trees at the same refs
    from assembler.manifest.load.manifest import load_manifest

    sources = load_manifest(ROOT / "manifests" / seed.manifest, target=seed.target).manifest.sources
    for c in seed.clones:
        assert (sources[c.source].git, sources[c.source].ref) == (c.url, c.ref), c


def test_an_sdist_is_fetched_as_the_file_the_index_lists(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    """The file itself from the JSON simple API (pip download would run setup.py to read its
    metadata: vLLM's installs torch first), refused when the index lists none or it is too big."""
    bs = _script()
    url, root = http_folder
    archive = _sdist(root / "demo_pkg-1.0.tar.gz", [_file("demo_pkg-1.0/setup.py", b"print()\n")])
    (root / "simple" / "demo-pkg").mkdir(parents=True)
    listing = {"files": [{"filename": "demo_pkg-1.0.tar.gz", "url": f"{url}/demo_pkg-1.0.tar.gz"}]}
    (root / "simple" / "demo-pkg" / "index.html").write_text(json.dumps(listing))
    dest = tmp_path / "dest"
    dest.mkdir()
    got = bs.fetch_sdist("demo_pkg", "1.0", dest, index=f"{url}/simple")
    assert got == dest / "demo_pkg-1.0.tar.gz" and got.read_bytes() == archive.read_bytes()
    with pytest.raises(SystemExit, match=r"lists no single sdist of demo_pkg==2\.0"):
        bs.fetch_sdist("demo_pkg", "2.0", dest, index=f"{url}/simple")
    bs.MAX_SDIST = 10
    with pytest.raises(SystemExit, match="more than 10 bytes"):
        bs.fetch_sdist("demo_pkg", "1.0", tmp_path, index=f"{url}/simple")
