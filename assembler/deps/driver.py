"""What an image's CUDA code needs of the GPU driver, read from the code (:class:`GpuCode`).

Two rules, from NVIDIA's compatibility documents (CUDA Compatibility, "Minor Version
Compatibility"; the PTX ISA release notes) and measured on an H200 with driver 580
(CUDA 13.0): a cubin from CUDA X.Y runs on any driver of CUDA X.0 or newer (minor
version compatibility: nvcc 13.2's sm_90 SASS and cudart ran there); PTX is JIT-compiled
by the driver, which must know its ISA: PTX ISA 9.2 (nvcc 13.2) needs a CUDA 13.2 driver,
and R580 refused it with ``cudaErrorUnsupportedPtxVersion``. So the code's SASS needs the
driver of its CUDA major (``NVIDIA_REQUIRE_CUDA=cuda>=13.0``, what the container toolkit
checks), and its PTX the driver of the release that wrote it: a GPU with no matching SASS
(a newer one) runs the image only there.

A manifest states the drivers it must support (``gpu: {min_cuda: "13.0"}`` or
``{min_driver: "580"}``): code whose SASS needs newer is refused, and PTX that only a
newer driver can JIT is a warning (the architectures it would serve get nothing on the
stated drivers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from assembler.deps.gpucode import GpuCode

# PTX ISA version -> the CUDA release whose nvcc writes it (PTX ISA document, release notes).
PTX_ISA_CUDA = {
    (7, 0): (11, 0),
    (7, 1): (11, 1),
    (7, 2): (11, 2),
    (7, 3): (11, 3),
    (7, 4): (11, 4),
    (7, 5): (11, 5),
    (7, 6): (11, 6),
    (7, 7): (11, 7),
    (7, 8): (11, 8),
    (8, 0): (12, 0),
    (8, 1): (12, 1),
    (8, 2): (12, 2),
    (8, 3): (12, 3),
    (8, 4): (12, 4),
    (8, 5): (12, 5),
    (8, 6): (12, 7),
    (8, 7): (12, 8),
    (8, 8): (12, 9),
    (9, 0): (13, 0),
    (9, 1): (13, 1),
    (9, 2): (13, 2),
}
# The Linux driver each CUDA release needs (the toolkit release notes' table), and the
# newest CUDA each driver branch runs: a branch supports the releases up to its own.
CUDA_DRIVER = {
    (11, 0): "450.80.02",
    (11, 1): "455.23",
    (11, 2): "460.27.03",
    (11, 3): "465.19.01",
    (11, 4): "470.42.01",
    (11, 5): "495.29.05",
    (11, 6): "510.39.01",
    (11, 7): "515.43.04",
    (11, 8): "520.61.05",
    (12, 0): "525.60.13",
    (12, 1): "530.30.02",
    (12, 2): "535.54.03",
    (12, 3): "545.23.06",
    (12, 4): "550.54.14",
    (12, 5): "555.42.02",
    (12, 6): "560.28.03",
    (12, 8): "570.26",
    (12, 9): "575.51.03",
    (13, 0): "580.65.06",
}

Version = tuple[int, int]


def cuda_of_ptx(isa: Version) -> Version | None:
    """The CUDA release that writes PTX ISA ``isa``; a newer ISA of a known major is taken
    as that major's release of the same minor (9.3 -> 13.3); None when unknown."""
    if isa in PTX_ISA_CUDA:
        return PTX_ISA_CUDA[isa]
    majors = {m: c for (m, _), (c, _) in PTX_ISA_CUDA.items()}
    if isa[0] in majors and isa > max(k for k in PTX_ISA_CUDA if k[0] == isa[0]):
        return (majors[isa[0]], isa[1])
    return None


def cuda_of_driver(driver: str) -> Version | None:
    """The newest CUDA release a Linux driver (``580``, ``580.65.06``) runs, from the table;
    None when it is older than every release there or not a driver version."""
    wanted = _numbers(driver)
    if wanted is None:
        return None
    best: Version | None = None
    for cuda, needed in sorted(CUDA_DRIVER.items()):
        floor = _numbers(needed)
        if floor is not None and wanted[: len(floor)] >= floor[: len(wanted)]:
            best = cuda
    return best


def _numbers(text: str) -> tuple[int, ...] | None:
    return tuple(int(p) for p in text.split(".")) if re.fullmatch(r"\d+(\.\d+)*", text) else None


def parse_version(text: str) -> Version | None:
    """``13.0`` (or ``13``, ``13.0.2``) as (major, minor)."""
    found = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:\.\d+)*", text.strip())
    return (int(found.group(1)), int(found.group(2) or 0)) if found else None


