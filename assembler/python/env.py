"""One Python environment resolved as one whole, for ``assemble lock``.

Every set installed into an environment (:mod:`assembler.manifest.lock.pyenvs`) goes into one
``uv pip compile``, so no set is pinned against a partial picture of what lies below it;
each set's pins are its slice of that resolution (:mod:`assembler.python.slices`).
Upstream's commands are honoured: a ``--no-deps`` set is resolved alone and then stands in
the environment at that version with nothing of its own (as pip leaves it), a ``force``
set's exact pins override what the others require (``--force-reinstall``), what a base
``provided`` is fixed, a ``version_of`` requirement takes its leader's resolved version.
An environment with no resolution is an error naming the two sets that clash (found by
halving the members) and uv's reason, which names the requirements.

Indexes this machine cannot reach are replaced by PyPI's build of the same release
(:mod:`assembler.python.standin`); a set whose requirement PyPI does not serve at all is
left unresolved, with why, and the rest of the environment is resolved without it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assembler.manifest.lock.pyenvs import Environment, Member
from assembler.proc import Runner
from assembler.python.resolve import Pinned, Query, Unsatisfiable, compile_query
from assembler.python.slices import Graph, missing, missing_message, requirement_names
from assembler.python.standin import PYPI, index_flavour, pins_flavour, unknown_between


@dataclass(frozen=True)
class MemberResult:
    """A member's slice (requirements text with hashes), or why it has none."""

    pins: str | None
    unresolved: str | None = None
    stand_in: tuple[str, ...] = ()  # names pinned from a stand-in's metadata


@dataclass(frozen=True)
class EnvResult:
    """What resolving an environment gave: each member's slice by its digest, or the error."""

    members: Mapping[str, MemberResult] = field(default_factory=dict)
    error: str | None = None
    unknown: tuple[str, ...] = ()
    stand_ins: tuple[str, ...] = ()  # "INDEX: why" of each index PyPI stood in for


@dataclass(frozen=True)
class Options:
    """How to resolve: as of when, what the lock had (uv's preferences), what may move."""

    exclude_newer: str | None = None
    exclude_newer_packages: Mapping[str, str] = field(default_factory=dict)
    prefer: str | None = None
    upgrade: bool = False
    upgrade_packages: Sequence[str] = ()


class _Run:
    """One environment's resolution under way: its reachable indexes and fresh work folders."""

    def __init__(self, env: Environment, options: Options, runner: Runner, work: Path) -> None:
        from assembler.fetch.pinned import unreachable  # requests, only when resolving

        self.env, self.options, self.runner, self.work = env, options, runner, work
        every = [i for member in env.members for i in member.pyset.indexes()]
        self.unreachable = {i: why for i in dict.fromkeys(every) if (why := unreachable(i)) is not None}
        self.runs = 0
        self.dropped: dict[str, list[str]] = {}  # member digest -> its requirements no index here serves
        self.unfetched: dict[str, str] = {}  # a direct reference's requirement -> why its host is not reached

    def indexes(self, members: Sequence[Member]) -> list[str]:
        out = [i for m in members for i in self.member_indexes(m)]
        return list(dict.fromkeys(out)) or [PYPI]

    def member_indexes(self, member: Member) -> list[str]:
        kept = [i for i in member.pyset.indexes() if i not in self.unreachable]
        return kept or [PYPI]

    def stands_in(self, member: Member) -> bool:
        return any(i in self.unreachable for i in member.pyset.indexes())

    def requirements(self, member: Member) -> list[str]:
        """A member's requirements; where PyPI stands in, a build's local label left out
        (``torchvision==0.22.0+cu128`` is PyPI's 0.22.0: the same release, another build)."""
        dropped = self.dropped.get(member.digest, [])
        if not self.stands_in(member):
            return [r for r in member.pyset.requirements if r not in dropped]
        return [_LOCAL.sub(r"\1", r) for r in member.pyset.requirements if r not in dropped]

    def drop_unserved(self, members: Sequence[Member], reason: str) -> bool:
        """Leave out of the members needing an unreachable index the requirements uv's
        ``reason`` says no index here serves; whether there were any."""
        names = {requirement_names([found])[0] for pattern in _GONE for found in pattern.findall(reason)}
        found = False
        for member in members:
            if not self.stands_in(member):
                continue
            for text, name in zip(member.pyset.requirements, requirement_names(member.pyset.requirements), strict=True):
                if name in names and text not in self.dropped.get(member.digest, []):
                    self.dropped.setdefault(member.digest, []).append(text)
                    found = True
        return found

    def drop_unfetched(self, members: Sequence[Member], reason: str) -> bool:
        """Leave out the direct reference (``name @ URL``) uv's ``reason`` could not download
        when its host cannot be reached from here (a release wheel on GitHub): it is not
        locked, with why, and the rest resolves; whether there was one."""
        from assembler.fetch.pinned import unreachable

        found = _UNFETCHED.search(reason)
        if found is None:
            return False
        url = found.group(1) or found.group(2)
        host = re.match(r"^[a-z]+://[^/]+/", url)
        why = unreachable(host.group(0)) if host else None
        if why is None:
            return False
        done = False
        for member in members:
            for text in member.pyset.requirements:
                if url in text and text not in self.dropped.get(member.digest, []):
                    self.dropped.setdefault(member.digest, []).append(text)
                    self.unfetched[text] = f"{host.group(0) if host else url} ({why})"
                    done = True
        return done

    def unresolved(self, member: Member) -> str | None:
        """Why some of a member's requirements are not in the lock (None: all are)."""
        dropped = self.dropped.get(member.digest)
        if not dropped:
            return None
        said = []
        fetched = [t for t in dropped if t in self.unfetched]
        if fetched:
            hosts = sorted({self.unfetched[t] for t in fetched})
            said.append(f"{', '.join(fetched)}: {', '.join(hosts)} cannot be reached from here")
        served = [t for t in dropped if t not in self.unfetched]
        if served:
            gone = [f"{i} ({self.unreachable[i]})" for i in member.pyset.indexes() if i in self.unreachable]
            said.append(
                f"{', '.join(served)}: index {', '.join(gone)} cannot be reached from here, "
                "and PyPI serves no stand-in for it"
            )
        return "; ".join(said)

    def compile(self, members: Sequence[Member], **extra: object) -> list[Pinned]:
        self.runs += 1
        query = Query(
            files=[self.requirements(m) for m in members],
            python=self.env.python,
            platform=self.env.platform,
            indexes=self.indexes(members),
            constraints=sorted({c for m in members for c in m.pyset.constraints}),
            exclude_newer=self.options.exclude_newer,
            exclude_newer_packages=self.options.exclude_newer_packages,
            prefer=self.options.prefer,
            upgrade=self.options.upgrade,
            upgrade_packages=self.options.upgrade_packages,
            **extra,  # type: ignore[arg-type]
        )
        return compile_query(query, runner=self.runner, work=self.work / f"run{self.runs}")


