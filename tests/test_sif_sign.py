"""SIF signatures as Apptainer makes and checks them (``--sign`` on sif:/oras:// outputs,
``assemble sif --sign``, ``assemble verify --key PUB sif:FILE``).

Against the real Apptainer (built by scripts/build-apptainer), both ways: ``apptainer verify
--key`` accepts what ``assemble`` signed and refuses it after one byte of its squashfs
changes; ``assemble verify`` accepts what ``apptainer sign --key`` signed, refuses another
key, a changed byte and a changed descriptor; with an Ed25519 key (whose signatures are
deterministic) our signed file is Apptainer's, byte for byte, but for the times Apptainer
takes from the clock. The unit tests sign and verify SIFs made here of small objects.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from assembler.sign.keys import Signer, Verifier
from assembler.transports.hpc import sif_sign
from assembler.transports.hpc.sif_format import (
    DATA_DEFFILE,
    DATA_OFFSET,
    DATA_PARTITION,
    DESCRIPTOR,
    DESCRIPTORS_OFFSET,
    HEADER,
    SifObject,
    build_header,
    pack_descriptors,
    partition_extra,
    read_sif_header,
)
from assembler.transports.hpc.sif_sign import sign_sif, verify_sif
from tests.helpers import run_cli
from tests.plugins.registry import RunningRegistry
from tests.test_apptainer import _rootfs, apptainer_binary

EPOCH = 1700000000
MANIFEST = f"""\
name: signed
epoch: {EPOCH}
bases: {{b: "rootfs:base.tar"}}
image:
  base: b
  config: {{entrypoint: [/bin/sh, -c, "echo signed image"]}}
outputs: ['sif:plain.sif', 'oci:img:latest']
"""


def _keys(tmp: Path, kind: str) -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    private, public = tmp / f"{kind}.pem", tmp / f"{kind}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def _partition(path: Path) -> SifObject:
    return read_sif_header(path).primary_partition()


# --- unit: SIFs made here ---------------------------------------------------------------


def _small_sif(path: Path, *, loose: bool = False) -> None:
    """A SIF of a definition file and a 'partition' of a few bytes, in group 1 (``loose``:
    a third object in no group, which Apptainer's verify refuses)."""
    deffile, part = b"bootstrap: scratch\n", b"hsqs" + bytes(range(200))
    objects = [SifObject(DATA_DEFFILE, 1, DATA_OFFSET, len(deffile), len(deffile), EPOCH, EPOCH)]
    at = 36864
    padded = at - DATA_OFFSET - len(deffile) + len(part)
    extra = partition_extra(fs_type=1, part_type=2, arch=b"02\x00")
    objects.append(SifObject(DATA_PARTITION, 2, at, len(part), padded, EPOCH, EPOCH, extra=extra))
    datas = [deffile, part]
    if loose:
        objects.append(SifObject(DATA_DEFFILE, 3, at + len(part), 3, 3, EPOCH, EPOCH, group=0))
        datas.append(b"odd")
    header = build_header(objects, arch_code=b"02\x00", image_uuid=uuid.UUID(int=7), epoch=EPOCH)
    with open(path, "wb") as f:
        f.write(header.pack().ljust(DESCRIPTORS_OFFSET, b"\x00"))
        f.write(pack_descriptors(objects))
        for obj, data in zip(objects, datas, strict=True):
            f.seek(obj.offset)
            f.write(data)


def _signer(kind: str) -> Signer:
    return Signer(
        ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else ec.generate_private_key(ec.SECP384R1())
    )


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_a_signed_sif_verifies_and_names_what_changed(tmp_path: Path, kind: str) -> None:
    sif = tmp_path / "s.sif"
    _small_sif(sif)
    signer = _signer(kind)
    before = read_sif_header(sif)
    added = sign_sif(sif, signer, epoch=EPOCH)
    after = read_sif_header(sif)
    # appended after the last object, in no group, linked to group 1, the header counting it
    assert added.offset == before.data_offset + before.data_size and added.group == 0
    assert added.link == 0xF0000001 and after.objects[-1] == added
    assert after.descriptors_free == before.descriptors_free - 1
    assert after.data_offset + after.data_size == sif.stat().st_size
    envelope = json.loads(sif.read_bytes()[added.offset : added.offset + added.size])
    assert envelope["payloadType"] == "application/vnd.sylabs.sif-metadata+json"
    assert envelope["signatures"][0]["keyid"] == signer.verifier.ssh_fingerprint

    assert verify_sif(sif, signer.verifier).verified == [{"signature": 3, "group": 1, "objects": [1, 2]}]
    other = verify_sif(sif, _signer(kind).verifier)
    assert not other.ok and other.rejected == ["signature object 3: not signed by this key"]

    for offset, why in (
        (after.objects[1].offset + 10, "object 2's data changed since it was signed"),
        (after.objects[0].offset, "object 1's data changed since it was signed"),
        (DESCRIPTORS_OFFSET + DESCRIPTOR.size + 200, "object 2's descriptor changed since it was signed"),
        (HEADER.size - 80, "the SIF header changed since it was signed"),  # a byte of the UUID
    ):
        changed = tmp_path / f"changed-{offset}.sif"
        changed.write_bytes(sif.read_bytes())
        _flip(changed, offset)
        verdict = verify_sif(changed, signer.verifier)
        assert not verdict.ok and verdict.rejected == [f"signature object 3: {why}"], offset


def test_signing_is_deterministic_and_an_unsigned_or_loose_sif_is_refused(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    one, two = tmp_path / "1.sif", tmp_path / "2.sif"
    for path in (one, two):
        _small_sif(path)
        sign_sif(path, Signer(key), epoch=EPOCH)
    assert one.read_bytes() == two.read_bytes()
    unsigned = tmp_path / "u.sif"
    _small_sif(unsigned)
    assert verify_sif(unsigned, Verifier(key.public_key())).rejected == ["object group 1 has no signature"]
    loose = tmp_path / "loose.sif"
    _small_sif(loose, loose=True)
    sign_sif(loose, Signer(key), epoch=EPOCH)
    assert (
        "object 3 is in no object group and is not a signature"
        in verify_sif(loose, Verifier(key.public_key())).rejected
    )


def test_signed_metadata_of_any_shape_is_refused_with_a_reason(tmp_path: Path) -> None:
    """What a key signed is checked before it is used: a payload of the wrong shape is a
    reason, never a crash (the key may be trusted and the file still hostile)."""
    sif = tmp_path / "s.sif"
    _small_sif(sif)
    with open(sif, "rb") as f:
        head, raws = sif_sign._descriptors(f, sif)
        header = {"digest": sif_sign._header_digest(head)}
        for metadata, why in (
            ([], "not version 1"),
            ({"version": 1, "header": "x"}, "header changed"),
            ({"version": 1, "header": header, "objects": ["a", 1]}, "not a list of objects"),
            ({"version": 1, "header": header, "objects": [{"relativeId": "0"}, {"relativeId": None}]}, "other objects"),
            ({"version": 1, "header": header, "objects": [{}]}, "other objects"),
        ):
            assert why in (sif_sign._check(f, head, raws, 1, metadata) or ""), metadata


def test_the_key_id_is_the_ssh_fingerprint(tmp_path: Path) -> None:
    """go-securesystemslib's SHA256KeyID: ``ssh-keygen -l``'s SHA256 fingerprint of the key."""
    key = ed25519.Ed25519PrivateKey.generate()
    pub = tmp_path / "k.pub"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"ssh-keygen: {listed.stderr.strip()}")
    assert listed.stdout.split()[1] == Verifier(key.public_key()).ssh_fingerprint


# --- against Apptainer ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Built:
    root: Path
    apptainer: Path

    def apptainer_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.apptainer), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    apptainer = apptainer_binary()
    root = tmp_path_factory.mktemp("sifsign")
    with tarfile.open(root / "base.tar", "w") as tf:
        _rootfs(tf)
    (root / "m.yaml").write_text(MANIFEST)
    ran = run_cli(["m.yaml", "--cache", "cache", "--json"], cwd=root)
    assert ran.code == 0, str(ran)
    return Built(root, apptainer)


