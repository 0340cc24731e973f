"""What the manifest alone says about the steps: which are needed, what each depends on,
and its *definition* digest (what the manifest says about it and what it builds on, not
what it read: it changes exactly when the manifest does). Nothing here reads the cache.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from assembler.cache import key_of
from assembler.compile.keys import NOT_IN_KEY
from assembler.manifest.schema import model as m
from assembler.oci.descriptor import Platform

# A layer's ``when:`` only decides whether it is there: not part of what it is.
NOT_IN_DEFINITION = {"when", "reaches"}  # reaches: which hosts, not what is built (spec.hostuse)


@dataclass(frozen=True)
class StepReport:
    """A compile or runtime step in a Plan (``state`` cached or will-run) or a build
    (cached or built), with the steps and bases it depends on (``depends_on``: ``base:NAME``
    and ``step:NAME``): steps that do not depend on each other can run at the same time."""

    name: str
    kind: str  # compile | runtime
    state: str  # cached | built | will-run
    seconds: float
    key: str | None
    reason: str = ""
    artifacts: tuple[str, ...] = ()
    # What the manifest says the step is (its definition, base and source *specs*, the
    # definitions it depends on), not what it read: changes when the manifest changes.
    definition: str = ""
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerReport:
    index: int
    kind: str
    what: str
    digest: str | None
    size: int | None
    diff_id: str | None
    origin: str  # base | built | cached | will-build
    step: str | None = None  # the step that makes the layer (None: a copy or the base)


@dataclass(frozen=True)
class RuntimeStep:
    """A runtime layer (``run:`` or ``packages:``) as the step that makes it."""

    name: str
    commands: tuple[tuple[str, str], ...]  # (shown, actual)
    definition: Mapping[str, Any]
    what: str
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    user: str = "0:0"
    workdir: str | None = None
    packages: bool = False
    network: bool = True  # false: only the loopback interface


def step_of(man: m.Manifest, name: str) -> m.CompileStep:
    return next(s for s in man.compile if s.name == name)


def artifact_spec(man: m.Manifest, ref: str) -> m.Artifact:
    step, _, name = ref.partition(".")
    return step_of(man, step).artifacts[name]


def needed_steps(man: m.Manifest) -> list[m.CompileStep]:
    """Compile steps the image's layers use, with the steps their inputs need."""
    want: set[str] = set()
    todo: list[str] = []
    for layer in man.image.layers:
        todo += [r.ref.partition(".")[0] for r in layer.step_refs()]
    while todo:
        name = todo.pop()
        if name in want:
            continue
        want.add(name)
        todo += [r.partition(".")[0] for r in step_of(man, name).inputs]
    return [s for s in man.compile if s.name in want]


def packages(man: m.Manifest, names: Sequence[str]) -> list[str]:
    """A packages layer's list, ``from-steps`` replaced by the needed steps' runtime packages."""
    out: list[str] = []
    for name in names:
        if name == "from-steps":
            for step in needed_steps(man):
                out += step.runtime_packages
        else:
            out.append(name)
    return list(dict.fromkeys(out))


def step_names(man: m.Manifest) -> list[str]:
    """The names of the manifest's steps, as ``--rebuild`` takes them: its compile steps
    and its ``run:`` and ``packages:`` layers (named, or ``run-N``/``packages-N`` by place)."""
    names = [s.name for s in man.compile]
    return names + [n for i, spec in enumerate(man.image.layers) if (n := spec.runtime_name(i)) is not None]


def compile_depends(step: m.CompileStep) -> tuple[str, ...]:
    inputs = dict.fromkeys(f"step:{r.partition('.')[0]}" for r in step.inputs)
    return (f"base:{step.base or ''}", *inputs)


class Definitions:
    """Definition digests of the manifest's steps and layers (memoised)."""

    def __init__(self, man: m.Manifest, platform: Platform) -> None:
        self.man = man
        self.platform = platform
        self._steps: dict[str, str] = {}

    def base(self, name: str) -> str:
        spec = self.man.bases[name]
        return key_of({"base": spec if isinstance(spec, str) else spec.model_dump(mode="json")})

    def step(self, step: m.CompileStep) -> str:
        """A digest of what the manifest says about ``step`` and everything it builds on."""
        if step.name not in self._steps:
            self._steps[step.name] = key_of(
                {
                    "step": step.model_dump(mode="json", exclude=NOT_IN_KEY),
                    "base": self.base(step.base or ""),
                    "sources": {n: self.man.sources[n].model_dump(mode="json") for n in step.sources},
                    "inputs": {r: self.step(step_of(self.man, r.partition(".")[0])) for r in step.inputs},
                    "platform": str(self.platform),
                }
            )
        return self._steps[step.name]

    def mounts(self, mounts: Sequence[str]) -> dict[str, str]:
        return {ref: self.step(step_of(self.man, ref.partition(".")[0])) for ref in mounts}

    def runtime(self, definition: Mapping[str, object], chain: str) -> str:
        """A runtime step's: its own, the chain of definitions below it, its mounts'."""
        mounts = definition.get("mounts") or []
        assert isinstance(mounts, list)
        return key_of({"step": dict(definition), "below": chain, "mounts": self.mounts(mounts)})
