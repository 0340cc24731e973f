"""Running a step's commands in a buildah container: the workspace (buildah, the cache),
the container's life, its mounts (host CA bundle, secrets as files, artifacts, apt's
caches), one script for all its commands with a marker per command, and the export agent.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from secrets import token_hex
from typing import Any, Protocol

from assembler.archive.compress import Compression
from assembler.cache import Cache, Origin, key_of
from assembler.compile import apt, keepfailed
from assembler.compile.buildah import Buildah, RunSpec, Volume
from assembler.compile.handover import hand_over
from assembler.compile.keptcaches import FolderCache
from assembler.compile.trees import Trees
from assembler.debian.aptlock import mirror_moved_hint
from assembler.debian.aptreasons import refusals
from assembler.errors import StepFailed
from assembler.hostuser import host_cause
from assembler.manifest.lock.file import LOCK_ENV
from assembler.oci.image import Image
from assembler.oci.layer import Layer
from assembler.proc import tail

# The host bundle is mounted at a private path, not over the image's own bundle: the
# image's ca-certificates package must stay installable (its setup rewrites that file).
CA_DIR = "/run/assemble-ca"
LOCK_DIR = "/run/assemble-lock"  # a step's locked Python pins (assembler.manifest.lock.file)
# The lock's pins with their sha256s, for sets with require_hashes (pip --require-hashes -r).
REQUIREMENTS_ENV = "ASSEMBLE_PYTHON_REQUIREMENTS"
CA_FILE = f"{CA_DIR}/ca-certificates.crt"
# Tools read the CA bundle from different places; point them all at the mounted one
# (apt through an extra config file, since it reads no environment variable for it).
CA_ENV = {
    "SSL_CERT_FILE": CA_FILE,
    "REQUESTS_CA_BUNDLE": CA_FILE,
    "CURL_CA_BUNDLE": CA_FILE,
    "PIP_CERT": CA_FILE,
    "GIT_SSL_CAINFO": CA_FILE,
    "NODE_EXTRA_CA_CERTS": CA_FILE,
    "CARGO_HTTP_CAINFO": CA_FILE,
    "UV_NATIVE_TLS": "1",
    "APT_CONFIG": f"{CA_DIR}/apt.conf",
}

LineFn = Callable[[str], None]


class LayerStore(Protocol):
    """Layers kept by key in the step caches: the local cache's, and with ``--cache-to`` /
    ``--cache-from`` the registry's (:class:`assembler.pipeline.store.toolchains.Toolchains`)."""

    def take(self, key: str, what: str) -> Layer | None:
        """The layer kept as ``key``, its blob here (downloaded and verified); None: not kept."""
        ...

    def keep(self, key: str, layer: Layer, what: str) -> None:
        """Keep ``layer`` (its blob in the local cache) as ``key``, here and in the registry."""
        ...

    def origin(self, key: str) -> Origin | None:
        """The registry entry the layer :meth:`take` gave as ``key`` came from (None: made
        here): what is built on it is built on that entry."""
        ...


@dataclass
class _Shared:
    """What the workspaces of steps running at the same time share, and its locks."""

    pulled: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # the handover layout, `pulled`
    package_locks: dict[str, threading.Lock] = field(default_factory=dict)
    removals: list[threading.Thread] = field(default_factory=list)
    trees: Trees = field(default_factory=Trees)  # artifact layers unpacked for the steps mounting them


