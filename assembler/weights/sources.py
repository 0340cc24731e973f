"""A model's files gathered into the cache's blob store, each under its sha256, from a host
folder, a URL pinned by sha256, or a Hugging Face repository at a commit (:mod:`.hub`);
checked against the lock's entry where the model has one (:mod:`.lock`)."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from assembler.cache import Cache, key_of
from assembler.errors import InputError
from assembler.manifest.schema.weights import WeightsSpec
from assembler.manifest.text.urls import redacted
from assembler.weights import lock
from assembler.weights.files import WeightFile, plain_path, selector
from assembler.weights.hub import Hub
from assembler.weights.pack import LayerHasher

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 << 41  # 2 TiB: one file of a model, as any server may announce
SKIPPED_FOLDERS = (".git", ".cache")  # git's and huggingface_hub's own, in a downloaded model's folder
LOCK_HINT = "run assemble lock to lock the files as they are now, or put back the locked ones"


@dataclass(frozen=True)
class Gathered:
    """One model's files, all in the cache's blob store; the commit of an hf:// source."""

    name: str
    spec: WeightsSpec
    files: tuple[WeightFile, ...]
    revision: str | None
    locked: bool  # taken as the lock has them

    def as_locked(self) -> lock.Locked:
        s = self.spec
        return lock.Locked(redacted(s.source), tuple(s.include), tuple(s.exclude), self.revision, self.files)


def gather(
    name: str,
    spec: WeightsSpec,
    *,
    folder: Path,
    cache: Cache,
    locked: lock.Locked | None,
    hub: Callable[[], Hub] = Hub.from_env,
) -> Gathered:
    """Model ``name``'s files in the cache (``folder``: the manifest's, where a relative
    source is). ``locked``: its lock entry (used only while it matches ``spec``)."""
    entry = locked if locked is not None and locked.matches(spec) else None
    what = f"weights {name}"
    revision = None
    if spec.kind == "path":
        files = _folder(folder / spec.source, spec, cache, what)
    elif spec.kind == "url":
        files = _url(spec, cache, what)
    else:
        revision, files = _hf(spec, cache, what, entry, hub())
    if entry is not None and (lines := lock.differences(entry, files)):
        raise InputError(f"{what}: the files differ from the lock:\n  " + "\n  ".join(lines), hint=LOCK_HINT)
    if not files:
        raise InputError(f"{what}: {redacted(spec.source)} has no file that include/exclude take")
    return Gathered(name, spec, files, revision, entry is not None)


def _folder(root: Path, spec: WeightsSpec, cache: Cache, what: str) -> tuple[WeightFile, ...]:
    if not root.is_dir():
        raise InputError(f"{what}: {root} is not a folder")
    take = selector(spec.include, spec.exclude)
    inside = _inside(root)
    found = []
    for top, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS)
        for n in sorted(names):
            path = Path(top) / n
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or not take(rel):  # a link to a file counts (huggingface_hub's snapshots)
                continue
            found.append(_imported(inside(path, rel, what), rel, cache))
    return tuple(sorted(found))


def _inside(root: Path) -> Callable[[Path, str, str], Path]:
    """A check of a file of the folder ``root``: the file it is, where it is in the folder
    after its links (a cloned project's ``tokenizer.json`` linking to ``~/.ssh/id_rsa``
    would otherwise ship beside the image), or in the huggingface_hub cache repository
    ``root`` is a snapshot of (``models--ORG--NAME/snapshots/REV/FILE ->
    ../../blobs/HASH``); InputError naming it where it is neither, as a ``copy:`` refuses it."""
    real_root = root.resolve()
    allowed = [real_root, *_hub_repository(real_root)]

    def check(path: Path, rel: str, what: str) -> Path:
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as e:  # gone since listed, or a link loop
            raise InputError(f"{what}: {rel} cannot be read: {e}") from None
        if not any(real.is_relative_to(a) for a in allowed):
            raise InputError(
                f"{what}: {root / rel} links to {real}, outside the model's folder {real_root}: refused",
                hint="copy the file into the folder, or leave it out (exclude:)",
            )
        return real

    return check


