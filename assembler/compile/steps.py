"""Compile steps and runtime steps, executed in buildah containers.

A compile step runs in a container from its devel base, with its sources read-only at
``/src/NAME``, earlier artifacts it needs mounted at their image paths, compile caches
kept on the host, secrets as files read into the environment, and the host CA bundle
mounted. Each declared artifact is then exported by the agent as its own layer.

A runtime step runs on the image built so far; the agent records the file metadata
before and exports what changed after (whiteouts for deletions), leaving caches, apt
lists, logs and ``/tmp`` out. Buildah executes; our tar writer writes every layer byte.
Containers are removed afterwards, also on failure and Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from assembler.archive.compress import Compression, decompressed
from assembler.archive.extract import extract
from assembler.archive.layer import LayerBlob, recompress
from assembler.cache import Cache, key_of
from assembler.compile.agent import DEFAULT_EXCLUDES
from assembler.compile.buildah import Buildah, RunSpec, Volume
from assembler.compile.sources import Source
from assembler.errors import InputError, StepFailed, ToolError
from assembler.oci.image import Image
from assembler.proc import tail
from assembler.spec import model as m
from assembler.transports import layout

log = logging.getLogger(__name__)
FORMAT = 1
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
SECRETS_DIR = "/run/assemble-secrets"
# Tools read the CA bundle from different places; point them all at the mounted one.
CA_ENV = {
    "SSL_CERT_FILE": str(HOST_CA),
    "REQUESTS_CA_BUNDLE": str(HOST_CA),
    "CURL_CA_BUNDLE": str(HOST_CA),
    "PIP_CERT": str(HOST_CA),
    "GIT_SSL_CAINFO": str(HOST_CA),
    "NODE_EXTRA_CA_CERTS": str(HOST_CA),
    "UV_NATIVE_TLS": "1",
}

LineFn = Callable[[str], None]


@dataclass(frozen=True)
class Mounted:
    """An artifact made visible in a container: its layer unpacked, shown at ``to``."""

    ref: str
    blob: LayerBlob
    to: str


@dataclass
class Workspace:
    """Everything a step needs from outside: buildah, the cache, and how to report."""

    buildah: Buildah
    cache: Cache
    epoch: int
    compression: Compression
    host_ca: bool = True
    on_line: LineFn | None = None
    _pulled: dict[str, str] = field(default_factory=dict)

    def image_id(self, image: Image) -> str:
        """Hand ``image`` to buildah (through an OCI layout of hard links); its image ID."""
        if image.digest in self._pulled:
            return self._pulled[image.digest]
        path = self.cache.root / "buildah" / "layout"
        tag = image.digest.split(":", 1)[1]
        layout.write(path, image, tag=tag, blobs=self.cache)
        image_id = self.buildah.pull(path, tag, cwd=self.cache.root)
        self._pulled[image.digest] = image_id
        return image_id


# -- keys ------------------------------------------------------------------------------


def compile_key(
    step: m.CompileStep,
    *,
    base: str,
    sources: Mapping[str, str],
    inputs: Mapping[str, str],
    tool: str,
    epoch: int,
    compression: str,
    host_ca: bool,
) -> str:
    """Everything that can change a compile step's artifacts (not secret values, not the name)."""
    definition = step.model_dump(mode="json", exclude={"name", "use", "with_", "runtime_packages"})
    return key_of(
        {
            "kind": "compile",
            "format": FORMAT,
            "base": base,
            "step": definition,
            "sources": dict(sources),
            "inputs": dict(inputs),
            "tool": tool,
            "epoch": epoch,
            "compression": compression,
            "host_ca": host_ca,
        }
    )


def runtime_key(
    definition: Mapping[str, object],
    *,
    parent: Image,
    mounts: Mapping[str, str],
    tool: str,
    epoch: int,
    compression: str,
) -> str:
    """Everything that can change a runtime step's layer: the image below (its layers and
    the runtime config the commands see) and the step itself."""
    cfg = parent.container_config
    below = {
        "diff_ids": list(parent.diff_ids),
        "env": cfg.get("Env"),
        "user": cfg.get("User"),
        "dir": cfg.get("WorkingDir"),
    }
    return key_of(
        {
            "kind": "runtime",
            "format": FORMAT,
            "parent": below,
            "step": dict(definition),
            "mounts": dict(mounts),
            "tool": tool,
            "epoch": epoch,
            "compression": compression,
        }
    )


def blob_json(blob: LayerBlob) -> dict[str, object]:
    return {
        "digest": blob.digest,
        "size": blob.size,
        "diff_id": blob.diff_id,
        "uncompressed_size": blob.uncompressed_size,
        "compression": blob.compression,
    }


def blob_from_json(data: Mapping[str, object]) -> LayerBlob:
    return LayerBlob(
        digest=str(data["digest"]),
        size=int(str(data["size"])),
        diff_id=str(data["diff_id"]),
        uncompressed_size=int(str(data.get("uncompressed_size", 0))),
        compression=str(data["compression"]),  # type: ignore[arg-type]
    )