@dataclass
class Workspace:
    """Everything a step needs from outside: buildah, the cache, and how to report.

    Steps that run at the same time each get their own (:meth:`for_step`: its own log
    callback) over one shared state."""

    buildah: Buildah
    cache: Cache
    epoch: int
    compression: Compression
    host_ca: bool = True
    on_line: LineFn | None = None
    shared: _Shared = field(default_factory=_Shared)
    folders: FolderCache | None = None  # kept folders through a registry (--cache-to/--cache-from)
    toolchains: LayerStore | None = None  # compile steps' package layers, with the registry's step cache
    # The export agent's module (one that runs compile.agent with readers of its layers,
    # assembler.pipeline.layers.exportagent) and what every job of it is told besides.
    agent: str = "assembler.compile.agent"
    agent_job: Mapping[str, object] = field(default_factory=dict)
    keep_failed: bool = False  # a failed compile step's container is kept (compile.keepfailed)
    # --cache-trust's key ids: a kept folder restored from an entry none of them signed is
    # emptied before a step uses it (compile.keptcaches).
    trusted: frozenset[str] = frozenset()

    def for_step(self, on_line: LineFn | None) -> Workspace:
        return replace(self, on_line=on_line)

    def image_id(self, image: Image) -> str:
        """Hand ``image`` to buildah (:func:`assembler.compile.handover.hand_over`); its image ID."""
        with self.shared.lock:
            if image.digest in self.shared.pulled:
                return self.shared.pulled[image.digest]
            image_id = hand_over(self.buildah, self.cache, image, self.cache)
            self.shared.pulled[image.digest] = image_id
            return image_id

    def package_lock(self, name: str) -> threading.Lock:
        """One lock per package image, so two steps never install the same toolchain twice."""
        with self.shared.lock:
            return self.shared.package_locks.setdefault(name, threading.Lock())

    def apt_slot(self) -> AbstractContextManager[int]:
        """A set of apt caches no other running step uses (:func:`apt.claim_slot`)."""
        return apt.claim_slot(self.cache)

    def remove_later(self, cid: str) -> None:
        """Remove a finished step's container in the background (removing a big one takes
        seconds the next step need not wait for); :meth:`wait_removals` joins them."""
        thread = threading.Thread(target=self.buildah.rm, args=(cid,), name=f"rm-{cid[:12]}", daemon=False)
        thread.start()
        with self.shared.lock:
            self.shared.removals.append(thread)

    def wait_removals(self) -> None:
        with self.shared.lock:
            threads, self.shared.removals = self.shared.removals, []
        for thread in threads:
            thread.join()


# -- shared machinery ------------------------------------------------------------------


@contextmanager
def container(ws: Workspace, image: Image | str, name: str) -> Iterator[str]:
    """A working container from ``image`` (or a stored image ID), removed afterwards: at
    once when the step failed (unless kept: ``--keep-failed``), else in the background (see
    :meth:`Workspace.remove_later`). What an earlier failure of ``name`` kept goes first."""
    keepfailed.discard(ws.buildah, ws.cache, name)
    cid = ws.buildah.from_image(image if isinstance(image, str) else ws.image_id(image), name_hint=name)
    try:
        yield cid
    except BaseException as e:
        if not (isinstance(e, StepFailed) and e.kept_container == cid):
            ws.buildah.rm(cid)
        raise
    ws.remove_later(cid)


def package_install(
    base: Image, packages: Sequence[str], env: Mapping[str, str]
) -> tuple[tuple[str, str], dict[str, object]]:
    """The command (as shown, as run) installing a compile step's ``packages`` on ``base``,
    and what names its result: the base, the packages, the command and its environment."""
    command = (f"apt-get install {' '.join(packages)}", apt.apt_install(packages))
    return command, {"base": base.digest, "packages": list(packages), "command": command[1], "env": dict(env)}


def with_packages(
    ws: Workspace, base: Image, packages: Sequence[str], *, env: Mapping[str, str], step: str, log_path: Path
) -> str:
    """The ID of ``base`` with ``packages`` installed, made once per base and package list
    and kept in buildah's storage, as a Dockerfile's ``RUN apt-get install`` layer is: a
    rebuild of the step does not reinstall its toolchain. Only buildah uses this image;
    the step's artifacts are still written by our agent, so no digest depends on it."""
    command, what = package_install(base, packages, env)
    name = "localhost/assemble-devel:" + key_of(what)[:24]
    with ws.package_lock(name):
        found = ws.buildah.image_id(name)
        if found is not None:
            return found
        ca_volumes, ca_env = host_ca(ws)
        with container(ws, base, f"{step}-packages") as cid, ws.apt_slot() as slot:
            volumes = [*ca_volumes, *apt.package_cache(ws.cache, slot)]
            run_commands(
                ws,
                cid,
                step=step,
                commands=[command],
                env={**ca_env, **env},
                volumes=volumes,
                workdir=None,
                redact=(),
                prelude="",
                log_path=log_path,
            )
            return ws.buildah.commit(cid, name)


