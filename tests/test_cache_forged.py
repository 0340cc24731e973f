"""Forged compile-cache entries against the real ``docker-registry`` (issue 32, item 1):
whoever can push to a ``--cache-from`` repository, or a registry serving other bytes for a
genuinely signed chunk, changes nothing outside the folder being restored: without and
with ``--cache-trust``, as root and as an unprivileged user. Each forged restore is one
warning line; the folder stays empty and the step would run cold."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from assembler.oci import mediatypes as mt
from assembler.oci.descriptor import Descriptor
from assembler.oci.digest import canonical_json, sha256_digest
from assembler.oci.reference import ImageName
from assembler.registry.blobs import FileBlobs
from assembler.registry.client import Registry
from assembler.registry.types import RegistryOptions
from assembler.sign import load_private_key
from assembler.stepcache import trust as cachetrust
from assembler.stepcache.compile import CHUNK, CONFIG
from tests.helpers import PYTHON, ROOT, sh
from tests.plugins.registry import RunningRegistry
from tests.plugins.user import User

PLAIN = RegistryOptions(tls_verify=False, backoff=0.01, max_backoff=0.05, retries=2)
TAG = "ccache-" + "fe" * 32


def _member(name: str, *, link: str = "", data: bytes = b"", folder: bool = False) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    if link:
        info.type, info.linkname = tarfile.SYMTYPE, link
    elif folder:
        info.type, info.mode = tarfile.DIRTYPE, 0o777
    else:
        info.size = len(data)
    return info, data


def _chunk(*members: tuple[tarfile.TarInfo, bytes], pad_to: int = 0) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if info.isfile() else None)
    frame = zstandard.ZstdCompressor().compress(raw.getvalue())
    if pad_to:  # a skippable frame (zstd's format): the same length as the chunk it stands in for
        assert len(frame) + 8 <= pad_to
        frame += b"\x50\x2a\x4d\x18" + (pad_to - len(frame) - 8).to_bytes(4, "little") + bytes(pad_to - len(frame) - 8)
    return frame


def _escaping(victim: Path, *, pad_to: int = 0) -> bytes:
    """A chunk that writes through symlinks spelled past the old check and chmods a folder
    outside through a folder member named as a symlink: every trick of the red team's
    report at once."""
    return _chunk(
        _member("d", link=str(victim.parent)),
        _member("d/", folder=True),
        _member("./out", link=str(victim.parent)),
        _member("out//authorized_keys", data=b"ssh-ed25519 AAAA attacker\n"),
        pad_to=pad_to,
    )


def _push_entry(registry: RunningRegistry, chunk: bytes, *, signer_key: bytes | None = None) -> str:
    """An entry of one chunk tagged TAG, signed when a key is given; the chunk's digest."""
    client = Registry(registry.host, options=PLAIN)
    try:
        desc = Descriptor(CHUNK, sha256_digest(chunk), len(chunk))
        config = canonical_json({"files": 1, "bytes": 6})
        config_desc = Descriptor(CONFIG, sha256_digest(config), len(config))
        client.push_blob("ccache", desc, FileBlobs({}, {desc.digest: chunk}))
        client.push_blob("ccache", config_desc, FileBlobs({}, {config_desc.digest: config}))
        body = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": config_desc.to_json(),
                "layers": [desc.to_json()],
            }
        )
        client.put_manifest("ccache", TAG, body, mt.OCI_MANIFEST)
        if signer_key is not None:
            signer = load_private_key(signer_key, password=None, what="test key")
            cachetrust.sign_entry(client, ImageName.parse(f"{registry.host}/ccache"), TAG, sha256_digest(body), signer)
        return desc.digest
    finally:
        client.close()


def _serve_other_bytes(registry: RunningRegistry, digest: str, data: bytes) -> None:
    """The registry's stored blob ``digest`` replaced: what a compromised registry serves."""
    hexdigest = digest.split(":", 1)[1]
    path = registry.root / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"
    assert path.stat().st_size == len(data)
    path.write_bytes(data)


def _keys() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


# Restores the entry TAG into FOLDER with a cache in CACHE (trusting KEY.pub when given) and
# prints what it did: run in-process by this test's interpreter, as root or as a user.
_RESTORE = """
import json, sys
from pathlib import Path
from assembler.cache import Cache
from assembler.oci.reference import ImageName
from assembler.registry.types import RegistryOptions
from assembler.sign import load_public_key
from assembler.stepcache.trust import Trust
from assembler.stepcache.compile import CompileCaches

host, cache, folder, key = sys.argv[1:5]
seen = []
trust = Trust(keys=(load_public_key(Path(key).read_bytes(), what="key"),)) if key else Trust()
caches = CompileCaches(
    Cache(Path(cache)), target=None, sources=[ImageName.parse(host + "/ccache")],
    options=RegistryOptions(tls_verify=False, backoff=0.01, max_backoff=0.05, retries=2),
    report=lambda kind, fields: seen.append([kind, fields.get("text", "")]), trust=trust,
)
done = caches.restore(sys.argv[5], Path(folder), "step forged")
caches.close()
print(json.dumps({"restored": done, "events": seen}))
"""


