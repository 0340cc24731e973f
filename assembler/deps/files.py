"""The files of an image, from its layers' headers, and the ELF facts of some of them.

:class:`ImageFiles` is the final view of an image's paths (whiteouts and opaque folders
applied, the newest layer winning), each non-folder with the layer that added it. It
never holds file data: one small record per path. :class:`FactReader` reads the ELF
facts of chosen files by streaming the layer that holds them, spooling one member at a
time to a bounded temporary file (pyelftools needs to seek); layers' headers and facts
are memoised in the cache by diff_id, so a second check reads no layer again.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from assembler.archive.headers import LayerHeaders
from assembler.archive.layer_reader import LayerSource, tar_members
from assembler.archive.links import walk_links
from assembler.archive.tar import OPAQUE_MARKER, WHITEOUT_PREFIX
from assembler.cache import Cache
from assembler.cache.memos import elf_facts_key, entries_key, remember_headers
from assembler.deps.elf import ELF_MAGIC, ElfFacts, read_facts
from assembler.oci import mediatypes as mt
from assembler.oci.image import Image

_SPOOL_IN_MEMORY = 4 << 20  # a bigger member goes to a temporary file (pyelftools needs to seek)
_SMALL_FILE = 64 << 10  # ld.so.conf files: read whole, up to this
_RAW_FILE = 16 << 20  # ld.so.cache: read whole, up to this (a CUDA image's is a few hundred KiB)

BlobOpener = Callable[[str], BinaryIO]
Entry = tuple[str, str, str]  # path, kind (file, hardlink, symlink, dir, other), link target


@dataclass(frozen=True)
class Record:
    """A path of the final view: the layer that decided it, its kind and link target."""

    layer: int
    kind: str
    target: str = ""


class ImageFiles:
    """The final view of an image's paths (no data), newest layer first."""

    def __init__(self, count: int, entries: Callable[[int], Sequence[Entry]]) -> None:
        """The view of ``count`` layers, ``entries(i)`` giving layer i's: one layer's entries
        at a time are in memory."""
        self.records: dict[str, Record] = {}
        gone: set[str] = set()  # whiteouts of the layers above
        opaque: set[str] = set()  # opaque folders of the layers above
        for index in reversed(range(count)):
            outs, opaques = self._apply(index, entries(index), gone, opaque)
            gone |= outs
            opaque |= opaques

    @classmethod
    def of(cls, layers: Sequence[Sequence[Entry]]) -> ImageFiles:
        return cls(len(layers), layers.__getitem__)

    def _apply(
        self, index: int, entries: Sequence[Entry], gone: set[str], opaque: set[str]
    ) -> tuple[set[str], set[str]]:
        outs: set[str] = set()
        opaques: set[str] = set()
        records = self.records
        hiding: dict[str, bool] = {}  # folder -> whether it or a folder above hides what is below it
        for path, kind, target in entries:
            parent, _, base = path.rpartition("/")
            if base.startswith(WHITEOUT_PREFIX):
                if base == OPAQUE_MARKER:
                    opaques.add(parent)
                else:
                    outs.add(f"{parent}/{base[4:]}" if parent else base[4:])
                continue
            known = records.get(path)
            if known is not None and known.layer != index:
                continue  # an upper layer decided this path
            if path in gone or self._hidden(path, index, gone, opaque, hiding):
                continue
            records[path] = Record(index, kind, target)
        return outs, opaques

    def _hidden(self, path: str, index: int, gone: set[str], opaque: set[str], hiding: dict[str, bool]) -> bool:
        """Whether a folder above ``path`` is gone, opaque, or a non-folder of an upper
        layer. ``hiding`` remembers it for each folder asked about while layer ``index`` is
        applied (what decides it does not change meanwhile): each folder of a tree 2,000
        deep is looked at once, not once for each path below it."""
        todo: list[str] = []
        up = path.rpartition("/")[0]
        hidden = False
        while up:
            known = hiding.get(up)
            if known is not None:
                hidden = known
                break
            todo.append(up)
            rec = self.records.get(up)
            if up in gone or up in opaque or (rec is not None and rec.layer != index and rec.kind != "dir"):
                hidden = True  # an upper layer deleted it, made it opaque or put a non-folder there
                break
            up = up.rpartition("/")[0]
        for folder in todo:
            hiding[folder] = hidden
        return hidden

    def realpath(self, path: str) -> str | None:
        """``path`` (relative to the root, no leading slash) with every symlink followed
        inside the image; None when it does not lead to an existing path."""

        def target_of(rel: str) -> str | None:
            rec = self.records.get(rel)
            return rec.target if rec is not None and rec.kind == "symlink" else None

        # A folder a layer only implies (no entry of its own) is walked through; the last
        # component must exist.
        real = walk_links(path, target_of)
        return real if real is not None and (real == "" or real in self.records) else None

    def data_of(self, path: str) -> tuple[int, str] | None:
        """Where the bytes of the regular file at ``path`` (final, no link to follow) are:
        (layer, member path); None for anything but a file or hard link."""
        rec = self.records.get(path)
        if rec is None:
            return None
        if rec.kind == "file":
            return rec.layer, path
        if rec.kind == "hardlink":
            return rec.layer, rec.target  # the link's data is its target's, in the same layer
        return None

    def named(self, names: Iterable[str]) -> dict[str, list[str]]:
        """Every non-folder path whose last component is one of ``names``."""
        wanted = set(names)
        found: dict[str, list[str]] = {}
        for path, rec in self.records.items():
            base = path.rpartition("/")[2]
            if base in wanted and rec.kind != "dir":
                found.setdefault(base, []).append(path)
        return found


