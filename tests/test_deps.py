"""The dependency check: ELF files of artifact and copy layers must load in the image.

Images are made of real files, without a container: the host's own ``curl`` and the
glibc, zlib and libcurl it needs, laid out in a root filesystem tarball as a Debian base
has them (merged /usr, multiarch folders, symlinked sonames); a base lacking a library,
or with a libc whose version definitions are too old, fails the build naming it. Small
ELF files written here (dynamic section only) cover $ORIGIN, ld.so.conf, LD_LIBRARY_PATH
and the GPU driver libraries the host provides.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import tarfile
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from assembler.archive import headers as archive_headers
from assembler.archive.headers import LayerHeaders
from assembler.archive.layer import Member, Opener, write_layer
from assembler.archive.tar import TarEntry
from assembler.cache import Cache
from assembler.cache.memos import NO_ELF_FACTS, elf_facts_key, remember_headers
from assembler.cache.store import Store
from assembler.deps.elf import FactsAsWritten
from assembler.deps.files import FactReader, ImageFiles
from assembler.errors import InvalidArchive
from assembler.oci.image import Image
from tests.helpers import ROOT, layout_digest, one_layer_image, read_blob, run_cli, run_cli_here, spools_made

TRIPLET = "x86_64-linux-gnu"
HOST_LIBS = Path("/lib") / TRIPLET
CURL = Path("/usr/bin/curl")
LOADER = "/lib64/ld-linux-x86-64.so.2"

pytestmark = pytest.mark.skipif(
    not (CURL.exists() and (HOST_LIBS / "libcurl.so.4").exists()),
    reason="needs the host's curl and libcurl (Debian: curl)",
)


def tiny_elf(*, needed: list[str], runpath: str = "", soname: str = "", interp: str = "") -> bytes:
    """An x86_64 ELF with only what ld.so reads first: program headers (PT_LOAD,
    PT_DYNAMIC, PT_INTERP when ``interp``) and a dynamic section (no code, no sections)."""
    strings = b"\0"
    offsets: dict[str, int] = {}
    for text in [*needed, runpath, soname, interp]:
        if text and text not in offsets:
            offsets[text] = len(strings)
            strings += text.encode() + b"\0"
    phnum = 3 if interp else 2
    strtab = 64 + 56 * phnum
    dyn_off = (strtab + len(strings) + 7) // 8 * 8
    tags = [(1, offsets[n]) for n in needed]
    tags += [(29, offsets[runpath])] if runpath else []
    tags += [(14, offsets[soname])] if soname else []
    tags += [(5, strtab), (10, len(strings)), (0, 0)]
    dynamic = b"".join(struct.pack("<qQ", t, v) for t, v in tags)
    total = dyn_off + len(dynamic)
    head = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    head += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs = struct.pack("<IIQQQQQQ", 1, 5, 0, 0, 0, total, total, 0x1000)  # PT_LOAD
    phdrs += struct.pack("<IIQQQQQQ", 2, 6, dyn_off, dyn_off, dyn_off, len(dynamic), len(dynamic), 8)  # PT_DYNAMIC
    if interp:
        at = strtab + offsets[interp]
        phdrs += struct.pack("<IIQQQQQQ", 3, 4, at, at, at, len(interp) + 1, len(interp) + 1, 1)  # PT_INTERP
    body = head + phdrs + strings
    return body + bytes(dyn_off - len(body)) + dynamic


def _add(tf: tarfile.TarFile, name: str, data: bytes | None = None, *, link: str = "", mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.mode = mode
    if link:
        info.type, info.linkname = tarfile.SYMTYPE, link
        tf.addfile(info)
    elif data is None:
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
    else:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def host(name: str) -> bytes:
    return Path(os.path.realpath(HOST_LIBS / name)).read_bytes()


def debian_base(path: Path, *, libcurl: bool, libc: bytes | None = None, extra: dict[str, bytes] | None = None) -> None:
    """A merged-/usr root filesystem with glibc, zlib and (``libcurl``) libcurl as Debian lays them out."""
    lib = f"usr/lib/{TRIPLET}"
    with tarfile.open(path, "w") as tf:
        for folder in ("usr", "usr/lib", lib, "usr/lib64", "usr/bin", "etc", "etc/ld.so.conf.d"):
            _add(tf, folder)
        _add(tf, "lib", link="usr/lib")
        _add(tf, "lib64", link="usr/lib64")
        _add(tf, "bin", link="usr/bin")
        _add(tf, f"{lib}/libc.so.6", libc if libc is not None else host("libc.so.6"))
        _add(tf, f"{lib}/ld-linux-x86-64.so.2", host("ld-linux-x86-64.so.2"))
        _add(tf, "usr/lib64/ld-linux-x86-64.so.2", link=f"../lib/{TRIPLET}/ld-linux-x86-64.so.2")
        _add(tf, f"{lib}/libz.so.1.2.13", host("libz.so.1"))
        _add(tf, f"{lib}/libz.so.1", link="libz.so.1.2.13")
        if libcurl:
            _add(tf, f"{lib}/libcurl.so.4.8.0", host("libcurl.so.4"))
            _add(tf, f"{lib}/libcurl.so.4", link="libcurl.so.4.8.0")
        _add(tf, "etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n", mode=0o644)
        for name, data in (extra or {}).items():
            _add(tf, name, data)


def ld_cache(files: dict[str, bytes], *, fmt: str = "new") -> bytes:
    """The /etc/ld.so.cache the real ``ldconfig -r`` writes for a root holding ``files``
    (the ld.so.conf files among them: an /etc/ld.so.conf including ld.so.conf.d is added)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, data in {"etc/ld.so.conf": b"include /etc/ld.so.conf.d/*.conf\n", **files}.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        # -X: no soname links made in the root (the image's own links are its layers').
        subprocess.run(["ldconfig", "-X", "-c", fmt, "-r", str(root)], check=True, capture_output=True)
        return (root / "etc" / "ld.so.cache").read_bytes()


