"""``assemble watch MANIFEST``: build, then build again each time a file the build reads from
the host changes (saved): the manifest, its ``path:`` sources (less their ``exclude:``), its
``copy:`` layers' files and its Python sets' requirements files, wherever they are. As
``truss watch`` and ``cargo watch`` do: only the steps and layers
whose inputs changed are made again and each output takes only the blobs it lacks, so a
one-line code change is one layer made and pushed. Each round says which layers changed,
what each output uploaded and how long it took from the save to the outputs written.

The folders are read by polling (path, size, modification time) every ``--interval``; what a
build writes or keeps is left out (``.git``, the cache folder, local outputs, ``__pycache__``
and the usual tool caches), and a round starts once the files have stopped changing for
one interval (an editor's save is several writes). A build that fails says why and the
watch goes on. Light at import: the build is imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

from assembler.cli.arguments import param_sets
from assembler.cli.buildargs import build_arguments
from assembler.cli.console import say, size
from assembler.errors import AssemblerError

if TYPE_CHECKING:
    from assembler.assemble import Result

SKIPPED = frozenset({".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".venv", "node_modules"})
MAX_FILES = 50_000  # a folder beyond this is not watched file by file: a narrower folder is asked for

Snapshot = dict[str, tuple[int, int]]  # path -> (size, mtime_ns)


def arguments(p: argparse.ArgumentParser) -> None:
    build_arguments(p)
    w = p.add_argument_group("watch", "what is watched, and for how long")
    w.add_argument("--interval", type=float, default=0.5, metavar="S", help="seconds between looks (default 0.5)")
    w.add_argument("--rounds", type=int, default=None, metavar="N", help="stop after N rebuilds (default: never)")


@dataclass(frozen=True)
class Watched:
    """A folder (or file) the build reads from the host, and the globs its source leaves out."""

    path: str
    exclude: tuple[str, ...] = ()


def watched(
    manifest: Path, sets: dict[str, str], *, target: str | None = None, sources: dict[str, str] | None = None
) -> list[Watched]:
    """What the build reads from the host: the manifest, each ``path:`` source (less its
    ``exclude:``), each ``copy:`` layer's file or folder, each Python set's
    ``requirements_file`` and each model's folder (``weights:``), wherever they are
    (``../examples/app``). A manifest that does
    not load: its folder, until it does."""
    from assembler.manifest.load.manifest import load_manifest
    from assembler.manifest.schema import model as m

    path = manifest.resolve()
    try:
        loaded = load_manifest(manifest, sets=sets, target=target, sources=sources)
    except AssemblerError:
        return [Watched(str(path.parent))]
    folder, man = path.parent, loaded.manifest
    out = [Watched(str(path))]
    out += [
        Watched(_host(folder, s.path), tuple(s.exclude)) for s in man.sources.values() if isinstance(s, m.PathSource)
    ]
    out += [Watched(_host(folder, f.source)) for layer in man.image.layers for f in layer.host_files()]
    # a model's folder: a new checkpoint pushes new weights and leaves the image as it is
    out += [Watched(_host(folder, w.source), tuple(w.exclude)) for w in man.weights.values() if w.kind == "path"]
    sets_of = [
        *(step.python_sets for step in man.compile),
        *(getattr(layer, "python_sets", []) for layer in man.image.layers),
    ]
    out += [
        Watched(str(f.resolve()))
        for group in sets_of
        for s in group
        if s.requirements_file
        for f in _set_files(folder, s.requirements_file, s.extras, s.groups)
    ]
    # each path once (none a link out of the project), and none inside a folder watched whole
    unique = [w for w in list({w.path: w for w in reversed(out)}.values())[::-1] if w.path]
    whole = [w.path for w in unique if not w.exclude and os.path.isdir(w.path)]
    return [w for w in unique if not any(w.path.startswith(d + os.sep) for d in whole)]


def _host(folder: Path, shown: str | Path) -> str:
    """The host path ``shown`` (in the manifest's ``folder``) names, resolved; "" (not
    watched) where a link on the way leads out of the project: a source folder replaced by
    a link to ``/`` would have the watch read every file of the host. A path outside the
    folder named as such (``../src``) is watched."""
    plain = Path(os.path.normpath(folder / shown))
    real = plain.resolve()
    return str(real) if real == plain or real.is_relative_to(folder) else ""


def _set_files(folder: Path, shown: str, extras: list[str], groups: list[str]) -> list[Path]:
    """A set's requirements file (``shown``, in the manifest's ``folder``) and every file it
    includes (``-r``, ``-c``); the file alone when it does not read (the build says why)."""
    from assembler.manifest.requirements.reqfiles import read_set_file

    try:
        return read_set_file(folder / shown, shown, extras, groups, project=folder).files
    except AssemblerError:
        return [folder / shown]


def _roots(args: argparse.Namespace) -> list[Watched]:
    """What the build of ``args`` reads: its params, its (first) target, its ``--source``s."""
    target = args.targets[0] if args.targets else None
    return watched(args.manifest, param_sets(args), target=target, sources=dict(args.source))


def snapshot(roots: Sequence[Watched], skipped: Sequence[str]) -> Snapshot:
    """Every file under ``roots`` but the skipped ones, with its size and modification time."""
    out: Snapshot = {}
    own = _own_output()
    for path in (p for root in roots for p in _files(root, skipped)):
        try:
            st = os.stat(path)
        except OSError:
            continue  # removed while read: the next look sees it gone
        if (st.st_dev, st.st_ino) not in own:
            out[path] = (st.st_size, st.st_mtime_ns)
        if len(out) > MAX_FILES:
            raise AssemblerError(f"more than {MAX_FILES} files to watch: give the manifest a folder of its own")
    return out


def _own_output() -> set[tuple[int, int]]:
    """The files this process's stdout and stderr write to (``watch > watch.log`` in the
    watched folder): each round's own lines would change them and start the next round."""
    own = set()
    for fd in (1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            own.add((st.st_dev, st.st_ino))
    return own


def left_out(path: str, skipped: Sequence[str]) -> bool:
    """Whether ``path`` is one the build writes: a skipped path, under one, or beside a
    file output as its sidecar (``out.sqsh.spdx.json``; a folder output has none)."""
    return any(
        path == s or path.startswith(s + os.sep) or (path.startswith(s + ".") and not os.path.isdir(s)) for s in skipped
    )


def _files(watch: Watched, skipped: Sequence[str]) -> Iterator[str]:
    """The files under ``watch``; none where it became a link since it was resolved (a
    folder replaced by a link to ``/``): the walk follows no link out of the project."""
    if os.path.islink(watch.path):
        return
    if os.path.isfile(watch.path):
        yield watch.path
        return

    def kept(path: str, name: str) -> bool:
        rel = os.path.relpath(path, watch.path)
        globs = [g.rstrip("/") for g in watch.exclude]
        return not left_out(path, skipped) and not any(fnmatch(name, g) or fnmatch(rel, g) for g in globs)

    for root, dirs, files in os.walk(watch.path):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED and kept(os.path.join(root, d), d))
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.endswith((".pyc", ".swp", "~")) and kept(path, name):
                yield path


