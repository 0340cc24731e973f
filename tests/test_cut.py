"""Layers cut for transfer (assembler.archive.cut, pipeline.cutlayers): a big layer of
Python packages ships as one layer per big package and buckets of small ones, and a package
that did not change keeps its layer's digest when its neighbours change."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest

from assembler.archive.cut import BUCKETS, DEB, Part, listings, owners, plan_cut
from assembler.archive.tar import TarEntry, sort_key
from assembler.oci.layer import Layer
from assembler.pipeline.layers.cutlayers import LayerCutter
from tests.helpers import layout_digest, manifest_of, read_blob, run_cli, run_cli_here, uncompressed

SITE = "opt/venv/lib/python3.11/site-packages"


def _dist(root: Path, name: str, files: dict[str, bytes], *, scripts: dict[str, bytes] | None = None) -> None:
    """A distribution installed under ``root`` (a venv) as pip leaves it: its files, a
    dist-info and a RECORD naming them (scripts as ``../../../bin/NAME``)."""
    site = root / "lib/python3.11/site-packages"
    info = f"{name.replace('-', '_')}-1.0.dist-info"
    rows = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        rows.append(f"{rel},sha256=x,{len(data)}")
    for script, data in (scripts or {}).items():
        (root / "bin").mkdir(parents=True, exist_ok=True)
        (root / "bin" / script).write_bytes(data)
        rows.append(f"../../../bin/{script},,")
    (site / info).mkdir(parents=True)
    (site / info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    rows += [f"{info}/METADATA,,", f"{info}/RECORD,,"]
    (site / info / "RECORD").write_text("\n".join(rows) + "\n")


def _venv(root: Path, *, small: bytes = b"v1") -> None:
    """A venv with a big CUDA-like library, torch (with a script), and small packages."""
    (root / "pyvenv.cfg").parent.mkdir(parents=True, exist_ok=True)
    (root / "pyvenv.cfg").write_text("home = /usr/bin\n")
    _dist(root, "nvidia-cublas-cu12", {"nvidia/cublas/lib/libcublas.so.12": b"c" * 40_000})
    _dist(root, "torch", {"torch/__init__.py": b"t" * 30_000}, scripts={"torchrun": b"#!/opt/venv/bin/python\n"})
    for name in ("six", "idna", "yarl", "aiohttp", "requests", "certifi"):
        _dist(root, name, {f"{name}/__init__.py": name.encode() * 200 + (small if name == "six" else b"")})


def _entries(root: Path, under: str) -> tuple[list[TarEntry], dict[str, str]]:
    """The layer a copy of ``root`` to ``under`` makes (entries in layer order), and its RECORDs' texts."""
    entries, texts = [], {}
    parts = under.split("/")
    for i in range(1, len(parts) + 1):
        entries.append(TarEntry("/".join(parts[:i]), "dir"))
    for path in sorted(root.rglob("*")):
        rel = f"{under}/{path.relative_to(root)}"
        if path.is_dir():
            entries.append(TarEntry(rel, "dir"))
        else:
            entries.append(TarEntry(rel, "file", size=path.stat().st_size))
            if path.name == "RECORD":
                texts[rel] = path.read_text()
    entries.sort(key=lambda e: sort_key(e.path))
    return entries, texts


def _partition_holds(entries: list[TarEntry], parts: list[Part]) -> None:
    """Every entry in a part, every file in exactly one, each part in the layer's order."""
    files = [e.path for e in entries if e.kind != "dir"]
    held = [p for part in parts for p in part.paths]
    assert sorted(p for p in held if p in set(files)) == sorted(files)
    assert {e.path for e in entries} == set(held)
    order = {e.path: i for i, e in enumerate(entries)}
    assert all([order[p] for p in part.paths] == sorted(order[p] for p in part.paths) for part in parts)