class FactReader:
    """Reads layers' headers and the ELF facts (or the text) of chosen members."""

    def __init__(self, image: Image, open_blob: BlobOpener, *, cache: Cache | None, workdir: Path) -> None:
        self.image = image
        self.open_blob = open_blob
        self.cache = cache
        self.workdir = workdir
        self.facts: dict[tuple[int, str], ElfFacts | None] = {}
        self.texts: dict[tuple[int, str], str] = {}
        self.raw: dict[tuple[int, str], bytes] = {}

    def _source(self, index: int) -> LayerSource:
        desc = self.image.layers[index]
        comp = mt.compression_of(desc.media_type)

        def opener() -> AbstractContextManager[BinaryIO]:
            return self.open_blob(desc.digest)

        return LayerSource(f"layer {index} ({desc.digest})", opener, comp)  # type: ignore[arg-type]

    def _facts_key(self, index: int) -> str:
        return elf_facts_key(self.image.diff_ids[index])  # a layer with no ELF file: recorded when written

    def entries(self, index: int) -> list[Entry]:
        """Layer ``index``'s paths (headers only; memoised by diff_id)."""
        key = entries_key(self.image.diff_ids[index])  # also recorded when the layer is written
        if self.cache is not None:
            hit = self.cache.memo_as(key, lambda d: [(str(p), str(k), str(t)) for p, k, t in d["entries"]])
            if hit is not None:
                return hit
        headers = LayerHeaders(data=False)
        for entry, _ in tar_members(self._source(index)):
            headers.add(entry)
        if self.cache is not None:  # with the layer's index and anchors: one read for the three
            desc = self.image.layers[index]
            remember_headers(self.cache, headers, digest=desc.digest, diff_id=self.image.diff_ids[index])
        return headers.entries()

    def read(
        self, index: int, paths: set[str] | None, texts: frozenset[str] = frozenset(), raw: frozenset[str] = frozenset()
    ) -> None:
        """The facts of ``paths`` in layer ``index`` (None: of every file in it), the text of
        ``texts`` (small files) and the bytes of ``raw``, into :attr:`facts`, :attr:`texts`
        and :attr:`raw`."""
        memo = self._facts_memo(index)
        known: dict[str, Any] = dict(memo.get("files", {}))
        # Bytes are memoised as base64 text among the texts, under a "raw:" prefix.
        texts = texts | {"raw:" + p for p in raw}
        got: dict[str, str] = {p: t for p, t in memo.get("texts", {}).items() if p in texts}
        complete = bool(memo.get("all"))  # every ELF file of the layer is in ``known``
        if complete:
            missing: set[str] | None = set()
        else:
            missing = None if paths is None else {p for p in paths if p not in known}
        want_texts = set(texts) - set(got)
        if missing is None or missing or want_texts:
            self._scan(index, known, missing, want_texts, got)
            if self.cache is not None:
                all_texts = {**memo.get("texts", {}), **got}
                record = {"all": complete or paths is None, "files": known, "texts": all_texts}
                self.cache.put_memo(self._facts_key(index), record)
        for path in texts:
            if path.startswith("raw:") and path in got:
                self.raw[(index, path[4:])] = base64.b64decode(got[path])
            elif path in got:
                self.texts[(index, path)] = got[path]
        for path in known if paths is None else paths:
            data = known.get(path)
            self.facts[(index, path)] = ElfFacts.from_json(data) if data is not None else None

    def _scan(
        self, index: int, known: dict[str, Any], missing: set[str] | None, texts: set[str], got: dict[str, str]
    ) -> None:
        """One pass over layer ``index``, stopping once everything asked for is read."""
        left = None if missing is None else set(missing)
        for entry, opener in tar_members(self._source(index)):
            if left is not None and not left and not texts:
                break
            if opener is None:
                continue
            if entry.path in texts:
                texts.discard(entry.path)
                with opener() as data:
                    got[entry.path] = data.read(_SMALL_FILE).decode("utf-8", "replace")
            if "raw:" + entry.path in texts:
                texts.discard("raw:" + entry.path)
                with opener() as data:
                    got["raw:" + entry.path] = base64.b64encode(data.read(_RAW_FILE)).decode("ascii")
            if (left is None and entry.path not in known) or (left is not None and entry.path in left):
                with opener() as data:
                    facts = self._parse(data)
                if facts is not None or left is not None:  # a full scan records only ELF files
                    known[entry.path] = facts.to_json() if facts is not None else None
                if left is not None:
                    left.discard(entry.path)

    def _facts_memo(self, index: int) -> Mapping[str, Any]:
        if self.cache is None:
            return {}
        return self.cache.memo_as(self._facts_key(index), _check_facts_memo) or {}

    def _parse(self, data: BinaryIO) -> ElfFacts | None:
        head = data.read(len(ELF_MAGIC))
        if head != ELF_MAGIC:
            return None
        with tempfile.SpooledTemporaryFile(_SPOOL_IN_MEMORY, dir=str(self.workdir)) as spool:
            spool.write(head)
            shutil.copyfileobj(data, spool, 1 << 20)
            spool.seek(0)
            return read_facts(spool)


def _check_facts_memo(data: Mapping[str, Any]) -> Mapping[str, Any]:
    files, texts = data["files"], data["texts"]
    if not isinstance(files, Mapping) or not isinstance(texts, Mapping):
        raise TypeError("files or texts is not a mapping")
    for value in files.values():
        if value is not None:
            ElfFacts.from_json(value)
    return data