def _hub_repository(folder: Path) -> list[Path]:
    """The huggingface_hub cache repository (``.../models--ORG--NAME``) whose snapshot
    ``folder`` is, or is in (``.../snapshots/REV[/SUB]``); none where it is no snapshot."""
    parts = folder.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith(("models--", "datasets--", "spaces--")):
            return [Path(*parts[:i])]
    return []


def _imported(path: Path, rel: str, cache: Cache) -> WeightFile:
    """The file in the cache's store, hashed once per version of it (its size, time, inode):
    opened as the regular file ``path`` is (resolved: no link followed now), never a FIFO's
    or a device's endless read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise InputError(f"{path}: cannot be read: {e.strerror}") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file")
        key = key_of({"weights-file": str(path), "stat": [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]})
        known = cache.get_key(key)
        digest = known.get("digest") if known else None
        if not isinstance(digest, str) or not cache.has_blob(digest, st.st_size):
            digest = _copied(f, path, rel, st.st_size, cache)
            cache.put_key(key, {"digest": digest})
    return WeightFile(rel, st.st_size, digest.removeprefix("sha256:"))


def _copied(f: BinaryIO, path: Path, rel: str, size: int, cache: Cache) -> str:
    """The file read from ``f`` into the cache's store, copied and hashed in one read; its digest."""
    layer = LayerHasher.for_file(rel, size)  # a large file's own layer: hashed in the same read
    with cache.blob_writer() as w:
        while chunk := f.read(1 << 20):
            w.write(chunk)
            if layer is not None:
                layer.update(chunk)
        if w.count != size:  # written to while read: its size and bytes disagree
            raise InputError(f"{path}: changed while it was read ({size} bytes, then {w.count})")
    if layer is not None:
        layer.keep(cache, w.digest.removeprefix("sha256:"))
    return w.digest


def _url(spec: WeightsSpec, cache: Cache, what: str) -> tuple[WeightFile, ...]:
    from assembler.fetch.pinned import download  # requests: only when something is downloaded

    assert spec.sha256 is not None
    name = unquote(urlsplit(spec.source).path.rsplit("/", 1)[-1])
    if plain_path(name) is None:
        raise InputError(f"{what}: {redacted(spec.source)} names no file")
    digest = download(spec.source, sha256=spec.sha256, cache=cache, max_bytes=MAX_FILE_BYTES, what=what)
    return (WeightFile(name, cache.blob_path(digest).stat().st_size, spec.sha256),)


def _hf(
    spec: WeightsSpec, cache: Cache, what: str, entry: lock.Locked | None, hub: Hub
) -> tuple[str, tuple[WeightFile, ...]]:
    """The commit and the files of an hf:// source: the lock's, else the Hub's now."""
    from assembler.fetch.pinned import download  # requests: only when something is downloaded

    repo, revision = spec.hf_repo()
    if entry is not None and entry.revision is not None:
        commit = entry.revision
        wanted: list[tuple[str, int, str | None]] = [(f.path, f.size, f.sha256) for f in entry.files]
    else:
        commit = hub.commit(repo, revision, what=what)
        take = selector(spec.include, spec.exclude)
        wanted = [(f.path, f.size, f.sha256) for f in hub.files(repo, commit, what=what) if take(f.path)]
    files = []
    for path, size, sha in wanted:
        url = hub.file_url(repo, commit, path)
        digest = download(url, sha256=sha, cache=cache, max_bytes=size, what=f"{what}: {path}", headers=hub.headers)
        got = cache.blob_path(digest).stat().st_size
        if got != size:
            raise InputError(f"{what}: {path} at {commit[:12]} is {got} bytes, the Hub lists {size}")
        files.append(WeightFile(path, size, digest.removeprefix("sha256:")))
    return commit, tuple(sorted(files))