def text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class DriverNeeds:
    """What code needs of the driver: ``sass`` the CUDA release whose driver runs its
    cubins (its CUDA major's .0; None when it has none or says no release), ``ptx`` each
    PTX architecture's release (``compute_90`` -> (13, 2); None: an ISA not known here)."""

    sass: Version | None
    ptx: dict[str, Version | None]

    @property
    def cuda(self) -> Version | None:
        """What the container toolkit should require (``NVIDIA_REQUIRE_CUDA``): the SASS's
        driver, else (code that is only PTX) the oldest PTX's."""
        if self.sass is not None:
            return self.sass
        known = [v for v in self.ptx.values() if v is not None]
        return min(known) if known else None

    def require(self) -> str:
        """The ``NVIDIA_REQUIRE_CUDA`` value (``cuda>=13.0``), "" when nothing is needed."""
        return f"cuda>={text(self.cuda)}" if self.cuda is not None else ""

    def ptx_text(self) -> str:
        """``compute_90:cuda>=13.2`` per PTX architecture, ``;``-separated (``?``: unknown)."""
        return ";".join(f"{a}:cuda>={text(v) if v else '?'}" for a, v in sorted(self.ptx.items()))


def needs(code: GpuCode) -> DriverNeeds:
    """What ``code`` needs of the driver (see the module docstring)."""
    releases = [v for v in map(parse_version, code.toolkits) if v is not None]
    ptx: dict[str, Version | None] = {}
    for item in code.ptx:
        arch, _, isa = item.partition("=")
        parsed = parse_version(isa)
        cuda = cuda_of_ptx(parsed) if parsed else None
        ptx[arch] = cuda if arch not in ptx else _newest(ptx[arch], cuda)
    # A cubin without a release note (an older nvcc's compressed payload): its PTX says the release.
    majors = [v[0] for v in releases] or [v[0] for v in ptx.values() if v is not None]
    has_sass = any(a.startswith("sm_") for a in code.cuda)
    sass = (max(majors), 0) if has_sass and majors else None
    return DriverNeeds(sass, ptx)


def _newest(a: Version | None, b: Version | None) -> Version | None:
    return None if a is None or b is None else max(a, b)


@dataclass(frozen=True)
class Supported:
    """The oldest driver a manifest says the image must run on, as a CUDA release."""

    cuda: Version
    said: str  # as the manifest says it, for messages


def check(code_needs: DriverNeeds, supported: Supported) -> tuple[list[str], list[str]]:
    """(errors, warnings) of ``code_needs`` against the oldest supported driver: SASS that
    needs newer is an error; PTX that needs newer is a warning (the GPUs it serves get
    nothing there); PTX whose ISA is not known here is a warning too."""
    errors, warnings = [], []
    if code_needs.sass is not None and code_needs.sass > supported.cuda:
        errors.append(
            f"its cubins are CUDA {code_needs.sass[0]} code, which needs a driver for CUDA "
            f"{text(code_needs.sass)} or newer{_driver(code_needs.sass)}, but {supported.said} must be supported"
        )
    for arch, cuda in sorted(code_needs.ptx.items()):
        if cuda is None:
            warnings.append(f"{arch} PTX has an ISA version not known here: which driver can JIT it is not known")
        elif cuda > supported.cuda:
            warnings.append(
                f"{arch} PTX needs a CUDA {text(cuda)} driver{_driver(cuda)} to be JIT-compiled: on "
                f"{supported.said}, a GPU without matching SASS runs nothing (build it with the CUDA "
                f"{text(supported.cuda)} toolkit, or ship SASS for every architecture you claim)"
            )
    return errors, warnings


def _driver(cuda: Version) -> str:
    """`` (driver N or newer)`` where the table knows the release's driver, else ""."""
    floor = CUDA_DRIVER.get(cuda)
    return f" (driver {floor} or newer)" if floor else ""


def supported_from(min_cuda: str | None, min_driver: str | None) -> Supported | None:
    """The manifest's ``gpu:`` as a :class:`Supported` (None when it says nothing). Raises
    ValueError for a version that is not one, or a driver older than every CUDA release."""
    if min_cuda:
        parsed = parse_version(min_cuda)
        if parsed is None:
            raise ValueError(f"{min_cuda!r} is not a CUDA version (13.0)")
        return Supported(parsed, f"CUDA {text(parsed)} drivers")
    if min_driver:
        cuda = cuda_of_driver(min_driver)
        if cuda is None:
            raise ValueError(f"{min_driver!r} is not a Linux driver version this knows (580, 535.54.03)")
        return Supported(cuda, f"driver {min_driver} (CUDA {text(cuda)})")
    return None
