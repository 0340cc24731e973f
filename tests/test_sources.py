"""Compile-step sources: host folders, git (with submodules) and downloaded archives."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from assembler.cache import Cache
from assembler.compile import sources
from assembler.errors import InputError, NotFound
from assembler.manifest.schema import model as m
from assembler.proc import Runner


def git(cwd: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@x",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@x",
        GIT_CONFIG_COUNT="1",
        GIT_CONFIG_KEY_0="protocol.file.allow",
        GIT_CONFIG_VALUE_0="always",
    )
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def repos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    # File-protocol submodules are refused by default since git 2.38; allow them for this test.
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.file.allow")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "always")
    sub = tmp_path / "kernels"
    sub.mkdir()
    git(sub, "init", "-q", "-b", "main")
    (sub / "kernel.cu").write_text("// kernel v1\n")
    git(sub, "add", ".")
    git(sub, "commit", "-qm", "k1")
    top = tmp_path / "app"
    top.mkdir()
    git(top, "init", "-q", "-b", "main")
    (top / "main.cpp").write_text("int main() { return 0; }\n")
    git(top, "submodule", "-q", "add", f"file://{sub}", "third_party/kernels")
    git(top, "add", ".")
    git(top, "commit", "-qm", "app with kernels")
    git(top, "tag", "v1")
    return top, git(top, "rev-parse", "HEAD")


def test_git_source_by_tag_with_submodules(tmp_path: Path, repos: tuple[Path, str]) -> None:
    top, commit = repos
    cache = Cache(tmp_path / "cache")
    spec = m.GitSource(git=f"file://{top}", ref="v1", submodules=True)
    src = sources.resolve("app", spec, cache=cache, runner=Runner(), base_dir=tmp_path)
    assert src.digest.startswith(f"git:{commit}+")
    assert (src.path / "main.cpp").is_file()
    assert (src.path / "third_party/kernels/kernel.cu").read_text() == "// kernel v1\n"
    again = sources.resolve("app", spec, cache=cache, runner=Runner(), base_dir=tmp_path)
    assert again.digest == src.digest and again.path == src.path
    plain = sources.resolve(
        "app", m.GitSource(git=f"file://{top}", ref=commit), cache=cache, runner=Runner(), base_dir=tmp_path
    )
    assert plain.digest == f"git:{commit}" and not (plain.path / "third_party/kernels/kernel.cu").exists()
    with pytest.raises(NotFound, match="cannot fetch 'no-such-ref'"):
        sources.resolve(
            "app", m.GitSource(git=f"file://{top}", ref="no-such-ref"), cache=cache, runner=Runner(), base_dir=tmp_path
        )


def _served_tar(root: Path, name: str, files: dict[str, tuple[bytes, int]], mode: str = "w:gz") -> str:
    """A tarball of ``files`` (member name -> data, mode) written as ``root/name``: its sha256."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:  # type: ignore[call-overload]
        for member, (data, perms) in files.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), perms
            tf.addfile(info, io.BytesIO(data))
    (root / name).write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def test_url_source_is_checked_and_unpacked_safely(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    url, root = http_folder
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"source code\n"
        info = tarfile.TarInfo("pkg-1.0/src/a.c")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg-1.0/link")
        link.type, link.linkname = tarfile.SYMTYPE, "src/a.c"
        tf.addfile(link)
    (root / "pkg.tar.gz").write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    cache = Cache(tmp_path / "cache")
    src = sources.resolve(
        "pkg", m.UrlSource(url=f"{url}/pkg.tar.gz", sha256=sha), cache=cache, runner=Runner(), base_dir=tmp_path
    )
    assert src.digest == f"sha256:{sha}"
    assert (src.path / "pkg-1.0/src/a.c").read_bytes() == b"source code\n"
    assert os.readlink(src.path / "pkg-1.0/link") == "src/a.c"
    with pytest.raises(InputError, match="the manifest pins"):
        sources.resolve(
            "pkg",
            m.UrlSource(url=f"{url}/pkg.tar.gz", sha256="0" * 64),
            cache=Cache(tmp_path / "c2"),
            runner=Runner(),
            base_dir=tmp_path,
        )
    assert not list((tmp_path / "c2").rglob("*.tar.gz")) and not (tmp_path / "c2/sources").exists()

    evil_sha = _served_tar(root, "evil.tar.gz", {"pkg/../../escaped": (b"x", 0o644)})
    with pytest.raises(InputError, match="climbs out"):
        sources.resolve(
            "evil",
            m.UrlSource(url=f"{url}/evil.tar.gz", sha256=evil_sha),
            cache=Cache(tmp_path / "c3"),
            runner=Runner(),
            base_dir=tmp_path,
        )
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "c3/escaped").exists()