def resolve_environment(env: Environment, *, options: Options, runner: Runner, work: Path) -> EnvResult:
    """Resolve ``env`` as one whole (work files under ``work``). An environment that cannot be
    resolved is an EnvResult with ``error``; nothing here raises for it."""
    run = _Run(env, options, runner, work)
    results: dict[str, MemberResult] = {}
    fixed = _provided(env.members)
    for member in env.members:
        if member.pyset.no_deps:
            error = _no_deps(run, member, results, fixed)
            if error:
                return EnvResult(error=error)
    members = [m for m in env.members if not m.pyset.no_deps]
    overrides = [r for m in members if m.pyset.force for r in m.pyset.requirements]
    pins: list[Pinned] = []
    while members:
        try:
            pins = run.compile(members, fixed=fixed, overrides=overrides)
            break
        except Unsatisfiable as e:
            if not (run.drop_unserved(members, e.reason) or run.drop_unfetched(members, e.reason)):
                return EnvResult(error=_clash(run, members, fixed, overrides, e.reason))
        for member in members:
            if not run.requirements(member):
                results[member.digest] = MemberResult(None, run.unresolved(member))
        members = [m for m in members if run.requirements(m)]
    followed = _follow(run, members, pins, fixed, overrides)
    if isinstance(followed, str):
        return EnvResult(error=f"python environment {env.name}: {followed}")
    pins, overrides = followed
    graph, unknown = _flavoured(run, members, Graph(pins), fixed, overrides)
    lost = missing(members, graph, fixed, unknown)
    if lost:
        return EnvResult(error=f"python environment {env.name}: {missing_message(lost, members, graph)}")
    for index, member in enumerate(members):
        # what a set further up installs over the others' pins is not this one's: here it
        # installs what it requires at this point (torch's cuDNN, before the cuDNN layer's);
        # a pin forced again further up, as it was forced here already, stays this one's too
        forced = {r for m in members[: index + 1] if m.pyset.force for r in m.pyset.requirements}
        later = {
            name
            for m in members[index + 1 :]
            if m.pyset.force
            for text, name in zip(m.pyset.requirements, requirement_names(m.pyset.requirements), strict=True)
            if text not in forced
        }
        names = graph.closure(graph.roots(index)) - set(unknown) - later
        stand_in = tuple(sorted(names)) if run.stands_in(member) else ()
        results.setdefault(member.digest, MemberResult(graph.text(names), run.unresolved(member), stand_in))
    stand_ins = tuple(f"{i}: {why}" for i, why in sorted(run.unreachable.items()))
    return EnvResult(results, None, tuple(unknown), stand_ins)


def _provided(members: Sequence[Member]) -> dict[str, str]:
    out: dict[str, str] = {}
    for member in members:
        for spec in member.pyset.provided:
            name, version = (part.strip() for part in spec.split("==", 1))
            out.setdefault(requirement_names([name])[0], version)
    return out