def test_each_part_holds_its_packages_files_and_the_folders_above_them(tmp_path: Path) -> None:
    _venv(tmp_path / "venv")
    entries, texts = _entries(tmp_path / "venv", "opt/venv")
    parts = plan_cut(entries, texts, budget=64_000)
    labels = [p.label for p in parts]
    # the CUDA library first, then torch, the buckets of small packages, the venv's own files last
    assert labels[:2] == ["nvidia-cublas-cu12", "torch"] and labels[-1] == "rest", labels
    assert all(label.startswith("bucket ") for label in labels[2:-1]) and len(labels) - 3 <= BUCKETS
    torch = parts[1].paths
    assert "opt/venv/bin/torchrun" in torch and f"{SITE}/torch-1.0.dist-info/RECORD" in torch
    assert {"opt", "opt/venv", "opt/venv/bin", SITE} <= set(torch)  # its folders, as the layer has them
    assert not any("nvidia" in p or "six" in p for p in torch)
    assert parts[-1].paths[-1] == "opt/venv/pyvenv.cfg"  # no RECORD names it
    _partition_holds(entries, parts)
    small = sorted(n for part in parts[2:-1] for n in part.names)
    assert small == ["aiohttp", "certifi", "idna", "requests", "six", "yarl"]


def test_a_layer_within_the_budget_or_without_packages_is_not_cut(tmp_path: Path) -> None:
    _venv(tmp_path / "venv")
    entries, texts = _entries(tmp_path / "venv", "opt/venv")
    size = sum(e.size for e in entries)
    assert plan_cut(entries, texts, budget=size) == []  # exactly the budget: whole
    assert plan_cut(entries, texts, budget=0) == []  # no budget: nothing is cut
    assert plan_cut(entries, {}, budget=1000) == []  # no RECORD: no package boundary to cut along
    assert len(plan_cut(entries, texts, budget=size - 1)) > 1


def test_a_file_two_packages_claim_and_a_whiteout_are_the_rests(tmp_path: Path) -> None:
    _venv(tmp_path / "venv")
    entries, texts = _entries(tmp_path / "venv", "opt/venv")
    shared = f"{SITE}/nvidia/__init__.py"  # a namespace package's, in two RECORDs
    entries = sorted(
        [*entries, TarEntry(shared, "file", size=10), TarEntry(f"{SITE}/.wh.old", "file")],
        key=lambda e: sort_key(e.path),
    )
    for name in ("nvidia_cublas_cu12", "torch"):
        texts[f"{SITE}/{name}-1.0.dist-info/RECORD"] += "nvidia/__init__.py,,\n"
    parts = plan_cut(entries, texts, budget=64_000)
    rest = parts[-1]
    assert rest.label == "rest" and shared in rest.paths and f"{SITE}/.wh.old" in rest.paths


def test_a_small_packages_bucket_depends_on_its_name_alone(tmp_path: Path) -> None:
    _venv(tmp_path / "a")
    _venv(tmp_path / "b")
    _dist(tmp_path / "b", "zipp", {"zipp/__init__.py": b"z" * 100})  # a new neighbour
    a = {n: p.label for p in plan_cut(*_entries(tmp_path / "a", "opt/venv"), budget=64_000) for n in p.names}
    b = {n: p.label for p in plan_cut(*_entries(tmp_path / "b", "opt/venv"), budget=64_000) for n in p.names}
    assert all(b[name] == label for name, label in a.items()), (a, b)


# This machine's own Debian packages, as an `apt-get install` in a runtime step leaves them
# in a layer: their files where they are (under usr/ for what the lists name under a merged
# /lib), their lists and control files, dpkg's status and a file a maintainer script made.
# python3-pip ships pip's dist-info with its RECORD, and its postinst compiles __pycache__.
HOST_DEBS = ("coreutils", "libc6:*", "libzstd1:*", "python3.11-minimal", "python3.11", "python3-pip")


