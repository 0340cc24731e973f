"""Paths of a container, inside a root folder on the host (a mounted container root, or a
folder mounted into the container): symlinks resolved inside the root, never the host's,
globs as the shell expands them, and, for an artifact path that does not exist, what the
nearest folder above it holds instead (the export agent's error names it, so that a wrong
path, a build folder elsewhere or a renamed file shows at once)."""

from __future__ import annotations

import errno
import fnmatch
import os
import posixpath

from assembler.archive.links import walk_links

GLOB_CHARS = frozenset("*?[")
_SHOWN = 20  # names listed at most


def resolve_in_root(root: str, path: str, *, follow_last: bool = True) -> str:
    """The host path of container ``path``, resolving symlinks *inside* ``root``."""

    def target_of(rel: str) -> str | None:
        candidate = os.path.join(root, rel)
        return os.readlink(candidate) if os.path.islink(candidate) else None

    inside = walk_links(path, target_of, follow_last=follow_last)
    if inside is None:
        raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links")
    return os.path.join(root, inside) if inside else root


def glob_in_root(root: str, pattern: str) -> list[tuple[str, str]]:
    """(host path, container path) of each match of ``pattern``, sorted; links kept as found.

    Hidden names match only a pattern that starts with a dot, as in the shell.
    """
    matches = [""]
    for part in (p for p in pattern.split("/") if p not in ("", ".")):
        if not GLOB_CHARS & set(part):
            matches = [posixpath.join(m, part) for m in matches]
            continue
        found: list[str] = []
        for m in matches:
            try:
                names = sorted(os.listdir(resolve_in_root(root, m or "/")))
            except (FileNotFoundError, NotADirectoryError):
                continue
            found += [
                posixpath.join(m, n)
                for n in names
                if fnmatch.fnmatchcase(n, part) and (part.startswith(".") or not n.startswith("."))
            ]
        matches = found
    out = []
    for ctr in matches:
        host = os.path.join(resolve_in_root(root, posixpath.dirname(ctr) or "/"), posixpath.basename(ctr))
        if os.path.lexists(host):
            out.append((host, "/" + ctr.lstrip("/")))
    return out


def holds(root: str, path: str, *, prefix: str = "") -> str:
    """``FOLDER holds: a, b/, ...`` of the nearest existing folder above ``path`` (a
    container path in ``root``, globs allowed: the folder above the first pattern), or
    ``FOLDER is empty``. ``prefix`` is where ``root`` is in the container (a mounted
    folder's container path), for the message."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    globbed = next((i for i, p in enumerate(parts) if GLOB_CHARS & set(p)), len(parts))
    for depth in range(min(globbed, max(len(parts) - 1, 0)), -1, -1):
        folder = "/" + "/".join(parts[:depth])
        try:
            host = resolve_in_root(root, folder)
            names = sorted(os.listdir(host))
        except OSError:  # not there, not a folder, a link loop
            continue
        shown = posixpath.join(prefix or "/", folder.lstrip("/")) if prefix else folder
        if not names:
            return f"{shown} is empty"
        listed = [n + ("/" if os.path.isdir(os.path.join(host, n)) else "") for n in names[:_SHOWN]]
        more = f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
        return f"{shown} holds: {', '.join(listed)}{more}"
    return "no folder above it exists"
