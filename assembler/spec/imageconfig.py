"""The image's runtime config in a manifest (``image.config``, a target's ``config``): what
``docker run`` starts and with what (entrypoint, cmd, env, user, ports, labels, healthcheck)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from assembler.spec.fields import Duration, Owner, Scalar, Strict, StrList


class Healthcheck(Strict):
    test: StrList = Field(description='["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]')
    interval: Duration | None = None
    timeout: Duration | None = None
    start_period: Duration | None = None
    start_interval: Duration | None = None
    retries: int | None = None

    @field_validator("test")
    @classmethod
    def _test_form(cls, value: list[str]) -> list[str]:
        if len(value) == 1 and value[0] not in ("NONE",):
            return ["CMD-SHELL", value[0]]
        if value and value[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise ValueError('test starts with "CMD", "CMD-SHELL" or "NONE"')
        return value


def _shell_form(value: Any) -> Any:
    # Docker's shell form: a string runs through /bin/sh -c.
    return ["/bin/sh", "-c", value] if isinstance(value, str) else value


class ConfigSpec(Strict):
    env: dict[str, Scalar] = Field(default_factory=dict)
    entrypoint: Annotated[list[str], BeforeValidator(_shell_form, json_schema_input_type=str | list[str])] | None = None
    cmd: Annotated[list[str], BeforeValidator(_shell_form, json_schema_input_type=str | list[str])] | None = None
    workdir: str | None = None
    user: Owner | str | None = None
    exposed_ports: Annotated[
        list[str],
        BeforeValidator(
            lambda v: [str(p) for p in v] if isinstance(v, list) else v, json_schema_input_type=list[str | int]
        ),
    ] = Field(default_factory=list)
    volumes: StrList = Field(default_factory=list)
    labels: dict[str, Scalar] = Field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    stop_signal: str | None = None

    @field_validator("exposed_ports")
    @classmethod
    def _ports(cls, value: list[str]) -> list[str]:
        out = []
        for p in value:
            if not re.fullmatch(r"\d{1,5}(/(tcp|udp|sctp))?", p):
                raise ValueError(f"port must look like 8080 or 8080/tcp, got {p!r}")
            out.append(p if "/" in p else p + "/tcp")
        return out
