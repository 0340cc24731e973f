"""Signed step caches without a registry (unit tier): a cache entry's signature binds its
tag, the config file's ``cache-trust`` and the options that read it, a ``url:`` layer from a
cache checked against its pin, and where an entry came from, kept in the local record and
named in the provenance; a compile cache's origin kept beside its folder, and what is made
from entries built on the least vouched-for one. tests/test_cache_trust.py has the real
registry, buildah and cosign."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from assembler.archive.layer import with_parents, write_layer
from assembler.archive.tar import TarEntry
from assembler.cache import Cache, Origin, StepResult, built_on
from assembler.cli.userconfig import read_config
from assembler.errors import InputError
from assembler.oci.descriptor import Platform
from assembler.oci.digest import sha256_digest
from assembler.oci.layer import Layer
from assembler.oci.mutate import scratch
from assembler.pipeline.options import Event
from assembler.pipeline.store.origins import Origins
from assembler.pipeline.store.prebuilt_checks import carried_file, same_layer
from assembler.sbom import BuildFacts, CacheEntryFact
from assembler.sbom.provenance import provenance_statement
from assembler.sign import Signer
from assembler.sign.cosign import signature_layer
from assembler.sign.verify import check
from assembler.stepcache.trust import TAG_ANNOTATION
from tests.helpers import run_cli_here, small_project

DIGEST = "sha256:" + "ab" * 32
TOOL = b"#!/bin/sh\necho pinned\n"


def test_a_cache_signature_binds_the_entry_tag() -> None:
    signer = Signer(ed25519.Ed25519PrivateKey.generate())
    layer = signature_layer(signer, "reg/cache", DIGEST, {TAG_ANNOTATION: "step-a"})
    # What `cosign sign -a io.assemble.cache.tag=step-a` signs: the annotation in "optional".
    assert json.loads(layer.data)["optional"] == {TAG_ANNOTATION: "step-a"}
    assert layer.data.endswith(b'"optional":{"io.assemble.cache.tag":"step-a"}}')
    sigs, read = [layer.descriptor], lambda d: layer.data
    assert check(
        sigs, read, DIGEST, signer.verifier, attestations=False, annotations={TAG_ANNOTATION: "step-a"}
    ).verified
    # The same signed entry moved under another key's tag does not count there.
    moved = check(sigs, read, DIGEST, signer.verifier, attestations=False, annotations={TAG_ANNOTATION: "step-b"})
    assert not moved.verified and "without io.assemble.cache.tag=step-b" in moved.rejected[0]
    # An image signature (no annotation) is not a cache entry's either.
    plain = signature_layer(signer, "reg/cache", DIGEST)
    assert json.loads(plain.data)["optional"] is None
    unbound = check(
        [plain.descriptor],
        lambda d: plain.data,
        DIGEST,
        signer.verifier,
        attestations=False,
        annotations={TAG_ANNOTATION: "step-a"},
    )
    assert not unbound.verified


def test_the_config_files_cache_trust(tmp_path: Path) -> None:
    config = tmp_path / "assemble" / "config.toml"
    assert read_config(config).cache_trust == ()  # no file: nothing
    config.parent.mkdir()
    config.write_text('cache-trust = ["ci.pub", "/etc/keys/b.pub"]\n')
    assert read_config(config).cache_trust == (config.parent / "ci.pub", Path("/etc/keys/b.pub"))
    for text, why in (
        ('cache_trust = ["ci.pub"]\n', "unknown setting cache_trust"),
        ('cache-trust = "ci.pub"\n', "must be a list"),
        ("cache-trust = [\n", "not TOML"),
    ):
        config.write_text(text)
        with pytest.raises(InputError, match=why):
            read_config(config)


def test_trusted_keys_are_read_before_anything_is_done(tmp_path: Path) -> None:
    root = small_project(tmp_path / "p", "name: t\nbases: {b: 'rootfs:base.tar'}\nimage: {base: b}\n")
    plan = ["plan", "m.yaml", "--cache", "cache", "--cache-from", "docker://127.0.0.1:9/cache"]
    ran = run_cli_here([*plan, "--cache-trust", "missing.pub"], cwd=root)
    assert ran.code == 2 and "--cache-trust: missing.pub" in ran.err, str(ran)
    (root / "not.pub").write_text("hello\n")
    ran = run_cli_here([*plan, "--cache-trust", "not.pub"], cwd=root)
    assert ran.code == 2 and "not a PEM file" in ran.err, str(ran)
    xdg = tmp_path / "xdg"
    (xdg / "assemble").mkdir(parents=True)
    (xdg / "assemble" / "config.toml").write_text('cache-trust = ["gone.pub"]\n')
    ran = run_cli_here(plan, cwd=root, env={"XDG_CONFIG_HOME": str(xdg)})
    assert ran.code == 2 and "cache-trust of" in ran.err and "gone.pub" in ran.err, str(ran)


def _layer(cache: Cache, files: dict[str, tuple[bytes, int]]) -> tuple[Layer, Path]:
    members = [
        (TarEntry(path, "file", mode=mode, size=len(data)), (lambda d=data: io.BytesIO(d)))
        for path, (data, mode) in files.items()
    ]
    with cache.blob_writer() as w:
        layer = write_layer(with_parents(members, epoch=0), w, compression="zstd", epoch=0)
    return layer, cache.blob_path(layer.digest)


def test_a_url_file_from_a_cache_is_checked_against_its_pin(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    pin = sha256_digest(TOOL)[7:]
    honest, honest_path = _layer(cache, {"usr/bin/tool": (TOOL, 0o755)})

    def carried(files: dict[str, tuple[bytes, int]], limit: int = 1 << 20) -> str | None:
        _, path = _layer(cache, files)
        return carried_file(path, sha256=pin, cache=cache, max_bytes=limit, what="test")

    assert carried({"usr/bin/tool": (b"forged\n", 0o755)}) == (
        f"its file usr/bin/tool has {sha256_digest(b'forged' + bytes([10]))}, not the pinned sha256:{pin}"
    )
    assert not cache.has_blob("sha256:" + pin)
    assert "more than the one file" in str(carried({"usr/bin/tool": (TOOL, 0o755), "zz/x": (b"x", 0o644)}))
    assert "bigger than the 4 bytes" in str(carried({"usr/bin/tool": (TOOL, 0o755)}, limit=4))
    assert carried({"usr/bin/tool": (TOOL, 0o755)}) is None
    assert cache.has_blob("sha256:" + pin)  # stored as the pinned file, as a download would

    setuid, setuid_path = _layer(cache, {"usr/bin/tool": (TOOL, 0o4755)})
    assert same_layer(StepResult("url", layer=honest), {honest.digest: honest_path}, lambda: honest) is None
    why = same_layer(StepResult("url", layer=setuid), {setuid.digest: setuid_path}, lambda: honest)
    assert why is not None and "its pins make" in why
    # A record that claims the honest diff_id over another blob is refused too.
    lying = Layer.of(setuid.digest, setuid.size, honest.diff_id, "zstd")
    assert same_layer(StepResult("url", layer=lying), {setuid.digest: setuid_path}, lambda: honest) is not None


def test_where_an_entry_came_from_is_kept_and_named_in_the_provenance(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    layer, _ = _layer(cache, {"app/x": (b"x", 0o644)})
    origin = Origin("reg/cache", "step-k", DIGEST, "0123456789abcdef")
    cache.put_step_result("k", StepResult("hello", layer=layer), origin)
    cache.put_step_result("m", StepResult("made-here", layer=layer))
    assert cache.origin("k") == origin and cache.origin("m") is None and cache.origin("none") is None
    assert cache.step_result("k") == StepResult("hello", layer=layer)  # the record reads as before

    image = scratch(Platform("linux", "amd64"), epoch=0)
    facts = BuildFacts(
        name="t",
        image=image,
        base="b",
        epoch=0,
        manifest="m.yaml",
        manifest_digest=DIGEST,
        params={},
        target=None,
        platform="linux/amd64",
        bases={},
        sources={},
        steps={},
        artifacts=(),
        layers=(),
        cache_entries=(CacheEntryFact("step hello", *vars(origin).values()),),
    )
    deps = json.loads(provenance_statement(facts))["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert deps == [
        {
            "name": "cache:step-k",
            "uri": f"oci://reg/cache@{DIGEST}",
            "digest": {"sha256": DIGEST[7:]},
            "annotations": {"what": "step hello", "tag": "step-k", "signedBy": "0123456789abcdef"},
        }
    ]


def test_a_restored_folder_keeps_its_origin_while_it_holds_anything(tmp_path: Path) -> None:
    """A compile cache's origin is kept beside its folder (issue 32): written before the
    folder is filled it names whatever fills it, then that folder only; an empty folder,
    or another one made under that name, came from nowhere."""
    cache = Cache(tmp_path / "cache")
    folder = cache.path("step-caches", "_shared") / "0123456789abcdef"
    origin = Origin("reg/cache", "ccache-k", DIGEST)
    cache.put_folder_origin(folder, origin)
    assert cache.folder_origin(folder) is None  # absent: it holds nothing
    folder.mkdir()
    assert cache.folder_origin(folder) is None  # empty
    (folder / "unit.o").write_bytes(b"restored\n")
    assert cache.folder_origin(folder) == origin  # filled (a run killed here still knows)
    cache.put_folder_origin(folder, origin)  # this very folder now
    (folder / "more.o").write_bytes(b"built in it since\n")
    assert Cache(tmp_path / "cache").folder_origin(folder) == origin  # a later run: still
    folder.rename(folder.with_name("moved"))
    folder.mkdir()
    (folder / "unit.o").write_bytes(b"made here\n")
    assert cache.folder_origin(folder) is None  # another folder by that name
    cache.put_folder_origin(folder, origin)
    cache.put_folder_origin(folder, None)
    assert cache.folder_origin(folder) is None and not folder.with_name(folder.name + ".origin").exists()
    folder.with_name(folder.name + ".origin").write_text("{not json")  # damaged: fail closed
    damaged = cache.folder_origin(folder)
    assert damaged is not None and damaged.signer == "", "an unreadable record is taken as unchecked"


def test_what_is_made_from_entries_is_built_on_the_least_vouched_for() -> None:
    unchecked, signed = Origin("reg/a", "step-a", DIGEST), Origin("reg/b", "step-b", DIGEST, "0123456789abcdef")
    assert built_on([None, signed, unchecked]) == unchecked
    assert built_on([signed, None]) == signed and built_on([None]) is None and built_on([]) is None

    seen: list[Event] = []
    origins = Origins(trusted=False, report=seen.append)
    origins.note("k1", "step one", unchecked, ["sha256:1"])
    origins.note("k2", "step two", Origin("reg/a", "step-c", DIGEST), ["sha256:2"])
    origins.used(signed, Origin("reg/c", "ccache-c", DIGEST), unchecked)
    texts = [str(e.fields["text"]) for e in seen]
    assert len(texts) == 2 and "docker://reg/a:" in texts[0] and "docker://reg/c:" in texts[1], texts
    assert "--cache-trust" in texts[0]
    origins.carry("sha256:fitted", "sha256:2")
    assert origins.below(["sha256:0", "sha256:fitted"]) == Origin("reg/a", "step-c", DIGEST)
    assert origins.below(["sha256:0"]) is None
    assert set(origins.taken) == {"k1", "k2"}

    quiet: list[Event] = []
    Origins(trusted=True, report=quiet.append).used(unchecked)  # --cache-trust: checked, nothing to warn of
    assert quiet == []


def test_under_cache_trust_no_step_builds_in_a_folder_restored_unchecked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A step's kept folder and a ``shared_cache:`` folder restored in an earlier run from an
    entry nobody vouched for (issue 32): without ``--cache-trust`` a step uses them (what it
    builds is unchecked too); under it both are emptied, with a warning each, and one signed
    by a trusted key is used. The shared folder, used by a step of another build meanwhile,
    is emptied only once that step is done: nothing is taken from under it."""
    import threading

    from assembler.archive.chunks import folder_is_empty
    from assembler.compile import keptcaches, worktree
    from assembler.manifest.schema import model as m

    cache, tree = Cache(tmp_path / "cache"), "t" * 64
    step = m.CompileStep(name="demo", base="devel", cache=["/build"], shared_cache=["/ccache"], run=["true"])
    unchecked = Origin("reg/shared", "ccache-k", DIGEST)
    ours = Origin("reg/mine", "ccache-m", DIGEST, "ours")
    trusted = frozenset({"ours"})
    shared = keptcaches.shared_folder(cache, "/ccache")

    def restored(folder: Path, origin: Origin) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "unit.o").write_bytes(b"from the registry\n")
        cache.put_folder_origin(folder, origin)

    with worktree.kept_folder(cache, step.name, tree) as kept:
        restored(kept, unchecked)
    restored(shared, unchecked)
    with worktree.kept_folder(cache, step.name, tree) as kept, keptcaches.SharedFolders(cache, step):
        assert not folder_is_empty(kept) and not folder_is_empty(shared)  # no --cache-trust: used
    assert keptcaches.origins(step, cache=cache, tree_key=tree) == [unchecked, unchecked]

    with caplog.at_level("WARNING", logger="assembler"):
        with worktree.kept_folder(cache, step.name, tree, trusted=trusted) as kept:
            assert folder_is_empty(kept)
        waited, seen = threading.Event(), []

        def trusting() -> None:  # a --cache-trust build's step, while another build's step uses it
            with keptcaches.SharedFolders(cache, step, trusted=trusted):
                seen.append(folder_is_empty(shared))

        with keptcaches.SharedFolders(cache, step):  # the other build's step
            other = threading.Thread(target=trusting)
            other.start()
            waited.wait(1.0)  # time for the trusting step to get at the folder, if it could
            assert other.is_alive() and (shared / "unit.o").read_bytes() == b"from the registry\n"
        other.join(30)
        assert seen == [True] and not other.is_alive()
    assert keptcaches.origins(step, cache=cache, tree_key=tree) == []
    texts = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    emptied = [t for t in texts if "which no --cache-trust key signed: emptied" in t]
    assert len(emptied) == 2 and all("docker://reg/shared:ccache-k" in t for t in emptied), texts
    assert any("shared_cache /ccache" in t and "in use by another build; waiting" in t for t in texts), texts

    # Restored from an entry a trusted key signed: used as it is.
    with worktree.kept_folder(cache, step.name, tree) as kept:
        restored(kept, ours)
    restored(shared, ours)
    with (
        worktree.kept_folder(cache, step.name, tree, trusted=trusted) as kept,
        keptcaches.SharedFolders(cache, step, trusted=trusted),
    ):
        assert not folder_is_empty(kept) and not folder_is_empty(shared)
    assert keptcaches.origins(step, cache=cache, tree_key=tree) == [ours, ours]