MANIFEST = """\
name: deps
bases: {runtime: 'rootfs:base.tar'}
image:
  base: runtime
  layers:
    - copy: {from: ./curl, to: /usr/bin/curl, mode: "0755"}
"""


def project(root: Path, manifest: str = MANIFEST, **base: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "curl").write_bytes(CURL.read_bytes())
    (root / "m.yaml").write_text(manifest)
    debian_base(root / "base.tar", **base)  # type: ignore[arg-type]
    return root


def blobs_opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The digest of every blob opened in a cache from now on, in order."""
    opened: list[str] = []
    open_blob_of = Store.open_blob

    def counting(store: Store, digest: str) -> BinaryIO:
        opened.append(digest)
        return open_blob_of(store, digest)

    monkeypatch.setattr(Store, "open_blob", counting)
    return opened


def build(root: Path, *extra: str) -> object:
    return run_cli(
        ["m.yaml", "--cache", str(root / "cache"), "-o", "oci:out:x", "--progress", "plain", *extra], cwd=root
    )


@pytest.mark.integration  # seconds
def test_a_base_lacking_a_library_fails_the_build_naming_it(tmp_path: Path) -> None:
    root = project(tmp_path / "p", libcurl=False)
    ran = build(root)
    assert ran.code == 1, str(ran)
    assert "Traceback" not in ran.err
    assert "/usr/bin/curl: needs libcurl.so.4, not found in the image (layer 1: copy ./curl /usr/bin/curl)" in ran.err
    assert "libz.so.1" not in ran.err.split("dependency check")[-1]  # found through lib -> usr/lib and a soname link
    assert "--no-deps-check" in ran.err  # the hint
    assert not (root / "out").exists()  # nothing written
    ran = build(root, "--no-deps-check")
    assert ran.code == 0, str(ran)
    # assemble deps on the written layout finds the same miss: exit 1, and --json for scripts.
    ran = run_cli(["deps", "oci:out:x", "--json"], cwd=root)
    assert ran.code == 1, str(ran)
    assert ran.json["image"] == layout_digest(root / "out", "x")
    assert ran.json["layers"] == [1] and ran.json["files"] == 1
    assert [(m["file"], m["library"], m["layer"], m["kind"]) for m in ran.json["misses"]] == [
        ("/usr/bin/curl", "libcurl.so.4", 1, "library")
    ]
    ran = run_cli(["deps", "oci:out:x"], cwd=root)
    assert ran.code == 1 and "missing: /usr/bin/curl: needs libcurl.so.4" in ran.out, str(ran)


@pytest.mark.integration  # seconds
def test_a_library_the_manifest_says_is_absent_is_reported_with_its_reason_not_a_failure(tmp_path: Path) -> None:
    absent = (
        "absent_libraries:\n"
        "  - {library: 'libcurl.so.*', needed_by: /usr/bin/curl, because: the HTTP plugin is optional here}\n"
    )
    root = project(tmp_path / "p", MANIFEST + absent, libcurl=False)
    ran = build(root, "-v")
    assert ran.code == 0, str(ran)
    assert (
        "dependency check: libcurl.so.* absent on purpose (needed by /usr/bin/curl): the HTTP plugin is optional here"
        in ran.err
    )
    # the entry names that file only: another file missing the same library still fails the build
    other = MANIFEST + "    - copy: {from: ./curl, to: /usr/bin/curl2, mode: '0755'}\n" + absent
    (root / "m.yaml").write_text(other)
    ran = build(root)
    assert ran.code == 1 and "/usr/bin/curl2: needs libcurl.so.4, not found" in ran.err, str(ran)
    assert "/usr/bin/curl: needs" not in ran.err and "absent_libraries (library, needed_by, because)" in ran.err
    # an entry for another platform's images (issue 69: vLLM's arm64 image) excuses nothing here
    arm_only = absent.replace("optional here}", "optional here, platforms: [linux/arm64]}")
    (root / "m.yaml").write_text(MANIFEST + arm_only)
    ran = build(root)
    assert ran.code == 1 and "/usr/bin/curl: needs libcurl.so.4, not found" in ran.err, str(ran)
    # an entry that no longer matches anything is said, so it cannot hide a later miss unseen
    root2 = project(tmp_path / "q", MANIFEST + absent, libcurl=True)
    ran = build(root2)
    assert ran.code == 0, str(ran)
    assert "absent_libraries: libcurl.so.* needed by /usr/bin/curl: no file misses it; remove it" in ran.err


@pytest.mark.integration  # seconds
def test_the_same_image_with_the_library_passes(tmp_path: Path) -> None:
    root = project(tmp_path / "p", libcurl=True)
    ran = build(root, "-v")
    assert ran.code == 0, str(ran)
    assert "dependency check: 1 ELF files in 1 layers" in ran.err
    ran = run_cli(["deps", "oci:out:x", "--json"], cwd=root)
    assert ran.code == 0, str(ran)
    assert ran.json["ok"] and ran.json["misses"] == [] and ran.json["files"] == 1
    # Every layer: the base's libraries too (libcurl's own needs are not in this tiny base).
    ran = run_cli(["deps", "oci:out:x", "--all-layers", "--json"], cwd=root)
    assert ran.code == 1, str(ran)
    missing = {m["library"] for m in ran.json["misses"]}
    assert "libssl.so.3" in missing and "libz.so.1" not in missing and "libc.so.6" not in missing
    assert {m["file"] for m in ran.json["misses"]} == {f"/usr/lib/{TRIPLET}/libcurl.so.4.8.0"}


def test_a_libc_too_old_for_a_symbol_version_fails_naming_it(tmp_path: Path) -> None:
    # The host's libc with its GLIBC_2.34 version definition renamed: a glibc older than 2.34.
    libc = host("libc.so.6")
    assert libc.count(b"GLIBC_2.34\0") >= 1
    root = project(tmp_path / "p", libcurl=True, libc=libc.replace(b"GLIBC_2.34\0", b"GLIBC_2.3X\0"))
    ran = build(root)
    assert ran.code == 1, str(ran)
    assert (
        f"/usr/bin/curl: needs GLIBC_2.34 from libc.so.6, /usr/lib/{TRIPLET}/libc.so.6 does not define it "
        "(layer 1: copy ./curl /usr/bin/curl)"
    ) in ran.err
    assert "GLIBC_2.33" not in ran.err  # defined: not reported


ORIGIN = """\
name: origin
bases: {runtime: 'rootfs:base.tar'}
image:
  base: runtime
  layers:
    - copy: {from: ./app, to: /opt/app}
    - copy: {from: ./plugin.so, to: /opt/plugins/plugin.so}
  config:
    env: {LD_LIBRARY_PATH: /opt/env-lib}
