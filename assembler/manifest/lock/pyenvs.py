"""The Python environments a manifest's image ends with, and its compile steps': for each,
the sets installed into it in layer order. ``assemble lock`` resolves each environment as
one whole (:mod:`assembler.python.env`), so no set is pinned against a guess of what
lies below it; each set's pins in the lock are its slice of that one resolution.

A set goes into the Python of its version (``python3.12``) unless it names another
``environment:`` (a venv's path); a ``pip:`` layer's wheels go into the image's Python of its
``python:``. A compile step is a container of its own: its environments are apart from the
image's.

Members are of three kinds: ``set`` (a ``python_sets:`` entry: ``no_deps``, ``force`` and
``provided`` say how the commands install it), ``wheels`` (a ``locked: true`` ``pip:``
layer: exact pins whose hashes the lock gives) and ``pinned`` (a ``pip:`` layer that pins
its own hashes). Wheels are unpacked without their dependencies, so what they require must
come from another member: the resolution checks it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from assembler.errors import InputError
from assembler.manifest.schema import model as m
from assembler.manifest.schema.pysets import PythonSet
from assembler.manifest.schema.setuses import SetUse, layer_name, set_key, used_steps


@dataclass(frozen=True)
class Member:
    """One set of an environment: where it is, what it is, how it is installed."""

    where: str  # STEP:SET, layers.NAME:SET, layers.NAME:wheels
    pyset: PythonSet
    kind: str  # set | wheels | closure | pinned (prebuilt.Installs.kind)
    definition: Mapping[str, object]  # the set's own (PythonSet.definition, and its kind)

    @property
    def digest(self) -> str:
        return set_key(self.definition)


@dataclass(frozen=True)
class Environment:
    """A Python environment and the members installed into it, in order."""

    name: str  # "image python3.12", "image /opt/venv", "step wheel python3.12"
    python: str
    platform: str  # uv's --python-platform
    members: tuple[Member, ...]
    as_of: Mapping[str, object] | None

    def definition(self) -> dict[str, object]:
        """What its resolution depends on: its key in a lock (its name is not)."""
        return {
            "python": self.python,
            "platform": self.platform,
            "as_of": dict(self.as_of) if self.as_of else None,
            "members": [member.digest for member in self.members],
        }

    def exact_releases(self) -> list[tuple[str, str, str]]:
        """(index, name, version) of every ``name==version`` its members require, sorted: the
        releases it names exactly (its date when none is given), the index each member's first
        (a build's local label left out: ``torch==2.9.0+cu129`` is release 2.9.0)."""
        from packaging.requirements import InvalidRequirement, Requirement

        out = set()
        for member in self.members:
            for text in member.pyset.requirements:
                try:
                    req = Requirement(text)
                except InvalidRequirement:
                    continue
                pins = [s.version for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
                if len(pins) == 1:
                    out.add((member.pyset.indexes()[0], req.name, pins[0].split("+", 1)[0]))
        return sorted(out)

    @property
    def key(self) -> str:
        return set_key(self.definition())

    def uses(self) -> list[SetUse]:
        """The members the lock holds (sets and locked wheels), each keyed with the environment."""
        out = []
        for member in self.members:
            if member.kind == "pinned":
                continue
            definition = {**member.definition, "environment": self.key}
            out.append(SetUse(member.where, member.pyset, definition, set_key(definition), self.key))
        return out


def environments(manifest: m.Manifest, platform: str) -> list[Environment]:
    """Every Python environment of the compile steps the image uses, then the image's, each
    with its members in the order they are installed. InputError for a set whose platform
    is unknown or an environment whose sets name two Pythons."""
    as_of = manifest.resolve_as_of.definition() if manifest.resolve_as_of else None
    groups: dict[str, list[Member]] = {}
    used = used_steps(manifest)
    for step in manifest.compile:
        if step.name in used:
            for pyset in step.python_sets:
                name = f"step {step.name} {pyset.environment or 'python' + pyset.python}"
                groups.setdefault(name, []).append(_member(f"{step.name}:{pyset.name}", pyset, "set", platform))
    for i, layer in enumerate(manifest.image.layers):  # each kind says what it installs
        for inst in layer.installs():
            member = _member(f"{layer_name(layer, i)}:{inst.pyset.name}", inst.pyset, inst.kind, platform)
            groups.setdefault(f"image {inst.environment}", []).append(member)
    return [_environment(name, members, as_of) for name, members in groups.items()]


def _member(where: str, pyset: PythonSet, kind: str, platform: str) -> Member:
    try:
        definition = pyset.definition(platform)
    except ValueError as e:
        raise InputError(f"python set {where}: {e}") from None
    if kind != "set":
        definition = {**definition, "kind": kind}
    return Member(where, pyset, kind, definition)


def _environment(name: str, members: Sequence[Member], as_of: Mapping[str, object] | None) -> Environment:
    pythons = sorted({str(member.definition["python"]) for member in members})
    platforms = sorted({str(member.definition["platform"]) for member in members})
    if len(pythons) > 1 or len(platforms) > 1:
        wheres = ", ".join(f"{member.where} ({member.definition['python']})" for member in members)
        raise InputError(
            f"python environment {name} is given sets for more than one Python or platform: {wheres}",
            hint="one environment has one interpreter: name the others' environment: (a venv's path)",
        )
    return Environment(name, pythons[0], platforms[0], tuple(members), as_of)


def set_uses(manifest: m.Manifest, platform: str) -> list[SetUse]:
    """Every set the lock holds for ``manifest`` (its environments' members), in order."""
    return [use for env in environments(manifest, platform) for use in env.uses()]
