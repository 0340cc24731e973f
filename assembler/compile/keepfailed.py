"""``--keep-failed``: a compile step that fails leaves its container, with its mounts, to be
entered, as Nix's ``--keep-failed`` keeps the build folder and ``buildx debug`` opens a
shell in a failed step.

The error then says how to enter it: ``assemble shell --step STEP`` (which reads the record
kept here) or the exact ``buildah run --terminal`` with the step's user, environment,
working directory and mounts (its sources' working copies, its ``cache:`` folders, the
artifacts it mounts, unpacked into a folder kept with the container; never its secrets).
The next run of the step, failed or not, removes what an earlier failure kept.

Records live in the cache's ``kept-failed/`` folder: ``STEP.json`` and the kept folders.
"""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from assembler.cache import Cache
from assembler.compile.buildah import Buildah, RunSpec
from assembler.errors import InvalidRecord, NotFound, StepFailed

FOLDER = "kept-failed"


@dataclass(frozen=True)
class Kept:
    """A failed step's container kept: the shell that enters it, and the folders kept for its mounts."""

    step: str
    container: str
    shell: tuple[str, ...]
    folders: tuple[str, ...] = ()


def _record(cache: Cache, step: str) -> Path:
    return cache.root / FOLDER / f"{step}.json"


def read(cache: Cache, step: str) -> Kept:
    """What a failure of ``step`` kept; NotFound (naming those kept) when nothing is."""
    path = _record(cache, step)
    try:
        data = json.loads(path.read_text())
        return Kept(data["step"], data["container"], tuple(data["shell"]), tuple(data.get("folders", ())))
    except FileNotFoundError:
        kept = sorted(p.stem for p in (cache.root / FOLDER).glob("*.json"))
        raise NotFound(
            f"no container of step {step} is kept in {cache.root}",
            hint=f"kept: {', '.join(kept)}"
            if kept
            else "build with --keep-failed: a step that fails keeps its container",
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidRecord(f"{path}: not a kept container's record ({e})") from None


def kept_containers(cache: Cache) -> set[str]:
    """The containers failures kept (``--keep-failed``), as their records name them: what
    keeping the cache within its budget leaves alone."""
    found = set()
    for path in (cache.root / FOLDER).glob("*.json"):
        try:
            found.add(read(cache, path.stem).container)
        except (NotFound, InvalidRecord):
            continue
    return found


def _write(cache: Cache, kept: Kept) -> None:
    data = {"step": kept.step, "container": kept.container, "shell": list(kept.shell), "folders": list(kept.folders)}
    path = _record(cache, kept.step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


def discard(buildah: Buildah, cache: Cache, step: str) -> None:
    """Remove what a failure of ``step`` kept (its container, its folders, the record)."""
    if not _record(cache, step).is_file():
        return
    try:
        kept = read(cache, step)
    except InvalidRecord:
        _record(cache, step).unlink(missing_ok=True)
        return
    buildah.rm(kept.container)
    for folder in kept.folders:
        shutil.rmtree(folder, ignore_errors=True)
    _record(cache, step).unlink(missing_ok=True)


class Workspace(Protocol):
    """What keeping a failed step needs of its workspace (:class:`assembler.compile.container.Workspace`)."""

    @property
    def buildah(self) -> Buildah: ...
    @property
    def cache(self) -> Cache: ...
    @property
    def keep_failed(self) -> bool: ...


@contextmanager
def scratch(ws: Workspace, prefix: str) -> Iterator[Path]:
    """A folder for a step's mounts, removed afterwards; with ``--keep-failed`` kept when
    the step's container is (the record names it, so that it goes with the container)."""
    if not ws.keep_failed:
        with ws.cache.workdir(prefix) as folder:
            yield folder
        return
    parent = ws.cache.root / FOLDER / "mounts"
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    except StepFailed as e:
        if e.kept_container is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            kept = read(ws.cache, e.step)
            _write(ws.cache, Kept(kept.step, kept.container, kept.shell, (*kept.folders, str(folder))))
        raise
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def on_failure(ws: Workspace, container: str, step: str, spec: Callable[[], RunSpec]) -> Iterator[None]:
    """With ``--keep-failed``: a StepFailed from the block keeps ``container`` (the error
    says how to enter it, with ``spec()``'s user, environment, mounts and working directory)."""
    try:
        yield
    except StepFailed as e:
        if not ws.keep_failed or e.kept_container is not None:
            raise
        shell = tuple(ws.buildah.shell_argv(container, spec()))
        _write(ws.cache, Kept(step, container, shell))
        raise StepFailed(
            f"{e}\n--- the step's container {container} is kept (--keep-failed); enter it with:\n"
            f"  assemble shell --step {step} --cache {shlex.quote(str(ws.cache.root))}\nor:\n  {shlex.join(shell)}",
            step=e.step,
            command=e.command,
            argv=e.argv,
            returncode=e.returncode,
            log_path=e.log_path,
            log_tail=e.log_tail,
            hint=e.hint,
            kept_container=container,
        ) from None
