"""A layer kind is one module and one table entry (issue 34 item 2): a ``note:`` kind that
writes one small text file into the image, defined here alone (its manifest model, how its
layer is made or found) and registered, is planned, built and rebuilt from the cache."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pytest
from pydantic import Field

from assembler.archive.layer import Member, with_parents, write_layer
from assembler.archive.tar import TarEntry
from assembler.cache import key_of
from assembler.manifest.schema import model as m
from assembler.manifest.schema.prebuilt import HostFile, Installs, When
from assembler.manifest.schema.pysets import PythonSet
from assembler.oci.layer import Layer
from assembler.pipeline.layers import kinds
from assembler.pipeline.layers.kinds import Kind, Stacking, Starting
from tests.helpers import manifest_of, read_blob, run_cli_here, small_project, uncompressed

if TYPE_CHECKING:
    from assembler.pipeline.layers.kinds import Placed
    from assembler.transports import Context


class NoteLayer(When):
    """``note: TEXT`` written to the file ``to``; with ``from: FILE``, the host file's text
    after it (a layer of host files: watch watches it, ``run --mount`` binds it)."""

    note: str
    to: str = Field(pattern=r"^/[^/].*[^/]$")
    from_: str | None = Field(default=None, alias="from")

    def host_files(self) -> list[HostFile]:
        return [HostFile(self.from_, self.to, ("from",), ("to",))] if self.from_ else []


def _text(spec: NoteLayer, folder: Path) -> bytes:
    return spec.note.encode() + b"\n" + ((folder / spec.from_).read_bytes() if spec.from_ else b"")


def _write(ctx: Context, spec: NoteLayer, key: str, data: bytes) -> Layer:

    def opener() -> AbstractContextManager[BinaryIO]:
        return io.BytesIO(data)

    members: list[Member] = [(TarEntry(spec.to.lstrip("/"), "file", size=len(data), mtime=ctx.epoch), opener)]
    with ctx.cache.blob_writer() as w:
        layer = write_layer(with_parents(members, epoch=ctx.epoch), w, compression=ctx.compression, epoch=ctx.epoch)
    ctx.cache.put_layer(key, layer)
    return layer


class NoteKind(Kind[NoteLayer]):
    """Its state in a walk (``start``) is the files its layers wrote so far: a second note
    to the same file is warned of. A kind sees no walk, only what it is handed."""

    model = NoteLayer

    def start(self, starting: Starting) -> list[str]:
        return []

    def warning(self, spec: NoteLayer, at: Stacking) -> str | None:
        written: list[str] = at.state
        twice = spec.to in written
        written.append(spec.to)
        return f"note {spec.to}: a note before it wrote there too" if twice else None

    def place(self, spec: NoteLayer, at: Stacking) -> Placed:
        ctx, what = at.ctx, f"note {spec.to}"
        data = _text(spec, at.loaded.path.parent)
        key = "note-" + key_of({"data": data.decode(), "to": spec.to, "epoch": ctx.epoch, "c": ctx.compression})
        found = ctx.cache.layer(key)
        if found is not None:
            return [(found, what)], what, "cached"
        made = at.maker.missing(lambda: _write(ctx, spec, key, data))  # a plan writes nothing: None
        return ([(made, what)], what, "built") if made is not None else ([], what, "will-build")


@pytest.fixture
def note_kind() -> Iterator[None]:
    kinds.register("note", NoteKind())
    try:
        yield
    finally:
        kinds.unregister("note")


MANIFEST = """\
name: notes
bases: {b: 'rootfs:base.tar'}
image:
  base: b
  layers:
    - copy: {from: a.txt, to: /a.txt}
    - note: hello from a kind of its own
      to: /etc/motd
