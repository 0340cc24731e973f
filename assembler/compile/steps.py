"""Compile steps and runtime steps, executed in buildah containers.

A compile step runs in a container from its devel base, with a writable working copy of
each source at ``/src/NAME`` (kept between builds: :mod:`assembler.compile.worktree`),
earlier artifacts it needs mounted at their image paths, compile caches kept on the host,
secrets as files read into the environment, and the host CA bundle mounted. Each declared
artifact is then exported by the agent as its own layer.

Runtime steps (:mod:`assembler.compile.runtimestep`) make its devel image with the step's
``packages:``. Buildah executes; our tar writer writes every layer byte. Containers are
removed afterwards, also on failure and Ctrl-C.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple
from pathlib import Path

from assembler.cache import Origin, key_of
from assembler.compile import cross, keepfailed, keptcaches, worktree
from assembler.compile.apt import apt_install
from assembler.compile.buildah import RunSpec, Volume
from assembler.compile.container import (
    Workspace,
    agent_job,
    container,
    host_ca,
    package_install,
    python_lock,
    run_commands,
    step_log,
    with_packages,
)
from assembler.compile.keys import compile_key, runtime_key
from assembler.compile.mounts import Mounted, mounted_artifacts, secret_files
from assembler.compile.runtimestep import STEP_ENV, reproducible_env, run_runtime_step
from assembler.compile.sources import Source
from assembler.manifest.lock.file import LOCK_ENV
from assembler.manifest.schema import model as m
from assembler.oci import mutate
from assembler.oci.image import Image
from assembler.oci.layer import Layer

# Re-exported: what the pipeline needs of a step, from one place.
__all__ = ["Mounted", "Workspace", "apt_install", "compile_key", "run_compile_step", "run_runtime_step", "runtime_key"]

log = logging.getLogger(__name__)


def _working_copy(kept: Path, step: str, source: Source) -> Volume:
    """The step's writable copy of ``source``, synced, as the volume at ``/src/NAME``."""
    copy = kept / f"src-{source.name}"
    started = time.monotonic()
    stats = worktree.sync(source.path, copy, keep=source.keep)
    log.info(
        "step %s: /src/%s synced (%d copied, %d kept, %d removed) in %.1f s",
        step,
        source.name,
        *astuple(stats),
        time.monotonic() - started,
    )
    return Volume(copy, f"/src/{source.name}", readonly=False)


def run_compile_step(
    step: m.CompileStep,
    *,
    base: Image,
    sources: Mapping[str, Source],
    inputs: Sequence[Mounted],
    ws: Workspace,
    key: str,
    tree_key: str,
    fresh: bool = False,
) -> dict[str, Layer]:
    """Build ``step`` in a container from ``base``; one layer blob per declared artifact.

    ``tree_key`` names what the step keeps between builds (its ``cache:`` folders and
    source working copies): the step's key without its sources, so a source edit builds
    incrementally and any other change starts from empty folders; ``fresh`` empties them
    first (``--no-cache``, ``--rebuild STEP``). With ``ws.folders`` (a registry step
    cache), empty kept folders are restored from it first (while the devel image with the
    step's packages is made or brought in: neither needs the other) and exported after the
    build (:mod:`assembler.compile.keptcaches`). Its ``shared_cache:`` folders are held
    while it runs (:class:`~assembler.compile.keptcaches.SharedFolders`). Under
    ``--cache-trust`` (``ws.trusted``), a kept folder restored from an entry no trusted key
    signed is emptied first.

    Raises StepFailed (command, exit code, log tail and path) when a command fails or an
    artifact is missing; InputError for a secret missing from the environment; CacheError
    when a kept folder cannot be prepared.
    """
    log_path = step_log(ws.cache, step.name, key)
    restore = ws.folders is not None and not fresh  # a forced step starts from empty folders
    with (
        worktree.kept_folder(ws.cache, step.name, tree_key, fresh=fresh, trusted=ws.trusted) as kept,
        keptcaches.SharedFolders(ws.cache, step, trusted=ws.trusted, restoring=restore) as shared,
    ):
        restoring = None
        if ws.folders is not None and restore:
            folders, empty = ws.folders, list(shared.restorable)
            restoring = _Background(
                lambda stop: keptcaches.restore(
                    folders, step, cache=ws.cache, kept=kept, tree_key=tree_key, shared=empty, stop=stop
                ),
                name=f"restore-{step.name}",
            )
        started = time.monotonic()
        image = _devel_image_and_folders(step, base, ws, log_path, restoring)
        shared.settle()  # the shared folders it restored are for other steps to use too
        results = _run_compile_step(
            step,
            image=image,
            sources=sources,
            inputs=inputs,
            ws=ws,
            log_path=log_path,
            kept=kept,
            started=started,
            key=key,
        )
        if ws.folders is not None:
            keptcaches.export(ws.folders, step, cache=ws.cache, kept=kept, tree_key=tree_key)
        return results


