"""Step keys: everything that can change a step's result, hashed (never secret values)."""

from __future__ import annotations

from collections.abc import Mapping

from assembler.cache import key_of
from assembler.manifest.schema import model as m
from assembler.oci.image import Image

FORMAT = 2  # 2: steps run with reproducible_env (PYTHONHASHSEED): earlier results may differ
# A runtime step's layer: 3: the machine's identity (/etc/machine-id, dbus's) left out
# (compile.changes.DEFAULT_EXCLUDES), a random one per build before; 4: the runtime's mount
# points (/etc/hosts, /etc/hostname, /etc/resolv.conf) left out, empty files before; 5: no
# whiteout below a path the step made a file or a symlink, a folder emptied and refilled
# opaque, hard links kept (compile.changes): an older layer may be one consumers read apart.
RUNTIME_FORMAT = 5


# What a compile step says that does not change its artifacts: names, and how its job is run.
# Its Python sets act only through the lock's pins, which are in its env (LOCK_ENV).
# reaches: where a step reaches says nothing of what it builds (see spec.hostuse).
# What a step's result does not depend on: its name, how it was written (a recipe and its
# with:), what the image gets besides (runtime packages), where it runs (resources), the
# lock's pins (they reach the step as its env), the hosts it reaches and the tests run on
# the image: a new test must not recompile anything.
NOT_IN_KEY = {"name", "use", "with_", "runtime_packages", "resources", "python_sets", "reaches", "tests"}


def compile_key(
    step: m.CompileStep,
    *,
    base: str,
    sources: Mapping[str, str],
    inputs: Mapping[str, str],
    tool: str,
    epoch: int,
    host_ca: bool,
) -> str:
    """Everything that can change a compile step's artifacts (not secret values, not the name)."""
    # network: only false is said, so that the keys of the steps written before it stay
    definition = step.model_dump(mode="json", exclude=NOT_IN_KEY | ({"network"} if step.network else set()))
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
            "format": RUNTIME_FORMAT,
            "parent": below,
            "step": dict(definition),
            "mounts": dict(mounts),
            "tool": tool,
            "epoch": epoch,
        }
    )
