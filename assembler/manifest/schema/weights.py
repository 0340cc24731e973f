"""A manifest's model weights (``weights:``): files that ship beside the image, never in it.

Each entry names where the files come from (a host folder, a URL pinned by sha256, or a
Hugging Face repository at a revision), which of them to take, and where the image finds
them at run time. :mod:`assembler.weights` fetches, locks, packs and publishes them.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from assembler.manifest.schema.fields import Strict, StrList

HF_SCHEME = "hf://"
# hf://ORG/REPO[@REVISION]: a Hub repository id (one or two parts) and a branch, tag or commit.
HF_SOURCE = re.compile(r"^hf://(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?)(@(?P<rev>[^\s@]+))?$")


KERNEL_FOLDERS = ("/proc", "/sys", "/dev")  # the kernel's: never a model's folder
PLAIN_FOLDER = "absolute, no '.', '..' or empty part, no ':', ',' or control character, not in /proc, /sys, /dev"


def plain_folder(value: str) -> str | None:
    """``value`` as a model's ``at`` is written (``/models/tiny``: one ``/`` between parts,
    none at the end), or None where it is no plain absolute folder: a part ``..`` or
    ``.``, a ``:`` or ``,`` (buildah's ``--volume`` and Apptainer's ``--bind`` separate
    their fields and options with them: ``/x:rw`` would make a read-only bind a writable
    one), a control character, or a folder of the kernel's."""
    parts = value.strip("/").split("/")
    if not value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        return None
    if re.search(r"[:,\x00-\x1f\x7f]", value):
        return None
    folder = "/" + "/".join(parts)
    if any(folder == k or folder.startswith(k + "/") for k in KERNEL_FOLDERS):
        return None
    return folder


class WeightsSpec(Strict):
    """One model's files: fetched and checked file by file (the lock holds each file's path,
    size and sha256), packed as their own OCI artifact (CNCF ModelPack's media types) that
    refers to the image, and made available at ``at`` by ``assemble run``/``test``, and by
    the bind a SIF output's squashfs beside it is given."""

    source: str = Field(
        description="a host folder (relative to the manifest), an https:// URL of one file (with sha256:), or "
        "hf://ORG/REPO@REVISION (a Hugging Face repository through the Hub's HTTP API; HF_ENDPOINT and HF_TOKEN "
        "are read from the environment)",
        examples=["models/tiny", "hf://Qwen/Qwen2.5-0.5B-Instruct@main"],
    )
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = Field(
        default=None, description="a URL source's sha256 (64 lowercase hex digits): a download that differs is refused"
    )
    include: StrList = Field(
        default_factory=list,
        description="glob patterns of the files taken (matched against the path and the file name); default: all",
        examples=[["*.safetensors", "*.json"]],
    )
    exclude: StrList = Field(default_factory=list, description="glob patterns of files left out", examples=[["*.bin"]])
    at: Annotated[str, Field(pattern=r"^/.+")] = Field(
        description="the absolute folder where the image's programs find the files", examples=["/models/tiny"]
    )

    @field_validator("at")
    @classmethod
    def _plain_folder(cls, value: str) -> str:
        folder = plain_folder(value)
        if folder is None:
            raise ValueError(f"{value!r} is not a plain absolute folder ({PLAIN_FOLDER})")
        return folder

    @model_validator(mode="after")
    def _kind(self) -> WeightsSpec:
        if self.kind == "hf" and HF_SOURCE.match(self.source) is None:
            raise ValueError(f"{self.source!r} is not hf://ORG/REPO[@REVISION]")
        if self.kind == "url" and self.sha256 is None:
            raise ValueError("a URL source needs its sha256")
        if self.kind != "url" and self.sha256 is not None:
            raise ValueError("sha256 pins a URL source; a folder or hf:// source is locked file by file")
        return self

    @property
    def kind(self) -> str:
        """``hf``, ``url`` or ``path``."""
        if self.source.startswith(HF_SCHEME):
            return "hf"
        if self.source.startswith(("https://", "http://")):
            return "url"
        return "path"

    def hf_repo(self) -> tuple[str, str]:
        """(repository id, revision) of an ``hf://`` source; ``main`` when none is named."""
        found = HF_SOURCE.match(self.source)
        assert found is not None
        return found["repo"], found["rev"] or "main"