def test_a_shared_folder_is_restored_only_while_no_step_uses_it(tmp_path: Path) -> None:
    """A ``shared_cache:`` folder is filled from a registry only when it is empty and no
    step of any build uses it (a folder renamed onto one a running step has mounted would
    not be seen by it); a step that wants it meanwhile waits for the restore to end."""
    import threading

    from assembler.compile import keptcaches
    from assembler.manifest.schema import model as m

    cache = Cache(tmp_path / "cache")
    step = m.CompileStep(name="demo", base="devel", shared_cache=["/uv", "/ccache"], run=["true"])
    uv = keptcaches.shared_folder(cache, "/uv")
    got: list[tuple[list[str], list[str]]] = []

    def another_step() -> None:
        with keptcaches.SharedFolders(cache, step, restoring=True) as second:
            got.append((second.restorable, sorted(p.name for p in uv.iterdir())))

    with keptcaches.SharedFolders(cache, step, restoring=True) as first:
        assert sorted(first.restorable) == ["/ccache", "/uv"]  # empty, nobody uses them
        other = threading.Thread(target=another_step)
        other.start()
        other.join(1.0)
        assert other.is_alive(), "it waits while the folders are restored"
        (uv / "wheel").write_bytes(b"restored\n")
        first.settle()
        other.join(30)
        assert got == [([], ["wheel"])]  # not restored again: the folder as the restore left it
    with keptcaches.SharedFolders(cache, step, restoring=True) as alone:
        assert alone.restorable == ["/ccache"]  # still empty, nobody uses it
    with keptcaches.SharedFolders(cache, step), keptcaches.SharedFolders(cache, step, restoring=True) as used:
        assert used.restorable == [], "in use by a running step: not restored under it"
