"""One environment into the lock, for ``assemble lock``: kept as the lock has it, or resolved
now (:func:`assembler.python.env.resolve_environment`) as of its manifest's date, with
what the lock had as preferences; each of its sets then gets its slice. What the command
asks (``Asked``) and what was done to each set (``Locked``) are :mod:`.lockreport`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from assembler.manifest.facts.basepython import Held
from assembler.manifest.lock.file import Entry, EnvEntry, Lock
from assembler.manifest.lock.pyenvs import Environment
from assembler.manifest.schema.pysets import as_of_rule
from assembler.manifest.schema.setuses import SetUse, set_key
from assembler.manifest.text.urls import scrubbed
from assembler.pipeline.lock.lockreport import Asked, Locked
from assembler.proc import Runner
from assembler.python.env import EnvResult, Options, resolve_environment
from assembler.python.held import canonical, preferences, preferred_text
from assembler.python.slices import kept_hashes
from assembler.python.standin import PYPI

_END_OF_DAY = "T23:59:59Z"  # a date as of its end, in UTC: the same cut on every machine


class EnvLocker:
    """Environments into ``lock``, each once a run, kept from ``old`` where nothing asks to move."""

    def __init__(self, old: Lock, lock: Lock, *, runner: Runner, asked: Asked, work: Path) -> None:
        self.old, self.lock, self.runner, self.asked, self.work = old, lock, runner, asked, work
        self.done: dict[str, str] = {}  # environment key -> kept | resolved

    def lock_env(
        self,
        env: Environment,
        variant: str,
        entries: dict[str, str],
        held_of: Callable[[Sequence[SetUse]], Held | None] = lambda uses: None,
    ) -> list[Locked]:
        """``env``'s sets into the lock and ``entries`` (where -> key); what was done to each.
        ``held_of``: what the Python its sets install into holds (:mod:`.heldpython`)."""
        uses = env.uses()
        for use in uses:
            entries[use.where] = use.key
        if env.key not in self.done:
            kept = self._keep(env, uses)
            self.done[env.key] = "kept" if kept else self._resolve(env, uses, variant, held_of(uses))
        found = self.lock.environments[env.key]
        said = {
            "environment": env.name,
            "as_of": f"{found.resolved_as_of} ({as_of_rule(env.as_of, found.resolved_as_of)})",
        }
        report = []
        for use in uses:
            entry = self.lock.sets[use.key]
            count = len(entry.constraints())
            if found.error:
                report.append(Locked(variant, use.where, use.key, "unresolvable", 0, found.error, **said))
            elif entry.pins is None or entry.unresolved:
                report.append(Locked(variant, use.where, use.key, "unresolved", count, entry.unresolved or "", **said))
            else:
                state = "stand-in" if entry.stand_in and self.done[env.key] != "kept" else self.done[env.key]
                report.append(Locked(variant, use.where, use.key, state, count, "", **said))
        return report

    def _keep(self, env: Environment, uses: list[SetUse]) -> bool:
        """Whether the lock's entries for ``env`` stay (copied into the new lock when they do)."""
        kept = self.old.environments.get(env.key)
        entries = [self.old.sets.get(use.key) for use in uses]
        if kept is None or any(e is None for e in entries) or self.asked.upgrade:
            return False
        if kept.resolved_as_of is None:
            return False  # locked before each resolution recorded its date: as of which day, unknown
        if not env.as_of and kept.resolved_as_of.endswith(_END_OF_DAY):
            # resolved as of its newest pin's day, the rule before `newest-pin` had to be asked
            # for: resolved again as of now, its pins as preferences (as `uv lock` keeps its
            # lock's), so the date it records is the rule it was resolved by; --upgrade moves them
            return False
        names = {n for e in entries if e is not None for n in e.constraints()}
        if any(p.lower().replace("_", "-") in names for p in self.asked.upgrade_packages):
            return False
        failed = kept.error is not None or any(e is not None and (e.pins is None or e.unresolved) for e in entries)
        if failed and self.asked.retry:
            return False
        self.lock.environments[env.key] = kept
        for use, entry in zip(uses, entries, strict=True):
            assert entry is not None
            self.lock.sets[use.key] = entry
        return True

    def _resolve(self, env: Environment, uses: list[SetUse], variant: str, held: Held | None) -> str:
        # What the base holds is kept where the sets allow it, as pip without -U keeps it:
        # uv's preferences, which neither --upgrade nor --upgrade-package may move.
        kept = preferences(held, uses)
        previous = None if self.asked.upgrade else self._previous(uses, variant)
        # and is there whatever the environment's date: a version the base holds that came
        # later than the date is taken as of its own day (as an exact pin is)
        as_of = None if self.asked.upgrade else _as_of(env)
        dates = (
            {}
            if as_of is None
            else {**_held_dates(env, kept, as_of), **_exact_dates(env, as_of), **_package_dates(env)}
        )
        options = Options(
            exclude_newer=as_of,
            exclude_newer_packages=dates,
            prefer=preferred_text(kept, previous),
            upgrade=self.asked.upgrade and not kept,
            upgrade_packages=[p for p in self.asked.upgrade_packages if canonical(p) not in kept],
        )
        work = self.work / env.key[:16]
        got = resolve_environment(env, options=options, runner=self.runner, work=work)
        # the date resolved as of; without one (--upgrade, no release named), the moment it was
        # resolved: an entry with none was written before dates were recorded
        as_of = options.exclude_newer or _now()
        said = _held_said(held, kept, got)
        members = [m for m in env.members if m.kind != "pinned"]
        made = [_entry(use, got, set_key(member.definition)) for use, member in zip(uses, members, strict=True)]
        # a requirements file's --hash that no file of the resolved version has: the environment
        # is not locked as the file says (an error, as a clash is)
        error = got.error or next((f"{u.where}: {why}" for u, (_, why) in zip(uses, made, strict=True) if why), None)
        stand_ins = tuple(scrubbed(s) for s in got.stand_ins)  # "INDEX: why": the index as recorded
        self.lock.environments[env.key] = EnvEntry(
            env.definition(), as_of, _recorded(error), got.unknown, stand_ins, said
        )
        for use, (entry, _) in zip(uses, made, strict=True):
            self.lock.sets[use.key] = entry
        return "resolved"

    def _previous(self, uses: list[SetUse], variant: str) -> str | None:
        """The pins these places had (uv's preferences), one line a name."""
        texts = []
        for use in uses:
            entry = self.old.sets.get(use.key)
            if entry is None:
                key = self.old.variants.get(variant, {}).get(use.where)
                entry = self.old.sets.get(key) if key else None
            if entry is not None and entry.pins:
                texts.append(entry.pins)
        seen: dict[str, str] = {}
        for text in texts:
            for name, pin in Entry({}, text).constraints().items():
                seen.setdefault(name, pin)
        return "".join(f"{pin}\n" for pin in seen.values()) or None


