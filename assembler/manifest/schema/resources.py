"""What a compile step's Slurm job asks for (``resources:``, ``--executor slurm``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from assembler.manifest.schema.fields import Strict


class Resources(Strict):
    """What a step's Slurm job asks for (``--executor slurm``); not part of the step's key."""

    cpus: int | None = Field(default=None, ge=1, description="sbatch --cpus-per-task")
    mem: Annotated[str, Field(pattern=r"^[0-9]+[KMGT]?$")] | None = Field(
        default=None, description="sbatch --mem (e.g. 16G)"
    )
    gpus: int | None = Field(default=None, ge=0, description="sbatch --gres=gpu:N")
    time: Annotated[str, Field(pattern=r"^([0-9]+-)?[0-9]+(:[0-9]{1,2}){0,2}$")] | None = Field(
        default=None, description="sbatch --time (MINUTES, H:MM:SS, D-HH:MM...)"
    )
    partition: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.,-]+$")] | None = Field(
        default=None, description="sbatch --partition"
    )