def host_ca(ws: Workspace) -> tuple[list[Volume], dict[str, str]]:
    """What assemble's own connections trust (the system's store, ``--cert``'s or
    REQUESTS_CA_BUNDLE's bundle: ``registry.trust.bundle_pem``) as one bundle, with an apt
    config naming it, in a read-only folder at CA_DIR."""
    from assembler.registry import trust  # ssl: only when a step runs

    bundle = trust.bundle_pem() if ws.host_ca else b""
    if not bundle:
        return [], {}
    folder = ws.cache.path("host-ca")
    for name, data in (
        ("ca-certificates.crt", bundle),
        ("apt.conf", f'Acquire::https::CaInfo "{CA_FILE}";\n'.encode()),
    ):
        path = folder / name
        if not path.is_file() or path.read_bytes() != data:
            tmp = folder / f".{name}.{os.getpid()}-{threading.get_ident()}.tmp"
            tmp.write_bytes(data)
            tmp.replace(path)
    return [Volume(folder, CA_DIR)], dict(CA_ENV)


def python_lock(ws: Workspace, env: Mapping[str, str]) -> tuple[dict[str, str], list[Volume]]:
    """A step's locked Python pins (``LOCK_ENV``, from the lock) as a constraints file that
    every pip and uv run of the step reads (``PIP_CONSTRAINT``, ``UV_CONSTRAINT``): mounted
    read-only under /run (never in a layer), kept in the cache by its content.

    Pins that come with their hashes (``name==1.0 --hash=sha256:...``: a set with
    ``require_hashes``) are also a requirements file the commands install with pip's
    ``--require-hashes`` (``REQUIREMENTS_ENV`` names it); the constraints file holds versions
    only, as pip in hash-checking mode would otherwise want a hash for every requirement."""
    pins = env.get(LOCK_ENV)
    rest = {k: v for k, v in env.items() if k != LOCK_ENV}
    if not pins:
        return rest, []
    folder = ws.cache.path("python-locks", key_of({"pins": pins})[:24])
    lines = pins.splitlines()
    hashed = "".join(line + "\n" for line in lines if " --hash=" in line)
    files = {"constraints.txt": "".join(line.split(" --hash=")[0].rstrip() + "\n" for line in lines)}
    if hashed:
        files["requirements.txt"] = hashed
    for name, text in files.items():
        path = folder / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            tmp = folder / f".{name}.{os.getpid()}-{threading.get_ident()}.tmp"
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
    file = f"{LOCK_DIR}/constraints.txt"
    out = {**rest, "PIP_CONSTRAINT": file, "UV_CONSTRAINT": file}
    if hashed:
        out[REQUIREMENTS_ENV] = f"{LOCK_DIR}/requirements.txt"
    return out, [Volume(folder, LOCK_DIR)]


OUTPUT_DIR = "/run/assemble-output"  # where a step's commands write their output


def _script(commands: Sequence[tuple[str, str]], prelude: str, token: str, output: str) -> str:
    """One shell script for all of a step's commands: each in its own subshell with
    ``set -e`` (as separate RUN lines behave), announced by a marker line; all of its
    output goes to the file ``output`` (a mounted host file, not buildah's relay of
    stdout, which can lose the last lines of a command that fails at once).

    The subshell is not the left side of ``||``: shells ignore ``set -e`` there.
    """
    parts = [f"exec >{output} 2>&1\n", prelude]
    for i, (_, actual) in enumerate(commands):
        parts.append(
            f'echo "{token} start {i}"\n( set -e\n{actual}\n)\nrc=$?\n'
            f'if [ "$rc" -ne 0 ]; then echo "{token} fail {i} $rc"; exit "$rc"; fi\n'
        )
    return "".join(parts)


def _output_file(folder: Path) -> Path:
    """The file a step's commands write their output to, in ``folder`` (mounted): made
    here, writable by whichever user the commands run as, named so only who reads the
    folder can find it (the output may hold what the log redacts)."""
    folder.chmod(0o711)
    path = folder / f"output-{token_hex(8)}.log"
    path.touch()
    path.chmod(0o666)
    return path


