"""``tests:``: commands run in the built image, each with what it must print and exit with.

A test starts the image as ``docker run`` (and Kubernetes) would: ``command`` replaces the
image's entrypoint (and its cmd), ``args`` replace its cmd; neither runs the entrypoint with
the cmd. A ``command`` given as a string runs through ``/bin/sh -c``. Tests live in a
manifest (``tests:``), a target (``tests:`` replaces the manifest's, ``add_tests:``
appends) and a compile step or recipe (run when the image ships the step's artifacts).
:mod:`assembler.pipeline.image.imagetests` runs them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, field_validator

from assembler.errors import InputError
from assembler.manifest.schema.fields import Duration, Name, Scalar, Strict, StrList
from assembler.manifest.schema.resources import Resources

DEFAULT_TIMEOUT_NS = 120 * 1_000_000_000


def _shell_form(value: Any) -> Any:
    # As Docker's shell form: a string runs through /bin/sh -c.
    return ["/bin/sh", "-c", value] if isinstance(value, str) else value


def _not_empty(value: list[str] | None) -> list[str] | None:
    if value is not None and not value:
        raise ValueError("an empty command runs nothing: leave command out to run the image's entrypoint")
    return value


def _patterns(value: list[str]) -> list[str]:
    for pattern in value:
        try:
            re.compile(pattern, re.MULTILINE)
        except re.error as e:
            raise ValueError(f"{pattern!r} is not a regular expression: {e}") from None
    return value


Patterns = Annotated[StrList, AfterValidator(_patterns)]


class ImageTest(Strict):
    """One test of the image: run as ``docker run`` starts it, checked by its exit status
    and its output (stdout and stderr together)."""

    name: Name = Field(description="the test's name in reports; unique among the tests", examples=["serves-health"])
    command: (
        Annotated[
            list[str], BeforeValidator(_shell_form, json_schema_input_type=str | list[str]), AfterValidator(_not_empty)
        ]
        | None
    ) = Field(default=None, description="replaces the entrypoint and the cmd (a string runs through /bin/sh -c)")
    args: StrList | None = Field(default=None, description="the arguments after the image: replace the cmd")
    env: dict[str, Scalar] = Field(default_factory=dict, description="set over the image's environment")
    user: str | None = Field(default=None, description="uid[:gid] or a user name (default: the image's user)")
    workdir: str | None = Field(default=None, description="default: the image's working directory")
    exit: int = Field(default=0, ge=0, le=255, description="the exit status it must end with")
    output: Patterns = Field(default_factory=list, description="regexes that must match the output (re.search)")
    not_output: Patterns = Field(default_factory=list, description="regexes that must not match the output")
    timeout: Duration = Field(default=DEFAULT_TIMEOUT_NS, description="a test running longer fails (default 2m)")
    gpu: bool = Field(default=False, description="needs a GPU: reported as not run where there is none")
    emulate: bool = Field(
        default=False,
        description="where the image is another architecture's: run under qemu-user, reported emulated (never passed)",
    )
    network: bool = Field(default=False, description="may reach the network (default: loopback only)")
    on: Literal["local", "slurm"] | None = Field(
        default=None, description="where it runs (default: --test-on): here in buildah, or on a Slurm node"
    )
    resources: Resources | None = Field(default=None, description="what its Slurm job asks for (on: slurm)")

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("a timeout is longer than 0s")
        return value


def _unique(value: list[ImageTest]) -> list[ImageTest]:
    seen: set[str] = set()
    for test in value:
        if test.name in seen:
            raise ValueError(f"two tests are named {test.name!r}")
        seen.add(test.name)
    return value


TestList = Annotated[list[ImageTest], AfterValidator(_unique)]


def definition(test: ImageTest, argv: Sequence[str]) -> dict[str, Any]:
    """``test`` as a record (its ``argv`` resolved against the image): what a test-result
    statement keeps of it, read back by :func:`from_definition`."""
    data = test.model_dump(mode="json", exclude={"name", "command", "args", "timeout", "on", "resources"})
    if not test.emulate:  # the records written before it existed, unchanged
        del data["emulate"]
    ms = test.timeout // 1_000_000
    return {**{k: v for k, v in data.items() if v is not None}, "command": list(argv), "timeout": f"{ms}ms"}


def from_definition(name: str, data: Mapping[str, Any]) -> ImageTest:
    """The test a record of :func:`definition` describes; InputError when it does not read."""
    try:
        return ImageTest.model_validate({**data, "name": name})
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"test {name}: its recorded definition does not read ({where}: {first['msg']})") from None
