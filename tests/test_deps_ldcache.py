"""The dependency check models glibc's ld.so: the folders of /etc/ld.so.conf count only
through /etc/ld.so.cache, the real ``ldconfig`` writing every cache here.

A layer that drops a library into /usr/local/lib (listed in ld.so.conf) and runs no
``ldconfig`` leaves it out of the cache: ld.so does not find it, and neither does the
check, which says why.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from assembler.deps import ldcache
from assembler.errors import InvalidImage
from tests.helpers import run_cli
from tests.test_deps import LOADER, _add, build, debian_base, ld_cache, tiny_elf

LOCAL_CONF = {"etc/ld.so.conf.d/libc.conf": b"# libc default configuration\n/usr/local/lib\n"}
LIBFOO = tiny_elf(needed=[], soname="libfoo.so.1")


@pytest.mark.parametrize("fmt", ["new", "compat", "old"])
def test_the_formats_ldconfig_writes_are_read(fmt: str) -> None:
    files = {**LOCAL_CONF, "usr/local/lib/libfoo.so.1": LIBFOO,
             "usr/local/lib/libbar.so.2": tiny_elf(needed=[], soname="libbar.so.2")}  # fmt: skip
    try:
        data = ld_cache(files, fmt=fmt)
    except subprocess.CalledProcessError as e:  # an ldconfig that no longer writes this format
        pytest.skip(f"ldconfig -c {fmt}: {e.stderr!r}")
    # compat: the old format with the new one in its string table, as glibc before 2.32 wrote it.
    assert data.startswith(ldcache.OLD_MAGIC if fmt != "new" else ldcache.NEW_MAGIC)
    assert (ldcache.NEW_MAGIC in data) == (fmt != "old")
    assert ldcache.parse(data) == {"libfoo.so.1": ["/usr/local/lib/libfoo.so.1"],
                                   "libbar.so.2": ["/usr/local/lib/libbar.so.2"]}  # fmt: skip
    with pytest.raises(InvalidImage, match=r"ld\.so\.cache"):
        ldcache.parse(data[: len(data) // 2])  # the strings cut off
    with pytest.raises(InvalidImage, match="unknown format"):
        ldcache.parse(b"\0" * 64)


def test_the_hosts_own_cache_reads_as_ldconfig_prints_it() -> None:
    host = Path("/etc/ld.so.cache")
    if not host.exists():
        pytest.skip("no /etc/ld.so.cache on this host")
    printed = subprocess.run(["ldconfig", "-p"], check=True, capture_output=True, text=True).stdout
    pairs = {(m[1], m[3]) for m in re.finditer(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", printed, re.M)
             if "hwcap" not in m[2]}  # fmt: skip
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
    reason = ("in /usr/local/lib (listed in /etc/ld.so.conf.d/libc.conf) but not in /etc/ld.so.cache: "
              "the layer that adds /usr/local/lib/libfoo.so.1 (layer 1) should run ldconfig")  # fmt: skip
    assert f"/app/tool: needs libfoo.so.1, {reason} (layer 2: copy ./tool /app/tool)" in ran.err, str(ran)
    assert "run ldconfig (a run: layer) after the layer adding a library" in ran.err  # the hint
    assert build(root, "--no-deps-check").code == 0
    ran = run_cli(["deps", "oci:out:x", "--json"], cwd=root)
    assert ran.code == 1, str(ran)
    assert [(m["file"], m["library"], m["layer"], m["reason"]) for m in ran.json["misses"]] == [
        ("/app/tool", "libfoo.so.1", 2, reason)
    ]


TOOL_ONLY = LAYERS.replace("    - copy: {from: ./libfoo.so.1, to: /usr/local/lib/libfoo.so.1}\n", "")


@pytest.mark.parametrize("cache", [True, False])
def test_a_cache_entry_counts_only_while_its_file_is_in_the_image(tmp_path: Path, cache: bool) -> None:
    # The base's cache lists /usr/local/lib/libfoo.so.1 but the file is gone (a later step
    # deleted it): that entry counts for nothing. Without any cache, a library in an
    # ld.so.conf folder is a miss saying so; one in a trusted folder (libz) is found either way.
    root = tmp_path / "p"
    root.mkdir()
    (root / "tool").write_bytes(tiny_elf(needed=["libfoo.so.1", "libz.so.1"], interp=LOADER))
    (root / "m.yaml").write_text(TOOL_ONLY)
    if cache:
        extra = {**LOCAL_CONF, "etc/ld.so.cache": ld_cache({**LOCAL_CONF, "usr/local/lib/libfoo.so.1": LIBFOO})}
    else:
        extra = {**LOCAL_CONF, "usr/local/lib/libfoo.so.1": LIBFOO}
    debian_base(root / "base.tar", libcurl=False, extra=extra)
    ran = build(root)
    assert ran.code == 1, str(ran)
    assert "libz" not in ran.err.split("dependency check")[-1]
    if cache:
        miss = "/app/tool: needs libfoo.so.1, not found in the image (layer 1: copy ./tool /app/tool)"
    else:
        miss = ("/app/tool: needs libfoo.so.1, in /usr/local/lib (listed in /etc/ld.so.conf.d/libc.conf) but the "
                "image has no /etc/ld.so.cache: the layer that adds /usr/local/lib/libfoo.so.1 (layer 0) should "
                "run ldconfig (layer 1: copy ./tool /app/tool)")  # fmt: skip
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


@pytest.mark.parametrize("path_file, where, ok", [
    (None, "usr/local/lib", True),  # musl's default path: /lib:/usr/local/lib:/usr/lib
    (b"/lib\n/usr/lib\n", "usr/local/lib", False),  # the .path file replaces the default
    (b"/lib:/opt/x\n/usr/lib\n", "opt/x", True),
    (None, "opt/x", False),
])  # fmt: skip
def test_musl_searches_its_path_file_or_its_default(tmp_path: Path, path_file: bytes | None, where: str,
                                                    ok: bool) -> None:  # fmt: skip
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
