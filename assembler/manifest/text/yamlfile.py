"""YAML reading that remembers where every value came from.

:func:`load` returns plain Python data plus a :class:`Locations` map from a value's path
(``("image", "layers", 0, "copy", "from")``) to its 1-based line, so any later check
can say ``hello.yaml:9: image.layers.0.copy.from: ...``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from assembler.errors import ManifestError

PathKey = tuple[str | int, ...]

# Bounds on what a manifest may expand to: aliases can make a small file describe an
# exponentially large document ("billion laughs"), and nesting can exhaust the stack.
MAX_VALUES = 200_000
MAX_DEPTH = 100

# Documents parsed in this process, by file and text: a manifest is read once for its
# variants and again for each, and ruamel's parser is most of a no-change build's time.
_PARSED: dict[tuple[Path, str], tuple[Any, dict[PathKey, int]]] = {}
_PARSED_MAX = 32


@dataclass
class Locations:
    """Where each value of a YAML document is: path -> 1-based line."""

    file: Path
    lines: dict[PathKey, int] = field(default_factory=dict)

    def line(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), None)

    def error(self, path: Sequence[str | int], message: str, *, hint: str | None = None) -> ManifestError:
        """A ManifestError located at ``path``."""
        return ManifestError(message, file=self.file, line=self.line(path), field=dotted(path), hint=hint)


def dotted(path: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in path)


class _Budget:
    """How many values a document may still expand to."""

    def __init__(self) -> None:
        self.left = MAX_VALUES


def _plain(node: Any, path: PathKey, locs: Locations, budget: _Budget) -> Any:
    budget.left -= 1
    if budget.left < 0:
        raise locs.error(path, f"the document expands to more than {MAX_VALUES} values (YAML aliases?)")
    if len(path) > MAX_DEPTH:
        raise locs.error(path, f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(node, CommentedMap):
        return _plain_map(node, path, locs, budget)
    if isinstance(node, CommentedSeq):
        return _plain_seq(node, path, locs, budget)
    return _plain_scalar(node, path, locs)


def _plain_map(node: CommentedMap, path: PathKey, locs: Locations, budget: _Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(key, str) and "\x00" in key:
            raise ManifestError(
                "a NUL character is not allowed in a key", file=locs.file, field=dotted(path), line=locs.line(path)
            )
        if not isinstance(key, str):
            key_line = node.lc.key(key)[0] + 1 if node.lc.data and key in node.lc.data else None
            raise ManifestError(f"keys must be strings, got {key!r}", file=locs.file, line=key_line, field=dotted(path))
        child = (*path, key)
        try:
            locs.lines[child] = node.lc.key(key)[0] + 1
        except (KeyError, TypeError):
            pass
        out[key] = _plain(value, child, locs, budget)
    return out


def _plain_seq(node: CommentedSeq, path: PathKey, locs: Locations, budget: _Budget) -> list[Any]:
    items = []
    for i, value in enumerate(node):
        child = (*path, i)
        try:
            locs.lines[child] = node.lc.item(i)[0] + 1
        except (KeyError, TypeError, IndexError):
            pass
        items.append(_plain(value, child, locs, budget))
    return items


def _plain_scalar(node: Any, path: PathKey, locs: Locations) -> Any:
    if isinstance(node, str):
        if "\x00" in node:
            raise locs.error(path, "a NUL character is not allowed in a manifest value")
        return str(node)  # ruamel's scalar string subclasses -> plain str
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def load(path: Path, *, text: str | None = None) -> tuple[Any, Locations]:
    """Parse a YAML file (or ``text`` standing for it) into plain data and locations.

    Raises ManifestError with file:line for unreadable files and YAML syntax errors,
    and for duplicate keys.
    """
    locs = Locations(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise ManifestError("file does not exist", file=path) from e
        except (OSError, UnicodeDecodeError) as e:
            raise ManifestError(f"cannot read: {e}", file=path) from e
    parsed = _PARSED.get((path, text))
    if parsed is not None:  # the same file read again (a manifest is read for its variants, then each): a copy
        data, lines = parsed
        return copy.deepcopy(data), Locations(path, dict(lines))
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or e.context or "invalid YAML"
        raise ManifestError(f"YAML syntax: {problem}", file=path, line=line) from e
    except YAMLError as e:
        raise ManifestError(f"YAML syntax: {e}", file=path) from e
    except RecursionError:
        raise ManifestError(f"nested too deep (at most {MAX_DEPTH} levels)", file=path) from None
    locs.lines[()] = 1
    data = _plain(doc, (), locs, _Budget())
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[(path, text)] = (copy.deepcopy(data), dict(locs.lines))
    return data, locs
