"""The dependency check models glibc's ld.so: the folders of /etc/ld.so.conf count only
through /etc/ld.so.cache, the real ``ldconfig`` writing every cache here.

A layer that drops a library into /usr/local/lib (listed in ld.so.conf) and runs no
``ldconfig`` leaves it out of the cache: ld.so does not find it, and neither does the
check, which says why.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from assembler.deps import ldcache
from assembler.errors import InvalidImage
from tests.helpers import run_cli_here as run_cli
from tests.test_deps import LOADER, _add, build, debian_base, ld_cache, tiny_elf

LOCAL_CONF = {"etc/ld.so.conf.d/libc.conf": b"# libc default configuration\n/usr/local/lib\n"}
LIBFOO = tiny_elf(needed=[], soname="libfoo.so.1")


@pytest.mark.parametrize("fmt", ["new", "compat", "old"])
def test_the_formats_ldconfig_writes_are_read(fmt: str) -> None:
    files = {
        **LOCAL_CONF,
        "usr/local/lib/libfoo.so.1": LIBFOO,
        "usr/local/lib/libbar.so.2": tiny_elf(needed=[], soname="libbar.so.2"),
    }
    try:
        data = ld_cache(files, fmt=fmt)
    except subprocess.CalledProcessError as e:  # an ldconfig that no longer writes this format
        pytest.skip(f"ldconfig -c {fmt}: {e.stderr!r}")
    # compat: the old format with the new one in its string table, as glibc before 2.32 wrote it.
    assert data.startswith(ldcache.OLD_MAGIC if fmt != "new" else ldcache.NEW_MAGIC)
    assert (ldcache.NEW_MAGIC in data) == (fmt != "old")
    assert ldcache.parse(data) == {
        "libfoo.so.1": ["/usr/local/lib/libfoo.so.1"],
        "libbar.so.2": ["/usr/local/lib/libbar.so.2"],
    }
    with pytest.raises(InvalidImage, match=r"ld\.so\.cache"):
        ldcache.parse(data[: len(data) // 2])  # the strings cut off
    with pytest.raises(InvalidImage, match="unknown format"):
        ldcache.parse(b"\0" * 64)


def test_the_hosts_own_cache_reads_as_ldconfig_prints_it() -> None:
    host = Path("/etc/ld.so.cache")
    if not host.exists():
        pytest.skip("no /etc/ld.so.cache on this host")
    printed = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout
    pairs = {
        (m[1], m[3]) for m in re.finditer(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", printed, re.M) if "hwcap" not in m[2]
    }
    parsed = {(name, path) for name, paths in ldcache.parse(host.read_bytes()).items() for path in paths}
    assert len(pairs) > 10 and parsed == pairs


LAYERS = """\
name: ldcache
bases: {runtime: 'rootfs:base.tar'}
image:
  base: runtime
  layers:
    - copy: {from: ./libfoo.so.1, to: /usr/local/lib/libfoo.so.1}
    - copy: {from: ./tool, to: /app/tool, mode: "0755"}
