"""A build's registry step cache (``--cache-to`` / ``--cache-from``): step results (and
bootstrapped bases, ``pip:`` and ``url:`` layers), compile caches and facts read from layers,
entries of the same repositories on the same terms (one reading of the flags, the registry
options and ``--cache-sign`` / ``--cache-trust``). Imported only when a build names one: it
imports the registry client."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from assembler.cache import Origin
from assembler.pipeline.options import CacheOptions, Event, Reporter
from assembler.stepcache.compile import CompileCaches
from assembler.stepcache.facts import RemoteFacts
from assembler.stepcache.repository import CacheRepository
from assembler.stepcache.steps import RemoteStepCache, parse_cache_ref
from assembler.stepcache.trust import Trust
from assembler.transports import Context, registry_options


@dataclass(frozen=True)
class RegistryCaches:
    steps: RemoteStepCache
    folders: CompileCaches
    facts: RemoteFacts

    def counts(self) -> dict[str, int]:
        """What they did so far, as one mapping (``--json``'s ``step_cache``)."""
        return {**self.steps.counts(), **self.facts.counts(), **self.folders.counts()}

    def close(self) -> None:
        self.steps.close()
        self.folders.close()


def open_caches(
    options: CacheOptions, ctx: Context, *, report: Reporter, unchecked: Callable[[Origin], None] = lambda origin: None
) -> RegistryCaches:
    """The registry step caches ``options`` name, reporting through ``report``; facts and
    compile caches taken from an entry are told to ``unchecked`` (which warns of those
    nobody vouched for; step results are the walk's own to tell)."""

    def said(kind: str, fields: Mapping[str, Any]) -> None:
        report(Event(kind, fields))

    target = parse_cache_ref(options.cache_to) if options.cache_to else None
    sources = [parse_cache_ref(s) for s in options.cache_from]
    registry, trust = registry_options(ctx), Trust(options.cache_sign, options.cache_trust)
    repo = CacheRepository(ctx.cache, target=target, sources=sources, options=registry, report=said, trust=trust)
    steps = RemoteStepCache(repo)
    folders = CompileCaches(
        ctx.cache,
        target=target,
        sources=sources,
        options=registry,
        report=said,
        trust=trust,
        max_bytes=options.cache_max,
        unchecked=unchecked,
    )
    return RegistryCaches(steps, folders, RemoteFacts(repo, ctx.cache, unchecked=unchecked))


def plan_steps(options: CacheOptions, ctx: Context) -> RemoteStepCache:
    """The registry step caches a plan reads (never writes); one that cannot be read is a miss."""
    names = [parse_cache_ref(r) for r in (*options.cache_from, options.cache_to) if r]
    trust = Trust(keys=options.cache_trust)
    options_ = registry_options(ctx)
    return RemoteStepCache(
        CacheRepository(ctx.cache, target=None, sources=names, options=options_, report=lambda k, f: None, trust=trust)
    )
