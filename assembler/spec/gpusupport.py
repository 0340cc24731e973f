"""What a manifest says of the GPU drivers its image must run on (``gpu:``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from assembler.spec.fields import Strict


class GpuSupport(Strict):
    """The oldest GPU driver the image must run on, as a CUDA release (``min_cuda: "13.0"``)
    or a Linux driver version (``min_driver: "580"``): the build reads what its CUDA code
    needs of the driver and refuses SASS that needs newer, and warns of PTX that only a
    newer driver can JIT (:mod:`assembler.deps.driver`)."""

    min_cuda: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}$")] | None = Field(
        default=None, description="the oldest CUDA release whose driver must run the image (13.0)"
    )
    min_driver: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}$")] | None = Field(
        default=None, description="the oldest Linux driver that must run the image (580, 535.54.03)"
    )

    @field_validator("min_driver")
    @classmethod
    def _one(cls, value: str | None, info: Any) -> str | None:
        if value is not None and info.data.get("min_cuda") is not None:
            raise ValueError("give min_cuda or min_driver, not both")
        return value
