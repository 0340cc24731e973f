"""Runtime steps, executed in buildah containers: commands run on the image built so far
(or on a base, to make a compile step's devel image), the agent recording the file
metadata before and exporting what changed after (whiteouts for deletions), leaving
caches, apt lists, logs and ``/tmp`` out. Buildah executes; our tar writer writes every
layer byte. And what every step, compile or runtime, runs with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext

from assembler.compile.apt import package_cache
from assembler.compile.changes import DEFAULT_EXCLUDES
from assembler.compile.container import Workspace, agent_job, container, host_ca, run_commands, step_log
from assembler.compile.mounts import Mounted, mounted_artifacts, secret_files
from assembler.oci.image import Image
from assembler.oci.layer import Layer

# -- reproducibility -------------------------------------------------------------------


# What every step runs with besides (a step's own ``env`` may override it): steps run as
# root in a container made for them, so pip's warning against installing as root is a line
# of noise in every log that pip prints, about nothing the user needs to change.
STEP_ENV = {"PIP_ROOT_USER_ACTION": "ignore"}


def reproducible_env(epoch: int) -> dict[str, str]:
    """The environment every step runs with so that two builds from empty caches agree
    (a step's own ``env`` may override it). docs/concepts/reproducible.md lists per tool
    what these settle and what a step must still do itself (nvcc's ``-objtemp``, pip's
    ``--target``)."""
    return {
        # gcc's __DATE__/__TIME__, wheel zip times, and py_compile: with it set, .pyc
        # files are checked-hash ones instead of embedding the source file's mtime.
        "SOURCE_DATE_EPOCH": str(epoch),
        # The order of sets and frozensets marshalled into .pyc constants, and of any
        # file a Python build script writes from a set or a dict of them.
        "PYTHONHASHSEED": "0",
    }


# -- runtime steps ---------------------------------------------------------------------


def run_runtime_step(
    name: str,
    commands: Sequence[tuple[str, str]],
    *,
    image: Image,
    env: Mapping[str, str],
    mounts: Sequence[Mounted],
    secrets: Sequence[str],
    exclude: Sequence[str],
    keep: Sequence[str],
    ws: Workspace,
    key: str,
    user: str = "0:0",
    workdir: str | None = None,
    packages: bool = False,
    shipped: bool = True,
    network: bool = True,
) -> Layer:
    """Run ``commands`` on ``image`` and return the layer of what they changed (one no
    image holds unless ``shipped``: the readers of image layers need nothing of it)."""
    log_path = step_log(ws.cache, name, key)
    excludes = [p for p in DEFAULT_EXCLUDES if p not in keep and p.rstrip("/*") not in keep] + list(exclude)
    ca_volumes, ca_env = host_ca(ws)
    run_env = {**ca_env, **reproducible_env(ws.epoch), **STEP_ENV, "DEBIAN_FRONTEND": "noninteractive", **env}
    with ws.cache.workdir("runtime-") as work:
        snap = work / "snapshot.json"
        with container(ws, image, name) as cid, secret_files(ws, secrets, name) as (svol, values, pre):
            agent_job(ws, cid, "snapshot", {"out": str(snap), "exclude": excludes}, step=name, what="reading the image")
            with mounted_artifacts(ws, mounts) as mvol, ws.apt_slot() if packages else nullcontext(0) as slot:
                volumes = [*mvol, *ca_volumes, *svol, *(package_cache(ws.cache, slot) if packages else [])]
                run_commands(
                    ws,
                    cid,
                    step=name,
                    commands=commands,
                    env=run_env,
                    volumes=volumes,
                    workdir=workdir,
                    redact=values,
                    prelude=pre,
                    log_path=log_path,
                    user=user,
                    network=network,
                )
                points = [v.container for v in volumes]
            job = {
                "cache": str(ws.cache.root),
                "epoch": ws.epoch,
                "compression": ws.compression,
                "snapshot": str(snap),
                "exclude": excludes,
                "mountpoints": points,
                "shipped": shipped,
            }
            answer = agent_job(ws, cid, "diff", job, step=name, what="reading the changes")
            return Layer.from_json(answer["changes"])
