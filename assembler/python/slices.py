"""One environment's resolution cut into its members' slices: what each set brings (its
requirements and all they need, as uv's ``# via`` annotations tell), and the distributions
no member installs (what a ``pip:`` layer's wheels require and nothing else brings: they
are unpacked without their dependencies)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from assembler.manifest.lock.pyenvs import Member
from assembler.python.resolve import Pinned


def requirement_names(requirements: Sequence[str]) -> list[str]:
    """The canonical names of ``requirements`` (PEP 508 lines)."""
    out: list[str] = []
    for text in requirements:
        try:
            out.append(canonicalize_name(Requirement(text).name))
        except InvalidRequirement:
            found = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", text)
            if found:
                out.append(canonicalize_name(found.group(1)))
    return out


@dataclass(frozen=True)
class Graph:
    """A resolution's pins (in uv's order) and who requires whom."""

    pins: Sequence[Pinned]

    def by_name(self) -> dict[str, Pinned]:
        return {pin.name: pin for pin in self.pins}

    def versions(self) -> dict[str, str]:
        """name -> version of every ``==`` pin."""
        return {p.name: p.pin.split("==", 1)[1] for p in self.pins if "==" in p.pin}

    def roots(self, index: int) -> set[str]:
        """What requirement file ``m{index}.in`` names, as resolved."""
        mark = f"-r m{index}.in"
        return {pin.name for pin in self.pins if mark in pin.via}

    def closure(self, roots: Collection[str]) -> set[str]:
        """``roots`` and everything they require, down to the leaves."""
        children: dict[str, set[str]] = {}
        for pin in self.pins:
            for parent in pin.via:
                if not parent.startswith("-"):
                    children.setdefault(parent, set()).add(pin.name)
        seen = set(roots)
        todo = list(roots)
        while todo:
            for child in children.get(todo.pop(), ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return seen

    def text(self, names: Collection[str]) -> str:
        """The pins of ``names`` in requirements form, in uv's order."""
        return "".join(pin.text() for pin in self.pins if pin.name in names)


def installed_by(member: Member, graph: Graph, index: int) -> set[str]:
    """What a member's commands put into the environment: a set's resolution (its
    ``installs`` globs of it), a ``pip:`` layer's wheels alone (with ``deps: true``, with
    everything they require)."""
    roots = graph.roots(index)
    if member.kind == "closure":
        return graph.closure(roots)
    if member.kind != "set":
        return roots
    globs = [canonicalize_name(g) if not any(c in g for c in "*?[") else g.lower() for g in member.pyset.installs]
    return {name for name in graph.closure(roots) if any(fnmatch.fnmatchcase(name, g) for g in globs)}


def missing(
    members: Sequence[Member], graph: Graph, fixed: Collection[str], unknown: Collection[str]
) -> dict[str, list[str]]:
    """name -> the distributions that require it, of every distribution the resolution holds
    that no member installs (``fixed``: what the base or a ``--no-deps`` install put there)."""
    installed = set(fixed) | set(unknown)
    for index, member in enumerate(members):
        installed |= installed_by(member, graph, index)
    out: dict[str, list[str]] = {}
    for pin in graph.pins:
        if pin.name not in installed:
            out[pin.name] = sorted(v for v in pin.via if not v.startswith("-"))
    return out


def missing_message(found: Mapping[str, Sequence[str]], members: Sequence[Member], graph: Graph) -> str:
    """What no member installs, and the wheels whose requirements bring it."""
    pins = graph.by_name()
    wheels = [(i, m) for i, m in enumerate(members) if m.kind != "set"]
    parts = []
    for name, parents in sorted(found.items()):
        owners = [m.where for i, m in wheels if name in graph.closure(graph.roots(i))]
        needed = ", ".join(pins[p].pin for p in parents if p in pins) or "?"
        parts.append(f"{name} (required by {needed}; {', '.join(owners) or 'a set whose installs leave it out'})")
    return (
        "distributions no layer installs: "
        + "; ".join(parts)
        + ": a pip: layer unpacks its wheels without their dependencies (add them to it, or to a set below)"
    )


def kept_hashes(text: str, hashes: Mapping[str, Sequence[str]]) -> tuple[str, str | None]:
    """A slice's pins with, for each name in ``hashes``, only the files of those sha256s
    (what a requirements file's ``--hash`` options allow); why not, where a pin keeps none."""
    from assembler.manifest.lock.file import Entry

    wanted: dict[str, set[str]] = {canonicalize_name(k): set(v) for k, v in hashes.items()}
    for name, _, version, shas in Entry({}, text).pinned():
        if name in wanted and not wanted[name] & set(shas):
            given = ", ".join(f"sha256:{h[:12]}..." for h in sorted(wanted[name]))
            return text, f"{name}=={version}: none of its files has a hash the set gives ({given})"
    lines: list[str] = []
    current: str | None = None
    for line in text.splitlines():
        found = re.match(r"\s*--hash=sha256:([0-9a-f]{64})", line)
        if not line[:1].isspace() and line.strip() and not line.startswith("#"):
            current = canonicalize_name(re.split(r"[=@ \[;]", line, maxsplit=1)[0])
        if found and current in wanted and found.group(1) not in wanted[current]:
            continue
        lines.append(line)
    # a continuation left before what is no longer a hash ends where it is
    for i, line in enumerate(lines):
        after = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.endswith(" \\") and not after.startswith("--hash="):
            lines[i] = line[: -len(" \\")]
    return "".join(f"{line}\n" for line in lines), None
