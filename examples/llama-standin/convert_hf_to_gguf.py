#!/usr/bin/env python3
"""Converts a model folder (config.json, and float32 ``*.npy`` tensors if any) to GGUF.

    python3 convert_hf_to_gguf.py MODEL_DIR [--outfile OUT.gguf]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if "NO_LOCAL_GGUF" not in os.environ:
    sys.path.insert(1, str(Path(__file__).parent / "gguf-py"))

import gguf  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--outfile", type=Path)
    args = parser.parse_args()
    config = json.loads((args.model / "config.json").read_text())
    arch = (config.get("architectures") or ["unknown"])[0]
    out = args.outfile or args.model / f"{args.model.name}.gguf"
    writer = gguf.GGUFWriter(out, arch)
    writer.add_string("general.name", config.get("_name_or_path", args.model.name))
    if "num_hidden_layers" in config:
        writer.add_uint32(f"{arch}.block_count", int(config["num_hidden_layers"]))
    tensors = sorted(args.model.glob("*.npy"))
    if tensors:
        import numpy as np

        for path in tensors:
            writer.add_tensor(path.stem, np.load(path))
    writer.write()
    print(f"wrote {out} ({len(tensors)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