def _host_debian_layer() -> tuple[list[TarEntry], dict[str, str], dict[str, set[str]]]:
    """The layer's entries, its dpkg lists' texts, and each package's files (layer paths)."""
    import glob
    import os

    info = Path("/var/lib/dpkg/info")
    entries: dict[str, TarEntry] = {}
    texts: dict[str, str] = {}
    owned: dict[str, set[str]] = {}

    def add(host: str) -> str:
        real = os.path.join(os.path.realpath(os.path.dirname(host)), os.path.basename(host))
        path = real.lstrip("/")
        parent = os.path.dirname(path)
        while parent and parent not in entries:
            entries[parent] = TarEntry(parent, "dir")
            parent = os.path.dirname(parent)
        if os.path.islink(real):
            entries[path] = TarEntry(path, "symlink", linkname=os.readlink(real))
        elif os.path.isdir(real):
            entries.setdefault(path, TarEntry(path, "dir"))
        else:
            entries[path] = TarEntry(path, "file", size=os.path.getsize(real))
        return path

    for pattern in HOST_DEBS:
        found = glob.glob(str(info / f"{pattern}.list"))
        assert len(found) == 1, f"this Debian 12 machine has no package {pattern} (or two)"
        listing = Path(found[0])
        package = listing.name[: -len(".list")]
        text = listing.read_text()
        texts[f"var/lib/dpkg/info/{listing.name}"] = text
        mine = owned.setdefault(package.split(":")[0], set())
        for line in text.splitlines():
            if line not in ("/.", "") and os.path.lexists(line) and not os.path.isdir(line):
                mine.add(add(line))
                if line.endswith(".dist-info/RECORD"):
                    texts[line.lstrip("/")] = Path(line).read_text()
                folder, file = os.path.split(line)
                for pyc in glob.glob(f"{glob.escape(folder)}/__pycache__/{glob.escape(file[:-3])}.cpython-*.pyc"):
                    mine.add(add(pyc))
        for control in glob.glob(str(info / f"{glob.escape(package)}.*")):
            mine.add(add(control))
    for other in ("/var/lib/dpkg/status", "/etc/ld.so.cache"):
        add(other)
    return sorted(entries.values(), key=lambda e: sort_key(e.path)), texts, owned


def test_a_layer_of_debian_packages_is_cut_along_dpkgs_lists() -> None:
    entries, texts, owned = _host_debian_layer()
    assert listings(entries) == sorted(texts, key=sort_key)
    pip = next(path for path in texts if re.search(r"/pip-[^/]+\.dist-info/RECORD$", path))
    pycs = [p for p in owned["python3-pip"] if p.endswith(".pyc")]
    assert pip in owned["python3-pip"] and len(pycs) > 100, (pip, len(pycs))
    parts = plan_cut(entries, texts, budget=4 << 20)
    _partition_holds(entries, parts)
    held_by = {path: part for part in parts for path in part.paths}
    owner = owners(entries, texts)
    # its files and control files (python3.11's apart from -minimal's; pip's RECORD and bytecode python3-pip's)
    for package, paths in owned.items():
        unit = DEB + package
        assert paths and all(owner[p] == unit and unit in held_by[p].names for p in paths), package
    # what the lists name under the merged /lib is there under usr/lib, and goes with libc6
    assert "/lib/x86_64-linux-gnu/libc.so.6" in texts[next(t for t in texts if "/libc6:" in t)]
    assert owner["usr/lib/x86_64-linux-gnu/libc.so.6"] == DEB + "libc6"
    # dpkg's own status and what a maintainer script made belong to no package: the rest's
    assert held_by["var/lib/dpkg/status"].label == "rest" and held_by["etc/ld.so.cache"].label == "rest"


def test_gpu_libraries_from_apt_come_first_and_a_deb_is_apart_from_a_wheel(tmp_path: Path) -> None:
    _venv(tmp_path / "venv")
    entries, texts = _entries(tmp_path / "venv", "opt/venv")
    # a CUDA library, a package named like CUDA's that is none, and a Debian package named like a wheel
    debs = {"libcublas-12-9": 50_000, "libcurl4": 50_000, "zlib1g": 20_000, "six": 20_000}
    for name, size in debs.items():
        path = f"usr/lib/{name}/lib.so"
        entries += [TarEntry(f"usr/lib/{name}", "dir"), TarEntry(path, "file", size=size)]
        entries.append(TarEntry(f"var/lib/dpkg/info/{name}.list", "file", size=40))
        texts[f"var/lib/dpkg/info/{name}.list"] = f"/.\n/usr\n/usr/lib\n/usr/lib/{name}\n/{path}\n"
    entries += [TarEntry(d, "dir") for d in ("usr", "usr/lib", "var", "var/lib", "var/lib/dpkg", "var/lib/dpkg/info")]
    entries.sort(key=lambda e: sort_key(e.path))
    parts = plan_cut(entries, texts, budget=64_000)
    _partition_holds(entries, parts)
    labels = [p.label for p in parts]
    assert labels[:3] == ["nvidia-cublas-cu12", "torch", DEB + "libcublas-12-9"], labels
    assert labels[3] == DEB + "libcurl4", labels  # by name, as any package that is no GPU library
    held_by = {name: part.label for part in parts for name in part.names}
    assert "six" in held_by and DEB + "six" in held_by  # two packages, each with its own files
    six = next(part for part in parts if DEB + "six" in part.names)
    assert "usr/lib/six/lib.so" in six.paths and not any(p.startswith("opt/") and "six" in p for p in six.paths)


