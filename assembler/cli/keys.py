"""Keys named on the command line (``--sign``, ``--cache-sign``, ``--key``), read before
anything is built or written; cryptography is imported only when a key is named."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.errors import InputError

if TYPE_CHECKING:
    from assembler.sign import Signer, Verifier


def read_key(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{what}: {e.strerror or e}") from None


def signer_of(key: Path, option: str) -> Signer:
    """The private key of ``option`` (a cosign key's password from ``$COSIGN_PASSWORD``);
    InputError when it does not load."""
    from assembler.sign import load_private_key

    what = f"{option} {key}"
    password = os.environ.get("COSIGN_PASSWORD")
    return load_private_key(read_key(key, what), password=None if password is None else password.encode(), what=what)


def verifier_of(key: Path, option: str) -> Verifier:
    """The public key of ``option``; InputError when it does not load."""
    from assembler.sign import load_public_key

    what = f"{option} {key}"
    return load_public_key(read_key(key, what), what=what)