"""
# What `RUN ldconfig` after the copy leaves: the cache written with the library in place.
LDCONFIG = '    - copy: {from: ./ld.so.cache, to: /etc/ld.so.cache, mode: "0644"}\n'


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("ldconfig", [True, False])
def test_a_library_in_an_ld_so_conf_folder_needs_ldconfig(tmp_path: Path, ldconfig: bool) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "libfoo.so.1").write_bytes(LIBFOO)
    (root / "tool").write_bytes(tiny_elf(needed=["libfoo.so.1", "libc.so.6"], interp=LOADER))
    (root / "ld.so.cache").write_bytes(ld_cache({**LOCAL_CONF, "usr/local/lib/libfoo.so.1": LIBFOO}))
    (root / "m.yaml").write_text(LAYERS + (LDCONFIG if ldconfig else ""))
    # The base ran ldconfig before the library was there, as a Debian base has.
    debian_base(root / "base.tar", libcurl=False, extra={**LOCAL_CONF, "etc/ld.so.cache": ld_cache(LOCAL_CONF)})
    ran = build(root)
    if ldconfig:
        assert ran.code == 0, str(ran)
        return
    assert ran.code == 1, str(ran)
    reason = (
        "in /usr/local/lib (listed in /etc/ld.so.conf.d/libc.conf) but not in /etc/ld.so.cache: "
        "the layer that adds /usr/local/lib/libfoo.so.1 (layer 1) should run ldconfig"
    )
    assert f"/app/tool: needs libfoo.so.1, {reason} (layer 2: copy ./tool /app/tool)" in ran.err, str(ran)
    assert "run ldconfig (a run: layer) after the layer adding a library" in ran.err  # the hint
    assert build(root, "--no-deps-check").code == 0
    ran = run_cli(["deps", "oci:out:x", "--json"], cwd=root)
    assert ran.code == 1, str(ran)
    assert [(m["file"], m["library"], m["layer"], m["reason"]) for m in ran.json["misses"]] == [
        ("/app/tool", "libfoo.so.1", 2, reason)
    ]


TOOL_ONLY = LAYERS.replace("    - copy: {from: ./libfoo.so.1, to: /usr/local/lib/libfoo.so.1}\n", "")


@pytest.mark.integration  # seconds
def test_a_library_without_its_soname_link_in_an_ld_so_conf_folder_needs_ldconfig(tmp_path: Path) -> None:
    # `make install` often puts libfoo.so.1.0.0 (and libfoo.so) there: ldconfig makes the libfoo.so.1 link.
    root = tmp_path / "p"
    root.mkdir()
    (root / "libfoo.so.1").write_bytes(LIBFOO)
    (root / "tool").write_bytes(tiny_elf(needed=["libfoo.so.1", "libc.so.6"], interp=LOADER))
    (root / "m.yaml").write_text(
        LAYERS.replace("to: /usr/local/lib/libfoo.so.1}", "to: /usr/local/lib/libfoo.so.1.0.0}")
    )
    debian_base(root / "base.tar", libcurl=False, extra={**LOCAL_CONF, "etc/ld.so.cache": ld_cache(LOCAL_CONF)})
    ran = build(root)
    assert ran.code == 1, str(ran)
    assert (
        "/app/tool: needs libfoo.so.1, in /usr/local/lib (listed in /etc/ld.so.conf.d/libc.conf) but not in "
        "/etc/ld.so.cache and there is no libfoo.so.1 link: the layer that adds /usr/local/lib/libfoo.so.1.0.0 "
        "(layer 1) should run ldconfig (layer 2: copy ./tool /app/tool)"
    ) in ran.err, str(ran)


def oci_base(layout: Path, layers: list[bytes]) -> str:
    """An OCI layout of uncompressed ``layers`` (tarballs), tagged x: a base of several layers."""
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media_type: str) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    diff_ids = [f"sha256:{hashlib.sha256(layer).hexdigest()}" for layer in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": put(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
        "layers": [put(layer, "application/vnd.oci.image.layer.v1.tar") for layer in layers],
    }
    entry = put(json.dumps(manifest).encode(), str(manifest["mediaType"]))
    entry["annotations"] = {"org.opencontainers.image.ref.name": "x"}
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return f"oci:{layout}:x"


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("deleted", [True, False])
def test_a_cache_entry_whose_file_a_later_layer_deleted_counts_for_nothing(tmp_path: Path, deleted: bool) -> None:
    # The base ran ldconfig with libfoo in /usr/local/lib; its next layer deletes libfoo
    # (a whiteout) and runs no ldconfig: the cache still lists it, ld.so cannot open it.
    root = tmp_path / "p"
    root.mkdir()
    (root / "tool").write_bytes(tiny_elf(needed=["libfoo.so.1", "libc.so.6"], interp=LOADER))
    files = {**LOCAL_CONF, "usr/local/lib/libfoo.so.1": LIBFOO}
    debian_base(root / "base.tar", libcurl=False, extra={**files, "etc/ld.so.cache": ld_cache(files)})
    upper = io.BytesIO()
    with tarfile.open(fileobj=upper, mode="w") as tf:
        _add(tf, "usr/local/lib/.wh.libfoo.so.1" if deleted else "usr/local/lib/other", b"", mode=0o644)
    ref = oci_base(root / "base", [(root / "base.tar").read_bytes(), upper.getvalue()])
    (root / "m.yaml").write_text(TOOL_ONLY.replace("'rootfs:base.tar'", f"'{ref}'"))
    ran = build(root)
    if not deleted:
        assert ran.code == 0, str(ran)
        return
    assert ran.code == 1, str(ran)
    assert "/app/tool: needs libfoo.so.1, not found in the image (layer 2: copy ./tool /app/tool)" in ran.err, str(ran)


@pytest.mark.integration  # seconds
def test_without_a_cache_an_ld_so_conf_folder_is_not_searched(tmp_path: Path) -> None:
    # glibc then searches only its trusted folders: libz is found, libfoo in /usr/local/lib is not.
    root = tmp_path / "p"
    root.mkdir()
    (root / "tool").write_bytes(tiny_elf(needed=["libfoo.so.1", "libz.so.1"], interp=LOADER))
    (root / "m.yaml").write_text(TOOL_ONLY)
    debian_base(root / "base.tar", libcurl=False, extra={**LOCAL_CONF, "usr/local/lib/libfoo.so.1": LIBFOO})
    ran = build(root)
    assert ran.code == 1, str(ran)
    assert "libz" not in ran.err.split("dependency check")[-1]
    miss = (
        "/app/tool: needs libfoo.so.1, in /usr/local/lib (listed in /etc/ld.so.conf.d/libc.conf) but the "
        "image has no /etc/ld.so.cache: the layer that adds /usr/local/lib/libfoo.so.1 (layer 0) should "
        "run ldconfig (layer 1: copy ./tool /app/tool)"
    )
    assert miss in ran.err, str(ran)


MUSL = "/lib/ld-musl-x86_64.so.1"


def alpine_base(path: Path, extra: dict[str, bytes]) -> None:
    """A musl root filesystem as Alpine lays it out: the loader is libc, no ld.so.cache."""
    with tarfile.open(path, "w") as tf:
        for folder in ("lib", "usr", "usr/lib", "usr/local", "usr/local/lib", "etc", "opt", "opt/x"):
            _add(tf, folder)
        _add(tf, MUSL[1:], tiny_elf(needed=[], soname="libc.musl-x86_64.so.1"))
        _add(tf, "lib/libc.musl-x86_64.so.1", link="ld-musl-x86_64.so.1")
        for name, data in extra.items():
            _add(tf, name, data)


@pytest.mark.integration  # seconds
@pytest.mark.parametrize(
    "path_file, where, ok",
    [
        (None, "usr/local/lib", True),  # musl's default path: /lib:/usr/local/lib:/usr/lib
        (b"/lib\n/usr/lib\n", "usr/local/lib", False),  # the .path file replaces the default
        (b"/lib:/opt/x\n/usr/lib\n", "opt/x", True),
        (None, "opt/x", False),
    ],
)
def test_musl_searches_its_path_file_or_its_default(
    tmp_path: Path, path_file: bytes | None, where: str, ok: bool
) -> None:
    root = tmp_path / "p"
    root.mkdir()
    (root / "tool").write_bytes(tiny_elf(needed=["libfoo.so.1", "libc.musl-x86_64.so.1"], interp=MUSL))
    (root / "m.yaml").write_text(TOOL_ONLY)
    extra = {f"{where}/libfoo.so.1": LIBFOO}
    if path_file is not None:
        extra["etc/ld-musl-x86_64.path"] = path_file
    alpine_base(root / "base.tar", extra)
    ran = build(root)
    if ok:
        assert ran.code == 0, str(ran)
    else:
        assert ran.code == 1, str(ran)
        assert "/app/tool: needs libfoo.so.1, not found in the image (layer 1: copy ./tool /app/tool)" in ran.err