def _restore(work: Path, registry: RunningRegistry, key: Path | None, as_user: User | None) -> dict[str, object]:
    argv = [PYTHON, "-c", _RESTORE, registry.host, str(work / "cache"), str(work / "kept"), str(key or ""), TAG]
    if as_user is not None:
        ran = as_user.run(argv, work)
    else:  # as the user's run does: this checkout's package, whatever the folder
        ran = sh(argv, check=False, cwd=work, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert ran.returncode == 0, ran.stderr
    return dict(json.loads(ran.stdout))


def _victim(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    victim = folder / "config"
    victim.write_text("mine\n")
    os.chmod(folder, 0o755)
    os.utime(folder, ns=(10**18, 10**18))
    return victim


def _unchanged(victim: Path) -> None:
    assert victim.read_text() == "mine\n"
    assert sorted(p.name for p in victim.parent.iterdir()) == ["config"]
    st = os.stat(victim.parent)
    assert st.st_mode & 0o777 == 0o755 and st.st_mtime_ns == 10**18


@pytest.mark.parametrize("who", ["root", "user"])
def test_a_forged_chunk_changes_nothing_outside_the_folder(
    tmp_path: Path, registry: RunningRegistry, request: pytest.FixtureRequest, who: str
) -> None:
    """Without --cache-trust: an entry whose chunk writes through './out' and 'out//x' and
    chmods through a folder member named as a symlink."""
    as_user: User | None = request.getfixturevalue("user") if who == "user" else None
    work = (as_user.home if as_user else tmp_path) / "forged-unchecked"
    shutil.rmtree(work, ignore_errors=True)
    victim = _victim(work / "victim")
    _push_entry(registry, _escaping(victim))
    if as_user is not None:
        sh(["chown", "-R", f"{as_user.name}:{as_user.name}", str(work)])
    done = _restore(work, registry, None, as_user)
    assert done["restored"] is False
    [(_, text)] = [e for e in done["events"] if e[0] == "warning"]  # type: ignore[union-attr]
    assert "restoring failed" in text and "through 'out', a symlink or a file" in text, text
    assert not (work / "kept").exists()
    _unchanged(victim)


@pytest.mark.parametrize("who", ["root", "user"])
def test_other_bytes_for_a_signed_chunk_unpack_nothing_under_cache_trust(
    tmp_path: Path, registry: RunningRegistry, request: pytest.FixtureRequest, who: str
) -> None:
    """A genuinely signed entry whose chunk the registry serves other bytes for (the same
    length): restores unpacked chunks as they streamed and compared the digest at the end,
    after the escape. Now a chunk is spooled and checked first."""
    as_user: User | None = request.getfixturevalue("user") if who == "user" else None
    work = (as_user.home if as_user else tmp_path) / "forged-signed"
    shutil.rmtree(work, ignore_errors=True)
    victim = _victim(work / "victim")
    private, public = _keys()
    (work / "key.pub").write_bytes(public)
    genuine = _chunk(_member("obj/main.o", data=os.urandom(3 << 20)))  # bigger than one read of the stream
    digest = _push_entry(registry, genuine, signer_key=private)
    _serve_other_bytes(registry, digest, _escaping(victim, pad_to=len(genuine)))
    if as_user is not None:
        sh(["chown", "-R", f"{as_user.name}:{as_user.name}", str(work)])
    done = _restore(work, registry, work / "key.pub", as_user)
    assert done["restored"] is False
    [(_, text)] = [e for e in done["events"] if e[0] == "warning"]  # type: ignore[union-attr]
    assert "restoring failed" in text and digest in text, text
    assert not (work / "kept").exists()
    _unchanged(victim)
    assert hashlib.sha256(genuine).hexdigest() == digest.split(":")[1]


def test_a_signed_entry_that_escapes_is_refused_all_the_same(tmp_path: Path, registry: RunningRegistry) -> None:
    """A key the consumer trusts signed an escaping chunk (a compromised builder): the
    signature is no licence to write outside the folder."""
    victim = _victim(tmp_path / "victim")
    private, public = _keys()
    (tmp_path / "key.pub").write_bytes(public)
    _push_entry(registry, _escaping(victim), signer_key=private)
    done = _restore(tmp_path, registry, tmp_path / "key.pub", None)
    assert done["restored"] is False
    assert not (tmp_path / "kept").exists()
    _unchanged(victim)
