"""Reading and writing images in every supported format, by transport reference.

One module per format, each reading and writing where that makes sense: ``layout``
(OCI dir), ``archive`` (oci-archive, docker-archive), ``rootfs`` (tarball),
``remote`` (registry, through :mod:`assembler.registry`), ``sif`` (Apptainer). A
bootstrapped Debian base is :mod:`assembler.debian`'s, written as a ``rootfs`` image.
This module asks a reference's format (:mod:`assembler.transports.formats`, the one table
of them) to read it (:func:`open_source`, :func:`known_image`); the formats' writers call
these modules.
"""

from __future__ import annotations

from assembler.transports.common import SourceImage as SourceImage
from assembler.transports.context import Context as Context
from assembler.transports.context import Written as Written
from assembler.transports.context import check_replaceable as check_replaceable
from assembler.transports.context import file_head as file_head
from assembler.transports.context import local_path as local_path
from assembler.transports.context import named_key as named_key
from assembler.transports.context import registry_options as registry_options
from assembler.transports.context import resolved_key as resolved_key
from assembler.transports.images import import_image as import_image
from assembler.transports.images import known_image as known_image
from assembler.transports.images import open_base as open_base
from assembler.transports.images import open_source as open_source

__all__ = [
    "Context",
    "SourceImage",
    "Written",
    "check_replaceable",
    "file_head",
    "import_image",
    "known_image",
    "local_path",
    "named_key",
    "open_base",
    "open_source",
    "registry_options",
    "resolved_key",
]
