"""buildah, with argv built by typed methods and run by :mod:`assembler.proc`.

Facts this relies on (Debian 12, buildah 1.28): ``--isolation chroot`` works as root
and rootless (the default OCI isolation fails on cgroups here); as root the storage
driver must be passed explicitly; ``buildah mount`` works rootless only inside
``buildah unshare`` (and ``buildah unshare`` fails as root here, so root mounts
directly). Storage lives under the cache folder (``--root``/``--runroot``) so nothing
is written elsewhere and separate caches never share containers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from assembler.errors import ToolError
from assembler.hostuser import host_cause
from assembler.proc import Result, Runner

log = logging.getLogger(__name__)
# What buildah itself prints after a command fails: not the user's output.
TRAILER = re.compile(r"^(subprocess exited with status \d+|Error: exit status \d+|error running container: .*)$")


@dataclass(frozen=True)
class Volume:
    """A host path visible in the container (``-v host:ctr[:ro]``)."""

    host: Path
    container: str
    readonly: bool = True

    def arg(self) -> str:
        return f"{self.host}:{self.container}" + (":ro" if self.readonly else "")


@dataclass(frozen=True)
class RunSpec:
    """One ``buildah run``: a shell command with its environment and mounts."""

    command: str
    env: Mapping[str, str] = field(default_factory=dict)
    volumes: Sequence[Volume] = ()
    workdir: str | None = None
    user: str = "0:0"
    network: bool = True  # false: a network namespace of its own with only lo (Buildah.offline)


@contextmanager
def _host_hinted() -> Iterator[None]:
    """A buildah failure whose output shows the host kept it from making its user namespace
    (rootless: no ranges in /etc/subuid, user namespaces off) given doctor's fix as its hint."""
    try:
        yield
    except ToolError as e:
        cause = host_cause(e.stderr_tail) if e.hint is None else None
        if cause is not None:
            e.hint = cause
        raise


