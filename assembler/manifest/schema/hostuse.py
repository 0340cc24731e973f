"""``reaches:`` of a step or a run layer: what its commands do with a host, beyond what
``plan`` reads in them (:mod:`assembler.manifest.hosts.reach`).

A build checks before its first long step that every host it will reach answers
(:mod:`assembler.pipeline.checks.preflight`), and stops naming the host, the steps that need it and
what avoids it. What avoids a host is the manifest's to say, beside the step::

    - run: [curl -fsSL -o /tmp/k.deb https://developer.download.nvidia.com/...]
      name: cuda-jit
      when: {cuda_jit: "true"}
      reaches:
        developer.download.nvidia.com: {avoid: {cuda_jit: "false"}}

``avoid``: the ``--set K=V`` that leave the step out. ``only``: the commands reach the host
only sometimes (why: "Ubuntu bases only"); such a host that does not answer is a warning,
not a stop. A host named here that the commands do not show (a script in a source that
downloads) is added to what the step reaches.
"""

from __future__ import annotations

from pydantic import Field

from assembler.manifest.schema.fields import Scalar, Strict


class HostUse(Strict):
    """What a step's commands do with one host."""

    avoid: dict[str, Scalar] = Field(
        default_factory=dict, description="params (--set K=V) that leave this step out, and so this host"
    )
    only: str | None = Field(
        default=None,
        description="the commands reach this host only sometimes (why, e.g. 'Ubuntu bases only'): a build that "
        "cannot reach it warns instead of stopping",
    )


HostUses = dict[str, HostUse]
REACHES_DESCRIPTION = (
    "hosts the commands reach, by name (host or host:port): what avoids each (avoid: --set K=V) or that they "
    "reach it only sometimes (only:); plan finds URLs and package tools (pip, uv, cargo, go, npm, apt) itself"
)