"""


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("runpath, ok", [("$ORIGIN/../lib", True), ("$ORIGIN/../lib64", False)])
def test_origin_runpath_ldconf_env_and_host_driver_libraries(tmp_path: Path, runpath: str, ok: bool) -> None:
    root = tmp_path / "p"
    (root / "app" / "bin").mkdir(parents=True)
    (root / "app" / "lib").mkdir()
    needed = ["libhelper.so.1", "libconf.so.2", "libenv.so.3", "libcuda.so.1", "libnvidia-ml.so.1", "libc.so.6"]
    (root / "app" / "bin" / "tool").write_bytes(tiny_elf(needed=needed, runpath=runpath, interp=LOADER))
    (root / "app" / "lib" / "libhelper.so.1").write_bytes(tiny_elf(needed=[], soname="libhelper.so.1"))
    # A shared object needing a library that is in the image but not on its path: a note, not a miss.
    (root / "plugin.so").write_bytes(tiny_elf(needed=["libhelper.so.1"]))
    (root / "m.yaml").write_text(ORIGIN)
    conf = {
        "etc/ld.so.conf.d/conf.conf": b"# a comment\n/opt/conf-lib\n",
        "opt/conf-lib/libconf.so.2": tiny_elf(needed=[], soname="libconf.so.2"),
    }
    # ld.so finds libconf through the cache ldconfig wrote from ld.so.conf (tests/test_deps_ldcache.py: without).
    debian_base(
        root / "base.tar",
        libcurl=False,
        extra={
            **conf,
            "etc/ld.so.cache": ld_cache(conf),
            "opt/env-lib/libenv.so.3": tiny_elf(needed=[], soname="libenv.so.3"),
        },
    )
    ran = build(root)
    assert "libcuda" not in ran.err and "libnvidia-ml" not in ran.err  # the host's
    # Nothing the user can change, so no warning on every build: counted once (-v), listed by `deps`.
    note = "/opt/plugins/plugin.so (layer 2) needs libhelper.so.1, not on its search path"
    assert note not in ran.err and "warning" not in ran.err, str(ran)
    if ok:
        assert ran.code == 0, str(ran)
        again = build(root, "-v")  # a no-change build says it too, once
        assert again.err.count("1 library needed off the search path of 1 shared object, loaded first by") == 1
        assert note not in again.err and "warning" not in again.err, str(again)
        listed = run_cli(["deps", "oci:out:x"], cwd=root)
        assert listed.code == 0 and f"  note: {note}" in listed.out, str(listed)
        ran = run_cli(["deps", "oci:out:x", "--json"], cwd=root)
        assert ran.code == 0, str(ran)
        assert ran.json["host"] == ["libcuda.so.1", "libnvidia-ml.so.1"]
        assert ran.json["files"] == 3 and ran.json["layers"] == [1, 2]
    else:
        assert ran.code == 1, str(ran)
        miss = "/opt/app/bin/tool: needs libhelper.so.1, not found in the image (layer 1: copy ./app /opt/app)"
        assert miss in ran.err
        assert "libconf.so.2" not in ran.err and "libenv.so.3" not in ran.err


WORKDIR = """\
name: workdir
bases: {runtime: 'rootfs:base.tar'}
image:
  base: runtime
  layers:
    - copy: {from: ./app, to: /app}
  config: {workdir: WORKDIR}