@pytest.mark.parametrize("mode", ["w:xz", "w:bz2"])
def test_url_source_unpacks_a_release_tarball_compressed_as_toolchains_are(
    tmp_path: Path, http_folder: tuple[str, Path], mode: str
) -> None:
    # static.rust-lang.org's rustc-*.tar.xz, LLVM's and CMake's releases: xz (bzip2 older ones)
    url, root = http_folder
    data = b"#!/bin/sh\necho installed\n"
    name = f"rustc.tar.{mode[2:]}"
    sha = _served_tar(root, name, {"rustc-1.0-x86_64-unknown-linux-gnu/install.sh": (data, 0o755)}, mode)
    src = sources.resolve(
        "rustc",
        m.UrlSource(url=f"{url}/{name}", sha256=sha),
        cache=Cache(tmp_path / "c"),
        runner=Runner(),
        base_dir=tmp_path,
    )
    script = src.path / "rustc-1.0-x86_64-unknown-linux-gnu/install.sh"
    assert script.read_bytes() == data and script.stat().st_mode & 0o111
    assert not (src.path / name).exists()  # unpacked, not kept as the file


def test_url_source_beyond_the_size_cap_is_refused_and_stores_nothing(
    tmp_path: Path, http_folder: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = http_folder
    (root / "big.bin").write_bytes(b"x" * 4096)
    sha = hashlib.sha256(b"x" * 4096).hexdigest()
    monkeypatch.setattr(sources, "MAX_SOURCE_BYTES", 1000)
    cache = Cache(tmp_path / "cache")
    with pytest.raises(InputError, match="4096 bytes, more than the 1000 allowed"):
        sources.resolve(
            "big",
            m.UrlSource(url=f"{url}/big.bin", sha256=sha, extract=False),
            cache=cache,
            runner=Runner(),
            base_dir=tmp_path,
        )
    assert not cache.has_blob(f"sha256:{sha}")


def test_folder_digest_is_content_and_exec_bit_not_times(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.cpp").write_text("int a;\n")
    (src / "sub/run.sh").write_text("#!/bin/sh\n")
    (src / ".git").mkdir()
    (src / ".git/index").write_bytes(os.urandom(64))
    first = sources.tree_digest(src)
    os.utime(src / "a.cpp", (1, 1))
    (src / ".git/index").write_bytes(os.urandom(64))  # `git status` rewrites this: not content
    assert sources.tree_digest(src) == first
    os.chmod(src / "sub/run.sh", 0o755)
    assert sources.tree_digest(src) != first
    (src / "a.cpp").write_text("int a = 1;\n")
    changed = sources.tree_digest(src)
    (src / "build").mkdir()
    (src / "build/out.o").write_bytes(b"\0")
    assert sources.tree_digest(src, ("build",)) == changed


def test_the_same_file_unpacked_and_kept_are_two_trees(tmp_path: Path, http_folder: tuple[str, Path]) -> None:
    url, root = http_folder
    sha = _served_tar(root, "pkg.tar.gz", {"pkg/a.txt": (b"a", 0o644)})
    cache = Cache(tmp_path / "cache")
    got = {
        extract: sources.resolve(
            "pkg",
            m.UrlSource(url=f"{url}/pkg.tar.gz", sha256=sha, extract=extract),
            cache=cache,
            runner=Runner(),
            base_dir=tmp_path,
        ).path
        for extract in (True, False)
    }
    assert (got[True] / "pkg" / "a.txt").read_bytes() == b"a"
    kept = got[False] / "pkg.tar.gz"
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == sha and not (got[False] / "pkg").exists()
