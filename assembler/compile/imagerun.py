"""Running a command in an image with buildah, as ``docker run`` starts it: the image's
environment, working directory and user (each may be overridden), its entrypoint and cmd
(:func:`docker_argv`), in a fresh container removed afterwards.

Without ``network``, the command gets a network namespace of its own with only the
loopback interface: buildah 1.28 refuses ``--network none`` with ``--isolation chroot``
("cannot set --network other than host"), so buildah itself runs in one made by
``unshare --net`` (as root) or by ``unshare --net`` inside ``buildah unshare`` (rootless:
only the user namespace buildah makes holds the capability), through
:mod:`assembler.compile.loopback`, which brings ``lo`` up. With ``gpu``, the host's driver
is given as ``apptainer --nv`` gives it (:mod:`assembler.compile.gpudriver`).

A captured run writes the command's output (stdout and stderr, in order) to a file of a
mounted folder from inside the container, through the image's ``/bin/sh``: buildah 1.28's
chroot relay of a command's output can lose its last lines when the command exits, and a
test must not fail or pass on that. An image without ``/bin/sh`` is run as it is.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assembler.cache import Cache
from assembler.compile import pidns
from assembler.compile.buildah import TRAILER, Buildah
from assembler.compile.gpudriver import find as find_driver
from assembler.compile.gpudriver import library_path
from assembler.compile.handover import hand_over
from assembler.errors import InputError, TimedOut
from assembler.oci.image import Image
from assembler.transports.common import BlobReader

OUTPUT_DIR = "/run/assemble-output"
# Runs the command with its output in the mounted file (the shell replaced by it: same PID,
# same exit status, same signals).
_TO_FILE = f'exec "$@" >{OUTPUT_DIR}/output 2>&1'


@dataclass(frozen=True)
class ImageCommand:
    """What to run in an image, and how: ``env`` is set over the image's; None keeps the
    image's user and working directory."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    network: bool = True
    gpu: bool = False
    # host file or folder -> where it is bound in the container, read-only or not
    mounts: tuple[tuple[str, str, bool], ...] = ()


def docker_argv(config: Mapping[str, Any], *, command: Sequence[str] | None, args: Sequence[str] | None) -> list[str]:
    """The argv ``docker run`` (and Kubernetes) start for an image of runtime ``config``:
    ``command`` replaces the entrypoint and drops the cmd, ``args`` replace the cmd; with
    neither, the entrypoint and the cmd. InputError when that is nothing."""
    entrypoint = list(config.get("Entrypoint") or [])
    if command is not None:
        argv = [*command, *(args or [])]
    else:
        argv = [*entrypoint, *(args if args is not None else list(config.get("Cmd") or []))]
    if not argv:
        raise InputError("the image has no entrypoint and no cmd: name a command to run")
    return argv


def image_env(config: Mapping[str, Any]) -> dict[str, str]:
    """The image's environment (``Env``), as a mapping."""
    pairs = (str(e).partition("=") for e in config.get("Env") or [])
    return {name: value for name, _, value in pairs}


def store(buildah: Buildah, cache: Cache, image: Image, blobs: BlobReader) -> str:
    """``image`` in buildah's storage (handed over as a step's base is:
    :func:`assembler.compile.handover.hand_over`); its image ID. An image stored before is
    not handed over again."""
    hexdigest = image.digest.split(":", 1)[1]
    name = f"localhost/assemble-image:{hexdigest[:32]}"
    found = buildah.image_id(name)
    if found is not None:
        return found
    image_id = hand_over(buildah, cache, image, blobs)
    buildah.tag(image_id, name)
    return image_id


def volume(host: str, at: str, *, readonly: bool) -> str:
    """buildah's ``--volume`` of the host's ``host`` at ``at``: ``ro`` or ``rw``, and
    ``nodev,nosuid`` always (a bound folder brings no device or set-user-ID program into
    the container). buildah splits the value at ``:``, so a path holding one is refused
    (InputError), never read as options."""
    for path in (host, at):
        if ":" in path or not path.startswith("/"):
            raise InputError(f"cannot bind {host} at {at}: each is an absolute path without ':'")
    return f"{host}:{at}:{'ro' if readonly else 'rw'},nodev,nosuid"


