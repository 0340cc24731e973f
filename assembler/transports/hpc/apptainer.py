"""What Apptainer expects inside (and next to) a SIF root filesystem, made from an OCI image.

Apptainer starts a container by sourcing ``/.singularity.d/env/*.sh`` in order and
running ``/.singularity.d/runscript``. For an OCI image that means:

- ``env/10-docker2singularity.sh`` sets the image's ``Env``. PATH and LD_LIBRARY_PATH
  are set outright (as ``docker run`` does: a host value must not hide the image's
  CUDA/ROCm library paths); the other variables keep a value the user passed in (the
  convention of Apptainer's own OCI conversion, so ``--env`` and host variables work);
- ``runscript`` runs ENTRYPOINT + CMD the way ``docker run IMAGE [ARGS...]`` does: the
  arguments replace CMD, ENTRYPOINT stays, and nothing is re-evaluated by the shell;
- ``env/99-base.sh`` appends ``/.singularity.d/libs`` (where ``--nv``/``--rocm`` bind the
  host driver libraries) to LD_LIBRARY_PATH; ``env/99-runtimevars.sh`` applies the
  PATH changes asked for on the command line;
- ``labels.json``, the ``actions/`` scripts older runtimes call, and the links
  ``/singularity`` -> runscript and ``/environment`` -> ``env/90-environment.sh``.

Next to the partition, ``inspect-metadata.json`` holds what ``apptainer inspect --all``
would read from those files, in Apptainer's ``inspect.Metadata`` shape (Apptainer's
build writes it the same way), so ``apptainer inspect`` answers without starting a
container.

The ``/.singularity.d`` files are laid *over* the image (they replace what an image
converted earlier may carry); the links and mount-point directories go *under* it, so
an image's own ``/tmp`` or ``/etc/hosts`` keeps its attributes. The same facts are
written into the SIF's definition-file object for ``apptainer inspect``.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from assembler.archive.layer import Member, Opener
from assembler.archive.tar import TarEntry
from assembler.oci.digest import canonical_json
from assembler.oci.image import Image
from assembler.oci.reference import without_folder

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set outright rather than only when unset: see the module docstring.
FORCED_ENV = frozenset({"PATH", "LD_LIBRARY_PATH"})
ENV_SCRIPT = ".singularity.d/env/10-docker2singularity.sh"
RUNSCRIPT = ".singularity.d/runscript"

_SOURCE_ENV = """for script in /.singularity.d/env/*.sh; do
    if [ -f "$script" ]; then
        . "$script"
    fi
done
"""

_ACTIONS = {
    "exec": "#!/bin/sh\n" + _SOURCE_ENV + 'exec "$@"\n',
    "run": "#!/bin/sh\n"
    + _SOURCE_ENV
    + """if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript "$@"
fi
echo "no runscript in this container: running /bin/sh" >&2
exec /bin/sh "$@"
""",
    "shell": "#!/bin/sh\n"
    + _SOURCE_ENV
    + """if [ -n "${APPTAINER_SHELL:-}" ] && [ -x "$APPTAINER_SHELL" ]; then
    exec "$APPTAINER_SHELL" "$@"
elif [ -x /bin/bash ]; then
    SHELL=/bin/bash
    export SHELL
    exec /bin/bash --norc "$@"
fi
SHELL=/bin/sh
export SHELL
exec /bin/sh "$@"
""",
    "start": "#!/bin/sh\n"
    + _SOURCE_ENV
    + """if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript
fi
""",
    "test": "#!/bin/sh\n"
    + _SOURCE_ENV
    + """if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test "$@"
fi
exec /bin/sh -c true
""",
}

_ENV_FILES = {
    "01-base.sh": "#!/bin/sh\n# Base environment of the container (nothing to add for an OCI image).\n",
    "90-environment.sh": "#!/bin/sh\n# Custom environment; /environment points here.\n",
    "99-base.sh": """#!/bin/sh
# Apptainer binds host libraries (--nv, --rocm) into /.singularity.d/libs.
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH=/.singularity.d/libs
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi
PS1="Apptainer> "
export LD_LIBRARY_PATH PS1
""",
    "99-runtimevars.sh": """#!/bin/sh
# PATH changes asked for on the command line (apptainer --env PREPEND_PATH=...).
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PREPEND_PATH:$PATH"
fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="$PATH:$SING_USER_DEFINED_APPEND_PATH"
fi
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PATH"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
""",
}

STARTSCRIPT = "#!/bin/sh\n"
# Files `apptainer inspect --environment` reads (env/10-docker*.sh, env/9*-environment.sh).
_INSPECT_ENV = (ENV_SCRIPT, ".singularity.d/env/90-environment.sh")

# Mount points Apptainer binds onto; only added when the image has none (underlay).
_MOUNT_DIRS = {"dev": 0o755, "proc": 0o755, "sys": 0o755, "tmp": 0o1777, "var": 0o755, "var/tmp": 0o1777}
_MOUNT_DIRS |= {"home": 0o755, "root": 0o700, "etc": 0o755}
_MOUNT_FILES = ("etc/hosts", "etc/resolv.conf")
_LINKS = {
    "singularity": ".singularity.d/runscript",
    "environment": ".singularity.d/env/90-environment.sh",
    ".exec": ".singularity.d/actions/exec",
    ".run": ".singularity.d/actions/run",
    ".shell": ".singularity.d/actions/shell",
    ".test": ".singularity.d/actions/test",
}


def quote(value: str) -> str:
    """``value`` as one single-quoted POSIX shell word."""
    return "'" + value.replace("'", "'\\''") + "'"


def env_script(env: Sequence[str]) -> str:
    """The shell script that sets an image config's ``Env`` list."""
    lines = ["#!/bin/sh", "# The image's environment (OCI config Env), written by assemble."]
    for item in env:
        name, sep, value = item.partition("=")
        if not _NAME_RE.match(name):
            log.warning("image Env entry %r is not a shell variable name: it is left out of the SIF", name)
            continue
        if not sep:
            lines.append(f'export {name}="${{{name}:-}}"')
        elif name in FORCED_ENV:
            lines.append(f"export {name}={quote(value)}")
        else:
            lines.append(f'if [ -z "${{{name}:-}}" ]; then {name}={quote(value)}; fi')
            lines.append(f"export {name}")
    return "\n".join(lines) + "\n"


def runscript(entrypoint: Sequence[str], cmd: Sequence[str]) -> str:
    """A runscript that behaves like ``docker run IMAGE [ARGS...]``."""
    lines = [
        "#!/bin/sh",
        "# Runs the image's ENTRYPOINT and CMD as `docker run IMAGE [ARGS...]` does: ARGS",
        "# replace CMD, ENTRYPOINT stays, nothing is evaluated again. Written by assemble.",
    ]
    if cmd:
        lines += ['if [ "$#" -eq 0 ]; then', "    set -- " + " ".join(quote(a) for a in cmd), "fi"]
    if entrypoint:
        lines.append("set -- " + " ".join(quote(a) for a in entrypoint) + ' "$@"')
    else:
        lines += [
            'if [ "$#" -eq 0 ]; then',
            '    echo "this image has no ENTRYPOINT or CMD: give the command to run" >&2',
            "    exit 1",
            "fi",
        ]
    lines.append('exec "$@"')
    return "\n".join(lines) + "\n"


def _bootstrap(source_name: str) -> tuple[str, str]:
    for prefix, bootstrap in (
        ("docker://", "docker"),
        ("oci-archive:", "oci-archive"),
        ("docker-archive:", "docker-archive"),
        ("oci:", "oci"),
    ):
        if source_name.startswith(prefix):
            return bootstrap, source_name[len(prefix) :]
    return "", source_name


def deffile(image: Image, *, source_name: str, env: str, run: str) -> bytes:
    """An Apptainer definition file describing the image (``apptainer inspect --deffile``).
    A source read from a file or folder is named without the folder it lies in: the SIF of
    a layout moved elsewhere is the same bytes."""
    source_name = without_folder(source_name)
    bootstrap, origin = _bootstrap(source_name)
    lines = [f"# Converted from {source_name or 'an OCI image'} ({image.digest}) by assemble."]
    if bootstrap:
        lines += [f"Bootstrap: {bootstrap}", f"From: {origin}"]
    else:
        lines += ["Bootstrap: scratch"]
    labels = _labels(image)
    if labels:
        lines += ["", "%labels"]
        lines += [f"    {k} {' '.join(str(v).split())}" for k, v in sorted(labels.items())]
    body = [line for line in env.splitlines() if line and not line.startswith("#")]
    if body:
        lines += ["", "%environment"] + [f"    {line}" for line in body]
    run_body = [line for line in run.splitlines() if line and not line.startswith("#")]
    lines += ["", "%runscript"] + [f"    {line}" for line in run_body]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _labels(image: Image) -> dict[str, str]:
    value = image.container_config.get("Labels") or {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _bytes_opener(data: bytes) -> Opener:
    def opener() -> AbstractContextManager[BinaryIO]:
        return cast(AbstractContextManager[BinaryIO], io.BytesIO(data))

    return opener


def _symlink(path: str, target: str, epoch: int) -> Member:
    return TarEntry(path=path, kind="symlink", mode=0o777, linkname=target, mtime=epoch), None


@dataclass(frozen=True)
class Metadata:
    """Everything Apptainer-specific a SIF gets for one image."""

    overlay: tuple[Member, ...]  # written over the image's layers (wins)
    underlay: tuple[Member, ...]  # written under them (the image wins)
    deffile: bytes
    labels: bytes
    inspect_metadata: bytes  # "inspect-metadata.json": what `apptainer inspect --all` shows
    oci_config: bytes  # the config's runtime part, as Apptainer reads "oci-config.json"


def inspect_metadata(*, labels: Mapping[str, str], files: Mapping[str, str], deffile: str) -> bytes:
    """Apptainer's ``inspect.Metadata`` JSON for a container whose ``/.singularity.d``
    holds ``files`` (paths relative to the root -> text).

    As ``apptainer inspect --all`` builds it: each value is the file's text without its
    trailing newlines, the environment maps ``/``-rooted script paths to their text,
    empty attributes are left out (Go's ``omitempty``), ``type`` is ``container``.
    Serialised by :func:`canonical_json`, so the bytes are reproducible.
    """

    def text(value: str) -> str:
        return value.rstrip("\n")

    attributes: dict[str, Any] = {
        "deffile": text(deffile),
        "environment": {"/" + path: text(files[path]) for path in _INSPECT_ENV if path in files},
        "labels": dict(labels),
        "runscript": text(files.get(RUNSCRIPT, "")),
        "startscript": text(files.get(".singularity.d/startscript", "")),
        "test": text(files.get(".singularity.d/test", "")),
        "helpfile": text(files.get(".singularity.d/runscript.help", "")),
    }
    return canonical_json({"data": {"attributes": {k: v for k, v in attributes.items() if v}}, "type": "container"})


def metadata(image: Image, *, source_name: str, epoch: int) -> Metadata:
    """The Apptainer files and SIF objects for ``image``; all dated ``epoch``, owned by root."""
    config = image.container_config
    env = env_script(_strings(config.get("Env")))
    run = runscript(_strings(config.get("Entrypoint")), _strings(config.get("Cmd")))
    labels = canonical_json(_labels(image))
    texts = {ENV_SCRIPT: env, RUNSCRIPT: run, ".singularity.d/startscript": STARTSCRIPT}
    texts |= {f".singularity.d/env/{name}": body for name, body in _ENV_FILES.items()}
    definition = deffile(image, source_name=source_name, env=env, run=run)

    def file(path: str, text: str | bytes, mode: int = 0o755) -> Member:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return TarEntry(path=path, kind="file", mode=mode, size=len(data), mtime=epoch), _bytes_opener(data)

    def directory(path: str, mode: int = 0o755) -> Member:
        return TarEntry(path=path, kind="dir", mode=mode, mtime=epoch), None

    overlay: list[Member] = [
        directory(".singularity.d"),
        directory(".singularity.d/actions"),
        directory(".singularity.d/env"),
        directory(".singularity.d/libs"),
        *(file(f".singularity.d/actions/{name}", body) for name, body in sorted(_ACTIONS.items())),
        *(file(f".singularity.d/env/{name}", body) for name, body in sorted(_ENV_FILES.items())),
        file(ENV_SCRIPT, env),
        file(".singularity.d/labels.json", labels, 0o644),
        file(RUNSCRIPT, run),
        file(".singularity.d/startscript", STARTSCRIPT),
    ]
    underlay: list[Member] = [
        *(directory(path, mode) for path, mode in sorted(_MOUNT_DIRS.items())),
        *(file(path, b"", 0o644) for path in _MOUNT_FILES),
        *(_symlink(path, target, epoch) for path, target in sorted(_LINKS.items())),
    ]
    return Metadata(
        overlay=tuple(overlay),
        underlay=tuple(underlay),
        deffile=definition,
        labels=labels,
        inspect_metadata=inspect_metadata(labels=_labels(image), files=texts, deffile=definition.decode("utf-8")),
        oci_config=canonical_json(config),
    )
