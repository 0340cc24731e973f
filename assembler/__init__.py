"""assemble: Dockerfile-free OCI image assembler for GPU/AI software."""

__version__ = "0.1.0"