"""


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("workdir, ok", [("/app", True), ("/srv", False)])
def test_an_empty_runpath_entry_is_the_working_directory(tmp_path: Path, workdir: str, ok: bool) -> None:
    # CMake's build-tree RUNPATH ("/build/bin:", padded with an empty entry) and upstream
    # llama.cpp's image, whose llama-server finds /app/libllama.so only because WORKDIR is /app.
    root = tmp_path / "p"
    (root / "app").mkdir(parents=True)
    (root / "app" / "server").write_bytes(
        tiny_elf(needed=["libllama.so", "libc.so.6"], runpath="/build/bin:", interp=LOADER)
    )
    (root / "app" / "libllama.so").write_bytes(tiny_elf(needed=[], soname="libllama.so"))
    (root / "m.yaml").write_text(WORKDIR.replace("WORKDIR", workdir))
    debian_base(root / "base.tar", libcurl=False)
    ran = build(root)
    if ok:
        assert ran.code == 0, str(ran)
        assert "/app/server (layer 1) finds libllama.so at /app/libllama.so only through a relative" in ran.err
        assert "when started in /app" in ran.err
    else:
        assert ran.code == 1, str(ran)
        assert "/app/server: needs libllama.so, not found in the image (layer 1: copy ./app /app)" in ran.err


def test_an_interpreter_the_image_lacks_is_a_miss(tmp_path: Path) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "app").mkdir()
    (root / "app" / "tool").write_bytes(tiny_elf(needed=["libc.so.6"], interp="/lib/ld-musl-x86_64.so.1"))
    (root / "m.yaml").write_text(ORIGIN.replace("    - copy: {from: ./plugin.so, to: /opt/plugins/plugin.so}\n", ""))
    debian_base(root / "base.tar", libcurl=False)
    ran = build(root)
    assert ran.code == 1, str(ran)
    assert "/opt/app/tool: its loader /lib/ld-musl-x86_64.so.1 is not in the image" in ran.err


def test_the_final_view_applies_whiteouts_opaque_folders_and_links() -> None:
    files = ImageFiles.of(
        [
            [
                ("usr", "dir", ""),
                ("usr/lib", "dir", ""),
                ("usr/lib/a.so", "file", ""),
                ("usr/lib/b.so", "file", ""),
                ("lib", "symlink", "usr/lib"),
                ("opt", "dir", ""),
                ("opt/x/c.so", "file", ""),
            ],
            [
                ("usr/lib/.wh.a.so", "file", ""),
                ("opt/.wh..wh..opq", "file", ""),
                ("opt/y.so", "file", ""),
                ("usr/lib/d.so", "hardlink", "usr/lib/b.so"),
                ("usr/lib/e.so", "symlink", "/lib/b.so"),
            ],
        ]
    )
    assert "usr/lib/a.so" not in files.records and "opt/x/c.so" not in files.records
    assert files.records["opt/y.so"].layer == 1 and files.records["usr/lib/b.so"].layer == 0
    assert files.realpath("lib/e.so") == "usr/lib/b.so"
    assert files.realpath("lib/a.so") is None
    assert files.data_of("usr/lib/d.so") == (1, "usr/lib/b.so")
    assert files.named(["b.so", "e.so"]) == {"b.so": ["usr/lib/b.so"], "e.so": ["usr/lib/e.so"]}


ARTIFACTS = """\
name: art
bases:
  devel: oci:{devel}:latest
  runtime: oci:{runtime}:latest
