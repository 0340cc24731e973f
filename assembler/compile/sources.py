"""Sources for compile steps: host folders, git checkouts and downloaded archives.

Each source ends up as a host folder (a step sees a writable working copy of it at
``/src/NAME``, see :mod:`assembler.compile.worktree`) and a digest
that goes into the step key: for a folder, the diff_id of its normalised tar (so mtimes,
owners and creation order do not matter, content and modes do); for git, the commit;
for a URL, its sha256.
"""

from __future__ import annotations

import bz2
import fnmatch
import hashlib
import logging
import lzma
import os
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from assembler.archive.compress import decompressed
from assembler.archive.extract import Unpacker, extract
from assembler.archive.layer import HashingSink, write_layer
from assembler.archive.tarread import UNPACK_HINT, Limits, unpack_limit
from assembler.archive.tree import iter_host_members
from assembler.cache import Cache, key_of
from assembler.compile import worktree
from assembler.errors import InputError, NotFound, ToolError
from assembler.manifest.schema import model as m
from assembler.manifest.text.urls import redacted, scrubbed
from assembler.proc import Runner
from assembler.registry.types import NetworkLimits

log = logging.getLogger(__name__)
MAX_SOURCE_BYTES = 64 << 30  # a source archive bigger than this is refused (a url: layer sets its own max_size)
# Folders that change without the sources changing (git's index is rewritten by `git status`).
DEFAULT_SOURCE_EXCLUDES = (".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache")


@dataclass(frozen=True)
class Source:
    name: str
    path: Path  # host folder a step's working copy of /src/NAME is made from
    digest: str
    what: str
    exclude: tuple[str, ...] = ()

    def keep(self, rel: str) -> bool:
        """True when ``rel`` (relative to the folder) is part of the source."""
        return source_filter(self.exclude)(rel)


def source_filter(exclude: tuple[str, ...] = ()) -> Callable[[str], bool]:
    """A test of relative paths: False for what the default and given excludes leave out."""
    patterns = [p.strip("/") for p in (*DEFAULT_SOURCE_EXCLUDES, *exclude)]

    def keep(rel: str) -> bool:
        parts = rel.split("/")
        return not any(
            any(fnmatch.fnmatchcase(part, p) for part in parts) or fnmatch.fnmatchcase(rel, p) for p in patterns
        )

    return keep


def tree_digest(path: Path, exclude: tuple[str, ...] = ()) -> str:
    """The diff_id of the folder's normalised tar: content and modes, not times or owners."""
    keep = source_filter(exclude)
    tree = list(iter_host_members(path, "src", mode=None, git_modes=True))
    members = [(e, o) for e, o in tree if e.path == "src" or keep(e.path[4:])]
    return write_layer(members, HashingSink(None, hashing=False), compression="none", epoch=0).diff_id


def _git(runner: Runner, *args: str, cwd: Path | None = None) -> str:
    return runner.run(["git", *args], cwd=cwd, env={"GIT_TERMINAL_PROMPT": "0"}).stdout.strip()