# -- shared machinery ------------------------------------------------------------------


@contextmanager
def _container(ws: Workspace, image: Image, name: str) -> Iterator[str]:
    cid = ws.buildah.from_image(ws.image_id(image), name_hint=name)
    try:
        yield cid
    finally:
        ws.buildah.rm(cid)


@contextmanager
def _secret_files(ws: Workspace, names: Sequence[str], step: str) -> Iterator[tuple[list[Volume], list[str], str]]:
    """Secrets as 0600 files in a private folder, mounted read-only; removed afterwards."""
    if not names:
        yield [], [], ""
        return
    values = []
    with ws.cache.workdir("secrets-") as folder:
        os.chmod(folder, 0o700)
        for name in names:
            value = os.environ.get(name)
            if value is None:
                raise InputError(f"step {step}: secret {name} is not set in the environment", hint=f"export {name}=...")
            path = folder / name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            values.append(value)
        prelude = "".join(f'export {n}="$(cat {SECRETS_DIR}/{n})"; ' for n in names)
        yield [Volume(folder, SECRETS_DIR)], values, prelude


@contextmanager
def _mounted_artifacts(ws: Workspace, mounts: Sequence[Mounted]) -> Iterator[list[Volume]]:
    """Each artifact's layer unpacked into a private folder and mounted read-only at ``to``."""
    if not mounts:
        yield []
        return
    with ws.cache.workdir("mounts-") as folder:
        volumes = []
        for i, mount in enumerate(mounts):
            root = folder / str(i)
            root.mkdir()
            with ws.cache.open_blob(mount.blob.digest) as raw, decompressed(raw, mount.blob.compression) as plain:
                extract(plain, root, what=f"artifact {mount.ref}")
            target = mount.to.rstrip("/") or "/"
            volumes.append(Volume(root / target.lstrip("/"), target))
        yield volumes


def _ca(ws: Workspace) -> tuple[list[Volume], dict[str, str]]:
    if not ws.host_ca or not HOST_CA.is_file():
        return [], {}
    return [Volume(HOST_CA, str(HOST_CA))], dict(CA_ENV)


def _run_commands(
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
) -> None:
    """Run ``(shown, actual)`` commands in order; StepFailed with the tail on the first failure."""
    with open(log_path, "w", encoding="utf-8") as log_file:
        for shown, actual in commands:
            log_file.write(f"$ {shown}\n")
            log_file.flush()
            spec = RunSpec(f"{prelude}set -e\n{actual}", env=env, volumes=volumes, workdir=workdir, user=user)
            code, last = ws.buildah.run(cid, spec, log_file=log_file, on_line=ws.on_line, redact=redact)
            if code != 0:
                raise StepFailed(
                    f"step {step}: command failed (exit {code}): {shown}\n--- last lines of the log ---\n{last}\n"
                    f"--- full log: {log_path}",
                    step=step,
                    command=shown,
                    argv=ws.buildah.run_argv(cid, RunSpec(shown)),
                    returncode=code,
                    log_path=log_path,
                    log_tail=last,
                    hint="fix the command (the log shows why), then run assemble again: finished steps are cached",
                )


def _export(ws: Workspace, cid: str, agent_args: Sequence[str], *, what: str, step: str) -> LayerBlob:
    """Run the agent against the container's root and store its tar as a compressed layer."""
    argv, cleanup = ws.buildah.agent_argv(cid, agent_args, python=sys.executable)
    try:
        with (
            tempfile.TemporaryFile() as errors,
            ws.buildah.runner.popen(argv, stdout=subprocess.PIPE, stderr=errors) as proc,
            ws.cache.blob_writer() as w,
        ):
            assert proc.stdout is not None
            blob = recompress(cast(BinaryIO, proc.stdout), "none", w, compression=ws.compression)
            code = proc.wait()
            if code != 0:  # raising inside blob_writer: nothing is stored
                errors.seek(0)
                text = errors.read().decode("utf-8", "replace")
                raise StepFailed(
                    f"step {step}: {what}: {tail(text, 5) or f'export failed (exit {code})'}",
                    step=step,
                    command=" ".join(agent_args),
                    argv=argv,
                    returncode=code,
                    log_tail=tail(text),
                    hint="check the artifact's path: it is looked up inside the build container",
                )
    finally:
        cleanup()
    return blob


# -- compile steps ---------------------------------------------------------------------


def apt_install(packages: Sequence[str]) -> str:
    """A shell command installing ``packages`` with the base's package manager (apt-get on
    Debian/Ubuntu, dnf/microdnf/yum on RHEL-likes such as manylinux, apk on Alpine), its
    indexes and caches cleaned so they stay out of the layer."""
    names = " ".join(shlex.quote(p) for p in packages)
    return (
        "if command -v apt-get >/dev/null; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
        f"apt-get install -y -qq --no-install-recommends {names} && apt-get clean && rm -rf /var/lib/apt/lists/*; "
        f"elif command -v dnf >/dev/null; then dnf install -y -q {names} && dnf clean all; "
        f"elif command -v microdnf >/dev/null; then microdnf install -y {names} && microdnf clean all; "
        f"elif command -v yum >/dev/null; then yum install -y -q {names} && yum clean all; "
        f"elif command -v apk >/dev/null; then apk add --no-cache {names}; "
        'else echo "no package manager (apt-get, dnf, microdnf, yum, apk) in this image" >&2; exit 127; fi'
    )


