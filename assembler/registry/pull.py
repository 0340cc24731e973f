"""Pulls as registries.conf routes them: a name's mirrors in order, then its location
(part of the registry client; the routing is :mod:`assembler.registry.conf`'s).

Each source gets its own :class:`~assembler.registry.client.Registry`, over plain HTTP
where that source (the mirror, or the location's table) is ``insecure``; the first that
reads without an error wins and the image is read whole from it. A source that fails,
whatever the reason (not there, a 401, unreachable, bytes that do not match), is logged
and the next one tried; when all fail, the error lists every source's failure, and a
location that cannot be reached at all adds what to do offline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from assembler.errors import AssemblerError, InputError, NotFound, RegistryError, Unreachable
from assembler.oci.reference import ImageName
from assembler.registry.client import Registry
from assembler.registry.conf import PullSource, RegistriesConf
from assembler.registry.retry import SYSTEM_CLOCK, Clock
from assembler.registry.types import RegistryOptions

log = logging.getLogger(__name__)
T = TypeVar("T")

OFFLINE = "offline? configure a mirror in registries.conf or pass --base NAME=REF"


def first_source(
    name: ImageName,
    options: RegistryOptions,
    read: Callable[[Registry, ImageName], T],
    *,
    progress: Callable[[int], None] | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> T:
    """What ``read`` gets from the first of ``name``'s pull sources that serves it, given
    that source's client (left open: what is read may stream from it) and its name there.

    Raises InputError when registries.conf blocks ``name``; else, when every source
    fails, the last one's kind of error (Unreachable, NotFound, RegistryError...) naming
    them all.
    """
    sources = options.conf.pull_sources(name)
    failures: list[tuple[PullSource, AssemblerError]] = []
    for source in sources:
        # The source's own insecure only: a mirror's never reaches pushes to its host.
        registry = Registry(
            source.name.registry, options=options, progress=progress, clock=clock, insecure=source.insecure
        )
        try:
            result = read(registry, source.name)
        except AssemblerError as e:
            registry.close()
            failures.append((source, e))
            if len(failures) < len(sources):
                log.warning("docker://%s: %s failed, trying the next source: %s", name, source, e)
            continue
        if source.name != name:
            log.info("docker://%s: read from %s", name, source)
        return result
    raise _failed(name, failures, options.conf)


def _failed(name: ImageName, failures: list[tuple[PullSource, AssemblerError]], conf: RegistriesConf) -> AssemblerError:
    """The error when no source served ``name``: the location's own when it was the only
    source, else one that lists every source's failure."""
    last = failures[-1][1]
    if len(failures) == 1:
        if not isinstance(last, Unreachable):
            return last
        message = f"{last.message}: {OFFLINE}"
    else:
        message = f"docker://{name}: no source could be read: " + "; ".join(e.message for _, e in failures)
        if isinstance(last, Unreachable):
            message += f": {OFFLINE}"
    if isinstance(last, Unreachable):
        return Unreachable(message, registry=last.registry, host=last.host, why=last.why, hint=_where(conf))
    if isinstance(last, NotFound):
        return NotFound(message, hint=last.hint)
    if isinstance(last, InputError):
        return InputError(message, hint=last.hint)
    if isinstance(last, RegistryError):
        return RegistryError(message, registry=last.registry, status=last.status, hint=last.hint)
    return RegistryError(message, hint=last.hint)


def _where(conf: RegistriesConf) -> str:
    """Where mirrors are configured, for the hint of a pull that could not reach its registry."""
    if conf.files:
        return f"registries.conf read here: {', '.join(conf.files)} (--registries-conf FILE reads another)"
    return (
        "a [[registry]] table with a [[registry.mirror]] in ~/.config/containers/registries.conf, "
        "/etc/containers/registries.conf or --registries-conf FILE"
    )
