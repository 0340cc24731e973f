"""What CUDA code needs of the driver (``assembler.deps.driver``), from the facts read of
its fat binaries: the tables, the SASS/PTX rules measured on an H200 with driver 580, and
the manifest's ``gpu:`` checked against them. No tool: the facts are given."""

from __future__ import annotations

import pytest

from assembler.deps import driver
from assembler.deps.gpucode import GpuCode


def _code(sass: list[str], ptx: dict[str, str], toolkits: list[str]) -> GpuCode:
    archs = frozenset([*sass, *ptx])
    return GpuCode(cuda=archs, ptx=frozenset(f"{a}={v}" for a, v in ptx.items()), toolkits=frozenset(toolkits))


def test_sass_needs_its_cuda_major_and_ptx_the_release_that_wrote_it() -> None:
    """nvcc 13.2's sm_90 SASS ran on an R580 driver (CUDA 13.0); its PTX (ISA 9.2) did not."""
    needs = driver.needs(_code(["sm_80", "sm_90"], {"compute_90": "9.2"}, ["13.2"]))
    assert needs.sass == (13, 0) and needs.ptx == {"compute_90": (13, 2)}
    assert needs.require() == "cuda>=13.0" and needs.ptx_text() == "compute_90:cuda>=13.2"
    errors, warnings = driver.check(needs, driver.Supported((13, 0), "CUDA 13.0 drivers"))
    assert errors == [] and len(warnings) == 1 and "compute_90 PTX needs a CUDA 13.2 driver" in warnings[0]
    errors, _ = driver.check(needs, driver.Supported((12, 8), "driver 570"))
    assert len(errors) == 1 and "needs a driver for CUDA 13.0 or newer (driver 580.65.06 or newer)" in errors[0]


def test_code_without_sass_needs_its_ptx_driver_and_no_code_needs_nothing() -> None:
    only_ptx = driver.needs(_code([], {"compute_80": "8.4", "compute_90": "8.8"}, []))
    assert only_ptx.sass is None and only_ptx.require() == "cuda>=12.4"
    assert driver.needs(GpuCode()).require() == ""
    # a cubin whose release note was not read (an older nvcc's compression): its PTX says the major
    assert driver.needs(_code(["sm_80"], {"compute_80": "8.4"}, [])).sass == (12, 0)


@pytest.mark.parametrize(
    ("isa", "cuda"),
    [((7, 8), (11, 8)), ((8, 5), (12, 5)), ((8, 6), (12, 7)), ((9, 0), (13, 0)), ((9, 4), (13, 4)), ((10, 0), None)],
)
def test_ptx_isa_to_cuda(isa: tuple[int, int], cuda: tuple[int, int] | None) -> None:
    assert driver.cuda_of_ptx(isa) == cuda


@pytest.mark.parametrize(
    ("given", "cuda"),
    [
        ("580", (13, 0)),
        ("580.65.06", (13, 0)),
        ("575", (12, 9)),
        ("570.26", (12, 8)),
        ("535", (12, 2)),
        ("999", (13, 0)),
    ],
)
def test_a_driver_supports_the_releases_up_to_its_own(given: str, cuda: tuple[int, int]) -> None:
    assert driver.cuda_of_driver(given) == cuda


def test_the_manifests_gpu_field() -> None:
    assert driver.supported_from(None, None) is None
    assert driver.supported_from("13.0", None) == driver.Supported((13, 0), "CUDA 13.0 drivers")
    assert driver.supported_from(None, "535") == driver.Supported((12, 2), "driver 535 (CUDA 12.2)")
    for bad in (("x", None), (None, "300"), (None, "r580")):
        with pytest.raises(ValueError):
            driver.supported_from(*bad)
