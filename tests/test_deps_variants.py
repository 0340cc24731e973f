"""More inputs for the dependency check (issue 12's review): libraries and layouts
tests/test_deps.py does not use: libgomp, a too-new GLIBCXX version of libstdc++ (the
host's ccache against a doctored libstdc++), DT_RPATH and ``${ORIGIN}``, a symlinked folder
in LD_LIBRARY_PATH, ld.so.conf's relative ``include``, and `assemble deps` on bad references."""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import pytest

from tests.helpers import run_cli_here as run_cli
from tests.test_deps import LOADER, TRIPLET, build, debian_base, host, ld_cache, tiny_elf

LIB = f"usr/lib/{TRIPLET}"

APP = """\
name: review
bases: {runtime: 'rootfs:base.tar'}
image:
  base: runtime
  layers:
    - copy: {from: ./app, to: /opt/app}
  config:
    env: ENV
"""


def with_rpath(data: bytes) -> bytes:
    """``tiny_elf``'s DT_RUNPATH turned into a DT_RPATH."""
    tag = struct.pack("<q", 29)
    assert data.count(tag) == 1
    return data.replace(tag, struct.pack("<q", 15))


def app(root: Path, tool: bytes, env: str = "{}", **base: object) -> Path:
    (root / "app" / "bin").mkdir(parents=True)
    (root / "app" / "lib").mkdir()
    (root / "app" / "bin" / "tool").write_bytes(tool)
    (root / "m.yaml").write_text(APP.replace("ENV", env))
    debian_base(root / "base.tar", libcurl=False, **base)  # type: ignore[arg-type]
    return root


@pytest.mark.integration  # seconds
def test_a_missing_libgomp_fails_naming_it(tmp_path: Path) -> None:
    root = app(tmp_path / "p", tiny_elf(needed=["libgomp.so.1", "libc.so.6"], interp=LOADER))
    ran = build(root)
    assert ran.code == 1, str(ran)
    assert "/opt/app/bin/tool: needs libgomp.so.1, not found in the image (layer 1: copy ./app /opt/app)" in ran.err


CCACHE = Path("/usr/bin/ccache")
CCACHE_LIBS = ("libstdc++.so.6", "libgcc_s.so.1", "libm.so.6", "libzstd.so.1", "libhiredis.so.0.14")


@pytest.mark.integration  # seconds
def test_a_libstdcxx_too_old_for_a_glibcxx_version_fails_naming_it(tmp_path: Path) -> None:
    data = CCACHE.read_bytes()
    assert b"GLIBCXX_3.4.30\0" in data
    libs = {f"{LIB}/{name}": host(name) for name in CCACHE_LIBS}
    libs[f"{LIB}/libstdc++.so.6"] = libs[f"{LIB}/libstdc++.so.6"].replace(b"GLIBCXX_3.4.30\0", b"GLIBCXX_3.4.3X\0")
    ran = build(app(tmp_path / "p", data, extra=libs))
    assert ran.code == 1, str(ran)
    assert (
        f"/opt/app/bin/tool: needs GLIBCXX_3.4.30 from libstdc++.so.6, /{LIB}/libstdc++.so.6 does not define it "
        "(layer 1: copy ./app /opt/app)"
    ) in ran.err, str(ran)


@pytest.mark.integration  # seconds
@pytest.mark.parametrize("tag", ["runpath", "rpath"])
def test_braced_origin_in_runpath_and_rpath(tmp_path: Path, tag: str) -> None:
    tool = tiny_elf(needed=["libhelper.so.1", "libc.so.6"], runpath="${ORIGIN}/../lib", interp=LOADER)
    root = app(tmp_path / "p", with_rpath(tool) if tag == "rpath" else tool)
    (root / "app" / "lib" / "libhelper.so.1").write_bytes(tiny_elf(needed=[], soname="libhelper.so.1"))
    ran = build(root)
    assert ran.code == 0, str(ran)


@pytest.mark.integration  # seconds
def test_symlinked_dir_in_ld_library_path(tmp_path: Path) -> None:
    tool = tiny_elf(needed=["libcudart.so.12", "libc.so.6"], interp=LOADER)
    root = app(
        tmp_path / "p",
        tool,
        env="{LD_LIBRARY_PATH: /usr/local/cuda/lib64}",
        extra={"usr/local/cuda-12.9/lib64/libcudart.so.12": tiny_elf(needed=[], soname="libcudart.so.12")},
    )
    # /usr/local/cuda -> /usr/local/cuda-12.9 (absolute), added by a layer of the base
    with tarfile.open(root / "base.tar", "a") as tf:
        info = tarfile.TarInfo("usr/local/cuda")
        info.type, info.linkname = tarfile.SYMTYPE, "/usr/local/cuda-12.9"
        tf.addfile(info)
    ran = build(root)
    assert ran.code == 0, str(ran)
    ran = run_cli(["deps", "oci:out:x", "--json"], cwd=root)
    assert ran.code == 0 and ran.json["files"] == 1, str(ran)


@pytest.mark.integration  # seconds
@pytest.mark.parametrize(
    ("include", "cached", "miss"),
    [
        ("ld.so.conf.d/*.conf", True, None),
        # the cache from before the library: our own reading of the relative include names the conf file
        (
            "ld.so.conf.d/*.conf",
            False,
            "needs libconf.so.2, in /opt/conf-lib (listed in /etc/ld.so.conf.d/x.conf) but not in /etc/ld.so.cache",
        ),
        ("elsewhere.d/*.conf", True, "needs libconf.so.2, not found"),
    ],
)
def test_a_relative_include_in_ld_so_conf_is_from_etc(
    tmp_path: Path, include: str, cached: bool, miss: str | None
) -> None:
    # Red Hat's /etc/ld.so.conf says `include ld.so.conf.d/*.conf` (this one replaces the
    # base's); the real ldconfig writes the cache, as a layer running it would
    tool = tiny_elf(needed=["libconf.so.2", "libc.so.6"], interp=LOADER)
    lib = {"opt/conf-lib/libconf.so.2": tiny_elf(needed=[], soname="libconf.so.2")}
    conf = {"etc/ld.so.conf": f"include {include}\n".encode(), "etc/ld.so.conf.d/x.conf": b"/opt/conf-lib\n"}
    cache = ld_cache({**conf, **lib} if cached else conf)
    ran = build(app(tmp_path / "p", tool, extra={**conf, **lib, "etc/ld.so.cache": cache}))
    assert ran.code == (1 if miss else 0), str(ran)
    assert miss is None or miss in ran.err, ran.err


@pytest.mark.integration  # seconds
def test_deps_on_bad_refs(tmp_path: Path) -> None:
    root = app(tmp_path / "p", tiny_elf(needed=["libc.so.6"], interp=LOADER))
    assert build(root).code == 0
    assert run_cli(["deps", "oci:out"], cwd=root).code == 0  # the layout's one image
    bad = {
        "oci:out:nope": "no image tagged 'nope'",
        "oci:missing:x": "no index.json",
        "nonsense": "'nonsense' is not a reference",
        f"oci:out:x@sha256:{'0' * 64}": "invalid tag",
    }
    for ref, message in bad.items():
        ran = run_cli(["deps", ref], cwd=root)
        assert ran.code == 2 and message in ran.err and "Traceback" not in ran.err, (ref, str(ran))
