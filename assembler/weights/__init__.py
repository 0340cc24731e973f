"""Model weights (a manifest's ``weights:``): beside the image, never in it.

A model's files are gathered from their source (:mod:`.sources`: a host folder, a URL
pinned by sha256, a Hugging Face repository through the Hub's HTTP API, :mod:`.hub`) into
the cache's blob store, each checked against the per-file lock (:mod:`.lock`: path, size,
sha256). :mod:`.pack` packs them as CNCF ModelPack does: a file of 64 MiB or more is an
uncompressed tar layer of its own, smaller ones are bundled, every tar byte for byte the
same for the same files; the manifest (``artifactType``
``application/vnd.cncf.model.manifest.v1+json``) refers to the image as its ``subject``,
so a code change pushes a new image and a small manifest, never a weight byte again, and
a weights change pushes new weights and leaves the image as it is
(:mod:`assembler.transports.beside` writes them beside each output that can hold them).
:mod:`.tree` lays the files out for the build's tests (a read-only bind at the manifest's
``at``), a packed model writes its squashfs beside a SIF (``apptainer --bind
FILE:AT:image-src=/``), :mod:`.attached` finds them beside a published image for
``assemble run``/``test``.
"""