def _held_said(held: Held | None, kept: Mapping[str, str], got: EnvResult) -> tuple[str, ...]:
    """What of the base's Python the resolution kept (name==version), after where it was read."""
    if held is None or not kept or got.error:
        return ()
    pinned: dict[str, str] = {}
    for result in got.members.values():
        pinned.update(Entry({}, result.pins).constraints() if result.pins else {})
    same = [f"{name}=={version}" for name, version in sorted(kept.items()) if pinned.get(name) == f"{name}=={version}"]
    return (f"from: {held.source}", *same) if same else ()


def _entry(use: SetUse, got: EnvResult, digest: str) -> tuple[Entry, str | None]:
    """The lock's entry of one set, and why its pins cannot keep the hashes it gives."""
    if got.error:
        return Entry(use.definition), None
    result = got.members[digest]
    pins = result.pins
    # a pin a stand-in gave has PyPI's files, not the set's index's: its hashes wait for that index
    hashes = {k: v for k, v in use.pyset.hashes.items() if canonical(k) not in result.stand_in}
    if pins and hashes:
        pins, why = kept_hashes(pins, hashes)
        if why is not None:
            return Entry(use.definition), why
    return Entry(use.definition, _recorded(pins), _recorded(result.unresolved), result.stand_in), None


def _recorded(text: str | None) -> str | None:
    """A text the lock keeps (uv's pins, a reason naming an index or a ``name @ URL``, the
    lock's messages said from it) with its URLs as recorded: no credentials."""
    return scrubbed(text) if text else text