sources:
  bin: {{path: ./bin}}
compile:
  - name: get
    base: devel
    sources: [bin]
    run: ['mkdir -p /out && cp /src/bin/curl /src/bin/xz /out/']
    artifacts:
      curl: {{path: /out/curl, to: /usr/local/bin/curl}}
      xz: {{path: /out/xz, to: /usr/local/bin/xz}}
image:
  base: runtime
  layers:
{layers}
"""


def artifacts_project(root: Path) -> Path:
    """A project for ARTIFACTS: the host's curl and xz in ``bin/``."""
    (root / "bin").mkdir(parents=True)
    for name in ("curl", "xz"):
        (root / "bin" / name).write_bytes((Path("/usr/bin") / name).read_bytes())
        (root / "bin" / name).chmod(0o755)
    return root


@pytest.mark.slow
def test_an_artifact_the_debian_runtime_base_lacks_a_library_for_fails_the_build(
    tmp_path: Path, demo_bases: dict[str, Path]
) -> None:
    """The demo's own runtime base (Debian minbase, bootstrapped): the host's xz finds
    liblzma and glibc there, its curl does not find libcurl."""
    root = artifacts_project(tmp_path / "p")
    both = "    - artifact: get.xz\n    - artifact: get.curl\n"
    (root / "m.yaml").write_text(ARTIFACTS.format(**demo_bases, layers=both))
    (root / "xz.yaml").write_text(ARTIFACTS.format(**demo_bases, layers="    - artifact: get.xz\n"))
    ran = build(root)
    assert ran.code == 1, str(ran)
    miss = r"/usr/local/bin/curl: needs libcurl\.so\.4, not found in the image \(layer \d+: artifact get\.curl\)"
    assert re.search(miss, ran.err), str(ran)
    assert "/usr/local/bin/xz" not in ran.err
    ran = run_cli(["xz.yaml", "--cache", str(root / "cache"), "-o", "oci:xz-out:x"], cwd=root)
    assert ran.code == 0, str(ran)


