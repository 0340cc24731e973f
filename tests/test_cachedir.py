"""A cache folder is marked (CACHEDIR.TAG), and a folder of the user's is never used as one.

``--cache .`` by mistake must not fill a project with blobs, nor let ``cache prune``
delete its ``logs/*.log``; a cache made before the tag is adopted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assembler.cache import Cache
from assembler.cache.marker import CACHEDIR_TAG
from assembler.cache.memos import facts_key, remembered
from assembler.cache.store import Store
from assembler.errors import CacheError, NotACache
from tests.helpers import run_cli_here


def test_a_new_or_empty_folder_becomes_a_tagged_cache(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for root in (tmp_path / "new", tmp_path / "empty"):
        Store(root)
        assert (root / CACHEDIR_TAG).read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")
    Store(tmp_path / "new")  # tagged: used again


def test_a_folder_of_the_users_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "mine.log").write_text("the user's\n")
    with pytest.raises(CacheError, match="not a cache of assemble"):
        Store(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["logs", "mine.log"]
    ran = run_cli_here(["cache", "prune", "--all", "--cache", str(tmp_path)])
    assert ran.code != 0 and "not a cache of assemble" in ran.err, str(ran)
    assert (tmp_path / "logs" / "mine.log").read_text() == "the user's\n"


def test_a_refused_cache_folder_is_bad_input_exit_2(tmp_path: Path) -> None:
    # `--cache .` in a project by mistake is the user's input gone wrong: exit 2, as any bad input.
    (tmp_path / "f.txt").write_text("data\n")
    (tmp_path / "m.yaml").write_text(
        "name: t\nbases: {b: scratch}\nimage:\n  base: b\n  layers:\n    - copy: {from: ./f.txt, to: /f.txt}\n"
    )
    for args in (["cache", "prune", "--all"], ["cache", "ls"], ["plan", "m.yaml"], ["m.yaml", "-o", "oci:out:x"]):
        ran = run_cli_here([*args, "--cache", "."], cwd=tmp_path)
        assert ran.code == 2 and "not a cache of assemble" in ran.err, str(ran)
    with pytest.raises(NotACache) as refused:
        Store(tmp_path)
    assert refused.value.exit_code == 2 and isinstance(refused.value, CacheError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "m.yaml"]


_CARGO_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by cargo.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)


@pytest.mark.parametrize(
    "tag",
    [
        _CARGO_TAG,
        "Signature: 8a477f597d28d172789f06886806bc55",  # the bare standard line, no newline
        "Signature: 8a477f597d28d172789f06886806bc55\r\n# ccache\r\n",
        "",  # an empty tag file
    ],
)
@pytest.mark.parametrize("with_logs", [True, False])
def test_another_tools_tagged_folder_is_refused_and_left_as_it_was(tmp_path: Path, tag: str, with_logs: bool) -> None:
    # cargo's target/ carries a CACHEDIR.TAG too: "a cache" is not "our cache".
    target = tmp_path / "target"
    target.mkdir()
    (target / CACHEDIR_TAG).write_bytes(tag.encode())
    if with_logs:
        (target / "logs").mkdir()
        (target / "logs" / "build.log").write_text("cargo's\n")
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    with pytest.raises(NotACache, match="another tool's cache"):
        Store(target)
    ran = run_cli_here(["cache", "prune", "--all", "--cache", str(target)])
    assert ran.code == 2 and "another tool's cache" in ran.err, str(ran)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before
    assert (target / CACHEDIR_TAG).read_bytes() == tag.encode()
    if with_logs:
        assert (target / "logs" / "build.log").read_text() == "cargo's\n"


def test_a_tag_that_links_to_ours_is_not_ours(tmp_path: Path) -> None:
    Store(tmp_path / "real")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / CACHEDIR_TAG).symlink_to(tmp_path / "real" / CACHEDIR_TAG)
    with pytest.raises(NotACache):
        Store(tmp_path / "other")
    Store(tmp_path / "real")  # ours, used again


def test_a_cache_made_before_the_tag_is_adopted(tmp_path: Path) -> None:
    (tmp_path / "blobs" / "sha256").mkdir(parents=True)
    (tmp_path / "keys").mkdir()
    (tmp_path / "logs").mkdir()
    Store(tmp_path)
    assert (tmp_path / CACHEDIR_TAG).is_file()


def test_facts_are_remembered_by_what_was_read_and_the_code_that_read_them(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    made: list[int] = []

    def make() -> int:
        made.append(1)
        return 41 + len(made)

    key = facts_key("test-facts", {"diff_ids": ["sha256:" + "0" * 64]}, ("cache/memos.py",))
    kept = {"read": lambda d: int(d["n"]), "write": lambda n: {"n": n}}
    assert remembered(cache, key, make, **kept) == 42
    assert remembered(cache, key, make, **kept) == 42 and len(made) == 1  # read back, not made
    # Other bytes read or other code: another key. A memo read cannot make: made again.
    assert facts_key("test-facts", {"diff_ids": ["sha256:" + "1" * 64]}, ("cache/memos.py",)) != key
    assert facts_key("test-facts", {"diff_ids": ["sha256:" + "0" * 64]}, ("cache/store.py",)) != key
    cache.put_memo(key, {"n": "not a number"})
    assert remembered(cache, key, make, **kept) == 43
    assert remembered(None, key, make, **kept) == 44  # no cache: made every time


class _Shared:
    """A SharedFacts that is a dict (what a registry step cache would hold)."""

    def __init__(self, cache: Cache, held: dict[str, dict[str, object]], *, trusted: bool = True) -> None:
        self.cache, self.held, self.trusted = cache, held, trusted
        self.exported: dict[str, dict[str, object]] = {}

    def usable(self, key: str) -> bool:
        return self.trusted or self.cache.origin(key) is None

    def fetch(self, key: str) -> bool:
        if key not in self.held:
            return False
        origin = {"repository": "reg/cache", "tag": f"facts-{key}", "digest": "sha256:" + "0" * 64}
        self.cache.put_memo(key, {**self.held[key], "origin": origin})
        return True

    def export(self, key: str, value: object) -> None:
        self.exported[key] = dict(value)  # type: ignore[call-overload]


def test_shared_facts_are_fetched_before_they_are_made_and_exported_once_used(tmp_path: Path) -> None:
    made: list[int] = []

    def make() -> int:
        made.append(1)
        return 7

    key = facts_key("test-facts", {"diff_ids": ["sha256:" + "2" * 64]}, ("cache/memos.py",))
    kept = {"read": lambda d: int(d["n"]), "write": lambda n: {"n": n}}
    # A runner with an empty cache: the fact comes from where it is shared, nothing is read.
    b = Cache(tmp_path / "b")
    shared = _Shared(b, {key: {"n": 5}})
    assert remembered(b, key, make, shared=shared, **kept) == 5 and not made
    assert shared.exported == {key: {"n": 5}}  # offered to the target as it was used
    assert remembered(b, key, make, **kept) == 5  # now a local memo
    # Where it is not shared: made here, and exported.
    a = Cache(tmp_path / "a")
    nowhere = _Shared(a, {})
    assert remembered(a, key, make, shared=nowhere, **kept) == 7 and len(made) == 1
    assert nowhere.exported == {key: {"n": 7}} and a.memo(key) is not None
    # A shared fact that cannot be read back is dropped and made here.
    c = Cache(tmp_path / "c")
    assert remembered(c, key, make, shared=_Shared(c, {key: {"n": "x"}}), **kept) == 7 and len(made) == 2
    # A local memo taken from elsewhere that may no longer be used (--cache-trust): not used.
    assert remembered(b, key, make, shared=_Shared(b, {}, trusted=False), **kept) == 7 and len(made) == 3


def test_apt_cache_sets_are_claimed_across_processes(tmp_path: Path) -> None:
    """apt fails at once on its archives' lock: two package steps at the same time, in this
    process or in another sharing the cache (Slurm jobs), never get the same set."""
    import subprocess
    import sys

    from assembler.compile.apt import claim_slot

    cache = Cache(tmp_path / "cache")
    other = (
        "import sys; from assembler.cache import Cache; from assembler.compile.apt import claim_slot\n"
        "with claim_slot(Cache(sys.argv[1])) as slot: print(slot)"
    )

    def claimed_elsewhere() -> int:
        ran = subprocess.run([sys.executable, "-c", other, str(cache.root)], capture_output=True, text=True, check=True)
        return int(ran.stdout)

    assert claimed_elsewhere() == 0
    with claim_slot(cache) as first:
        assert first == 0
        assert claimed_elsewhere() == 1
        with claim_slot(cache) as second:
            assert second == 1
            assert claimed_elsewhere() == 2
    with claim_slot(cache) as again:
        assert again == 0  # released
    assert sorted(p.name for p in (cache.root / "step-caches").iterdir()) == ["_apt", "_apt-1", "_apt-2"]


def test_an_apt_cache_set_in_use_is_locked_for_prune(tmp_path: Path) -> None:
    """Prune's per-folder check (a kept folder's lock) holds for apt's sets: their lock is
    the one a step claims them with."""
    from assembler.cache.maintain import inventory
    from assembler.cache.prune import _unless_locked
    from assembler.compile.apt import claim_slot

    cache = Cache(tmp_path / "cache")
    with claim_slot(cache):
        cache.path("step-caches", "_apt", "archives")
        item = next(i for i in inventory(cache).items if i.name == "_apt/archives")
        with _unless_locked(item.lock) as free:
            assert not free
    with _unless_locked(item.lock) as free:
        assert free