def git_source(name: str, spec: m.GitSource, *, cache: Cache, runner: Runner, base_dir: Path) -> Source:
    """Fetch ``spec.ref`` into a cached bare repository and check out its tree (by commit)."""
    url = spec.git
    if "://" not in url and not url.startswith("git@"):
        url = str((base_dir / url).resolve())
    repo = cache.path("sources", "git", key_of({"url": url})[:24] + ".git")
    if not (repo / "HEAD").exists():
        _git(runner, "init", "--bare", "--quiet", str(repo))
    want = spec.commit or spec.ref  # a lock's commit: what the ref named when locked
    try:
        _git(runner, "fetch", "--quiet", "--force", "--tags", url, f"+{want}:refs/assemble/want", cwd=repo)
        commit = _git(runner, "rev-parse", "refs/assemble/want^{commit}", cwd=repo)
    except ToolError:
        # A commit id is not a ref a server must serve: fetch everything and resolve it here.
        try:
            _git(runner, "fetch", "--quiet", "--force", "--tags", url, "+refs/heads/*:refs/heads/*", cwd=repo)
            commit = _git(runner, "rev-parse", f"{want}^{{commit}}", cwd=repo)
        except ToolError as e:
            raise NotFound(
                f"source {name}: cannot fetch {want!r} from {redacted(spec.git)}: {scrubbed(e.stderr_tail)}"
            ) from e
    tree = cache.root / "sources" / "trees" / (commit + ("-sub" if spec.submodules else ""))
    if not tree.is_dir():
        tmp = cache.path("sources", "trees", f".tmp-{commit}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if spec.submodules:
            # Submodules need a working repository whose origin is the real URL (relative
            # submodule URLs resolve against it); the cached bare repository saves the fetch.
            _git(runner, "clone", "--quiet", "--no-checkout", str(repo), str(tmp))
            _git(runner, "remote", "set-url", "origin", url, cwd=tmp)
            _git(runner, "checkout", "--quiet", "--detach", commit, cwd=tmp)
            try:
                _git(runner, "submodule", "update", "--init", "--recursive", "--quiet", cwd=tmp)
            except ToolError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise NotFound(
                    f"source {name}: cannot fetch the submodules of {redacted(spec.git)}: {scrubbed(e.stderr_tail)}"
                ) from e
        else:
            tmp.mkdir(parents=True)
            _git(runner, f"--work-tree={tmp}", "checkout", "--force", commit, "--", ".", cwd=repo)
        os.replace(tmp, tree)
    cache.mark_used(repo)
    cache.mark_used(tree)
    digest = f"git:{commit}"
    if spec.submodules:
        # The submodules' commits are part of what is built.
        status = _git(runner, "submodule", "status", "--recursive", cwd=tree)
        digest += "+" + hashlib.sha256(status.encode()).hexdigest()[:16]
    return Source(name, tree, digest, f"{redacted(spec.git)}@{spec.ref} ({commit[:12]})")


def url_source(name: str, spec: m.UrlSource, *, cache: Cache, limits: NetworkLimits | None = None) -> Source:
    """Download (once, under ``limits``: the defaults when None), check the sha256, and
    unpack a tar/zip archive (or keep the file)."""
    # The one downloader of pinned files (url: layers and wheels too): streamed, capped,
    # under a deadline, stored only when the sha256 matches.
    from assembler.fetch.pinned import download  # requests, only for a url: source

    digest = download(
        spec.url,
        sha256=spec.sha256,
        cache=cache,
        max_bytes=MAX_SOURCE_BYTES,
        what=f"source {name}",
        limits=limits or NetworkLimits(),
    )
    # one tree per file and way of taking it: unpacked (as this code unpacks: xz and bzip2 were
    # once kept as the file) or kept as the file
    tree = cache.root / "sources" / "url" / f"{spec.sha256}.{'unpacked2' if spec.extract else 'file'}"
    if not tree.is_dir():
        tmp = cache.path("sources", "url", f".tmp-{spec.sha256}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        blob = cache.blob_path(digest)
        what = f"source {name} ({redacted(spec.url)})"
        # Bounded as a rootfs: tarball is: what it may unpack to follows its size.
        bound = Limits(bytes=unpack_limit(blob.stat().st_size), hint=UNPACK_HINT)
        if spec.extract and _is_tar(blob):
            with open(blob, "rb") as raw, _unpacked(raw) as plain:
                extract(plain, tmp, what=what, limits=bound)
        elif spec.extract and zipfile.is_zipfile(blob):
            with zipfile.ZipFile(blob) as zf, Unpacker(tmp, limits=bound) as unpacker:
                unpacker.add_zip(zf, what=what)
                unpacker.finish()
        else:
            shutil.copyfile(blob, tmp / (Path(spec.url).name or "download"))
        os.replace(tmp, tree)
    cache.mark_used(tree)
    cache.mark_used(cache.blob_path(digest))
    return Source(name, tree, digest, redacted(spec.url))


@contextmanager
def _unpacked(raw: BinaryIO) -> Iterator[BinaryIO]:
    """A downloaded archive's bytes: what a layer may be compressed with (gzip, zstd), and
    xz and bzip2, which release tarballs use (Rust's, LLVM's, CMake's)."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\xfd7zXZ\x00"):
        with lzma.open(raw) as xz:
            yield cast(BinaryIO, xz)
    elif head.startswith(b"BZh"):
        with bz2.open(raw) as bz:
            yield cast(BinaryIO, bz)
    else:
        with decompressed(raw) as plain:
            yield plain


def _is_tar(path: Path) -> bool:
    """A tar archive, compressed (gzip, zstd, xz, bzip2) or not."""
    try:
        with open(path, "rb") as raw, _unpacked(raw) as plain:
            head = plain.read(512)
    except (OSError, EOFError, ValueError, lzma.LZMAError):
        return False
    return len(head) == 512 and head[257:262] == b"ustar"


def stat_fingerprint(path: Path, exclude: tuple[str, ...] = ()) -> str:
    """A digest of what ``stat`` says about every file of the folder: when it is unchanged,
    so is the content (as git's index assumes). ctime is in it: no tool sets it back."""
    h = hashlib.sha256(f"{os.stat(path).st_mode}\n".encode())
    for rel, st, _ in worktree.walk(path, source_filter(exclude)):
        h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


def path_source(name: str, spec: m.PathSource, *, base_dir: Path, cache: Cache | None = None) -> Source:
    """A host folder; its digest remembered in ``cache`` by the folder's stat fingerprint,
    so an unchanged tree is not read again."""
    path = (base_dir / spec.path).resolve()
    if not path.is_dir():
        raise NotFound(f"source {name}: folder {path} does not exist")
    exclude = tuple(spec.exclude)
    if cache is None:
        return Source(name, path, tree_digest(path, exclude), str(path), exclude)
    try:
        fingerprint = stat_fingerprint(path, exclude)
        memo = "source-stat-" + key_of({"path": str(path), "exclude": list(exclude), "stat": fingerprint})
        hit = cache.memo(memo)
        digest = str(hit["digest"]) if hit and isinstance(hit.get("digest"), str) else None
        if digest is None:
            digest = tree_digest(path, exclude)
            # Remembered only if nothing changed while it was read.
            if stat_fingerprint(path, exclude) == fingerprint:
                cache.put_memo(memo, {"digest": digest})
    except OSError as e:
        raise InputError(f"source {name}: reading {path}: {e}") from e
    return Source(name, path, digest, str(path), exclude)


def resolve(
    name: str, spec: m.SourceSpec, *, cache: Cache, runner: Runner, base_dir: Path, limits: NetworkLimits | None = None
) -> Source:
    """The source ``spec`` names (``limits``: a url: source's download's)."""
    if isinstance(spec, m.PathSource):
        return path_source(name, spec, base_dir=base_dir, cache=cache)
    if isinstance(spec, m.GitSource):
        return git_source(name, spec, cache=cache, runner=runner, base_dir=base_dir)
    return url_source(name, spec, cache=cache, limits=limits)
