"""A small GGUF writer: header, string/uint32 metadata, and float32 tensors (numpy arrays).

Layout (GGUF v3): magic ``GGUF``, u32 version, u64 tensor count, u64 metadata count, the
metadata (u64 key length, key, u32 type, value), the tensor infos (name, u32 n_dims, u64
dims, u32 type, u64 offset), then the tensor data aligned to ``general.alignment`` (32).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
ALIGNMENT = 32
TYPE_UINT32 = 4
TYPE_STRING = 8
TENSOR_F32 = 0


def _string(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


class GGUFWriter:
    def __init__(self, path: str | Path, arch: str) -> None:
        self.path = Path(path)
        self.kv: list[tuple[str, int, bytes]] = []
        self.tensors: list[tuple[str, tuple[int, ...], bytes]] = []
        self.add_string("general.architecture", arch)

    def add_string(self, key: str, value: str) -> None:
        self.kv.append((key, TYPE_STRING, _string(value)))

    def add_uint32(self, key: str, value: int) -> None:
        self.kv.append((key, TYPE_UINT32, struct.pack("<I", value)))

    def add_tensor(self, name: str, array: Any) -> None:
        import numpy as np

        data = np.ascontiguousarray(array, dtype=np.float32)
        self.tensors.append((name, tuple(reversed(data.shape)), data.tobytes()))

    def write(self) -> None:
        out = bytearray(GGUF_MAGIC + struct.pack("<IQQ", GGUF_VERSION, len(self.tensors), len(self.kv)))
        for key, kind, value in self.kv:
            out += _string(key) + struct.pack("<I", kind) + value
        offset = 0
        for name, dims, data in self.tensors:
            out += _string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            out += struct.pack("<IQ", TENSOR_F32, offset)
            offset += len(data) + (-len(data)) % ALIGNMENT
        out += b"\0" * ((-len(out)) % ALIGNMENT)
        for _, _, data in self.tensors:
            out += data + b"\0" * ((-len(data)) % ALIGNMENT)
        self.path.write_bytes(bytes(out))
