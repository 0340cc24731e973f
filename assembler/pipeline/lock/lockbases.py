"""The bases a build made before the lock, taken for the lock's: a build after ``assemble
lock`` whose packages did not move makes no base again.

A bootstrapped base is cached under a key that holds the digest of the packages the lock
installs (:func:`assembler.debian.bootstrap.bootstrap_key`), so that a lock moved to other
versions makes it again. The first lock of a manifest already built moved nothing, yet
every bootstrapped base had a new key: the build after it bootstrapped both of the demo's
again (94 s and 137 s, issue 67) to the digests it had. ``assemble lock`` now looks, in the
cache a build uses (``--cache``, the build's options deciding the keys), for the base made
of the same definition without the lock; where its dpkg status holds exactly what the lock
names (name, architecture and version, nothing more, nothing less), that very image is
recorded under the lock's key. What the lock installs is then what the base holds, as the
locked build's own check of its root (``_check_root``) would have found.
"""

from __future__ import annotations

from collections.abc import Sequence

from assembler.archive.compress import decompressed
from assembler.archive.tarread import data_of, open_tar
from assembler.cache import Cache
from assembler.debian.aptlock import installed_in
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Descriptor
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.pipeline.image.bases import base_context, bootstrap_key
from assembler.pipeline.runs.run import Run

_STATUS = "var/lib/dpkg/status"
_STATUS_LIMIT = 64 << 20  # a base's dpkg status: a few MB (the devel base's: 1.3 MB)


def reuse_bases(run: Run) -> list[str]:
    """The names of the bootstrapped bases of ``run`` (a variant with the lock applied) whose
    locked key its cache lacked and now holds: the base a build made without the lock, where
    it holds exactly the lock's packages."""
    loaded, ctx = run.loaded, run.ctx
    if loaded.lock is None:
        return []
    taken = []
    for name, spec in loaded.manifest.bases.items():
        locked = loaded.lock.debian.get(f"apt:bases.{name}")
        if not isinstance(spec, m.BootstrapBase) or locked is None:
            continue
        own = base_context(ctx, spec)  # its own platform, if it names one
        key, _ = bootstrap_key(own, spec, record=True, locked=locked)
        if ctx.cache.base_image(key) is not None:
            continue
        plain, _ = bootstrap_key(own, spec, record=True)
        image = ctx.cache.base_image(plain)
        if image is None:
            continue
        want = {(d.name, d.arch): d.version for d in locked.debs}
        if installed(image, ctx.cache) == want:
            ctx.cache.put_base_image(key, image)
            taken.append(name)
    return taken


def installed(image: Image, cache: Cache) -> dict[tuple[str, str], str]:
    """(name, arch) -> version of each package dpkg's status says is installed, as the
    image's layers (in ``cache``) leave it."""
    return status_of(image.layers, cache)


def status_of(layers: Sequence[Descriptor | Layer], cache: Cache) -> dict[tuple[str, str], str]:
    """(name, arch) -> version of each package dpkg's status says is installed, as
    ``layers`` (in ``cache``) leave it: the last layer that writes it wins (none: empty)."""
    text = ""
    for layer in layers:
        with cache.open_blob(layer.digest) as raw, decompressed(raw) as data, open_tar(data, stream=True) as tar:
            for member in tar:
                if member.isfile() and member.name.lstrip("./") == _STATUS:
                    with data_of(tar, member, what=f"layer {layer.digest}") as f:
                        text = f.read(_STATUS_LIMIT).decode("utf-8", "replace")
    return installed_in(text)