outputs: ['oci:out:x']
"""


def test_a_layer_kind_registered_from_a_test_module_plans_and_builds(tmp_path: Path, note_kind: None) -> None:
    root = small_project(tmp_path / "p", MANIFEST)
    cache = ["--cache", str(tmp_path / "cache")]
    plan = run_cli_here(["plan", "m.yaml", *cache, "--json"], cwd=root)
    assert plan.code == 0, str(plan)
    assert [(r["kind"], r["origin"]) for r in plan.json["layers"]][-1] == ("note", "will-build")

    built = run_cli_here(["m.yaml", *cache, "--json", "--no-sbom"], cwd=root)
    assert built.code == 0, str(built)
    assert built.json["layers"][-1]["origin"] == "built"
    top = str(manifest_of(root / "out", "x")["layers"][-1]["digest"])
    assert b"hello from a kind of its own\n" in uncompressed(read_blob(root / "out", top))

    again = run_cli_here(["m.yaml", *cache, "--json", "--no-sbom"], cwd=root)
    assert again.code == 0 and again.json["layers"][-1]["origin"] == "cached", str(again)
    assert str(manifest_of(root / "out", "x")["layers"][-1]["digest"]) == top


def test_a_kind_keeps_its_own_state_for_each_walk(tmp_path: Path, note_kind: None) -> None:
    """What ``start`` made is the kind's for one walk: the second note to a file is warned
    of in each build (a fresh state each time: the plan's walk and the build's are two), the
    first never."""
    twice = MANIFEST.replace(
        "outputs:", "    - note: and again\n      to: /etc/motd\n    - note: elsewhere\n      to: /etc/issue\noutputs:"
    )
    root = small_project(tmp_path / "p", twice)
    for _ in range(2):
        built = run_cli_here(["m.yaml", "--cache", str(tmp_path / "cache"), "--no-sbom"], cwd=root)
        assert built.code == 0, str(built)
        assert built.err.count("a note before it wrote there too") == 1, built.err


def test_a_layer_kind_not_registered_is_a_manifest_error(tmp_path: Path) -> None:
    """Unregistered, ``note:`` is an unknown layer as any other, and the error names every kind."""
    root = small_project(tmp_path / "p", MANIFEST)
    ran = run_cli_here(["plan", "m.yaml", "--cache", str(tmp_path / "cache")], cwd=root)
    assert ran.code != 0 and "a layer is one of copy:, artifact:, run:, packages:, pip:, url:" in ran.err, str(ran)
    assert "note" not in m.LAYER_KINDS


def test_a_registered_kind_is_named_by_a_manifest_error(tmp_path: Path, note_kind: None) -> None:
    """A registered kind's own fields are checked with file:line: field, as a built-in kind's."""
    root = small_project(tmp_path / "p", MANIFEST.replace("to: /etc/motd", "to: etc/motd"))
    ran = run_cli_here(["plan", "m.yaml", "--cache", str(tmp_path / "cache")], cwd=root)
    assert ran.code != 0 and "m.yaml:8: image.layers.1.to:" in ran.err, str(ran)
    with pytest.raises(ValueError, match="already registered"):
        kinds.register("note", NoteKind())


def test_watch_and_run_mount_take_a_kinds_host_files_from_the_kind(tmp_path: Path, note_kind: None) -> None:
    """A registered kind whose layer holds a host file says so (``host_files``): the load
    keeps it inside the manifest's folder as a ``copy:``'s, ``watch`` watches that file and
    ``run --mount MANIFEST`` binds it where the layer puts it, none of them knowing the kind;
    the build puts its text in."""
    from assembler.cli.run import _code_mounts
    from assembler.cli.watch import watched

    with_file = MANIFEST.replace("      to: /etc/motd\n", "      to: /etc/motd\n      from: motd.txt\n")
    root = small_project(tmp_path / "p", with_file)
    (root / "motd.txt").write_text("from the host\n")
    assert str(root / "motd.txt") in [w.path for w in watched(root / "m.yaml", {})]
    assert (str(root / "motd.txt"), "/etc/motd", False) in _code_mounts(root / "m.yaml")
    built = run_cli_here(["m.yaml", "--cache", str(tmp_path / "cache"), "--json", "--no-sbom"], cwd=root)
    assert built.code == 0, str(built)
    top = str(manifest_of(root / "out", "x")["layers"][-1]["digest"])
    assert b"hello from a kind of its own\nfrom the host\n" in uncompressed(read_blob(root / "out", top))
    (root / "m.yaml").write_text(with_file.replace("from: motd.txt", "from: ../motd.txt"))
    refused = run_cli_here(["plan", "m.yaml", "--cache", str(tmp_path / "cache")], cwd=root)
    assert refused.code == 2 and "m.yaml:9" in refused.err and "escapes the manifest's folder" in refused.err, refused


class WheelsLayer(When):
    """``wheels: [name==version]`` unpacked into ``site`` by the kind itself, after Debian
    packages its runtime step installs (``apt:``): what the lock pins and the facts check of
    it, said through the two questions every kind answers (``installs``, ``apt_packages``)."""

    wheels: list[str]
    site: str = "/opt/venv/lib/python3.11/site-packages"
    apt: list[str] = Field(default_factory=list)
    name: str | None = None

    def installs(self) -> list[Installs]:
        pyset = PythonSet(name="wheels", requirements=self.wheels, python="3.11", no_deps=True)
        return [Installs(pyset, "python3.11", "pinned", "wheels", (), "wheels", self.site)]

    def apt_packages(self) -> list[str] | None:
        return list(self.apt) or None

    def runtime_name(self, index: int) -> str | None:
        return self.name or f"wheels-{index + 1}"


class WheelsKind(Kind[WheelsLayer]):
    model = WheelsLayer

    def start(self, starting: Starting) -> None:
        return None

    def place(self, spec: WheelsLayer, at: Stacking) -> Placed:
        return [], "wheels", "will-build"  # planned only: the lock and the checks are what is asked


@pytest.fixture
def wheels_kind() -> Iterator[None]:
    kinds.register("wheels", WheelsKind())
    try:
        yield
    finally:
        kinds.unregister("wheels")


def test_the_lock_and_the_checks_take_a_kinds_pins_and_packages_from_the_kind(
    tmp_path: Path, wheels_kind: None
) -> None:
    """A kind that installs Python wheels and Debian packages says so (``installs``,
    ``apt_packages``): the lock's environments hold its wheels as a member, its apt packages
    are a use the lock pins on a bootstrapped base, a pin that was never released is refused
    at its line (the facts), and a distribution a pip: layer puts into the same site-packages
    is refused at the kind's own field: none of lock, facts or checks knows the kind."""
    from assembler.manifest import load_manifest
    from assembler.manifest.lock.pyenvs import environments
    from assembler.oci.descriptor import Platform
    from assembler.pipeline.lock.aptpins import debian_uses

    layers = "    - wheels: ['torch==2.4.1']\n      apt: [libgomp1]\n      name: torch\n"
    manifest = MANIFEST.replace("    - note: hello from a kind of its own\n      to: /etc/motd\n", layers)
    root = small_project(tmp_path / "p", manifest)
    loaded = load_manifest(root / "m.yaml")
    (env,) = environments(loaded.manifest, "linux/amd64")
    assert env.name == "image python3.11" and [m.where for m in env.members] == ["layers.torch:wheels"]
    booted = manifest.replace("bases: {b: 'rootfs:base.tar'}", "bases: {b: {bootstrap: {suite: bookworm}}}")
    (root / "m.yaml").write_text(booted)
    uses = debian_uses(load_manifest(root / "m.yaml").manifest, Platform("linux", "amd64"))
    assert uses["apt:torch"].packages == ("libgomp1",), uses

    (root / "m.yaml").write_text(manifest.replace("torch==2.4.1", "torch==2.4.7"))
    refused = run_cli_here(["plan", "m.yaml", "--cache", str(tmp_path / "cache")], cwd=root)
    assert refused.code == 2 and "m.yaml:7: image.layers.1.wheels.0:" in refused.err, str(refused)
    assert "torch==2.4.7 was never released" in refused.err, refused.err

    twice = layers + "    - pip: ['torch==2.4.1 --hash=sha256:" + "0" * 64 + "']\n      python: '3.11'\n"
    (root / "m.yaml").write_text(manifest.replace(layers, twice))
    refused = run_cli_here(["plan", "m.yaml", "--cache", str(tmp_path / "cache")], cwd=root)
    assert refused.code == 2 and "torch is installed into /opt/venv/lib/python3.11/site-packages" in refused.err
    assert "m.yaml:10: image.layers.2.pip.0:" in refused.err, refused.err