@pytest.mark.integration  # Apptainer
@pytest.mark.parametrize("kind", ["ed25519", "ecdsa"])
def test_apptainer_verifies_what_assemble_signs_and_refuses_a_changed_byte(built: Built, kind: str) -> None:
    private, public = _keys(built.root, kind)
    out = built.root / f"signed-{kind}.sif"
    ran = run_cli(["m.yaml", "--cache", "cache", "--sign", str(private), "-o", f"sif:{out}"], cwd=built.root)
    assert ran.code == 0, str(ran)
    assert "not signed" not in ran.err
    checked = built.apptainer_run("verify", "--key", str(public), str(out))
    assert checked.returncode == 0, checked.stderr
    assert "Verified signature(s) from image" in checked.stderr
    ours = run_cli(["verify", "--key", str(public), f"sif:{out}"])
    assert ours.code == 0 and "object group 1 (objects 1, 2, 3, 4, 5, 6, 7) signed by key" in ours.out, str(ours)

    # the signature is added after the unsigned SIF's objects, which stay as they were
    plain, signed = (built.root / "plain.sif").read_bytes(), out.read_bytes()
    part = _partition(out)
    assert part.offset + part.size == len(plain)
    assert (
        signed[HEADER.size : DESCRIPTORS_OFFSET + 7 * DESCRIPTOR.size]
        == plain[HEADER.size : DESCRIPTORS_OFFSET + 7 * DESCRIPTOR.size]
    )
    assert (
        signed[DESCRIPTORS_OFFSET + 8 * DESCRIPTOR.size : len(plain)]
        == plain[DESCRIPTORS_OFFSET + 8 * DESCRIPTOR.size :]
    )

    _flip(out, part.offset + part.size // 2)
    refused = built.apptainer_run("verify", "--key", str(public), str(out))
    assert refused.returncode != 0 and "data object integrity compromised: 7" in refused.stderr, refused.stderr
    ours = run_cli(["verify", "--key", str(public), f"sif:{out}"])
    assert ours.code == 1 and "object 7's data changed since it was signed" in ours.err, str(ours)


@pytest.mark.integration  # Apptainer
def test_assemble_verifies_what_apptainer_signs(built: Built) -> None:
    private, public = _keys(built.root, "ecdsa")
    (built.root / "other").mkdir(exist_ok=True)
    _, other = _keys(built.root / "other", "ed25519")
    theirs = built.root / "theirs.sif"
    theirs.write_bytes((built.root / "plain.sif").read_bytes())
    signed = built.apptainer_run("sign", "--key", str(private), str(theirs))
    assert signed.returncode == 0, signed.stderr
    assert run_cli(["verify", "--key", str(public), f"sif:{theirs}"]).code == 0
    wrong = run_cli(["verify", "--key", str(other), f"sif:{theirs}"])
    assert wrong.code == 1 and "not signed by this key" in wrong.err, str(wrong)

    labels = read_sif_header(theirs).objects[1]  # JSON labels: a descriptor's name byte changed
    for offset, why in (
        (labels.offset, "object 2's data changed"),
        (DESCRIPTORS_OFFSET + DESCRIPTOR.size + 60, "object 2's descriptor changed"),
    ):
        changed = built.root / "changed.sif"
        changed.write_bytes(theirs.read_bytes())
        _flip(changed, offset)
        assert built.apptainer_run("verify", "--key", str(public), str(changed)).returncode != 0
        ours = run_cli(["verify", "--key", str(public), f"sif:{changed}"])
        assert ours.code == 1 and why in ours.err, str(ours)


@pytest.mark.integration  # Apptainer
def test_an_ed25519_signature_is_apptainers_byte_for_byte_but_its_times(built: Built) -> None:
    """``assemble sif --sign`` against ``assemble sif`` then ``apptainer sign --key``."""
    private, public = _keys(built.root, "ed25519")
    theirs, ours = built.root / "apptainer-signed.sif", built.root / "assemble-signed.sif"
    ran = run_cli(["sif", "oci:img:latest", str(theirs), "--epoch", str(EPOCH)], cwd=built.root)
    assert ran.code == 0, str(ran)
    assert built.apptainer_run("sign", "--key", str(private), str(theirs)).returncode == 0
    ran = run_cli(["sif", "oci:img:latest", str(ours), "--epoch", str(EPOCH), "--sign", str(private)], cwd=built.root)
    assert ran.code == 0, str(ran)
    assert built.apptainer_run("verify", "--key", str(public), str(ours)).returncode == 0
    a, b = theirs.read_bytes(), ours.read_bytes()
    assert len(a) == len(b)
    differ = {i for i in range(len(a)) if a[i] != b[i]}
    sig = DESCRIPTORS_OFFSET + 7 * DESCRIPTOR.size  # the 8th descriptor: the signature's
    # header: modified (int64 at 72); the signature's descriptor: created and modified (int64 at 41, 49)
    times = set(range(72, 80)) | set(range(sig + 41, sig + 57))
    assert differ and differ <= times, sorted(differ - times)[:10]


@pytest.mark.integration  # Apptainer, docker-registry
def test_a_signed_sif_pulled_from_oras_verifies_in_apptainer(
    built: Built, tmp_path: Path, registry: RunningRegistry
) -> None:
    """The SIF an ``oras://`` output pushes is the signed one: ``apptainer pull oras://``
    (into an empty cache, as on a fresh node) then ``apptainer verify --key`` accept it,
    and ``assemble verify`` agrees on the pulled file."""
    private, public = _keys(tmp_path, "ed25519")
    uri = f"oras://{registry.host}/hpc/signed-sif:1"
    ran = run_cli(
        ["m.yaml", "--cache", "cache", "--sign", str(private), "--tls-verify=false", "-o", uri], cwd=built.root
    )
    assert ran.code == 0, str(ran)
    pulled, cache = tmp_path / "pulled.sif", tmp_path / "apptainer-cache"
    env = {**os.environ, "APPTAINER_CACHEDIR": str(cache), "APPTAINER_TMPDIR": str(tmp_path)}
    got = subprocess.run(
        [str(built.apptainer), "pull", "--no-https", str(pulled), uri],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert got.returncode == 0, got.stderr
    checked = built.apptainer_run("verify", "--key", str(public), str(pulled))
    assert checked.returncode == 0 and "Verified signature(s) from image" in checked.stderr, checked.stderr
    ours = run_cli(["verify", "--key", str(public), f"sif:{pulled}"])
    assert ours.code == 0 and "signed by key" in ours.out, str(ours)
    (tmp_path / "other").mkdir()
    other = _keys(tmp_path / "other", "ed25519")[1]
    refused = built.apptainer_run("verify", "--key", str(other), str(pulled))
    assert refused.returncode != 0, refused.stderr