class Buildah:
    """A buildah with its own storage (``root``) and driver."""

    def __init__(self, runner: Runner, *, storage: Path, driver: str = "overlay") -> None:
        self.runner = runner
        self.storage = storage
        self.driver = driver
        self.rootless = os.geteuid() != 0

    @property
    def globals(self) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.storage / "root"),
            "--runroot",
            str(self.storage / "run"),
            "--storage-driver",
            self.driver,
        ]

    @property
    def env(self) -> dict[str, str]:
        """What every buildah call runs with: its own temp folders (a `buildah run`'s bundle,
        left behind when it is killed) in its storage, not in /var/tmp."""
        tmp = self.storage / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {"TMPDIR": str(tmp)}

    def call(self, argv: Sequence[str], *, check: bool = True) -> Result:
        """``argv`` (buildah, with :attr:`globals`) run with :attr:`env`; a failure the host
        causes (no subordinate ids, no user namespaces) hinted with doctor's fix."""
        with _host_hinted():
            return self.runner.run(argv, env=self.env, check=check)

    def _run(self, *args: str) -> str:
        return self.call([*self.globals, *args]).stdout.strip()

    def version(self) -> str:
        """``buildah version`` (part of every step key)."""
        try:
            data = json.loads(self.runner.run(["buildah", "version", "--json"]).stdout)
            return str(data.get("version", "unknown"))
        except (ValueError, ToolError):
            return self.runner.run(["buildah", "--version"]).stdout.strip()

    def pull(self, layout: Path, tag: str, *, cwd: Path) -> str:
        """Bring an image from an OCI layout into storage; returns the image ID.

        buildah names the stored image after the layout's path, and a path component
        like ``.cache`` is not a valid name: the layout is given relative to ``cwd``.
        """
        rel = os.path.relpath(layout, cwd)
        argv = [*self.globals, "pull", "--quiet", f"oci:{rel}:{tag}"]
        with _host_hinted():
            return self.runner.run(argv, cwd=cwd, env=self.env).stdout.strip().splitlines()[-1]

    def from_image(self, image_id: str, *, name_hint: str) -> str:
        """A new working container from a stored image; returns its ID."""
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name_hint)[:40]
        name = f"assemble-{safe}-{secrets.token_hex(4)}"
        return self._run("from", "--pull=never", "--quiet", "--name", name, image_id).splitlines()[-1]

    def _run_flags(self, spec: RunSpec) -> list[str]:
        argv = [*self.globals, "run", "--isolation", "chroot", "--user", spec.user]
        for key in sorted(spec.env):
            argv += ["--env", f"{key}={spec.env[key]}"]
        for vol in spec.volumes:
            argv += ["--volume", vol.arg()]
        if spec.workdir:
            argv += ["--workingdir", spec.workdir]
        return argv

    def run_argv(self, container: str, spec: RunSpec) -> list[str]:
        argv = [*self._run_flags(spec), container, "--", "/bin/sh", "-c", spec.command]
        return argv if spec.network else self.offline(argv)

    def offline(self, argv: Sequence[str]) -> list[str]:
        """``argv`` (a buildah run) in a new network namespace with only ``lo``, up: buildah
        1.28 refuses ``--network none`` with ``--isolation chroot`` ("cannot set --network
        other than host"), so buildah itself runs in one made by ``unshare --net`` (as root)
        or by ``unshare --net`` inside ``buildah unshare`` (rootless: only the user namespace
        buildah makes holds the capability), through :mod:`assembler.compile.loopback`."""
        inside = ["unshare", "--net", "--", sys.executable, "-m", "assembler.compile.loopback", *argv]
        return [*self.globals, "unshare", "--", *inside] if self.rootless else inside

    def owned(self, argv: Sequence[str], *, network: bool = True) -> list[str]:
        """``argv`` (a buildah run) in a PID namespace of its own, buildah its first process:
        when it ends, by exit, signal or timeout, the kernel ends every process the command
        started (:mod:`assembler.compile.pidns`), as docker ends a container's. Without
        ``network``, in a network namespace with only ``lo`` too (:meth:`offline`). As
        :meth:`offline`, rootless inside ``buildah unshare`` (its user namespace holds the
        capability). With a /proc of that namespace (``--mount-proc``, in a mount namespace of
        its own): buildah binds the /proc it sees into the container, and the host's showed
        other processes under the command's own pids (DeepSpeed's CPU accelerator reads
        /proc/<its pid> as it starts, and failed "process PID not found")."""
        flags = ["--pid", "--fork", "--kill-child", "--mount-proc", *([] if network else ["--net"])]
        tail = list(argv) if network else [sys.executable, "-m", "assembler.compile.loopback", *argv]
        inside = ["unshare", *flags, "--", *tail]
        return [*self.globals, "unshare", "--", *inside] if self.rootless else inside

    def shell_argv(self, container: str, spec: RunSpec) -> list[str]:
        """An interactive shell in ``container`` with ``spec``'s user, environment, mounts
        and working directory (its command is not run), in a PID namespace of its own
        (:meth:`owned`): what the shell starts in the background ends with it."""
        return self.owned([*self._run_flags(spec), "--terminal", container, "--", "/bin/sh"])

    def run(
        self,
        container: str,
        spec: RunSpec,
        *,
        log_file: IO[str],
        on_line: Callable[[str], None] | None = None,
        redact: Sequence[str] = (),
        rewrite: Callable[[str], str | None] | None = None,
        follow: Path | None = None,
    ) -> tuple[int, str]:
        """Run a shell command in the container, output streamed to ``log_file``.

        Returns (exit code, the command's last 30 lines: buildah's own "exited with
        status" trailer is left out). Values in ``redact`` never reach the log.
        ``follow``: a mounted file the command writes its output to (Runner.stream).
        """
        code, last = self.runner.stream(
            self.run_argv(container, spec),
            log_file=log_file,
            env=self.env,
            on_line=on_line,
            redact=redact,
            keep=40,
            rewrite=rewrite,
            follow=follow,
        )
        lines = [line for line in last.splitlines() if not TRAILER.match(line)]
        return code, "\n".join(lines[-30:])

    def agent_argv(
        self, container: str, agent_args: Sequence[str], *, python: str, module: str = "assembler.compile.agent"
    ) -> tuple[list[str], Callable[[], None]]:
        """argv running the export agent (``python -m module``) against the container's root
        filesystem, and a cleanup to call afterwards (root: ``buildah mount`` + umount;
        rootless: ``buildah unshare --mount``)."""
        command = [python, "-m", module]
        if self.rootless:
            argv = [*self.globals, "unshare", "--mount", f"ASSEMBLE_ROOT={container}", "--", *command]
            return [*argv, "--root-env", "ASSEMBLE_ROOT", *agent_args], lambda: None
        mountpoint = self._run("mount", container).splitlines()[-1]
        return [*command, "--root", mountpoint, *agent_args], lambda: self.umount(container)

    def commit(self, container: str, name: str) -> str:
        """Store a working container as the image ``name`` (for buildah's own reuse, never a
        layer of ours); returns the image ID."""
        return self._run("commit", "--quiet", "--format", "oci", container, name).splitlines()[-1]

    def tag(self, image_id: str, name: str) -> None:
        """Name the stored image ``image_id`` ``name`` too."""
        self._run("tag", image_id, name)

    def image_id(self, name: str) -> str | None:
        """The ID of the stored image ``name``, or None when there is none."""
        result = self.call(
            [*self.globals, "inspect", "--type", "image", "--format", "{{.FromImageID}}", name], check=False
        )
        image_id = result.stdout.strip()
        return image_id if result.returncode == 0 and image_id else None

    def umount(self, container: str) -> None:
        self.call([*self.globals, "umount", container], check=False)

    def rm(self, container: str) -> None:
        """Remove a working container (never raises: used in cleanups)."""
        result = self.call([*self.globals, "rm", container], check=False)
        if result.returncode != 0:
            log.warning("could not remove container %s: %s", container, result.stderr.strip())