def step_log(cache: Cache, name: str, key: str) -> Path:
    return cache.root / "logs" / f"{name}-{key[:12]}.log"


def run_compile_step(
    step: m.CompileStep,
    *,
    base: Image,
    sources: Mapping[str, Source],
    inputs: Sequence[Mounted],
    ws: Workspace,
    key: str,
) -> dict[str, LayerBlob]:
    """Build ``step`` in a container from ``base``; one layer blob per declared artifact.

    Raises StepFailed (command, exit code, log tail and path) when a command fails or an
    artifact is missing; InputError for a secret missing from the environment.
    """
    log_path = step_log(ws.cache, step.name, key)
    caches = []
    for path in step.cache:
        host = ws.cache.path("step-caches", step.name, key_of({"path": path})[:16])
        caches.append(Volume(host, path, readonly=False))
    src_volumes = [Volume(sources[name].path, f"/src/{name}") for name in step.sources]
    ca_volumes, ca_env = _ca(ws)
    env = {**ca_env, "SOURCE_DATE_EPOCH": str(ws.epoch), **step.env}
    commands: list[tuple[str, str]] = []
    if step.packages:
        commands.append((f"apt-get install {' '.join(step.packages)}", apt_install(step.packages)))
    commands += [(c, c) for c in step.run]
    started = time.monotonic()
    with _container(ws, base, step.name) as cid, _secret_files(ws, step.secrets, step.name) as (svol, values, pre):
        with _mounted_artifacts(ws, inputs) as input_volumes:
            volumes = [*src_volumes, *input_volumes, *caches, *ca_volumes, *svol]
            _run_commands(ws, cid, step=step.name, commands=commands, env=env, volumes=volumes,
                          workdir=step.workdir, redact=values, prelude=pre, log_path=log_path)  # fmt: skip
        results: dict[str, LayerBlob] = {}
        for name, art in sorted(step.artifacts.items()):
            args = ["export", "--path", art.path, "--to", art.to, "--epoch", str(ws.epoch)]
            if art.mode is not None:
                args += ["--mode", format(art.mode, "o")]
            if art.owner:
                args += ["--owner", art.owner]
            for pat in art.exclude:
                args += ["--exclude", pat]
            results[name] = _export(ws, cid, args, what=f"artifact {name} ({art.path})", step=step.name)
    log.info("step %s built in %.1f s", step.name, time.monotonic() - started)
    return results


# -- runtime steps ---------------------------------------------------------------------


def run_runtime_step(
    name: str,
    commands: Sequence[tuple[str, str]],
    *,
    image: Image,
    env: Mapping[str, str],
    mounts: Sequence[Mounted],
    secrets: Sequence[str],
    exclude: Sequence[str],
    keep: Sequence[str],
    ws: Workspace,
    key: str,
    user: str = "0:0",
    workdir: str | None = None,
) -> LayerBlob:
    """Run ``commands`` on ``image`` and return the layer of what they changed."""
    log_path = step_log(ws.cache, name, key)
    excludes = [p for p in DEFAULT_EXCLUDES if p not in keep and p.rstrip("/*") not in keep] + list(exclude)
    ca_volumes, ca_env = _ca(ws)
    run_env = {**ca_env, "SOURCE_DATE_EPOCH": str(ws.epoch), "DEBIAN_FRONTEND": "noninteractive", **env}
    with ws.cache.workdir("runtime-") as work:
        snap = work / "snapshot.json"
        ex_args = [a for p in excludes for a in ("--exclude", p)]
        with _container(ws, image, name) as cid, _secret_files(ws, secrets, name) as (svol, values, pre):
            _agent(ws, cid, ["snapshot", "--out", str(snap), *ex_args], step=name)
            with _mounted_artifacts(ws, mounts) as mvol:
                volumes = [*mvol, *ca_volumes, *svol]
                _run_commands(ws, cid, step=name, commands=commands, env=run_env, volumes=volumes,
                              workdir=workdir, redact=values, prelude=pre, log_path=log_path, user=user)  # fmt: skip
                points = [v.container for v in volumes]
            mp_args = [a for p in points for a in ("--mountpoint", p)]
            diff_args = ["diff", "--snapshot", str(snap), "--epoch", str(ws.epoch), *ex_args, *mp_args]
            return _export(ws, cid, diff_args, what="changes", step=name)


def _agent(ws: Workspace, cid: str, args: Sequence[str], *, step: str) -> None:
    argv, cleanup = ws.buildah.agent_argv(cid, args, python=sys.executable)
    try:
        ws.buildah.runner.run(argv)
    except ToolError as e:
        raise StepFailed(f"step {step}: reading the container failed: {e}", step=step, command=" ".join(args)) from e
    finally:
        cleanup()
