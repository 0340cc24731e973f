"""What a step's container mounts besides its sources and caches: the artifacts it builds
on (each one's layer unpacked once for the steps mounting it, shown read-only at its ``to``) and its
secrets (0600 files in a private folder, read into the environment by the script's
prelude, never in a layer or a log)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.compile import keepfailed
from assembler.compile.buildah import Volume
from assembler.compile.trees import unpack
from assembler.errors import InputError
from assembler.oci.layer import Layer

if TYPE_CHECKING:
    from assembler.compile.container import Workspace

SECRETS_DIR = "/run/assemble-secrets"


@dataclass(frozen=True)
class Mounted:
    """An artifact made visible in a container: its layer unpacked, shown at ``to``."""

    ref: str
    blob: Layer
    to: str


@contextmanager
def secret_files(ws: Workspace, names: Sequence[str], step: str) -> Iterator[tuple[list[Volume], list[str], str]]:
    """Secrets as 0600 files in a private folder, mounted read-only; removed afterwards."""
    if not names:
        yield [], [], ""
        return
    values = []
    with ws.cache.workdir("secrets-") as folder:
        os.chmod(folder, 0o700)
        for name in names:
            value = os.environ.get(name)
            if value is None:
                raise InputError(f"step {step}: secret {name} is not set in the environment", hint=f"export {name}=...")
            path = folder / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            values.append(value)
        prelude = "".join(f'export {n}="$(cat {SECRETS_DIR}/{n})"; ' for n in names)
        yield [Volume(folder, SECRETS_DIR)], values, prelude


@contextmanager
def mounted_artifacts(ws: Workspace, mounts: Sequence[Mounted]) -> Iterator[list[Volume]]:
    """Each artifact's layer unpacked and mounted read-only at ``to``: one folder per layer
    for all the steps that mount it at the same time (:mod:`assembler.compile.trees`); with
    ``--keep-failed``, a private folder that can stay with a failed step's container."""
    if not mounts:
        yield []
        return
    if ws.keep_failed:
        with keepfailed.scratch(ws, "mounts-") as folder:
            volumes = []
            for i, mount in enumerate(mounts):
                root = folder / str(i)
                root.mkdir()
                unpack(ws.cache, mount.blob, root, f"artifact {mount.ref}")
                volumes.append(_volume(root, mount))
            yield volumes
        return
    with ExitStack() as stack:
        trees = ws.shared.trees
        roots = [stack.enter_context(trees.unpacked(ws.cache, m.blob, f"artifact {m.ref}")) for m in mounts]
        yield [_volume(root, mount) for root, mount in zip(roots, mounts, strict=True)]


def _volume(root: Path, mount: Mounted) -> Volume:
    target = mount.to.rstrip("/") or "/"
    return Volume(root / target.lstrip("/"), target)
