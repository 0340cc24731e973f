"""Keys of what is read from an image and remembered: the facts a dependency check, an SBOM
and the image's labels read from layers. Such a key names the bytes read (the image's
config digest or its layers' diff_ids) and the code that read them (the digest of its
source files), so a reader that changed never answers from what an older one remembered,
and a rebuild that changed nothing reads no layer again.

The same key names a fact beyond this cache: with :class:`SharedFacts` (a registry step
cache), a fact missing here is looked up there before it is made, and one made or found
here is offered to it, so a runner with an empty cache reads no layer another machine read.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from assembler.archive.compress import Compression
from assembler.archive.headers import LayerHeaders, LayerObserver
from assembler.archive.layer import Member, ProgressFn, write_layer
from assembler.cache.entries import Cache
from assembler.cache.store import key_of
from assembler.oci.layer import Layer

T = TypeVar("T")

_PACKAGE = Path(__file__).resolve().parent.parent  # assembler/


@functools.cache
def code_digest(*files: str) -> str:
    """The digest of these source files' bytes (paths in the package: ``deps/check.py``)."""
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode() + b"\0" + (_PACKAGE / name).read_bytes())
    return h.hexdigest()


def facts_key(kind: str, read_from: Mapping[str, Any], code: tuple[str, ...]) -> str:
    """The memo key of ``kind`` facts read from ``read_from`` by the code in ``code``
    (source files, as :func:`code_digest` names them)."""
    return f"{kind}-" + key_of({"from": read_from, "code": code_digest(*code)})


def tree_key(diff_id: str) -> str:
    """The memo key of a layer's folders and symlinks (:class:`LayerIndex`)."""
    return facts_key("treeindex", {"diff_id": diff_id}, ("archive/view.py",))


def anchors_key(digest: str) -> str:
    """The memo key of the parents a layer blob needs but does not name."""
    return "anchors-" + digest.split(":", 1)[1]


def entries_key(diff_id: str) -> str:
    """The memo key of a layer's paths, kinds and links (the dependency check's list)."""
    # v2: RPATH/RUNPATH keep their empty (working directory) entries.
    return "deps-entries-v2-" + diff_id.split(":", 1)[1]


def elf_facts_key(diff_id: str) -> str:
    """The memo key of the ELF facts (and chosen texts) the dependency check read of a layer."""
    # v2: RPATH/RUNPATH keep their empty (working directory) entries.
    return "deps-facts-v2-" + diff_id.split(":", 1)[1]


def copy_stat_key(fingerprint: str) -> str:
    """The memo key of the layer of host files whose :class:`~assembler.archive.tree.Fingerprint`
    is ``fingerprint`` (its diff_id, as the tar writer of this code writes it)."""
    return facts_key(
        "copy-stat", {"fingerprint": fingerprint}, ("archive/tar.py", "archive/layer.py", "archive/tree.py")
    )


NO_ELF_FACTS: Mapping[str, Any] = {"all": True, "files": {}, "texts": {}}
"""The ELF facts memo of a layer with no ELF file: what reading all of it would record."""


def write_remembered(
    cache: Cache,
    members: Iterable[Member],
    *,
    compression: Compression,
    epoch: int,
    observers: Sequence[LayerObserver] = (),
    presorted: bool = False,
    progress: ProgressFn | None = None,
) -> Layer:
    """``members`` as one layer blob in ``cache`` (:func:`write_layer`), what its headers
    and ``observers`` read of it as it was written remembered (:func:`remember_headers`)."""
    headers = LayerHeaders(observers=observers)
    with cache.blob_writer() as w:
        layer = write_layer(
            members, w, compression=compression, epoch=epoch, presorted=presorted, progress=progress, headers=headers
        )
    remember_headers(cache, headers, digest=layer.digest, diff_id=layer.diff_id)
    return layer


def remember_headers(cache: Cache, headers: LayerHeaders, *, digest: str, diff_id: str) -> None:
    """Record what ``headers`` (gathered while the layer ``digest`` was written, or in one
    read of it) tell, under the keys each reader of the blob records them, and what its
    observers read (:meth:`LayerHeaders.remember`): a layer just made is never read back
    for them, and one read for one of them is not read again for the others. A memo
    already there (the same layer written before) is left as it is."""
    if not headers.readable:
        return
    facts: list[tuple[str, Callable[[], Mapping[str, Any]]]] = [
        (tree_key(diff_id), lambda: headers.index().to_json()),
        (anchors_key(digest), lambda: {"anchors": headers.anchors()}),
        (entries_key(diff_id), lambda: {"entries": [list(e) for e in headers.entries()]}),
    ]
    if headers.elf is False:  # no file starts as an ELF file does: none for the dependency check to read
        facts.append((elf_facts_key(diff_id), lambda: NO_ELF_FACTS))
    for key, make in facts:
        if cache.memo(key) is None:
            cache.put_memo(key, make())
    headers.remember(diff_id)


class SharedFacts(Protocol):
    """Facts shared beyond one cache, by memo key (:mod:`assembler.stepcache.facts`)."""

    def usable(self, key: str) -> bool:
        """Whether the local memo ``key`` may be used (not one taken from elsewhere that
        nobody trusted vouched for, when trust is asked)."""
        ...

    def fetch(self, key: str) -> bool:
        """Bring the fact ``key`` into the local cache as its memo, verified; False when
        no source has it."""
        ...

    def export(self, key: str, value: Mapping[str, Any]) -> None:
        """Offer the fact ``key`` (a memo's fields) to be shared; failures are warnings."""
        ...


def remembered(
    cache: Cache | None,
    key: str,
    make: Callable[[], T],
    *,
    read: Callable[[Mapping[str, Any]], T],
    write: Callable[[T], Mapping[str, Any]],
    shared: SharedFacts | None = None,
) -> T:
    """What ``make`` gives, kept in ``cache`` under ``key`` (a memo ``write`` makes and
    ``read`` reads back; one ``read`` cannot make is dropped and made again). With
    ``shared``, a fact missing here is fetched from there before it is made, and the fact
    used is exported to it."""
    if cache is None:
        return make()
    hit = cache.memo_as(key, read) if shared is None or shared.usable(key) else None
    if hit is None and shared is not None and shared.fetch(key):
        hit = cache.memo_as(key, read)
    if hit is None:
        hit = make()
        cache.put_memo(key, write(hit))
    if shared is not None:
        shared.export(key, write(hit))
    return hit
