"""Images handed to buildah: an OCI layout of the image's blobs, made for one ``buildah
pull`` and removed after it.

The layout's layers are hard links to the cache's blobs, each read through and checked
first (a damaged blob is dropped and made again, as on every read), so a base of GiBs
costs its read, not a second copy: a copy kept in a staging layout between builds held
as much again of the disk as every base and step image buildah was given (1.2 GiB for
manifests/cuda.yaml's toolkit), outside the cache's budget. The folder is the cache's
own temp folder, removed when the pull ends (a killed run's is reclaimed with the cache's
temp files); buildah names the stored image ``localhost/layout:<digest>`` and keeps its
manifest, so the stored image's digest is the cache's manifest blob.
"""

from __future__ import annotations

from assembler.cache import Cache
from assembler.compile.buildah import Buildah
from assembler.oci.image import Image
from assembler.transports import layout
from assembler.transports.common import BlobReader


def hand_over(buildah: Buildah, cache: Cache, image: Image, blobs: BlobReader) -> str:
    """``image`` pulled into ``buildah``'s storage; its image ID."""
    tag = image.digest.split(":", 1)[1]
    with cache.workdir("handover-") as folder:
        layout.write(folder / "layout", image, tag=tag, blobs=blobs, linked=True)
        return buildah.pull(folder / "layout", tag, cwd=folder)
