"""A model's files gathered into the cache's blob store, each under its sha256, from a host
folder, a URL pinned by sha256, or a Hugging Face repository at a commit (:mod:`.hub`);
checked against the lock's entry where the model has one (:mod:`.lock`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from assembler.cache import Cache, key_of
from assembler.errors import InputError
from assembler.spec.weights import WeightsSpec
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
        return lock.Locked(s.source, tuple(s.include), tuple(s.exclude), self.revision, self.files)


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
        raise InputError(f"{what}: {spec.source} has no file that include/exclude take")
    return Gathered(name, spec, files, revision, entry is not None)


def _folder(root: Path, spec: WeightsSpec, cache: Cache, what: str) -> tuple[WeightFile, ...]:
    if not root.is_dir():
        raise InputError(f"{what}: {root} is not a folder")
    take = selector(spec.include, spec.exclude)
    found = []
    for top, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS)
        for n in sorted(names):
            path = Path(top) / n
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or not take(rel):  # a link to a file counts (huggingface_hub's snapshots)
                continue
            found.append(_imported(path, rel, cache))
    return tuple(sorted(found))


def _imported(path: Path, rel: str, cache: Cache) -> WeightFile:
    """The file in the cache's store, hashed once per version of it (its size, time, inode)."""
    st = path.stat()
    key = key_of({"weights-file": str(path.resolve()), "stat": [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]})
    known = cache.get_key(key)
    digest = known.get("digest") if known else None
    if not isinstance(digest, str) or not cache.has_blob(digest, st.st_size):
        layer = LayerHasher.for_file(rel, st.st_size)  # a large file's own layer: hashed in the same read
        with open(path, "rb") as f, cache.blob_writer() as w:  # copied and hashed in one read
            while chunk := f.read(1 << 20):
                w.write(chunk)
                if layer is not None:
                    layer.update(chunk)
            if w.count != st.st_size:  # written to while read: its size and bytes disagree
                raise InputError(f"{path}: changed while it was read ({st.st_size} bytes, then {w.count})")
        digest = w.digest
        if layer is not None:
            layer.keep(cache, digest.removeprefix("sha256:"))
        cache.put_key(key, {"digest": digest})
    return WeightFile(rel, st.st_size, digest.removeprefix("sha256:"))


def _url(spec: WeightsSpec, cache: Cache, what: str) -> tuple[WeightFile, ...]:
    from assembler.python.download import download  # requests: only when something is downloaded

    assert spec.sha256 is not None
    name = unquote(urlsplit(spec.source).path.rsplit("/", 1)[-1])
    if plain_path(name) is None:
        raise InputError(f"{what}: {spec.source} names no file")
    digest = download(spec.source, sha256=spec.sha256, cache=cache, max_bytes=MAX_FILE_BYTES, what=what)
    return (WeightFile(name, cache.blob_path(digest).stat().st_size, spec.sha256),)


def _hf(
    spec: WeightsSpec, cache: Cache, what: str, entry: lock.Locked | None, hub: Hub
) -> tuple[str, tuple[WeightFile, ...]]:
    """The commit and the files of an hf:// source: the lock's, else the Hub's now."""
    from assembler.python.download import download  # requests: only when something is downloaded

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
