"""Symlinks followed inside an image's root, never out of it: the one walker behind an
image's tar view (:mod:`assembler.archive.view`), its final file list
(:mod:`assembler.deps.files`) and the export agent's reads of a mounted root
(:mod:`assembler.compile.agent`). Each asks its own question "is this path a link, and
to what?"; the walk is the same: ``..`` never climbs above the root, an absolute target
starts again at the root, and a loop ends the walk."""

from __future__ import annotations

from collections.abc import Callable

MAX_LINKS = 40  # as the kernel's MAXSYMLINKS

LinkTarget = Callable[[str], str | None]  # a root-relative path -> its link target, None: not a link


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def walk_links(path: str, target_of: LinkTarget, *, follow_last: bool = True) -> str | None:
    """``path`` (relative to the root, no leading slash needed) with its symlinks followed
    through ``target_of``; the last component's only when ``follow_last``. The result is
    root-relative without a leading slash; None on a link loop."""
    parts = _parts(path)
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()  # never above the root
            continue
        target = target_of("/".join([*done, part])) if (parts or follow_last) else None
        if target is None:
            done.append(part)
            continue
        links += 1
        if links > MAX_LINKS:
            return None
        if target.startswith("/"):
            done = []
        parts = _parts(target) + parts
    return "/".join(done)