def _no_deps(run: _Run, member: Member, results: dict[str, MemberResult], fixed: dict[str, str]) -> str | None:
    """A ``--no-deps`` set resolved alone (each requirement, nothing it requires); its
    versions then fixed in the environment. The error when it cannot be installed."""
    while True:
        try:
            pins = run.compile([member], no_deps=True)
            break
        except Unsatisfiable as e:
            if not (run.drop_unserved([member], e.reason) or run.drop_unfetched([member], e.reason)):
                return f"python environment {run.env.name}: python set {member.where} cannot be installed: {e.reason}"
        if not run.requirements(member):
            results[member.digest] = MemberResult(None, run.unresolved(member))
            return None
    graph = Graph(pins)
    stand_in = tuple(sorted(graph.versions())) if run.stands_in(member) else ()
    results[member.digest] = MemberResult(graph.text(graph.versions()), run.unresolved(member), stand_in)
    for name, version in graph.versions().items():
        fixed.setdefault(name, version)
    return None


_LOCAL = re.compile(r"(===?\s*[A-Za-z0-9.!_-]+)\+[A-Za-z0-9.]+")
# uv's first line names the requirement; where its explanation is longer than the lines kept
# (resolve._reason), the cause that names the URL is the first one left
_UNFETCHED = re.compile(
    r"Failed to download `[A-Za-z0-9][A-Za-z0-9._-]* @ (\S+?)`|Failed to fetch: `?([a-z]+://[^\s`]+)"
)
_GONE = (
    re.compile(r"\b([A-Za-z0-9][A-Za-z0-9._-]*) was not found in the package regist"),
    re.compile(r"\bthere (?:are|is) no versions? of ([A-Za-z0-9][A-Za-z0-9._-]*)"),
)


def _follow(
    run: _Run, members: Sequence[Member], pins: list[Pinned], fixed: Mapping[str, str], overrides: list[str]
) -> tuple[list[Pinned], list[str]] | str:
    """The resolution again with each ``version_of`` requirement at its leader's version (and
    the overrides that did it), or why it cannot be."""
    followed = _followed(run, members, Graph(pins))
    if isinstance(followed, str):
        return followed
    if not followed:
        return pins, overrides
    overrides = [*overrides, *followed]
    try:
        return run.compile(members, fixed=fixed, overrides=overrides), overrides
    except Unsatisfiable as e:
        return f"{', '.join(followed)}: {e.reason}"


def _followed(run: _Run, members: Sequence[Member], graph: Graph) -> list[str] | str:
    """``name==version`` of each ``version_of`` requirement at its leader's resolved version
    (uv overrides, so the follower resolves to exactly that), or why one has no leader."""
    versions = graph.versions()
    out: list[str] = []
    for member in members:
        kept = set(requirement_names(run.requirements(member)))
        for follower, leader in member.pyset.version_of.items():
            name, lead = requirement_names([follower, leader])
            if name not in kept:
                continue  # left unresolved (no index here serves it): nothing to follow
            if lead not in versions:
                return (
                    f"python set {member.where}: {name} takes {lead}'s version, and nothing in the environment "
                    f"installs {lead}"
                )
            out.append(f"{name}=={versions[lead]}")
    return out


def _flavoured(
    run: _Run, members: Sequence[Member], graph: Graph, fixed: Mapping[str, str], overrides: Sequence[str]
) -> tuple[Graph, list[str]]:
    """The resolution again with the pins that differ between the stand-in's CUDA flavour
    and the unreachable index's left free (unknown), when they differ."""
    versions = graph.versions()
    found = pins_flavour(versions)
    wanted = {f for i in run.unreachable if (f := index_flavour(i))}
    if found is None or not wanted:
        return graph, []
    required = {n for m in members for n in requirement_names(m.pyset.requirements)}
    unknown = sorted({n for w in wanted for n in unknown_between(w, found, versions, required)})
    if not unknown:
        return graph, []
    pins = run.compile(members, fixed=fixed, overrides=[*overrides, *unknown])
    return Graph(pins), unknown


def _clash(
    run: _Run, members: Sequence[Member], fixed: Mapping[str, str], overrides: Sequence[str], reason: str
) -> str:
    """Which two members clash (or the one that cannot be installed), by halving: the
    shortest failing prefix ends with one, the shortest failing tail of it starts with the other."""

    def fails(subset: Sequence[Member]) -> str | None:
        try:
            run.compile(subset, fixed=fixed, overrides=overrides)
        except Unsatisfiable as e:
            return e.reason
        return None

    low, high = 0, len(members) - 1
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fails(members[: middle + 1]) else (middle + 1, high)
    last = high
    low, high = 0, last
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fails(members[middle : last + 1]) else (low, middle - 1)
    first, second = members[low], members[last]
    if first is second:
        why = fails([second]) or reason
        return f"python environment {run.env.name}: python set {second.where} cannot be installed: {why}"
    why = fails([first, second]) or reason
    return (
        f"python environment {run.env.name} cannot be resolved: python sets {first.where} "
        f"({' '.join(first.pyset.requirements)}) and {second.where} ({' '.join(second.pyset.requirements)}) "
        f"clash: {why}"
    )