class ImageRunner:
    """Runs commands in stored images, each in a container of its own."""

    def __init__(self, buildah: Buildah, cache: Cache) -> None:
        self.buildah = buildah
        self.cache = cache
        self._has_shell: dict[str, bool] = {}

    def run(
        self, image_id: str, cmd: ImageCommand, config: Mapping[str, Any], *, name: str, timeout: float
    ) -> tuple[int, str]:
        """Run ``cmd`` in a new container of ``image_id`` (runtime ``config``): its exit
        status and its output (buildah's own trailer left out). Raises TimedOut past
        ``timeout`` seconds (with the output so far), ToolError when buildah fails."""
        cid = self.buildah.from_image(image_id, name_hint=name)
        try:
            with self.cache.workdir("run-") as folder:
                os.chmod(folder, 0o777)  # whichever user the command runs as writes its output here
                captured = self._shell(image_id, cid)
                extra = ["--volume", f"{folder}:{OUTPUT_DIR}"] if captured else []
                argv = self.argv(cid, cmd, config, extra=extra, to_file=captured)
                try:
                    with open(folder / "buildah.log", "w", encoding="utf-8") as own:
                        code, _ = self.buildah.runner.stream(argv, log_file=own, env=self.buildah.env, timeout=timeout)
                except TimedOut as e:
                    raise TimedOut(str(e), argv=e.argv, seconds=e.seconds, stderr_tail=_output(folder)) from None
                return code, _output(folder)
        finally:
            self.buildah.rm(cid)

    def interactive(self, image_id: str, cmd: ImageCommand, config: Mapping[str, Any], *, name: str) -> int:
        """Run ``cmd`` in a new container of ``image_id`` on this terminal (``buildah run
        --terminal`` when stdin is one); its exit status. The container is removed afterwards.
        A stop of this process (Ctrl-C, SIGTERM, SIGHUP) ends the run and all it started
        (:func:`assembler.compile.pidns.waited`) and goes on: the command exits 128 + it."""
        cid = self.buildah.from_image(image_id, name_hint=name)
        try:
            argv = self.argv(cid, cmd, config, terminal=sys.stdin.isatty())
            terminal = {"stdin": None, "stdout": None, "stderr": None}
            with self.buildah.runner.popen(argv, env=self.buildah.env, **terminal) as proc:
                return pidns.waited(proc)
        finally:
            self.buildah.rm(cid)

    def argv(
        self,
        container: str,
        cmd: ImageCommand,
        config: Mapping[str, Any],
        *,
        extra: Sequence[str] = (),
        to_file: bool = False,
        terminal: bool = False,
    ) -> list[str]:
        """The ``buildah run`` of ``cmd`` in ``container``, in a PID namespace of its own (and
        a network namespace of its own unless ``cmd.network``): nothing it starts outlives it."""
        env = dict(cmd.env)
        args = [*self.buildah.globals, "run", "--isolation", "chroot", *(["--terminal"] if terminal else [])]
        if cmd.gpu:
            args += find_driver(self.buildah.runner).buildah_args()
            env["LD_LIBRARY_PATH"] = library_path(
                env.get("LD_LIBRARY_PATH") or image_env(config).get("LD_LIBRARY_PATH")
            )
        if cmd.user:
            args += ["--user", cmd.user]
        if cmd.workdir:
            args += ["--workingdir", cmd.workdir]
        args += [a for host, at, ro in cmd.mounts for a in ("--volume", volume(host, at, readonly=ro))]
        args += [a for key in sorted(env) for a in ("--env", f"{key}={env[key]}")]
        command = ["/bin/sh", "-c", _TO_FILE, "assemble-run", *cmd.argv] if to_file else list(cmd.argv)
        args += [*extra, container, "--", *command]
        return self.buildah.owned(args, network=cmd.network)

    def _shell(self, image_id: str, container: str) -> bool:
        """Whether the image runs ``/bin/sh`` (asked once per image)."""
        if image_id not in self._has_shell:
            probe = [*self.buildah.globals, "run", "--isolation", "chroot", container, "--", "/bin/sh", "-c", ":"]
            self._has_shell[image_id] = self.buildah.call(probe, check=False).returncode == 0
        return self._has_shell[image_id]


def _output(folder: Path) -> str:
    """What the command printed: its output file when it wrote one, else what buildah
    relayed, less buildah's own lines about the exit."""
    written = folder / "output"
    if written.exists():
        return written.read_text("utf-8", "replace")
    relayed = (folder / "buildah.log").read_text("utf-8", "replace") if (folder / "buildah.log").exists() else ""
    return "".join(line for line in relayed.splitlines(keepends=True) if not TRAILER.match(line.rstrip("\n")))
