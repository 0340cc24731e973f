"""Python sets: what a step's ``pip``/``uv`` commands install, declared as data.

A compile step, a recipe or a ``run:`` layer lists each set its commands install
(``python_sets:``): the requirements, the indexes, whether they go in with ``--no-deps``,
the target Python. ``assemble lock`` resolves each set with uv's resolver for the
interpreter and platform of the image into exact versions with hashes
(:mod:`assembler.spec.lockfile` reads and writes the lock); a build hands the locked pins
to every pip and uv run of the step as constraints, so a cold build next month installs
what the lock says, not what the index serves that day.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from assembler.spec.fields import Name, Scalar, Strict, StrList

_PYTHON = r"^3\.[0-9]+$"
# uv's --python-platform for an OCI platform: the manylinux floor of today's CUDA wheels.
UV_PLATFORMS = {
    "linux/amd64": "x86_64-manylinux_2_28",
    "linux/arm64": "aarch64-manylinux_2_28",
    "linux/arm64/v8": "aarch64-manylinux_2_28",
    "linux/ppc64le": "powerpc64le-unknown-linux-gnu",
    "linux/s390x": "s390x-unknown-linux-gnu",
}
_URL = re.compile(r"^(https?|file)://\S+$")


class PythonSet(Strict):
    """One requirement set a step installs (``pip install``/``uv pip install``)."""

    name: Name = Field(default="default", description="unique within its step or layer")
    requirements: StrList = Field(description="PEP 508 requirements, as the commands install them (torch==2.9.0)")
    python: Scalar = Field(description="the target interpreter's version (3.12)")
    index_url: str | None = Field(default=None, description="--index-url (default: PyPI)")
    extra_index_urls: StrList = Field(default_factory=list, description="--extra-index-url, in order")
    no_deps: bool = Field(default=False, description="installed with --no-deps: each requirement locked alone")
    constraints: StrList = Field(default_factory=list, description="versions the resolver must keep (-c)")
    provided: StrList = Field(
        default_factory=list,
        description="what the image below already has, name==version (torch of a ROCm base: torch==2.5.0): "
        "resolved as that version with its dependencies left to the base, never pinned",
    )
    platform: str | None = Field(default=None, description="uv's --python-platform; default: the image's")
    installs: StrList = Field(
        default_factory=lambda: ["*"],
        description="names (globs) of the resolved set the commands install (nvidia-*: a layer that installs only "
        "torch's nvidia libraries); the layers above are resolved against these",
    )

    @field_validator("requirements")
    @classmethod
    def _some(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("a set lists at least one requirement")
        for req in value:
            if req.startswith(("-", "/", ".")):
                raise ValueError(f"{req!r}: a requirement (NAME[extras]SPEC), not an option or a local file")
        return value

    @field_validator("provided")
    @classmethod
    def _pinned(cls, value: list[str]) -> list[str]:
        for spec in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.!+_-]+", spec.strip()):
                raise ValueError(f"{spec!r}: what the base has is name==version (torch==2.5.1)")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value: str) -> str:
        if not re.match(_PYTHON, value):
            raise ValueError(f"{value!r} is not a Python version (3.12)")
        return value

    @field_validator("index_url", "extra_index_urls")
    @classmethod
    def _urls(cls, value: str | list[str] | None) -> str | list[str] | None:
        for url in [value] if isinstance(value, str) else value or []:
            if not _URL.match(url):
                raise ValueError(f"{url!r} is not an index URL (https://...)")
        return value

    def indexes(self) -> list[str]:
        """Every index the set is resolved against, the main one first."""
        return [self.index_url or "https://pypi.org/simple", *self.extra_index_urls]

    def definition(self, platform: str) -> dict[str, object]:
        """What the set's resolution depends on: its key in a lock (the name is not)."""
        return {
            "requirements": sorted(self.requirements),
            "python": self.python,
            "platform": self.platform or uv_platform(platform),
            "indexes": self.indexes(),
            "no_deps": self.no_deps,
            "constraints": sorted(self.constraints),
            **({"provided": sorted(self.provided)} if self.provided else {}),
        }


def uv_platform(platform: str) -> str:
    """uv's ``--python-platform`` for an OCI platform (``linux/amd64``)."""
    found = UV_PLATFORMS.get(platform)
    if found is None:
        raise ValueError(f"no Python platform known for {platform}: give the set a platform:")
    return found
