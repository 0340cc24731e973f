"""What a manifest says of the GPUs and drivers its image must run on (``gpu:``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from assembler.manifest.schema.fields import Strict


class GpuSupport(Strict):
    """The oldest GPU driver the image must run on, as a CUDA release (``min_cuda: "13.0"``)
    or a Linux driver version (``min_driver: "580"``): the build reads what its CUDA code
    needs of the driver and refuses SASS that needs newer, and warns of PTX that only a
    newer driver can JIT (:mod:`assembler.deps.driver`). ``archs`` names the GPUs: a torch
    pinned from PyPI without kernels for one is refused at plan (:mod:`assembler.manifest.facts.gpus`)."""

    min_cuda: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}$")] | None = Field(
        default=None, description="the oldest CUDA release whose driver must run the image (13.0)"
    )
    min_driver: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+){0,2}$")] | None = Field(
        default=None, description="the oldest Linux driver that must run the image (580, 535.54.03)"
    )
    archs: list[Annotated[str, Field(pattern=r"^sm_[0-9]{2,3}[af]?$")]] = Field(
        default_factory=list,
        description="the NVIDIA GPUs the image must run on, as CUDA archs (sm_90 for H100, sm_120 for RTX 50xx): "
        "a torch pin whose PyPI wheel has no kernels for one is refused at plan, naming the first release that has "
        "them (assembler/manifest/facts/torch_gpus.json)",
    )

    @field_validator("min_driver")
    @classmethod
    def _one(cls, value: str | None, info: Any) -> str | None:
        if value is not None and info.data.get("min_cuda") is not None:
            raise ValueError("give min_cuda or min_driver, not both")
        return value
