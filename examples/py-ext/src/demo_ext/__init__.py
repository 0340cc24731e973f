"""demo_ext: a small package whose work is done by a C extension."""

from demo_ext._native import checksum, describe

__all__ = ["checksum", "describe"]