def changed(before: Snapshot, after: Snapshot) -> list[str]:
    """The paths added, removed or changed between two snapshots."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _skipped(args: argparse.Namespace, results: Sequence[Result]) -> list[str]:
    """What a build writes or keeps: the cache, and the outputs on this machine (those of
    ``-o`` and those the build wrote, the manifest's own among them)."""
    from assembler.cache import default_root
    from assembler.errors import InputError
    from assembler.oci.reference import parse_ref

    out = [str((args.cache or default_root()).resolve())]
    for text in [*(args.outputs or []), *(w.ref for r in results for w in r.outputs)]:
        try:
            ref = parse_ref(str(text))
        except (InputError, ValueError):
            continue
        if not ref.syntax.url and ref.path:
            out.append(str(Path(ref.path).resolve()))
    return out


def _round_lines(results: Sequence[Result], before: dict[int, str], saved: float | None) -> list[str]:
    """What one round did: the layers that changed, what each output uploaded, and the time
    from the save to the outputs written."""
    from assembler.cli.build import pushed

    lines = []
    for result in results:
        for layer in result.layers:
            if layer.digest and before.get(layer.index) != layer.digest and layer.origin != "base":
                lines.append(f"  layer {layer.index} {layer.origin}: {layer.what} ({size(layer.size or 0)})")
        for w in result.outputs:
            lines.append(f"  -> {w.ref}: {pushed(w)}")
        lines.append(f"  image {result.digest}")
    if saved is not None:
        lines.append(f"saved -> written in {time.time() - saved:.1f} s")
    return lines


def cmd_watch(args: argparse.Namespace) -> int:
    from assembler.cli.build import build_variants
    from assembler.cli.console import mode_of
    from assembler.cli.progress import showing

    skipped = _skipped(args, [])
    layers: dict[int, str] = {}
    rounds, saved = 0, None
    roots = _roots(args)
    seen = snapshot(roots, skipped)
    while True:
        try:
            with showing(mode_of(args), verbose=args.verbose) as shown:
                _, results = build_variants(args, shown)
            for line in _round_lines(results, layers, saved):
                say(line)
            layers = {layer.index: layer.digest or "" for layer in results[0].layers}
            skipped = _skipped(args, results)
            seen = {p: v for p, v in seen.items() if not left_out(p, skipped)}  # what the build wrote
        except AssemblerError as e:
            say(f"build failed: {e}" + (f" ({e.hint})" if e.hint else ""))
        if args.rounds is not None and rounds >= args.rounds:
            return 0
        say(f"watching {', '.join(w.path for w in roots)} ({len(seen)} files); Ctrl-C stops")
        seen, saved = _wait(roots, skipped, seen, args.interval, args.manifest.resolve().parent)
        roots = _roots(args)  # the manifest may name other folders now
        rounds += 1


def _wait(
    roots: Sequence[Watched], skipped: Sequence[str], seen: Snapshot, interval: float, folder: Path
) -> tuple[Snapshot, float]:
    """The files once they changed and then stood still for one interval, and when the last
    change was saved (the newest modification time among the changed files, else now); the
    changed paths said from ``folder``, the manifest's."""
    while True:
        time.sleep(interval)
        now = snapshot(roots, skipped)
        if not changed(seen, now):
            continue
        while True:  # an editor's save is several writes: wait for them to end
            time.sleep(interval)
            settled = snapshot(roots, skipped)
            if settled == now:
                break
            now = settled
        paths = changed(seen, now)
        shown = [os.path.relpath(p, folder) for p in paths[:5]]
        say(f"changed: {', '.join(shown)}" + (" ..." if len(paths) > 5 else ""))
        times = [now[p][1] / 1e9 for p in paths if p in now]
        return now, max(times) if times else time.time()
