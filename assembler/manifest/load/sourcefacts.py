"""``${sources.NAME.FIELD}`` in labels and annotations: facts of the source actually built.

A label that says which upstream revision an image holds must follow the source that was
built, not the param that pinned it: with ``--source llama.cpp=~/llama.cpp`` the pinned
tag is not what is inside. These placeholders are left alone when params are substituted
and filled in once the sources are resolved:

- ``revision``: the commit of a git source; the sha256 of a URL source; the digest of a
  folder's content (``sha256:...``, as its step key uses);
- ``version``: the ref a git source names (a tag such as ``b7046``); empty otherwise;
- ``url``: the git or download URL; empty for a folder.

A label or annotation whose value ends up empty is left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

FIELDS = ("revision", "version", "url")
_REF = re.compile(r"\$\{sources\.([^}]*)\}")


def references(value: str) -> list[tuple[str, str]]:
    """(source name, field) of each placeholder in ``value``; ValueError for a malformed one."""
    out = []
    for match in _REF.finditer(value):
        name, _, field = match.group(1).rpartition(".")
        if not name or field not in FIELDS:
            raise ValueError(
                f"{match.group(0)}: expected ${{sources.NAME.FIELD}} with FIELD one of {', '.join(FIELDS)}"
            )
        out.append((name, field))
    return out


def expand(value: str, facts: Mapping[str, Mapping[str, str]]) -> str:
    """``value`` with each placeholder whose source is in ``facts`` filled in."""

    def repl(match: re.Match[str]) -> str:
        name, _, field = match.group(1).rpartition(".")
        known = facts.get(name, {}).get(field)
        return known if known is not None else match.group(0)

    return _REF.sub(repl, value)