def _now() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_of(env: Environment) -> str | None:
    """uv's ``--exclude-newer`` for the environment's date (the end of its day, UTC): the
    manifest's ``resolve_as_of``. Without one, None: the newest versions the sets allow
    today, as uv, poetry and pip-tools lock. ``newest-pin``: the day the newest release it
    names exactly was published (upstream wrote its pins no earlier; what it left floating is
    taken as of then, not as of today), None when it names no release an index dates."""
    if not env.as_of:
        return None
    if env.as_of.get("newest_pin"):
        days = [d for index, name, version in env.exact_releases() if (d := _dated(index, name, version))]
        return f"{max(days)}{_END_OF_DAY}" if days else None
    date = env.as_of.get("date")
    if date is None:
        index = env.members[0].pyset.indexes()[0] if env.members else PYPI
        date = _release_day(index, str(env.as_of["release"]))
    return f"{date}{_END_OF_DAY}"


@functools.cache
def _release_day(index: str, release: str) -> str:
    """The day ``index`` (the environment's first: where the release comes from) published it."""
    from assembler.python.index import release_day  # the index client, only for a release's date

    name, _, version = release.partition("==")
    return release_day(index, name, version)


def _dated(index: str, name: str, version: str) -> str | None:
    """The day ``index`` published the release, else PyPI; None where neither dates it."""
    from assembler.errors import AssemblerError
    from assembler.fetch.pinned import unreachable  # asked once a process

    for where in dict.fromkeys((index, PYPI)):
        if unreachable(where) is not None:
            continue
        try:
            return _release_day(where, f"{name}=={version}")
        except AssemblerError:
            continue
    return None


def _held_dates(env: Environment, kept: Mapping[str, str], as_of: str) -> dict[str, str]:
    """The day of each version the base holds that is newer than the environment's date (a
    base built after the releases its sets name): its own, so that the resolver may keep
    it; what replaces one that does not satisfy the sets stays as of the date."""
    index = env.members[0].pyset.indexes()[0] if env.members else PYPI
    out: dict[str, str] = {}
    for name, version in kept.items():
        day = _dated(index, name, version)
        if day is not None and f"{day}{_END_OF_DAY}" > as_of:
            out[name] = f"{day}{_END_OF_DAY}"
    return out


def _exact_dates(env: Environment, as_of: str) -> dict[str, str]:
    """The day of each release an environment with a date of its own (``resolve_as_of``)
    names exactly and that is newer than that date: a tool pinned in it (an installer's uv)
    is taken as of its own release, as its pin says, not refused as newer than the stack's.
    (With ``newest-pin`` the date is the newest of these days already.)"""
    if not env.as_of or env.as_of.get("newest_pin"):
        return {}
    out: dict[str, str] = {}
    for index, name, version in env.exact_releases():
        day = _dated(index, name, version)
        if day is not None and f"{day}{_END_OF_DAY}" > as_of:
            out[canonical(name)] = f"{day}{_END_OF_DAY}"
    return out


def _package_dates(env: Environment) -> Mapping[str, str]:
    packages = env.as_of.get("packages") if env.as_of else None
    return {str(k): f"{v}{_END_OF_DAY}" for k, v in (packages or {}).items()}  # type: ignore[attr-defined]