# -- the walk: a copy of a venv, built -------------------------------------------------------


def _project(root: Path, *, small: bytes = b"v1") -> Path:
    _venv(root / "venv", small=small)
    (root / "m.yaml").write_text(
        "name: cut\nbases: {b: scratch}\nimage:\n  base: b\n  layers:\n"
        "    - copy: {from: ./venv, to: /opt/venv}\n"
        "    - copy: {from: ./venv/pyvenv.cfg, to: /etc/venv.cfg}\n"
    )
    return root


def _build(project: Path, cache: Path, *extra: str) -> tuple[dict, list[str]]:
    ran = run_cli_here(["m.yaml", "--cache", str(cache), "--json", "-o", "oci:out:1", *extra], cwd=project)
    assert ran.code == 0, str(ran)
    history = [h.get("created_by", "") for h in _config(project / "out")["history"]]
    return ran.json, history


def _config(layout: Path) -> dict:
    import json

    return json.loads(read_blob(layout, manifest_of(layout, "1")["config"]["digest"]))


def _files(layout: Path) -> dict[str, tuple[str, bytes]]:
    """The image's files, its layers applied in order: path -> (kind, content)."""
    import io

    out: dict[str, tuple[str, bytes]] = {}
    for desc in manifest_of(layout, "1")["layers"]:
        with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(layout, desc["digest"])))) as tf:
            for info in tf:
                data = tf.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
                out[info.name.rstrip("/")] = ("dir" if info.isdir() else "file", data + oct(info.mode).encode())
    return out


