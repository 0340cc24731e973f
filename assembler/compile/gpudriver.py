"""The host's NVIDIA driver for a container run here, as ``apptainer --nv`` gives it: the
device nodes, and the driver's user-space libraries (found by ``ldconfig -p``, named as in
Apptainer's ``nvliblist.conf``) mounted read-only into one folder of the container that
``LD_LIBRARY_PATH`` ends with. The driver is the host's: an image never ships it.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from assembler.proc import Runner

# Where the libraries appear in the container (a path no image uses).
DRIVER_LIBS = "/run/assemble-driver/lib"
# The driver's user-space libraries a CUDA program may load (Apptainer's nvliblist.conf, the
# compute ones): the runtime API dlopens libcuda.so.1, which JIT-compiles PTX through
# libnvidia-ptxjitcompiler and libnvidia-nvvm.
LIBRARIES = (
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libnvidia-ml.so",
    "libnvidia-cfg.so",
    "libnvidia-gpucomp.so",
    "libnvidia-allocator.so",
    "libnvidia-opencl.so",
    "libnvcuvid.so",
    "libnvidia-encode.so",
)
_DEVICES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia[0-9]*", "/dev/nvidia-caps/*")
CONTROL = Path("/dev/nvidiactl")


@dataclass(frozen=True)
class Driver:
    """The host's driver: device nodes, and (host path, file name) of each library."""

    devices: tuple[str, ...]
    libraries: tuple[tuple[str, str], ...]

    def buildah_args(self) -> list[str]:
        """``buildah run`` flags giving a container the devices and the libraries."""
        args = [a for dev in self.devices for a in ("--device", dev)]
        return args + [a for host, name in self.libraries for a in ("--volume", f"{host}:{DRIVER_LIBS}/{name}:ro")]


def missing() -> str | None:
    """Why no GPU can be used here (None when the driver's control device is there)."""
    if not CONTROL.exists():
        return f"no NVIDIA GPU on this machine ({CONTROL} does not exist)"
    return None


def library_path(image_value: str | None) -> str:
    """``LD_LIBRARY_PATH`` with the driver's folder last: the image's own libraries first."""
    return f"{image_value}:{DRIVER_LIBS}" if image_value else DRIVER_LIBS


def find(runner: Runner) -> Driver:
    """The driver of this machine: its device nodes and the libraries ``ldconfig -p`` lists
    (the 64-bit ones, each name once)."""
    devices = sorted({path for pattern in _DEVICES for path in glob.glob(pattern)})
    listed = runner.run(["ldconfig", "-p"], check=False).stdout
    found: dict[str, str] = {}
    for line in listed.splitlines():
        name, _, host = line.strip().partition(" => ")
        soname = name.split(" (", 1)[0]
        if "x86-64" not in name and "AArch64" not in name:
            continue
        if any(soname.startswith(lib) for lib in LIBRARIES) and soname not in found and os.path.exists(host):
            found[soname] = os.path.realpath(host)
    return Driver(tuple(devices), tuple((host, name) for name, host in sorted(found.items())))
