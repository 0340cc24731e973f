"""An output format added from this module alone: ``tarball:FILE``, the image's layers as a
tar of their blobs (``blobs/sha256/<hex>``), registered in the one table of formats
(assembler.transports.formats.register) and built to through the CLI, with nothing else
in the package edited: its syntax, its role (an output, not a base) and its writer are
all this module's."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from assembler.errors import BadReference, InputError
from assembler.oci import reference
from assembler.oci.reference import Ref, Syntax, parse_ref
from assembler.pipeline.writers import writer_for
from assembler.transports import Written, check_replaceable, formats
from assembler.transports.formats import Format, Writer, register
from assembler.transports.sidecar import Recognizer
from assembler.transports.target import Target
from tests.helpers import rootfs_project, run_cli_here


class TarballWriter(Writer):
    """The image's layers, each as ``blobs/sha256/<hex>`` of one tar, in the manifest's order."""

    def check(self, *, force: bool, sbom: bool = True) -> None:
        check_replaceable(Path(self.ref.path), "tarball", force=force, ours=tarfile.is_tarfile, what="a tarball")

    def write_image(self, target: Target) -> list[Written]:
        image = target.source.image
        with tarfile.open(self.file_of(target), "w", format=tarfile.PAX_FORMAT) as tf:
            for desc in image.layers:
                info = tarfile.TarInfo("blobs/" + desc.digest.replace(":", "/"))
                info.size = desc.size
                with target.blobs.open_blob(desc.digest) as blob:
                    tf.addfile(info, blob)
        return [Written(str(self.ref), image.digest)]


class TarballFormat(Format):
    """``tarball:FILE``: an output only, no tag."""

    transport = "tarball"
    own_syntax = Syntax("tarball:FILE", tag="none", role="output", what="a tar of layers")

    def writer(self, ref: Ref, *, attach_sif: bool, ours: Recognizer) -> Writer:
        return TarballWriter(ref, ours)


@pytest.fixture
def tarball_format(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The format registered for one test: the tables as they were afterwards."""
    monkeypatch.setattr(formats, "FORMATS", dict(formats.FORMATS))
    monkeypatch.setattr(reference, "_SYNTAXES", dict(reference._SYNTAXES))
    register(TarballFormat())
    yield


def _manifest(folder: Path) -> Path:
    rootfs_project(folder)
    return folder / "m.yaml"


@pytest.mark.usefixtures("tarball_format")
def test_a_format_registered_from_a_test_module_is_built_to_through_the_cli(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    args = [str(manifest), "--cache", str(tmp_path / "cache"), "-q", "--no-sbom"]
    ran = run_cli_here([*args, "-o", "tarball:out.tar", "-o", f"oci:{tmp_path / 'layout'}:x"], cwd=tmp_path)
    assert ran.code == 0, ran
    # the same image went to both outputs: the tarball holds the layout's layers, byte for byte
    layout = tmp_path / "layout"
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    image = json.loads((layout / "blobs" / entry["digest"].replace(":", "/")).read_bytes())
    with tarfile.open(tmp_path / "out.tar") as tf:
        names = tf.getnames()
        for name in names:
            member = tf.extractfile(name)
            assert member is not None and member.read() == (layout / name).read_bytes()
    assert names == ["blobs/" + layer["digest"].replace(":", "/") for layer in image["layers"]]
    assert len(names) == 2  # the tarball's layer and the copy: layer


@pytest.mark.usefixtures("tarball_format")
def test_a_registered_format_brings_its_syntax_and_role(tmp_path: Path) -> None:
    assert parse_ref("tarball:x.tar") == Ref("tarball", path="x.tar")
    with pytest.raises(BadReference, match="tarball: takes a file path only"):
        parse_ref("tarball:x.tar:tag")
    with pytest.raises(BadReference, match=r"artifact:DIR:STEP\[\.ARTIFACT\] \(files\), scratch or tarball:FILE"):
        parse_ref("nope:x")
    manifest = _manifest(tmp_path)
    text = manifest.read_text().replace("rootfs:root.tar", "tarball:root.tar")
    manifest.write_text(text)
    ran = run_cli_here(["plan", str(manifest), "--cache", str(tmp_path / "cache")], cwd=tmp_path)
    assert ran.code == 2 and "a tar of layers cannot be a base" in ran.err, ran
    (tmp_path / "taken").write_text("someone's notes\n")
    taken = parse_ref(f"tarball:{tmp_path / 'taken'}")
    with pytest.raises(InputError, match="exists and is not a tarball; not replacing it"):
        writer_for(taken).check(force=False)


def test_a_transport_is_registered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "FORMATS", dict(formats.FORMATS))
    monkeypatch.setattr(reference, "_SYNTAXES", dict(reference._SYNTAXES))

    class Impostor(TarballFormat):
        transport = "oci"

    with pytest.raises(ValueError, match="oci: already"):
        register(Impostor())
    with pytest.raises(BadReference, match="is not a reference"):
        parse_ref("tarball:x.tar")  # not registered in this test