def _devel_image_and_folders(
    step: m.CompileStep, base: Image, ws: Workspace, log_path: Path, restoring: _Background | None
) -> Image | str:
    """The step's devel image, once the kept folders ``restoring`` brings in are there too."""
    started = time.monotonic()
    try:
        image = _devel_image(step, base, ws, log_path)
        ready = time.monotonic() - started
        if restoring is not None:
            restoring.wait()
    except BaseException:  # the step fails, or Ctrl-C: the restore gives up too
        if restoring is not None:
            restoring.stop()
        raise
    log.info("step %s: devel image in %.1f s, kept folders in %.1f s", step.name, ready, time.monotonic() - started)
    return image


def _run_compile_step(
    step: m.CompileStep,
    *,
    image: Image | str,
    sources: Mapping[str, Source],
    inputs: Sequence[Mounted],
    ws: Workspace,
    log_path: Path,
    kept: Path,
    started: float,
    key: str,
) -> dict[str, Layer]:
    caches = _cache_volumes(step, ws, kept)
    src_volumes = [_working_copy(kept, step.name, sources[name]) for name in step.sources]
    ca_volumes, ca_env = host_ca(ws)
    env = {**ca_env, **reproducible_env(ws.epoch), **STEP_ENV, **step.env}
    # the host's CA bundle, and a cross-compiling step's CMake toolchain: read-only under /run
    run_volumes = [*ca_volumes, *cross.volumes(ws.cache, env)]
    commands = [(c, c) for c in step.run]
    with container(ws, image, step.name) as cid, secret_files(ws, step.secrets, step.name) as (svol, values, pre):
        log.info("step %s: its container made after %.1f s", step.name, time.monotonic() - started)
        with mounted_artifacts(ws, inputs) as input_volumes:
            volumes = [*src_volumes, *input_volumes, *caches, *run_volumes, *svol]
            with keepfailed.on_failure(
                ws,
                cid,
                step.name,
                lambda: _shell_spec(ws, env, [*src_volumes, *input_volumes, *caches, *run_volumes], step),
            ):
                run_commands(
                    ws,
                    cid,
                    step=step.name,
                    commands=commands,
                    env=env,
                    volumes=volumes,
                    workdir=step.workdir,
                    redact=values,
                    prelude=pre,
                    log_path=log_path,
                    network=step.network,
                )
        # Artifacts may live in a kept folder or in a source's working copy, not only in the root.
        job = _export_job(step, ws, key, mounts=[(v.container, str(v.host)) for v in [*caches, *src_volumes]])
        with keepfailed.on_failure(
            ws, cid, step.name, lambda: _shell_spec(ws, env, [*src_volumes, *caches, *run_volumes], step)
        ):
            answer = agent_job(ws, cid, "export", job, step=step.name, what="exporting the artifacts")
        results = {name: Layer.from_json(data) for name, data in answer.items()}
    log.info("step %s built in %.1f s", step.name, time.monotonic() - started)
    return results


def _shell_spec(ws: Workspace, env: Mapping[str, str], volumes: Sequence[Volume], step: m.CompileStep) -> RunSpec:
    """What a shell in the step's kept container runs with: its commands' environment (the
    lock's pins as their constraints file), mounts (no secrets) and working directory."""
    shell_env, lock_volumes = python_lock(ws, env)
    return RunSpec("", env=shell_env, volumes=[*volumes, *lock_volumes], workdir=step.workdir)


def _devel_image(step: m.CompileStep, base: Image, ws: Workspace, log_path: Path) -> Image | str:
    """What the step's commands run in: ``base``, or with the step's ``packages:`` the
    buildah image of ``base`` with them installed, made once per base and package list."""
    if not step.packages:
        return base
    env = _package_env(step)
    if ws.toolchains is None:
        return with_packages(
            ws, base, step.packages, env=env, step=step.name, log_path=log_path.with_suffix(".packages.log")
        )
    return _toolchain(step, base, ws, env)


def _package_env(step: m.CompileStep) -> dict[str, str]:
    """The environment the step's packages are installed with: the lock changes no apt install."""
    return {k: v for k, v in step.env.items() if k != LOCK_ENV}


# What a toolchain's layer leaves out: a compiler needs no manual, changelog or translated
# message, and a fresh runner downloads and unpacks less (issue 37: llama.cpp's CPU
# toolchain layer, 130 MiB compressed instead of 147; those folders hold 3,900 files and
# 95 MB of its devel image).
TOOLCHAIN_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")


