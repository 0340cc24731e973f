"""Where a manifest says a GPU arch list, for :mod:`.archs` (ROCm's) and :mod:`.cudaarchs`
(CUDA's): what a well-known variable holds in a compile step's or layer's env or the image's
config, what a command sets it to (``TORCH_CUDA_ARCH_LIST="9.0a" pip install ...``, ``cmake
-DAMDGPU_TARGETS=gfx942``), and what a compiler flag names in either (``--offload-arch=``,
``-arch=sm_90``). Each list is named by the params it is made of, as written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from assembler.manifest.facts.scope import params_at, places, raw_text
from assembler.manifest.text.yamlfile import PathKey

if TYPE_CHECKING:
    from assembler.manifest.facts.subject import Subject

_PLACEHOLDER = re.compile(r"\$\{([a-z][a-z0-9_]*)\}")


@dataclass(frozen=True)
class ArchList:
    """One arch list: where it is said, the base it builds on, its text and its params."""

    what: str  # "compile step wheel", "the image's config"
    name: str  # the variable that holds it, or the flag that names it
    path: PathKey
    base: str
    value: str
    params: tuple[str, ...]

    @property
    def tokens(self) -> list[str]:
        """Its archs, shell expansions left out (``$CUDA_DOCKER_ARCH``: said elsewhere)."""
        return [t for t in re.split(r"[;,\s]+", self.value.strip().strip("'\"")) if t and "$" not in t]


def _setting(variables: Sequence[str]) -> re.Pattern[str]:
    """``VAR=value`` and ``-DVAR=value`` (``-DVAR:STRING=``) on a command line."""
    names = "|".join(re.escape(v) for v in variables)
    return re.compile(rf"(?:^|[\s;&|(])(?:-D)?({names})(?::[A-Z]+)?=(\"[^\"]*\"|'[^']*'|[^\s;&|)]+)")


def _names(loaded: Subject, path: PathKey, value: str, written: str | None) -> tuple[str, ...]:
    if written is None:
        return tuple(params_at(loaded, path, value))
    found = [mt.group(1) for mt in _PLACEHOLDER.finditer(written)]
    return tuple(n for n in dict.fromkeys(found) if n in loaded.params)


def lists(loaded: Subject, variables: Sequence[str], flags: re.Pattern[str]) -> Iterator[ArchList]:
    """Every arch list of ``variables`` or ``flags`` (group 1: the list) that the image's
    compile steps, its layers and its config say."""
    man = loaded.manifest
    setting = _setting(variables)
    found = [(place.what, place.path, place.base, place.env, place.commands) for place in places(loaded)]
    config = ("targets", loaded.target, "config", "env") if loaded.target else ("image", "config", "env")
    env = {k: str(v) for k, v in man.image.config.env.items()}
    found.append(("the image's config", config, man.image.base, env, []))
    for what, path, base, values, commands in found:
        for key, value in values.items():
            at = (*path, "env", key) if path[-1] != "env" else (*path, key)
            if key in variables:
                yield ArchList(what, key, at, base, value, _names(loaded, at, value, None))
            for mt in flags.finditer(value):
                yield ArchList(what, key, at, base, mt.group(1), _names(loaded, at, mt.group(1), None))
        for k, command in enumerate(commands):
            at = (*path, "run", k)
            written = raw_text(loaded, at)
            for mt in [*setting.finditer(command), *flags.finditer(command)]:
                value = mt.group(mt.lastindex or 1)
                name = mt.group(1) if mt.lastindex == 2 else mt.group(0).strip().split("=")[0]
                said = _said(written, mt.group(0))
                yield ArchList(what, name, at, base, value, _names(loaded, at, value, said))


def _said(written: str | None, expanded: str) -> str | None:
    """The text as written (``TORCH_CUDA_ARCH_LIST="${ep_arch_list}"``) of what expanded to
    ``expanded``: the same variable's or flag's setting in the raw command; None (by value)
    when the command is not there as written."""
    if written is None:
        return None
    head = re.escape(expanded.strip().split("=", 1)[0]) + "="
    found = re.search(rf"{head}(\"[^\"]*\"|'[^']*'|\S+)", written)
    return found.group(0) if found else None