@pytest.mark.slow
def test_layers_steps_make_are_not_read_back_for_the_check_the_sbom_or_the_labels(
    tmp_path: Path, demo_bases: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export agent reads what the dependency check (ELF facts), the SBOM (package
    databases, Python metadata) and the GPU-arch labels (device code) need of the layers it
    writes, as it writes them, from the container's files: a build does not open the blob
    of an artifact or of a runtime step's changes for them (only to hand the image to
    buildah and for the output's copy), and what is recorded is what reading them gives."""
    import traceback

    root = artifacts_project(tmp_path / "p")
    meta = "/usr/lib/python3/dist-packages/tok-1.0.dist-info"
    text = "Metadata-Version: 2.1\\nName: tok\\nVersion: 1.0\\n"
    layers = f"    - artifact: get.xz\n    - run: ['mkdir -p {meta} && printf \"{text}\" > {meta}/METADATA']\n"
    (root / "m.yaml").write_text(ARTIFACTS.format(**demo_bases, layers=layers))
    readers: list[tuple[str, str]] = []  # (digest, reading module) of each blob a reader opened
    open_blob_of = Store.open_blob

    def watched(store: Store, digest: str) -> BinaryIO:
        for frame in traceback.extract_stack():
            if re.search(r"assembler/(deps|sbom)/|pipeline/image/labels\.py", frame.filename):
                readers.append((digest, frame.filename))
        return open_blob_of(store, digest)

    monkeypatch.setattr(Store, "open_blob", watched)
    args = ["m.yaml", "--progress", "plain", "-v"]
    built = run_cli_here([*args, "--cache", str(root / "cache"), "-o", "oci:out:x"], cwd=root)
    assert built.code == 0, str(built)
    assert re.search(r"dependency check: \d+ ELF files", built.err), str(built)
    manifest = json.loads(read_blob(root / "out", layout_digest(root / "out", "x")))
    config = json.loads(read_blob(root / "out", manifest["config"]["digest"]))
    made = {layer["digest"] for layer in manifest["layers"][-2:]}
    assert not [r for r in readers if r[0] in made], readers
    assert readers, "the base's layers are read by the check and the SBOM: the watch sees readers"
    xz_diff, run_diff = (d.split(":")[1] for d in config["rootfs"]["diff_ids"][-2:])
    cache = Cache(root / "cache")
    facts = cache.memo("deps-facts-v2-" + xz_diff) or {}
    assert "liblzma.so.5" in facts["files"]["usr/local/bin/xz"]["needed"], facts
    assert (cache.memo("gpucode-v2-" + xz_diff) or {}).get("rocm") == []
    texts = (cache.memo("sbom-texts-v2-" + run_diff) or {}).get("texts") or {}
    assert texts[meta.lstrip("/") + "/METADATA"] == "Metadata-Version: 2.1\nName: tok\nVersion: 1.0\n", texts
    # What reading the blobs gives: a build into another cache whose agent reads nothing.
    monkeypatch.setattr("assembler.pipeline.layers.exportagent.MODULE", "assembler.compile.agent")
    again = run_cli_here([*args, "--cache", str(root / "cache2"), "-o", "oci:out2:x"], cwd=root)
    assert again.code == 0, str(again)
    assert {r[0] for r in readers} >= made  # read back this time
    other = Cache(root / "cache2")
    for key in ("deps-facts-v2-" + xz_diff, "gpucode-v2-" + xz_diff, "sbom-texts-v2-" + run_diff):
        mine, read = (dict(c.memo(key) or {}) for c in (cache, other))
        assert mine == read and read, key


# A real manylinux wheel with a C extension (_speedups.cpython-312-x86_64-linux-gnu.so).
MARKUPSAFE = "MarkupSafe==2.1.5 --hash=sha256:f5dfb42c4604dddc8e4305050aa6deb084540643ed5804d7455b5df8fe16f5e5"
WHEEL = """\
name: wheel
bases: {{runtime: {base}}}
image:
  base: runtime
  layers:
    - pip: ["{req}"]
      prefix: /opt/venv
      python: "3.12"
"""


@pytest.mark.integration  # PyPI
@pytest.mark.parametrize("base", ["'rootfs:base.tar'", "scratch"])
def test_a_wheels_extension_is_checked_against_the_base(tmp_path: Path, base: str) -> None:
    # pip would refuse a manylinux wheel on a base without glibc; a pip: layer runs no pip.
    pthread = {f"usr/lib/{TRIPLET}/libpthread.so.0": host("libpthread.so.0")}  # a stub since glibc 2.34
    root = project(tmp_path / "p", WHEEL.format(base=base, req=MARKUPSAFE), libcurl=False, extra=pthread)
    ran = build(root, "-v")
    if base == "scratch":
        assert ran.code == 1, str(ran)
        so = "/opt/venv/lib/python3.12/site-packages/markupsafe/_speedups.cpython-312-x86_64-linux-gnu.so"
        assert f"{so}: needs libc.so.6, not found in the image (layer 0: pip markupsafe==2.1.5)" in ran.err, str(ran)
        assert not (root / "out").exists()
        assert build(root, "--no-deps-check").code == 0
        ran = run_cli(["deps", "oci:out:x", "--json"], cwd=root)  # the pip layer is one assemble added
        assert ran.code == 1 and ran.json["layers"] == [0], str(ran)
    else:
        assert ran.code == 0, str(ran)
        assert "dependency check: 1 ELF files in 1 layers" in ran.err, str(ran)


def test_a_layer_without_elf_files_gets_its_facts_when_written_as_reading_it_would_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer of model weights and configs has no ELF file: the facts the dependency check
    would read from it are recorded when it is written (it is not read back for them), and
    they are what reading the whole blob records. A layer with an ELF file is left to the
    check (built without it, so what is recorded is the writer's). The SBOM's texts are
    kept as it is written too: the SBOM and the image's labels read nothing of it, and its
    blob is opened once, by the output's copy."""
    root = project(tmp_path / "p", libcurl=True)
    data = root / "weights"
    data.mkdir()
    (data / "model.safetensors").write_bytes(os.urandom(70_000))
    (data / "config.json").write_text('{"layers": 2}\n')
    (data / "short").write_bytes(b"\x7fEL")  # begins as an ELF file does, and ends there
    (data / "tok-1.0.dist-info").mkdir()
    (data / "tok-1.0.dist-info/METADATA").write_text("Metadata-Version: 2.1\nName: tok\nVersion: 1.0\n\nAbout.\n")
    (root / "m.yaml").write_text(MANIFEST + "    - copy: {from: ./weights/, to: /models/tiny/}\n")
    opened = blobs_opened(monkeypatch)
    args = ["m.yaml", "--cache", str(root / "cache"), "-o", "oci:out:x", "--progress", "plain", "--no-deps-check"]
    built = run_cli_here(args, cwd=root)
    assert built.code == 0, str(built)
    cache = Cache(root / "cache")
    out = root / "out"
    index = json.loads((out / "index.json").read_text())
    manifest = (out / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes()
    config = (out / "blobs/sha256" / json.loads(manifest)["config"]["digest"].split(":")[1]).read_bytes()
    image = Image(manifest, config)
    curl_layer, weights_layer = len(image.layers) - 2, len(image.layers) - 1

    def facts(cache: Cache, layer: int) -> dict[str, object]:
        memo = cache.memo(elf_facts_key(image.diff_ids[layer])) or {}
        return {k: v for k, v in memo.items() if k != "kind"}  # the record's own field

    recorded = facts(cache, weights_layer)
    assert recorded == NO_ELF_FACTS
    assert facts(cache, curl_layer) == {}
    # The SBOM's texts (here Python metadata) were kept as the layer was written, too.
    texts = cache.memo("sbom-texts-v2-" + image.diff_ids[weights_layer].split(":")[1]) or {}
    assert texts.get("texts") == {
        "models/tiny/tok-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tok\nVersion: 1.0\n"
    }
    assert opened.count(image.layers[weights_layer].digest) == 1, opened  # the output's copy, nothing else

    def open_blob(digest: str) -> BinaryIO:
        return open(out / "blobs/sha256" / digest.split(":")[1], "rb")

    fresh = Cache(tmp_path / "fresh")  # nothing recorded: the whole blob is read
    FactReader(image, open_blob, cache=fresh, workdir=tmp_path).read(weights_layer, None)
    assert facts(fresh, weights_layer) == recorded


def test_a_layers_elf_facts_are_read_as_it_is_written_as_a_reader_of_the_blob_records_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer of a layer reads each ELF file's facts as it goes: from the host file
    itself (its headers only: nothing is copied), or from a spool of the bytes that went by
    when they come from elsewhere (a wheel's member; here bytes in memory, one of them past
    the in-memory spool). What it records is what a reader of the whole blob records: ELF
    files it cannot parse, other files and hard links not listed. Every spool is closed."""
    monkeypatch.setattr(archive_headers, "RACY_NS", 0)  # curl was copied a moment ago: read it again all the same
    spools = spools_made(monkeypatch)
    src = tmp_path / "src"
    src.mkdir()
    curl = CURL.read_bytes()
    (src / "curl").write_bytes(curl)
    big = host("libc.so.6") + bytes(5 << 20)  # what follows an ELF file's parts is not read
    files: dict[str, bytes] = {
        "usr/lib/big.so": big,
        "usr/lib/bad.so": b"\x7fELF" + bytes(range(256)) * 8,  # begins as an ELF file does; is none
        "usr/lib/libfoo.so": tiny_elf(needed=["libbar.so.1"], runpath="$ORIGIN", soname="libfoo.so"),
        "usr/lib/libz.so.1": host("libz.so.1"),
        "usr/share/readme": b"hello",
    }

    def in_memory(data: bytes) -> Opener:
        return lambda: nullcontext(io.BytesIO(data))

    members: list[Member] = [(TarEntry(path, "file", size=len(data)), in_memory(data)) for path, data in files.items()]
    members.append((TarEntry("usr/bin/curl", "file", mode=0o755, size=len(curl)), lambda: io.FileIO(src / "curl")))
    members.append((TarEntry("usr/lib/libz.so", "hardlink", linkname="usr/lib/libz.so.1"), None))
    cache = Cache(tmp_path / "cache")
    headers = LayerHeaders(observers=[FactsAsWritten(cache)])
    with cache.blob_writer() as w:
        layer = write_layer(members, w, compression="zstd", epoch=0, headers=headers)
    remember_headers(cache, headers, digest=layer.digest, diff_id=layer.diff_id)
    assert len(spools) == 4 and all(spool.closed for spool in spools)  # not curl's: read from the host
    # In layer order: bad.so, big.so (past 4 MiB: on disk), libfoo.so, libz.so.
    assert [spool._rolled for spool in spools] == [False, True, False, False]

    def facts(cache: Cache) -> dict[str, object]:
        memo = cache.memo(elf_facts_key(layer.diff_id)) or {}
        return {k: v for k, v in memo.items() if k != "kind"}  # the record's own field

    recorded = facts(cache)
    found = cast(dict[str, dict[str, object]], recorded["files"])
    # (libz.so sorts first: the writer gives it the data, and libz.so.1 links to it)
    assert sorted(found) == ["usr/bin/curl", "usr/lib/big.so", "usr/lib/libfoo.so", "usr/lib/libz.so"]
    assert found["usr/lib/libfoo.so"]["needed"] == ["libbar.so.1"]
    assert found["usr/lib/libfoo.so"]["runpath"] == ["$ORIGIN"]
    assert "libcurl.so.4" in cast(list[str], found["usr/bin/curl"]["needed"])
    assert found["usr/lib/big.so"]["soname"] == "libc.so.6"
    fresh = Cache(tmp_path / "fresh")  # nothing recorded: the whole blob is read
    FactReader(one_layer_image(layer), cache.open_blob, cache=fresh, workdir=tmp_path).read(0, None)
    assert facts(fresh) == recorded
    # A file whose data ends early fails the layer: its spool is closed all the same.
    spools.clear()
    short = tiny_elf(needed=[])
    with pytest.raises(InvalidArchive):
        write_layer(
            [(TarEntry("x.so", "file", size=len(short) + 10), in_memory(short))],
            io.BytesIO(),
            compression="none",
            epoch=0,
            headers=LayerHeaders(observers=[FactsAsWritten(cache)]),
        )
    assert len(spools) == 1 and spools[0].closed


def test_a_host_file_changed_while_its_layer_is_written_leaves_its_facts_to_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Facts read from a host file after the writer read it could be of other bytes than
    the layer's if it changed meanwhile: then nothing is recorded, and the dependency check
    reads the blob. (A file changed a moment before is not read again: its bytes are
    spooled as they go by; here that guard is off, to reach the one after it.)"""
    monkeypatch.setattr(archive_headers, "RACY_NS", 0)
    curl = tmp_path / "curl"
    curl.write_bytes(CURL.read_bytes())
    size = curl.stat().st_size

    class Touched(io.FileIO):
        def readinto(self, buffer: Any) -> int:
            n = super().readinto(buffer) or 0
            if self.tell() == size:  # read to the end: touched before its facts are read
                os.utime(self.fileno(), ns=(1, 1))
            return n

    cache = Cache(tmp_path / "cache")
    facts = FactsAsWritten(cache)
    headers = LayerHeaders(observers=[facts])
    member: Member = (TarEntry("usr/bin/curl", "file", mode=0o755, size=size), lambda: Touched(curl))
    with cache.blob_writer() as w:
        layer = write_layer([member], w, compression="zstd", epoch=0, headers=headers)
    remember_headers(cache, headers, digest=layer.digest, diff_id=layer.diff_id)
    assert headers.elf is True and headers.found(facts) is None
    assert cache.memo(elf_facts_key(layer.diff_id)) is None


def test_a_copied_programs_facts_are_not_read_back_from_its_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build whose dependency check runs reads the ELF facts of the files it copies as it
    writes their layer: the check does not open that layer's blob (the output's copy does,
    once)."""
    root = project(tmp_path / "p", libcurl=True)
    opened = blobs_opened(monkeypatch)
    args = ["m.yaml", "--cache", str(root / "cache"), "-o", "oci:out:x", "--progress", "plain", "--no-sbom", "-v"]
    built = run_cli_here(args, cwd=root)
    assert built.code == 0, str(built)
    assert "dependency check: 1 ELF files in 1 layers" in built.err, str(built)
    manifest = json.loads(read_blob(root / "out", layout_digest(root / "out", "x")))
    curl_layer = manifest["layers"][-1]["digest"]
    assert opened.count(curl_layer) == 1, opened


def test_an_absent_entry_names_a_library_or_a_version_the_found_library_lacks() -> None:
    from assembler.deps import Miss
    from assembler.manifest.schema.model import AbsentLibrary
    from assembler.pipeline.checks.depcheck import excuse

    cpu = "/v/site-packages/bitsandbytes/libbitsandbytes_cpu.so"
    misses = [
        Miss(cpu, 3, "venv", "version", "libstdc++.so.6", "GLIBCXX_3.4.32", "/usr/lib/libstdc++.so.6.0.30"),
        Miss(cpu, 3, "venv", "library", "libgomp.so.2"),
        Miss("/v/site-packages/bitsandbytes/libbitsandbytes_cuda118.so", 3, "venv", "library", "libcudart.so.11.0"),
    ]
    absent = [
        AbsentLibrary(
            library="libstdc++.so.6",
            version="GLIBCXX_3.4.3[2-9]",
            needed_by="*/bitsandbytes/*",
            because="GCC 13's CPU backend",
        ),
        AbsentLibrary(library="lib*.so.11*", needed_by="*/libbitsandbytes_cuda11*.so", because="CUDA 11 backends"),
    ]
    said: list[tuple[str, str]] = []
    left = excuse(misses, absent, report=lambda e: said.append((e.kind, e.fields["text"])))
    # a version entry does not excuse a missing library of that file, nor a library entry a version
    assert left == (misses[1],)
    assert said == [
        (
            "info",
            f"dependency check: libstdc++.so.6 GLIBCXX_3.4.3[2-9] absent on purpose (needed by {cpu}): GCC 13's CPU "
            "backend",
        ),
        (
            "info",
            "dependency check: lib*.so.11* absent on purpose (needed by "
            "/v/site-packages/bitsandbytes/libbitsandbytes_cuda118.so): CUDA 11 backends",
        ),
    ]


def test_a_targets_absent_libraries_are_added_to_the_manifests_for_that_target_only() -> None:
    from assembler.manifest.load.manifest import load_manifest

    tgi = ROOT / "manifests" / "tgi.yaml"
    assert load_manifest(tgi).manifest.absent_libraries == []
    standin = load_manifest(tgi, target="standin").manifest.absent_libraries
    assert [(a.library, a.version) for a in standin] == [
        ("libstdc++.so.6", "GLIBCXX_3.4.32"),
        ("lib*.so.11*", None),
        ("lib*.so.1", None),
    ]
    assert all(len(a.because) > 40 for a in standin)