def test_a_big_venv_ships_cut_and_a_bump_moves_only_its_part(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    whole, _ = _build(project, tmp_path / "cache", "--layer-budget", "0")
    files = _files(project / "out")
    cut, history = _build(project, tmp_path / "cache", "--layer-budget", "64K")
    assert len(whole["layers"]) == 2 and len(cut["layers"]) > 4, cut["layers"]
    whats = [layer["what"] for layer in cut["layers"]]
    assert whats[0] == "copy ./venv /opt/venv [nvidia-cublas-cu12]" and whats[1].endswith("[torch]")
    assert whats[-2].endswith("[rest]") and whats[-1] == "copy ./venv/pyvenv.cfg /etc/venv.cfg"
    assert history[0].endswith("[nvidia-cublas-cu12]") and len(history) == len(cut["layers"])
    assert _files(project / "out") == files  # the same files, whichever way it ships
    again, _ = _build(project, tmp_path / "cache", "--layer-budget", "64K")
    assert again["digest"] == cut["digest"]

    # six changes: torch's and the CUDA library's parts keep their digests, six's bucket does not
    bumped_project = _project(tmp_path / "q", small=b"v2")
    bumped, _ = _build(bumped_project, tmp_path / "cache2", "--layer-budget", "64K")
    before = {x["what"]: x["digest"] for x in cut["layers"]}
    after = {x["what"]: x["digest"] for x in bumped["layers"]}
    moved = sorted(what for what, digest in after.items() if before.get(what) != digest)
    assert len(moved) == 1 and "bucket" in moved[0], moved


def test_a_big_layer_without_packages_is_not_read_to_be_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model weights over the budget: the paths remembered as the layer was written name no
    package listing, so the layer is not read back (a 1 GiB one cost a second); a venv's is."""
    read: list[str] = []
    real = LayerCutter._cut

    def counted(self: LayerCutter, layer: Layer, key: str) -> list[tuple[Layer, str]]:
        read.append(layer.digest)
        return real(self, layer, key)

    monkeypatch.setattr(LayerCutter, "_cut", counted)
    weights = tmp_path / "w"
    (weights / "model").mkdir(parents=True)
    for i in range(3):
        (weights / "model" / f"part-{i}.safetensors").write_bytes(bytes([i]) * 100_000)
    (weights / "m.yaml").write_text(
        "name: w\nbases: {b: scratch}\nimage:\n  base: b\n  layers:\n    - copy: {from: ./model, to: /models/m}\n"
    )
    ran = run_cli_here(
        ["m.yaml", "--cache", str(tmp_path / "c"), "--json", "-o", "oci:out:1", "--layer-budget", "64K"], cwd=weights
    )
    assert ran.code == 0 and read == [] and len(ran.json["layers"]) == 1, (str(ran), read)
    # a memo of the paths that is not what a writer records: the layer is read, as one from elsewhere
    for memo in (tmp_path / "c" / "keys").glob("*/deps-entries-v2-*.json"):
        memo.write_text('{"kind": "memo", "entries": [["models/m", "dir"]]}')
    again = run_cli_here(
        ["m.yaml", "--cache", str(tmp_path / "c"), "--json", "-o", "oci:out:1", "--layer-budget", "64K"], cwd=weights
    )
    assert again.code == 0 and len(read) == 1 and again.json["digest"] == ran.json["digest"], (str(again), read)
    cut, _ = _build(_project(tmp_path / "p"), tmp_path / "c", "--layer-budget", "64K")
    assert len(read) == 2 and len(cut["layers"]) > 4, read


def test_the_default_budget_leaves_a_small_image_as_it_was(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    default, _ = _build(project, tmp_path / "cache")
    whole, _ = _build(project, tmp_path / "cache", "--layer-budget", "0")
    assert default["digest"] == whole["digest"] and layout_digest(project / "out", "1") == whole["digest"]


def test_a_bad_budget_is_refused(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    ran = run_cli_here(
        ["m.yaml", "--cache", str(tmp_path / "c"), "--layer-budget", "lots", "-o", "oci:o:1"], cwd=project
    )
    assert ran.code == 2 and "--layer-budget" in ran.err and "512M" in ran.err, str(ran)


# -- the walk: a real apt install, built ----------------------------------------------------


def _apt_build(folder: Path, packages: str, cache: Path, *extra: str) -> dict:
    (folder / "m.yaml").write_text(
        f'name: apt-cut\nbases: {{runtime: "oci:{folder.parent / "bases"}:latest"}}\n'
        f"image:\n  base: runtime\n  layers:\n    - packages: [{packages}]\n"
    )
    ran = run_cli(["m.yaml", "--cache", str(cache), "--json", "-o", "oci:out:1", *extra], cwd=folder)
    assert ran.code == 0, str(ran)
    return ran.json  # type: ignore[no-any-return]


def test_an_apt_layer_ships_cut_along_its_packages_and_a_new_one_moves_no_other(
    tmp_path: Path, demo_bases: dict[str, Path]
) -> None:
    """`packages: [curl, ca-certificates]` on the demo's Debian 12 runtime base: about 8 MB
    of libraries and their dpkg lists. Cut at 1 MiB, each package of 256 KiB or more ships
    as a layer of its own; the image's files are those of the layer uncut; and a second
    image that also installs `less` (the step runs again) moves no other package's part."""
    (tmp_path / "bases").symlink_to(demo_bases["runtime"])
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    whole = _apt_build(first, "curl, ca-certificates", tmp_path / "cache", "--layer-budget", "0")
    files = _files(first / "out")
    cut = _apt_build(first, "curl, ca-certificates", tmp_path / "cache", "--layer-budget", "1M")
    assert _files(first / "out") == files  # the same files, whichever way it ships
    whats = [layer["what"] for layer in cut["layers"]]
    assert len(whole["layers"]) == 2 and len(whats) > 5, whats
    debs = {w.rsplit("[", 1)[1][:-1]: x["digest"] for w, x in zip(whats, cut["layers"], strict=True) if "[deb:" in w}
    assert {"deb:curl", "deb:libcurl4", "deb:libssl3"} <= set(debs) and whats[-1].endswith("[rest]"), whats
    with tarfile.open(fileobj=io.BytesIO(uncompressed(read_blob(first / "out", debs["deb:libssl3"])))) as tf:
        names = set(tf.getnames())
    assert any(re.fullmatch(r"var/lib/dpkg/info/libssl3(:\w+)?\.list", n) for n in names), names
    assert any(re.fullmatch(r"usr/lib/[^/]+/libssl\.so\.3", n) for n in names), names
    assert "var/lib/dpkg/status" not in names, names

    bumped = _apt_build(second, "curl, ca-certificates, less", tmp_path / "cache", "--layer-budget", "1M")
    after = {x["what"].rsplit("[", 1)[1][:-1]: x["digest"] for x in bumped["layers"] if "[deb:" in x["what"]}
    assert "deb:less" in after and all(after.get(name) == digest for name, digest in debs.items()), (debs, after)