def _toolchain_key(what: Mapping[str, object]) -> str:
    return key_of({"toolchain": what, "leaves_out": list(TOOLCHAIN_EXCLUDES)})


def toolchain_origin(step: m.CompileStep, base: Image, ws: Workspace) -> Origin | None:
    """The registry entry the layer of ``step``'s packages it ran on (on ``base``) came
    from (None: made here, or no such layer): the step is built on that entry too."""
    if not step.packages or ws.toolchains is None:
        return None
    _, what = package_install(base, step.packages, _package_env(step))
    return ws.toolchains.origin(_toolchain_key(what))


def _toolchain(step: m.CompileStep, base: Image, ws: Workspace, env: Mapping[str, str]) -> str:
    """With a registry step cache: the packages as a layer of ours kept in the step caches
    (``ws.toolchains``), so that a fresh machine downloads the installed toolchain instead
    of installing it again, as ``buildah bud --cache-from`` restores a Dockerfile's ``RUN
    apt-get install`` layer. The layer is made as a runtime step's (the changes the install
    made, deterministic), exported with ``--cache-to``, and never part of an image: the
    step's key names the base and the packages, not this layer. (buildah's own image of
    it cannot travel alone: ``buildah push`` writes the base's layers again, compressed
    anew, gigabytes for a CUDA devel base.)"""
    assert ws.toolchains is not None
    command, what = package_install(base, step.packages, env)
    key = _toolchain_key(what)
    label = f"{step.name}: packages"
    with ws.package_lock("toolchain:" + key):
        layer = ws.toolchains.take(key, label)
        if layer is None:
            layer = run_runtime_step(
                f"{step.name}-packages",
                [command],
                image=base,
                env=env,
                mounts=(),
                secrets=(),
                exclude=TOOLCHAIN_EXCLUDES,
                keep=(),
                ws=ws,
                key=key,
                packages=True,
                shipped=False,
            )
            ws.toolchains.keep(key, layer, label)
        # Named by the layer too: the image of a layer taken unchecked from a registry in
        # an earlier run is never what a step runs on once that layer is made here instead.
        name = "localhost/assemble-toolchain:" + key_of({"toolchain": key, "layer": layer.digest})[:24]
        found = ws.buildah.image_id(name)
        if found is not None:
            return found
        started = time.monotonic()
        image_id = ws.image_id(mutate.append_layers(base, [layer], epoch=ws.epoch))
        ws.buildah.tag(image_id, name)
        log.info("step %s: its packages' image brought into buildah in %.1f s", step.name, time.monotonic() - started)
        return image_id


def _cache_volumes(step: m.CompileStep, ws: Workspace, kept: Path) -> list[Volume]:
    """The step's ``cache:`` folders (kept with its build tree) and ``shared_cache:`` ones
    (shared by every step), created on the host."""
    caches = [Volume(kept / key_of({"path": path})[:16], path, readonly=False) for path in step.cache]
    caches += [Volume(keptcaches.shared_folder(ws.cache, path), path, readonly=False) for path in step.shared_cache]
    for volume in caches:
        volume.host.mkdir(parents=True, exist_ok=True)
    return caches


def installed_memo(key: str) -> str:
    """The memo of what the root of the compile step under ``key`` held of dpkg's packages
    when its artifacts were exported (a step with ``packages:``): ``assemble lock`` takes
    the step for its locked key where that is what the lock installs
    (:mod:`assembler.pipeline.lock.locksteps`)."""
    return "installed-" + key


def _export_job(step: m.CompileStep, ws: Workspace, key: str, *, mounts: list[tuple[str, str]]) -> dict[str, object]:
    """The agent's ``export`` job: each artifact written as a layer into the cache (and
    with ``packages:``, what dpkg says the root holds, as :func:`installed_memo`)."""
    artifacts = [
        {
            "name": name,
            "path": art.path,
            "to": art.to,
            "mode": art.mode,
            "owner": art.owner,
            "exclude": list(art.exclude),
            "mounts": mounts,
        }
        for name, art in sorted(step.artifacts.items())
    ]
    return {
        "cache": str(ws.cache.root),
        "epoch": ws.epoch,
        "compression": ws.compression,
        "step": step.name,
        "artifacts": artifacts,
        **({"installed": installed_memo(key)} if step.packages else {}),
    }


class _Background:
    """``work(stop)`` in a thread of its own; :meth:`wait` joins it (raising what it raised),
    :meth:`stop` makes ``stop()`` true for it and joins it (what it raised is dropped: the
    caller is failing already)."""

    def __init__(self, work: Callable[[Callable[[], bool]], object], *, name: str) -> None:
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[Callable[[], bool]], object]) -> None:
        try:
            work(self._stopping.is_set)
        except BaseException as e:  # handed to the caller in wait()
            self._error = e

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