def run_commands(
    ws: Workspace,
    cid: str,
    *,
    step: str,
    commands: Sequence[tuple[str, str]],
    env: Mapping[str, str],
    volumes: Sequence[Volume],
    workdir: str | None,
    redact: Sequence[str],
    prelude: str,
    log_path: Path,
    user: str = "0:0",
    network: bool = True,
) -> None:
    """Run ``(shown, actual)`` commands in order in one ``buildah run`` (without ``network``:
    only the loopback interface); StepFailed naming the command that failed, with the log's
    tail, on the first failure."""
    if not commands:
        return
    token = "@@assemble-" + token_hex(8)
    state = {"current": 0, "failed": -1}

    def rewrite(line: str) -> str | None:
        if not line.startswith(token):
            return line
        _, what, index, *_ = [*line.split(), "", ""]
        if what == "start":
            state["current"] = int(index)
            return f"$ {commands[int(index)][0]}"
        state["failed"] = int(index)
        return None

    env, lock_volumes = python_lock(ws, env)
    with ws.cache.workdir("output-") as folder, open(log_path, "w", encoding="utf-8") as log_file:
        output = _output_file(folder)
        script = _script(commands, prelude, token, f"{OUTPUT_DIR}/{output.name}")
        mounted = [*volumes, *lock_volumes, Volume(folder, OUTPUT_DIR, readonly=False)]
        spec = RunSpec(script, env=env, volumes=mounted, workdir=workdir, user=user, network=network)
        code, last = ws.buildah.run(
            cid, spec, log_file=log_file, on_line=ws.on_line, redact=redact, rewrite=rewrite, follow=output
        )
    if code != 0:
        index = state["failed"] if state["failed"] >= 0 else state["current"]
        argv = ws.buildah.run_argv(cid, RunSpec(commands[index][0]))
        raise _failed(step, commands[index][0], code, state["failed"] >= 0, last, log_path, argv)


def _failed(
    step: str, shown: str, code: int, reported: bool, last: str, log_path: Path, argv: Sequence[str]
) -> StepFailed:
    """The error of a step whose command ``shown`` exited ``code`` (``reported``: by its own
    shell, else before it could say), leading with what apt refused where it did, its hint
    the fix where the mirror moved or the host keeps the user from building rootless."""
    how = f"exit {code}" if reported else f"exit {code}, before the command's shell could report it"
    refused = refusals(last)  # apt's reason, said before the log's tail
    said = f"\napt cannot install: {'; '.join(r.said() for r in refused)}" if refused else ""
    return StepFailed(
        f"step {step}: command failed ({how}): {shown}{said}\n--- last lines of the log ---\n{last}\n"
        f"--- full log: {log_path}",
        step=step,
        command=shown,
        argv=argv,
        returncode=code,
        log_path=log_path,
        log_tail=last,
        hint=mirror_moved_hint(last)
        or host_cause(last)
        or ("check each package's name for the base's suite" if refused else None)
        or "fix the command (the log shows why), then run assemble again: finished steps are cached",
    )


def agent_job(ws: Workspace, cid: str, command: str, job: Mapping[str, object], *, step: str, what: str) -> Any:
    """Run the export agent on the container's root with a JSON job; its JSON answer.

    The agent writes layer blobs straight into the cache (one process per step, not one
    per artifact). StepFailed with the agent's reason when it fails.
    """
    with ws.cache.workdir("job-") as work:
        job_file = work / "job.json"
        job_file.write_text(json.dumps({**ws.agent_job, **job}))
        argv, cleanup = ws.buildah.agent_argv(
            cid, [command, "--job", str(job_file)], python=sys.executable, module=ws.agent
        )
        try:
            result = ws.buildah.call(argv, check=False)
        finally:
            cleanup()
    if result.returncode != 0:
        text = (result.stderr or result.stdout).strip()
        raise StepFailed(
            f"step {step}: {text.removeprefix('agent: ') or f'{what} failed (exit {result.returncode})'}",
            step=step,
            command=what,
            argv=argv,
            returncode=result.returncode,
            log_tail=tail(text),
            hint="an artifact's path is looked up inside the build container (or in its cache: folders)",
        )
    return json.loads(result.stdout or "{}")


def step_log(cache: Cache, name: str, key: str) -> Path:
    return cache.log_path(name, key)
