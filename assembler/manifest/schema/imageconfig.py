"""The image's runtime config in a manifest (``image.config``, a target's ``config``): what
``docker run`` starts and with what (entrypoint, cmd, env, user, ports, labels, healthcheck)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from assembler.manifest.schema.fields import Duration, Owner, Scalar, Strict, StrList


class Healthcheck(Strict):
    """How the container runtime checks that a container of the image still works."""

    test: StrList = Field(description='["CMD", ...], ["CMD-SHELL", "..."] or ["NONE"]')
    interval: Duration | None = Field(
        default=None,
        description="the time between checks (30s, 1m30s, 500ms or whole seconds); default: the runtime's",
        examples=["30s"],
    )
    timeout: Duration | None = Field(
        default=None,
        description="a check running longer fails (30s, 1m30s, 500ms or whole seconds); default: the runtime's",
        examples=["10s"],
    )
    start_period: Duration | None = Field(
        default=None,
        description="time to start in, when failures do not count (1m, 90s or whole seconds); default: the runtime's",
        examples=["1m"],
    )
    start_interval: Duration | None = Field(
        default=None,
        description="the time between checks in the start period (5s, 500ms or whole seconds); default: the runtime's",
        examples=["5s"],
    )
    retries: int | None = Field(
        default=None, description="failures in a row that make the container unhealthy; default: the runtime's"
    )

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
    """The image's runtime config: what a container of it runs, and with what; unset fields keep the base's."""

    env: dict[str, Scalar] = Field(
        default_factory=dict,
        description="environment variables set over the base's; $VAR and ${VAR} expand as Dockerfile ENV does",
        examples=[{"PATH": "/app/bin:${PATH}"}],
    )
    entrypoint: Annotated[list[str], BeforeValidator(_shell_form, json_schema_input_type=str | list[str])] | None = (
        Field(
            default=None,
            description="what a container runs (a string runs through /bin/sh -c); set without cmd, it clears "
            "the base's cmd; default: the base's",
            examples=[["/app/bin/app"]],
        )
    )
    cmd: Annotated[list[str], BeforeValidator(_shell_form, json_schema_input_type=str | list[str])] | None = Field(
        default=None,
        description="the default arguments of the entrypoint, or the command without one (a string runs through "
        "/bin/sh -c); default: the base's",
        examples=[["--port", "8080"]],
    )
    workdir: str | None = Field(
        default=None, description="the working directory of a container; default: the base's", examples=["/app"]
    )
    user: Owner | str | None = Field(
        default=None,
        description="who a container runs as: uid[:gid] or a user name of the image; default: the base's",
        examples=["2000:2000", "app"],
    )
    exposed_ports: Annotated[
        list[str],
        BeforeValidator(
            lambda v: [str(p) for p in v] if isinstance(v, list) else v, json_schema_input_type=list[str | int]
        ),
    ] = Field(
        default_factory=list,
        description="ports added to the base's (8080, or 8080/tcp, /udp, /sctp; /tcp when none is said)",
        examples=[[8080, "9090/udp"]],
    )
    volumes: StrList = Field(
        default_factory=list, description="folders added to the base's volumes (mount points)", examples=[["/data"]]
    )
    labels: dict[str, Scalar] = Field(
        default_factory=dict,
        description="config labels, over the base's and the generated ones; ${sources.NAME.FIELD} expands",
        examples=[{"org.opencontainers.image.revision": "${sources.app.revision}"}],
    )
    healthcheck: Healthcheck | None = Field(
        default=None, description="how the runtime checks a container still works; default: the base's"
    )
    stop_signal: str | None = Field(
        default=None, description="the signal that stops a container; default: the base's", examples=["SIGINT"]
    )

    @field_validator("exposed_ports")
    @classmethod
    def _ports(cls, value: list[str]) -> list[str]:
        out = []
        for p in value:
            if not re.fullmatch(r"\d{1,5}(/(tcp|udp|sctp))?", p):
                raise ValueError(f"port must look like 8080 or 8080/tcp, got {p!r}")
            out.append(p if "/" in p else p + "/tcp")
        return out
