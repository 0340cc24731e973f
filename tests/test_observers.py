"""Layer observers: one list handed to the layer writer, each shown the files it reads and
handed what it read once the layer is written (assembler.archive.headers.LayerObserver)."""

from __future__ import annotations

import io
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

from assembler.archive.headers import ELF_MAGIC
from assembler.archive.layer import Member
from assembler.archive.tar import TarEntry
from assembler.cache import Cache
from assembler.cache.memos import NO_ELF_FACTS, elf_facts_key, tree_key, write_remembered
from assembler.pipeline.layers.observers import layer_observers


class Licences:
    """A throwaway observer defined here alone: it keeps every LICENSE file's first line."""

    reads: Final = "texts"

    def __init__(self) -> None:
        self.kept: dict[str, Mapping[str, Any]] = {}

    def wanted(self, path: str) -> bool:
        return path.endswith("/LICENSE")

    def read(self, path: str, data: BinaryIO) -> str:
        return data.read().decode().splitlines()[0]

    def remember(self, found: Mapping[str, Any], diff_id: str) -> None:
        self.kept[diff_id] = dict(found)


class Sizes:
    """Another, of ELF files: each one's size, read from the stream it is given."""

    reads: Final = "elf"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kept: dict[str, Mapping[str, Any]] = {}

    def facts(self, stream: IO[bytes]) -> Mapping[str, Any] | None:
        return {"size": len(stream.read())}

    def reads_inside(self, path: str, head: bytes) -> bool:
        return False

    def remember(self, found: Mapping[str, Any], diff_id: str) -> None:
        self.kept[diff_id] = dict(found)


def _members(files: dict[str, bytes]) -> list[Member]:
    def opener(data: bytes) -> Any:
        return lambda: nullcontext(io.BytesIO(data))

    return [(TarEntry(path, "file", size=len(data)), opener(data)) for path, data in files.items()]


def test_observers_from_a_test_module_are_shown_their_files_and_handed_what_they_read(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    licences, sizes = Licences(), Sizes(cache.tmp)
    elf = ELF_MAGIC + bytes(100)
    files = {
        "opt/a/LICENSE": b"MIT License\nrest\n",
        "opt/b/LICENSE": b"Apache-2.0\n",
        "opt/a/lib.so": elf,
        "opt/a/README": b"not wanted\n",
    }
    layer = write_remembered(
        cache,
        _members(files),
        compression="zstd",
        epoch=0,
        observers=[*layer_observers(cache, deps_check=True), licences, sizes],
    )
    assert licences.kept == {layer.diff_id: {"opt/a/LICENSE": "MIT License", "opt/b/LICENSE": "Apache-2.0"}}
    assert sizes.kept == {layer.diff_id: {"opt/a/lib.so": {"size": len(elf)}}}
    assert cache.memo(tree_key(layer.diff_id)) is not None  # the headers' own facts, as before
    # The built-in observers beside them kept theirs: the dependency check's facts memo
    # (the one ELF file cannot be parsed: it is left out, as a reader of the blob leaves it).
    facts = cache.memo(elf_facts_key(layer.diff_id)) or {}
    assert facts.get("files") == {} and facts.get("all") is True


def test_a_layer_with_no_elf_file_is_remembered_as_such_with_no_observer(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    layer = write_remembered(cache, _members({"etc/motd": b"hello\n"}), compression="none", epoch=0)
    memo = cache.memo(elf_facts_key(layer.diff_id)) or {}
    assert {k: v for k, v in memo.items() if k in NO_ELF_FACTS} == dict(NO_ELF_FACTS)


def test_an_unreadable_layer_hands_no_observer_anything(tmp_path: Path) -> None:
    """A path that climbs out of the root is written as it is, but a reader refuses the
    layer: no observer remembers what it saw of it, and no memo is written."""
    cache = Cache(tmp_path / "cache")
    licences = Licences()
    members = _members({"../x/LICENSE": b"MIT\n", "y/LICENSE": b"BSD\n"})
    layer = write_remembered(cache, members, compression="none", epoch=0, observers=[licences])
    assert licences.kept == {}
    assert cache.memo(tree_key(layer.diff_id)) is None
