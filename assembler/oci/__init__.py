"""The OCI image model: pure values over exact bytes, standard library only."""

from assembler.oci.descriptor import Descriptor, Platform
from assembler.oci.digest import canonical_json, digest_hex, is_digest, sha256_digest
from assembler.oci.image import Image, Index

__all__ = [
    "Descriptor",
    "Image",
    "Index",
    "Platform",
    "canonical_json",
    "digest_hex",
    "is_digest",
    "sha256_digest",
]
